//! The policy a server decides by: the file `CONVERGE_POLICY_PATH` names, else
//! `.converge/policy.json` in its working directory (where the original looked first), else the
//! built-in policy; a file that does not validate stops the server before it serves anything,
//! naming the file and the field.

use std::time::{Duration, Instant};

use converge_testkit::ServerProcess;
use serde_json::{Value, json};

const KEY: &str = "policy-key";

fn serve(dir: &std::path::Path, more: &[(&'static str, String)]) -> ServerProcess {
    let mut env = vec![
        (
            "CONVERGE_DB_PATH",
            dir.join("state.db").display().to_string(),
        ),
        ("CONVERGE_API_KEYS", format!("{KEY}:admin:ops")),
        ("CONVERGE_RATE_LIMIT_ENABLED", "0".to_owned()),
    ];
    env.extend_from_slice(more);
    ServerProcess::start_with(env!("CARGO_BIN_EXE_converge"), dir, &env, &["--no-worker"])
}

/// The target an intent created without one is given.
async fn default_target(server: &ServerProcess) -> Value {
    let client = reqwest::Client::new();
    let response = client
        .post(server.url("/v1/intents"))
        .header("x-api-key", KEY)
        .json(&json!({"source": "feature/policy"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let created: Value = response.json().await.unwrap();
    let id = created["intent_id"].as_str().unwrap_or_default();
    let intent: Value = client
        .get(server.url(&format!("/v1/intents/{id}")))
        .header("x-api-key", KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    intent["target"].clone()
}

fn write_policy(path: &std::path::Path, default_target: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let policy = json!({"queue": {"default_target": default_target}});
    std::fs::write(path, policy.to_string()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_decides_by_the_policy_file_it_is_given_or_finds() {
    // None given, none found: the built-in policy.
    let bare = tempfile::tempdir().unwrap();
    assert_eq!(default_target(&serve(bare.path(), &[])).await, "main");

    // A bare `policy.json` in the working directory may be anything (an access policy of the
    // repository, say): it is not taken for Converge's, and does not stop the server.
    let found = tempfile::tempdir().unwrap();
    std::fs::write(
        found.path().join("policy.json"),
        r#"{"Version": "2012-10-17"}"#,
    )
    .unwrap();
    assert_eq!(default_target(&serve(found.path(), &[])).await, "main");
    // `.converge/policy.json` is Converge's.
    write_policy(&found.path().join(".converge/policy.json"), "develop");
    assert_eq!(default_target(&serve(found.path(), &[])).await, "develop");

    // Named: that file, whatever the working directory holds.
    let named = tempfile::tempdir().unwrap();
    let file = named.path().join("elsewhere/release-policy.json");
    write_policy(&file, "release");
    let server = serve(
        found.path(),
        &[("CONVERGE_POLICY_PATH", file.display().to_string())],
    );
    assert_eq!(default_target(&server).await, "release");
}

/// Runs `converge serve` until it exits (at most a minute); its exit status and stderr.
fn serve_until_exit(dir: &std::path::Path, policy_path: &str) -> (bool, String) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_converge"))
        .args(["serve", "--port", "0", "--no-worker"])
        .current_dir(dir)
        .env("CONVERGE_DB_PATH", dir.join("state.db"))
        .env("CONVERGE_API_KEYS", format!("{KEY}:admin:ops"))
        .env("CONVERGE_POLICY_PATH", policy_path)
        .env_remove("CONVERGE_DB_BACKEND")
        .env_remove("CONVERGE_PG_DSN")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("converge serve kept running on the policy file {policy_path}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status.success(), stderr)
}

#[test]
fn a_policy_file_that_does_not_validate_or_is_missing_stops_the_server_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let invalid = dir.path().join("policy.json");
    std::fs::write(
        &invalid,
        json!({"profiles": {"high": {"containment_min": 7}}}).to_string(),
    )
    .unwrap();
    let (ok, stderr) = serve_until_exit(dir.path(), &invalid.display().to_string());
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains(&invalid.display().to_string())
            && stderr.contains("profiles.high.containment_min"),
        "{stderr}"
    );

    let missing = dir.path().join("no-such-policy.json");
    let (ok, stderr) = serve_until_exit(dir.path(), &missing.display().to_string());
    assert!(!ok, "{stderr}");
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
    // Nothing was served on a policy other than the one given: no store was even made.
    assert!(!dir.path().join("state.db").exists());
}
