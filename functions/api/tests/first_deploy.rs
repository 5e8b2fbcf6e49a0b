#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a panic is how a test fails.

//! The api function right after a first `sam deploy`: the template's settings, the database's
//! credentials in RDS's managed master-user secret (user name and password only, the place
//! from parameters), and the GitHub App's key secret created with no value. The binary runs
//! under a Lambda runtime API as on AWS, against the AWS emulator `scripts/test.sh` starts.
//! It must come up degraded rather than fail: health, the API and the dashboard answer,
//! readiness says the App key is not set, and the key is in use once it is put.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use converge_testkit::lambda_runtime::LambdaRuntime;
use serde_json::{Value, json};

const KEY: &str = "first-deploy-admin-key";
const PATIENCE: Duration = Duration::from_secs(60);

fn sdk_error(e: impl std::error::Error + 'static) -> String {
    aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string()
}

/// A secret named after the test and the process; `None` creates it with no value, as the
/// template creates the App key's secret.
async fn secret(
    manager: &aws_sdk_secretsmanager::Client,
    what: &str,
    value: Option<&str>,
) -> String {
    manager
        .create_secret()
        .name(format!(
            "converge/first-deploy/{what}/{}",
            std::process::id()
        ))
        .set_secret_string(value.map(str::to_owned))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}", sdk_error(e)))
        .arn()
        .unwrap_or_default()
        .to_owned()
}

/// An API Gateway HTTP API (payload 2.0) request, as API Gateway hands it to the function.
fn request(
    method: &str,
    path: &str,
    headers: Value,
    cookies: &[String],
    body: Option<&str>,
) -> Value {
    json!({
        "version": "2.0",
        "routeKey": "ANY /{proxy+}",
        "rawPath": path,
        "rawQueryString": "",
        "cookies": cookies,
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012", "apiId": "first-deploy",
            "domainName": "first-deploy.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "first-deploy",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1",
                     "sourceIp": "192.0.2.10", "userAgent": "first-deploy-test"},
            "requestId": "first-deploy", "routeKey": "ANY /{proxy+}", "stage": "$default",
            "time": "03/Dec/2026:18:00:00 +0000", "timeEpoch": 1796320800000u64
        },
        "body": body,
        "isBase64Encoded": false
    })
}

struct Function(Child);

impl Drop for Function {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn call(runtime: &LambdaRuntime, event: Value) -> Value {
    runtime
        .invoke(event, PATIENCE)
        .await
        .unwrap_or_else(|e| panic!("the api function failed: {e}"))
}

fn ready_details(answer: &Value) -> Value {
    assert_eq!(answer["statusCode"], 200, "{answer}");
    serde_json::from_str(answer["body"].as_str().unwrap_or_default()).unwrap()
}

async fn put(manager: &aws_sdk_secretsmanager::Client, arn: &str, value: &str) {
    manager
        .put_secret_value()
        .secret_id(arn)
        .secret_string(value)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}", sdk_error(e)));
}

