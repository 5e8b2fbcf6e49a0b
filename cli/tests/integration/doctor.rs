//! `converge doctor` tells the truth about a deployment's environment: the App's key secret
//! still empty, a webhook secret given by its ARN, GitHub unreachable (not blamed on the key),
//! and under `--local` a database that is down (reported beside the other checks, not a
//! migration error).

use serde_json::Value;

use crate::operator_cli::converge;

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["check"] == name))
        .unwrap_or_else(|| panic!("no {name} check in {report}"))
}

async fn secret(what: &str, value: Option<&str>) -> String {
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    aws_sdk_secretsmanager::Client::new(&aws)
        .create_secret()
        .name(format!("converge/doctor/{what}/{}", std::process::id()))
        .set_secret_string(value.map(str::to_owned))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}", aws_sdk_secretsmanager::error::DisplayErrorContext(e)))
        .arn()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn doctor_reports_an_empty_app_key_secret_and_reads_the_webhook_secret_by_arn() {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "AWS_ENDPOINT_URL is not set: run scripts/test.sh, which starts the AWS emulator"
    );
    let dir = tempfile::tempdir().unwrap();
    let app_key = secret("app-key", None).await;
    let webhook = secret("webhook", Some("old-secret,new-secret")).await;
    let env = [
        (
            "CONVERGE_DB_PATH",
            dir.path().join("d.db").display().to_string(),
        ),
        ("CONVERGE_AUTH_REQUIRED", "0".to_owned()),
        ("CONVERGE_GITHUB_APP_ID", "7".to_owned()),
        (
            "CONVERGE_GITHUB_APP_PRIVATE_KEY_SECRET_ARN",
            app_key.clone(),
        ),
        ("CONVERGE_GITHUB_WEBHOOK_SECRET_ARN", webhook.clone()),
    ];
    let run = converge(&["--local", "--json", "doctor"], &env);
    assert_eq!(run.code, 3, "{}", run.stderr);
    let report = run.json();
    let github = check(&report, "github_app");
    assert_eq!(github["status"], "fail", "{report}");
    let detail = github["detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with("App key not set") && detail.contains("holds no value yet"),
        "{github}"
    );
    assert!(
        github["hint"]
            .as_str()
            .unwrap_or_default()
            .contains("put-secret-value"),
        "{github}"
    );
    let hook = check(&report, "webhook_secret");
    assert_eq!(hook["status"], "pass", "{report}");
    assert_eq!(
        hook["detail"],
        format!("2 secret(s) in {webhook}"),
        "{hook}"
    );
    // The API itself is up with the App waiting for its key.
    assert_eq!(check(&report, "api")["status"], "pass", "{report}");
}

#[test]
fn doctor_blames_an_unreachable_github_on_the_network_not_on_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let (private_pem, _) = converge_testkit::github_fake::app_key_pair();
    let env = [
        (
            "CONVERGE_DB_PATH",
            dir.path().join("d.db").display().to_string(),
        ),
        ("CONVERGE_AUTH_REQUIRED", "0".to_owned()),
        ("CONVERGE_GITHUB_APP_ID", "7".to_owned()),
        ("CONVERGE_GITHUB_APP_PRIVATE_KEY", private_pem),
        // Nothing listens on port 9 (discard) here.
        ("CONVERGE_GITHUB_API_URL", "http://127.0.0.1:9".to_owned()),
    ];
    let run = converge(&["--local", "--json", "doctor"], &env);
    let report = run.json();
    let github = check(&report, "github_app");
    let detail = github["detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with("GitHub unreachable at http://127.0.0.1:9"),
        "{github}"
    );
    assert!(!detail.contains("JWT"), "{github}");
}

#[test]
fn local_doctor_with_the_database_down_reports_it_among_the_checks() {
    let env = [
        ("CONVERGE_DB_BACKEND", "postgres".to_owned()),
        (
            "CONVERGE_PG_DSN",
            "postgres://converge@127.0.0.1:9/converge".to_owned(),
        ),
    ];
    let run = converge(&["--local", "--json", "doctor"], &env);
    assert_eq!(run.code, 3, "{}", run.stderr);
    let report = run.json();
    assert_eq!(report["overall"], "fail");
    let api = check(&report, "api");
    assert_eq!(api["status"], "fail", "{report}");
    assert!(
        api["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot start"),
        "{api}"
    );
    let database = check(&report, "database");
    assert_eq!(database["status"], "fail", "{report}");
    // The other checks still ran.
    check(&report, "github_app");
    check(&report, "webhook_secret");
}
