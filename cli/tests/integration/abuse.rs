//! A guessing client and a hostile page against `converge serve`: failed authentications back
//! off with a 429 and `Retry-After`, the dashboard's cookie holds an opaque session (ended by
//! signing out), a sign-in posted from another site is refused, nothing inline is allowed by
//! the Content-Security-Policy, and the cookie is `Secure` behind HTTPS.

use converge_testkit::ServerProcess;
use reqwest::header::{HeaderMap, SET_COOKIE};

const KEY: &str = "abuse-key-valid";
/// `CONVERGE_AUTH_FREE_FAILURES` of the server under test (the default is 10).
const FREE_FAILURES: usize = 3;

fn serve(dir: &std::path::Path) -> ServerProcess {
    let env = vec![
        ("CONVERGE_DB_BACKEND", "sqlite".to_owned()),
        (
            "CONVERGE_DB_PATH",
            dir.join("abuse.db").display().to_string(),
        ),
        ("CONVERGE_API_KEYS", format!("{KEY}:viewer:watcher")),
        ("CONVERGE_RATE_LIMIT_ENABLED", "0".to_owned()),
        ("CONVERGE_AUTH_FREE_FAILURES", FREE_FAILURES.to_string()),
    ];
    ServerProcess::start_with(env!("CARGO_BIN_EXE_converge"), dir, &env, &["--no-worker"])
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// `GET /v1/intents` as `key` from `address` (through a proxy on this machine, which names
/// the client in `X-Forwarded-For`): status and `Retry-After`.
async fn list(server: &ServerProcess, key: &str, address: &str) -> (u16, Option<u64>) {
    let response = client()
        .get(server.url("/v1/intents"))
        .header("x-api-key", key)
        .header("x-forwarded-for", address)
        .send()
        .await
        .unwrap();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    (response.status().as_u16(), retry_after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_guessing_keys_is_made_to_wait_and_others_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path());
    let guesser = "203.0.113.9";
    // The free failures, and the one past them that starts the wait, are answered 401.
    for n in 0..=FREE_FAILURES {
        let (status, _) = list(&server, &format!("guess{n:04}-{n}"), guesser).await;
        assert_eq!(status, 401, "guess {n}");
    }
    // Past the free attempts: 429 with a wait, even for a valid key from that address.
    let (status, retry_after) = list(&server, "guess9999", guesser).await;
    assert_eq!(status, 429);
    assert!(retry_after.is_some_and(|s| s >= 1), "{retry_after:?}");
    assert_eq!(list(&server, KEY, guesser).await.0, 429);
    // Another client is not held up.
    assert_eq!(list(&server, KEY, "198.51.100.4").await.0, 200);

    // One key prefix guessed from many addresses is held back too.
    for n in 0..=FREE_FAILURES {
        let address = format!("192.0.2.{n}");
        assert_eq!(list(&server, &format!("spray-{n}"), &address).await.0, 401);
    }
    assert_eq!(list(&server, "spray-last", "192.0.2.200").await.0, 429);

    // The wait passes.
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    assert_eq!(list(&server, KEY, guesser).await.0, 200);
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("converge_session="))
        .map(str::to_owned)
}

async fn sign_in(server: &ServerProcess, extra: &[(&str, &str)]) -> reqwest::Response {
    let mut request = client()
        .post(server.url("/dashboard/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("key={KEY}"));
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

async fn dashboard_with(server: &ServerProcess, cookie: &str) -> String {
    client()
        .get(server.url("/dashboard"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_keeps_an_opaque_session_and_refuses_a_forged_sign_in() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path());

    let signed_in = sign_in(&server, &[("origin", &server.url(""))]).await;
    assert_eq!(signed_in.status().as_u16(), 303);
    let set_cookie = session_cookie(signed_in.headers()).expect("a session cookie");
    assert!(
        !set_cookie.contains(KEY),
        "the cookie holds the key: {set_cookie}"
    );
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"));
    assert!(set_cookie.contains("Max-Age="), "{set_cookie}");
    assert!(!set_cookie.contains("Secure"), "plain HTTP: {set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    assert!(dashboard_with(&server, &cookie).await.contains("Sign out"));

    // Signing out ends the session on the server: the old cookie no longer works.
    let signed_out = client()
        .post(server.url("/dashboard/logout"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(signed_out.status().as_u16(), 303);
    let page = dashboard_with(&server, &cookie).await;
    assert!(
        page.contains("form") && !page.contains("Sign out"),
        "{page}"
    );

    // A sign-in posted by another site's page is refused.
    for forged in [
        [("origin", "https://evil.example")],
        [("sec-fetch-site", "cross-site")],
    ] {
        let refused = sign_in(&server, &forged).await;
        assert_eq!(refused.status().as_u16(), 403, "{forged:?}");
        assert!(session_cookie(refused.headers()).is_none());
    }

    // Behind HTTPS (API Gateway, a proxy), the cookie is Secure.
    let secure = sign_in(&server, &[("x-forwarded-proto", "https")]).await;
    let set_cookie = session_cookie(secure.headers()).expect("a session cookie");
    assert!(set_cookie.contains("; Secure"), "{set_cookie}");

    // Nothing inline is allowed; the stylesheet and the script come from the server.
    let page = client().get(server.url("/dashboard")).send().await.unwrap();
    let policy = page
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        !policy.contains("unsafe-inline") && policy.contains("script-src 'self'"),
        "{policy}"
    );
    for (asset, kind) in [
        ("/dashboard/assets/style.css", "text/css"),
        ("/dashboard/assets/live.js", "text/javascript"),
    ] {
        let response = client().get(server.url(asset)).send().await.unwrap();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert_eq!(response.status().as_u16(), 200, "{asset}");
        assert!(content_type.starts_with(kind), "{asset}: {content_type}");
    }
}
