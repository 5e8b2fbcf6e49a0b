//! Input no store can hold, and bodies refused before they are read: clear 4xx answers that
//! name the problem, on SQLite and PostgreSQL (which refuses a NUL character outright), and
//! nothing written.

use converge_github::signature::{WebhookSecret, sign};
use converge_testkit::ServerProcess;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KEY: &str = "input-key";
const SECRET: &str = "input-secret";

async fn databases(dir: &std::path::Path) -> Vec<Vec<(&'static str, String)>> {
    converge_testkit::server_databases(dir, "input.db").await
}

fn serve(dir: &std::path::Path, database: &[(&'static str, String)]) -> ServerProcess {
    let mut env = database.to_vec();
    env.push(("CONVERGE_API_KEYS", format!("{KEY}:admin:ops")));
    env.push(("CONVERGE_RATE_LIMIT_ENABLED", "0".to_owned()));
    env.push(("CONVERGE_GITHUB_WEBHOOK_SECRET", SECRET.to_owned()));
    ServerProcess::start_with(env!("CARGO_BIN_EXE_converge"), dir, &env, &["--no-worker"])
}

async fn send(
    client: &reqwest::Client,
    server: &ServerProcess,
    method: reqwest::Method,
    path: &str,
    body: Option<&str>,
) -> (u16, Value) {
    let mut request = client
        .request(method, server.url(path))
        .header("x-api-key", KEY);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn message(answer: &Value) -> String {
    answer["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_answers_404_for_an_intent_id_holding_a_nul() {
    let dir = tempfile::tempdir().unwrap();
    for database in databases(dir.path()).await {
        let server = serve(dir.path(), &database);
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let signed_in = client
            .post(server.url("/dashboard/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("key={KEY}"))
            .send()
            .await
            .unwrap();
        let cookie = signed_in
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("converge_session="))
            .map(|v| v.split(';').next().unwrap_or_default().to_owned())
            .expect("a session cookie");
        for path in ["/dashboard/intents/%00", "/dashboard/intents/a%00b"] {
            let page = client
                .get(server.url(path))
                .header("cookie", &cookie)
                .send()
                .await
                .unwrap();
            assert_eq!(page.status().as_u16(), 404, "{path}");
            assert!(page.text().await.unwrap().contains("No intent"), "{path}");
        }
    }
}

/// serde reads a struct from an array of its fields in order: `[]` would be a body of
/// defaults. Every body of the API is a JSON object, and anything else is refused.
/// A number just past a bound is refused: JSON numbers are read exactly, so
/// 100.00000000000001 is not taken for 100 (found by the API fuzzing). The policy in force
/// does not change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_number_just_over_its_bound_is_a_400() {
    use reqwest::Method;
    let dir = tempfile::tempdir().unwrap();
    let database = converge_testkit::server_databases(dir.path(), "bound.db")
        .await
        .remove(0);
    let server = serve(dir.path(), &database);
    let client = reqwest::Client::new();
    for body in [
        r#"{"tenant_id": "acme", "max_risk_score": 100.00000000000001}"#,
        r#"{"tenant_id": "acme", "enforce_ratio": 1.0000000000000002}"#,
        r#"{"tenant_id": "acme", "max_damage_score": -0.000000000000000000001}"#,
    ] {
        let (status, answer) = send(
            &client,
            &server,
            Method::POST,
            "/v1/risk/policy",
            Some(body),
        )
        .await;
        assert_eq!(status, 400, "{body}: {answer}");
    }
    let (status, answer) = send(
        &client,
        &server,
        Method::POST,
        "/v1/risk/policy",
        Some(r#"{"tenant_id": "acme", "max_risk_score": 100}"#),
    )
    .await;
    assert_eq!((status, &answer["version"]), (200, &json!(1)), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_not_a_json_object_is_a_400() {
    use reqwest::Method;
    let dir = tempfile::tempdir().unwrap();
    for database in databases(dir.path()).await {
        let server = serve(dir.path(), &database);
        let client = reqwest::Client::new();
        let cases = [
            ("/v1/intents", r#"["array-id", "feature"]"#),
            ("/v1/intents", "\"feature\""),
            ("/v1/intents/any/validate", "[]"),
            ("/v1/queue/run", " [1]"),
            ("/v1/auth/keys/rotate", "[60]"),
        ];
        for (path, body) in cases {
            let (status, answer) = send(&client, &server, Method::POST, path, Some(body)).await;
            assert_eq!(status, 400, "{path} {body}: {answer}");
            assert!(
                message(&answer).contains("must be a JSON object"),
                "{path} {body}: {answer}"
            );
        }
        let (_, intents) = send(&client, &server, Method::GET, "/v1/intents", None).await;
        assert_eq!(intents["intents"], json!([]), "nothing was written");
        // A rotation with no body at all still works (its body is optional).
        let (status, answer) = send(
            &client,
            &server,
            Method::POST,
            "/v1/auth/keys/rotate",
            Some(""),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_character_is_a_400_naming_the_field_and_writes_nothing() {
    use reqwest::Method;
    let dir = tempfile::tempdir().unwrap();
    for database in databases(dir.path()).await {
        let server = serve(dir.path(), &database);
        let client = reqwest::Client::new();
        let (status, _) = send(
            &client,
            &server,
            Method::POST,
            "/v1/intents",
            Some(r#"{"id": "clean", "source": "feature"}"#),
        )
        .await;
        assert_eq!(status, 201, "{database:?}");

        for (method, path, body, field) in [
            (
                Method::POST,
                "/v1/intents",
                Some(r#"{"source": "a\u0000b"}"#),
                "source",
            ),
            (
                Method::POST,
                "/v1/intents",
                Some(r#"{"source": "ok", "semantic": {"title": "x\u0000"}}"#),
                "semantic.title",
            ),
            (
                Method::POST,
                "/v1/intents",
                Some(r#"{"source": "ok", "checks_required": ["lint", "te\u0000st"]}"#),
                "checks_required[1]",
            ),
            (
                Method::POST,
                "/v1/intents/clean/checks",
                Some(r#"{"name": "li\u0000nt", "state": "passed", "head_sha": "abcdef1"}"#),
                "name",
            ),
            (
                Method::POST,
                "/v1/queue/reset",
                Some(r#"{"intent_id": "cle\u0000an"}"#),
                "intent_id",
            ),
            (
                Method::POST,
                "/v1/merge/confirm",
                Some(r#"{"intent_id": "clean", "merged_commit": "\u0000"}"#),
                "merged_commit",
            ),
            (Method::GET, "/v1/intents/%00", None, "path"),
            (Method::GET, "/v1/events?tenant_id=%00", None, "tenant_id"),
            (
                Method::GET,
                "/v1/intents?tenant_id=a%00b",
                None,
                "tenant_id",
            ),
            (
                Method::GET,
                "/v1/queue/state?tenant_id=%00",
                None,
                "tenant_id",
            ),
        ] {
            let (status, answer) = send(&client, &server, method.clone(), path, body).await;
            assert_eq!(status, 400, "{database:?} {method} {path}: {answer}");
            assert!(
                message(&answer).contains(field) && message(&answer).contains("NUL"),
                "{method} {path}: {answer}"
            );
        }
        let (_, page) = send(&client, &server, Method::GET, "/v1/intents", None).await;
        let ids: Vec<&Value> = page["intents"]
            .as_array()
            .map(|list| list.iter().map(|i| &i["id"]).collect())
            .unwrap_or_default();
        assert_eq!(ids, vec![&json!("clean")], "{database:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_delivery_with_a_nul_character_is_kept_and_says_where_it_was_replaced() {
    let dir = tempfile::tempdir().unwrap();
    for database in databases(dir.path()).await {
        let server = serve(dir.path(), &database);
        let client = reqwest::Client::new();
        let payload = json!({
            "action": "opened",
            "number": 5,
            "pull_request": {
                "number": 5, "title": "Fix\u{0}it", "draft": false, "merged": false,
                "head": {"ref": "fix\u{0}branch", "sha": "a1b2c3d4"},
                "base": {"ref": "main", "sha": "base0"},
                "labels": []
            },
            "repository": {"full_name": "acme/nul"},
            "installation": {"id": 77},
            "sender": {"login": "octocat"}
        });
        let body = serde_json::to_vec(&payload).unwrap();
        let response = client
            .post(server.url("/integrations/github/webhook"))
            .header("x-github-event", "pull_request")
            .header("x-github-delivery", "nul-delivery")
            .header(
                "x-hub-signature-256",
                sign(&WebhookSecret::new(SECRET), &body),
            )
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 202, "{database:?}");

        let (_, intent) = send(
            &client,
            &server,
            reqwest::Method::GET,
            "/v1/intents/acme%2Fnul:pr-5",
            None,
        )
        .await;
        assert_eq!(
            intent["source"],
            json!("fix\u{fffd}branch"),
            "{database:?}: {intent}"
        );
        let (_, events) = send(
            &client,
            &server,
            reqwest::Method::GET,
            "/v1/events?type=webhook.received",
            None,
        )
        .await;
        let mut replaced: Vec<&str> = events["events"][0]["payload"]["nul_replaced"]
            .as_array()
            .map(|paths| paths.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        replaced.sort_unstable();
        assert_eq!(
            replaced,
            ["pull_request.head.ref", "pull_request.title"],
            "{database:?}: {events}"
        );
    }
}

/// Sends raw request bytes; the status line of the answer.
async fn raw_status(server: &ServerProcess, request: &[u8]) -> String {
    let address = server.url("").trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = vec![0u8; 256];
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut answer))
        .await
        .expect("no answer within 5 s: the server waited for the body")
        .unwrap();
    String::from_utf8_lossy(&answer[..read])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_or_encoded_body_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let database = vec![
        ("CONVERGE_DB_BACKEND", "sqlite".to_owned()),
        (
            "CONVERGE_DB_PATH",
            dir.path().join("size.db").display().to_string(),
        ),
    ];
    let server = serve(dir.path(), &database);
    // A declared 50 MB and not a byte of it sent: the answer comes without waiting for it.
    for path in ["/v1/intents", "/integrations/github/webhook"] {
        let request = format!(
            "POST {path} HTTP/1.1\r\nhost: converge\r\nx-api-key: {KEY}\r\n\
content-type: application/json\r\ncontent-length: 50000000\r\n\r\n"
        );
        assert_eq!(
            raw_status(&server, request.as_bytes()).await,
            "HTTP/1.1 413 Payload Too Large",
            "{path}"
        );
    }
    let request = format!(
        "POST /v1/intents HTTP/1.1\r\nhost: converge\r\nx-api-key: {KEY}\r\n\
content-type: application/json\r\ncontent-encoding: gzip\r\ncontent-length: 2\r\n\r\n{{}}"
    );
    assert_eq!(
        raw_status(&server, request.as_bytes()).await,
        "HTTP/1.1 415 Unsupported Media Type"
    );
}