/// Asks for readiness until `done` holds of the answer (for at most 20 s); answers the last.
async fn ready_once(runtime: &LambdaRuntime, done: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..100 {
        last = ready_details(
            &call(
                runtime,
                request("GET", "/health/ready", json!({}), &[], None),
            )
            .await,
        );
        if done(&last) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_function_comes_up_without_the_app_key_and_picks_it_up_once_put() {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "AWS_ENDPOINT_URL is not set: run scripts/test.sh, which starts the AWS emulator"
    );
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let manager = aws_sdk_secretsmanager::Client::new(&aws);
    let database = converge_testkit::fresh_pg_database().await;
    // postgres://user@host:port/name: what RDS's managed secret does not hold comes from the
    // DatabaseHost, DatabasePort and DatabaseName parameters.
    let (server, name) = database.rsplit_once('/').unwrap();
    let (user, place) = server
        .trim_start_matches("postgres://")
        .split_once('@')
        .unwrap();
    let (host, port) = place.split_once(':').unwrap();
    let managed = json!({"username": user, "password": "unused-with-trust-auth"}).to_string();
    let dsn_secret = secret(&manager, "dsn", Some(&managed)).await;
    let webhook_secret = secret(&manager, "webhook", Some("generated-by-the-template")).await;
    let app_key_secret = secret(&manager, "app-key", None).await;
    let api_keys_secret = secret(
        &manager,
        "api-keys",
        Some(&format!("{KEY}:admin:first-operator")),
    )
    .await;
    let queue = converge_testkit::sqs::queue_with_dlq("first-deploy", 1800, 3).await;

    let runtime = LambdaRuntime::start().await;
    // The template's Globals and the api function's variables, at the parameters' defaults
    // (GithubAppId has none: a deployment names its App).
    let template_defaults = [
        ("CONVERGE_DB_BACKEND", "postgres".to_owned()),
        ("CONVERGE_GITHUB_WEBHOOK_SECRET_ARN", webhook_secret),
        (
            "CONVERGE_GITHUB_APP_PRIVATE_KEY_SECRET_ARN",
            app_key_secret.clone(),
        ),
        ("CONVERGE_PG_DSN_SECRET_ARN", dsn_secret),
        ("CONVERGE_PG_HOST", host.to_owned()),
        ("CONVERGE_PG_PORT", port.to_owned()),
        ("CONVERGE_PG_DATABASE", name.to_owned()),
        ("CONVERGE_QUEUE_URL", queue.url.clone()),
        ("CONVERGE_DLQ_URL", queue.dlq_url.clone()),
        ("CONVERGE_WORKER_MAX_RETRIES", "3".to_owned()),
        ("CONVERGE_WORKER_LEASE_TTL", "60".to_owned()),
        ("CONVERGE_GITHUB_APP_ID", "424242".to_owned()),
        (
            "CONVERGE_GITHUB_API_URL",
            "https://api.github.com".to_owned(),
        ),
        ("CONVERGE_GITHUB_CHECK_MAP", String::new()),
        ("CONVERGE_GITHUB_DEFAULT_TENANT", String::new()),
        ("CONVERGE_API_KEYS", String::new()),
        ("CONVERGE_RATE_LIMIT_RPM", "120".to_owned()),
        ("CONVERGE_LOG", "info".to_owned()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", String::new()),
        ("CONVERGE_AUTH_REQUIRED", "1".to_owned()),
        ("CONVERGE_RATE_LIMIT_ENABLED", "1".to_owned()),
        ("CONVERGE_METRICS_TOKEN", String::new()),
        ("CONVERGE_METRICS_TENANT_LABELS", "0".to_owned()),
        ("CONVERGE_AUTH_FREE_FAILURES", "10".to_owned()),
        ("CONVERGE_WEBHOOK_MAX_BODY_BYTES", "1048576".to_owned()),
        ("CONVERGE_GITHUB_INSTALLATION_ID", String::new()),
        ("CONVERGE_GITHUB_PUBLISH_STATUS", "0".to_owned()),
        // 300 by default; a short lifetime lets the test see the key picked up.
        ("CONVERGE_SECRETS_TTL_SECONDS", "1".to_owned()),
        ("CONVERGE_DB_POOL_SIZE", "4".to_owned()),
        ("CONVERGE_WORKER_SKIP_CHECKS", "0".to_owned()),
        ("CONVERGE_API_KEYS_SECRET_ARN", api_keys_secret),
    ];
    let _function = Function(
        Command::new(env!("CARGO_BIN_EXE_api"))
            .env_remove("CONVERGE_PG_DSN")
            .envs(runtime.environment("converge-api"))
            .envs(template_defaults)
            .stdout(Stdio::null())
            .spawn()
            .expect("the api binary starts"),
    );

    let live = call(
        &runtime,
        request("GET", "/health/live", json!({}), &[], None),
    )
    .await;
    assert_eq!(live["statusCode"], 200, "{live}");

    let ready = ready_details(
        &call(
            &runtime,
            request("GET", "/health/ready", json!({}), &[], None),
        )
        .await,
    );
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert_eq!(ready["details"]["database"], "ok", "{ready}");
    let problem = ready["details"]["github_app"].as_str().unwrap_or_default();
    assert!(problem.starts_with("App key not set"), "{ready}");

    let intents = call(
        &runtime,
        request("GET", "/v1/intents", json!({"x-api-key": KEY}), &[], None),
    )
    .await;
    assert_eq!(intents["statusCode"], 200, "{intents}");
    let listed: Value = serde_json::from_str(intents["body"].as_str().unwrap()).unwrap();
    assert_eq!(listed["intents"], json!([]), "{listed}");

    // An operator signs in to the dashboard and sees the queue.
    let signed_in = call(
        &runtime,
        request(
            "POST",
            "/dashboard/login",
            json!({"content-type": "application/x-www-form-urlencoded", "x-forwarded-proto": "https"}),
            &[],
            Some(&format!("key={KEY}")),
        ),
    )
    .await;
    assert_eq!(signed_in["statusCode"], 303, "{signed_in}");
    let session: Vec<String> = signed_in["cookies"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c.as_str()?.split(';').next().map(str::to_owned))
        .collect();
    assert!(!session.is_empty(), "no session cookie: {signed_in}");
    let page = call(
        &runtime,
        request(
            "GET",
            "/dashboard",
            json!({"x-forwarded-proto": "https"}),
            &session,
            None,
        ),
    )
    .await;
    assert_eq!(page["statusCode"], 200, "{page}");
    assert!(
        page["body"]
            .as_str()
            .unwrap_or_default()
            .contains("Sign out"),
        "{page}"
    );

    // First by mistake something that is no key: refused, and said so; the process stays up.
    put(&manager, &app_key_secret, "-----BEGIN NOTHING-----").await;
    let last = ready_once(&runtime, |ready| {
        ready["details"]["github_app"]
            .as_str()
            .is_some_and(|p| p.contains("not an RSA PEM key"))
    })
    .await;
    assert!(
        last["details"]["github_app"]
            .as_str()
            .is_some_and(|p| p.contains("not an RSA PEM key")),
        "the refused value is not reported: {last}"
    );

    // Then the App's key: a value other than the refused one is used at once (within the
    // secrets' lifetime, not after the pause a refused value waits).
    let (private_pem, _) = converge_testkit::github_fake::app_key_pair();
    put(&manager, &app_key_secret, &private_pem).await;
    let last = ready_once(&runtime, |ready| ready["status"] == "ok").await;
    assert_eq!(last["status"], "ok", "the key was not picked up: {last}");
    assert!(last["details"].get("github_app").is_none(), "{last}");

    drop(_function);
    converge_testkit::drop_pg_database(&database).await;
}
