//! The operator commands of the `converge` binary against a live `converge serve` (SQLite,
//! a real git repository, no embedded worker so that only the commands move the queue).
//! Every operator command runs; `--json` answers are snapshot-tested (times, commits, trace
//! ids and keys normalised); exit codes are checked: 0 ok, 1 error, 2 usage, 3 a check
//! failed. `--local` runs the runbook's emergency commands on the database with the API down.

use std::path::Path;
use std::process::Command;

use converge_testkit::ServerProcess;
use converge_testkit::git::{commit_file, docs_and_clash, git};
use serde_json::Value;

const KEY: &str = "ops-key";

pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }
}

/// Runs `converge args…` with `env` (and none of the caller's Converge settings).
pub(crate) fn converge(args: &[&str], env: &[(&str, String)]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_converge"));
    command.args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("CONVERGE_") || name == "NO_COLOR" {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run converge: {e}"));
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs `converge args…` against `server`'s API with `key`.
pub(crate) fn converge_as(server: &ServerProcess, key: &str, args: &[&str]) -> Run {
    converge(
        args,
        &[
            ("CONVERGE_API_URL", server.url("")),
            ("CONVERGE_API_KEY", key.to_owned()),
        ],
    )
}

/// Replaces what changes from run to run: times, commit and tree hashes, trace and event ids,
/// keys, sequence numbers.
fn normalise(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let volatile = k.ends_with("_at")
                        || k.ends_with("_sha")
                        || matches!(
                            k.as_str(),
                            "timestamp"
                                | "trace_id"
                                | "new_key"
                                | "seq"
                                | "merged_commit"
                                | "event_id"
                                | "worker"
                        )
                        || (k == "id" && v.as_str().is_some_and(|s| s.len() == 24));
                    let replaced = if volatile && !v.is_null() {
                        Value::String(format!("[{k}]"))
                    } else {
                        normalise(v)
                    };
                    (k.clone(), replaced)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(normalise).collect()),
        // A commit named in free text (a merge's detail).
        Value::String(s) if s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Value::String("[commit]".to_owned())
        }
        other => other.clone(),
    }
}

fn snapshot(name: &str, run: &Run) {
    assert_eq!(run.code, 0, "{name}: {}", run.stderr);
    insta::assert_json_snapshot!(name, normalise(&run.json()));
}

fn server(repo: &Path, db: &Path) -> ServerProcess {
    ServerProcess::start_with(
        env!("CARGO_BIN_EXE_converge"),
        repo,
        &[
            ("CONVERGE_DB_PATH", db.display().to_string()),
            ("CONVERGE_REPO_PATH", repo.display().to_string()),
            ("CONVERGE_API_KEYS", format!("{KEY}:admin:ops")),
            // CI never reports here: the queue round judges the rest.
            ("CONVERGE_WORKER_SKIP_CHECKS", "1".to_owned()),
        ],
        &["--no-worker"],
    )
}

#[test]
fn every_operator_command_works_against_a_live_server() {
    let repo = tempfile::tempdir().unwrap();
    docs_and_clash(repo.path());
    git(
        repo.path(),
        &["checkout", "-q", "-b", "feature/more", "main"],
    );
    commit_file(repo.path(), "docs/more.md", "# More\n", "more");
    git(repo.path(), &["checkout", "-q", "--detach", "main"]);
    let data = tempfile::tempdir().unwrap();
    let db = data.path().join("state.db");
    let server = server(repo.path(), &db);
    let env = [
        ("CONVERGE_API_URL", server.url("")),
        ("CONVERGE_API_KEY", KEY.to_owned()),
    ];
    let run = |args: &[&str]| converge(args, &env);

    // Intents.
    snapshot(
        "intent_create",
        &run(&[
            "--json",
            "intent",
            "create",
            "--source",
            "feature/docs",
            "--intent-id",
            "docs",
        ]),
    );
    snapshot(
        "intent_create_more",
        &run(&[
            "--json",
            "intent",
            "create",
            "--source",
            "feature/more",
            "--intent-id",
            "more",
            "--priority",
            "4",
        ]),
    );
    snapshot(
        "intent_create_dependent",
        &run(&[
            "intent",
            "create",
            "--json",
            "--source",
            "feature/clash",
            "--intent-id",
            "clash",
            "--priority",
            "5",
            "--depends-on",
            "docs",
        ]),
    );
    snapshot("intent_list", &run(&["--json", "intent", "list"]));
    snapshot(
        "intent_show",
        &run(&["--json", "intent", "show", "--intent-id", "docs"]),
    );
    let table = run(&["intent", "list"]);
    assert_eq!(table.code, 0, "{}", table.stderr);
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("STATUS"),
        "{table:?}",
        table = table.stdout
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("docs") && l.contains("READY")),
        "{}",
        table.stdout
    );
    assert!(
        !table.stdout.contains('\u{1b}'),
        "no colour when stdout is not a terminal"
    );

    // Simulation: the clean change merges, the clash does not (exit 3).
    snapshot(
        "simulate_clean",
        &run(&["--json", "simulate", "--intent-id", "docs"]),
    );
    let clash = run(&["--json", "simulate", "--intent-id", "clash"]);
    assert_eq!(clash.code, 3, "{}", clash.stderr);
    assert_eq!(
        clash.json()["conflicts"],
        serde_json::json!(["src/app/main.rs"])
    );

    // Validation: CI has not reported, so the change is blocked (exit 3); an admin may skip.
    let blocked = run(&["--json", "validate", "--intent-id", "docs"]);
    assert_eq!(blocked.code, 3, "{}", blocked.stderr);
    assert!(
        blocked.stderr.contains("docs blocked: Checks pending"),
        "{}",
        blocked.stderr
    );
    snapshot("validate_blocked", &blocked_as_ok(blocked));
    snapshot(
        "validate_skip_checks",
        &run(&["--json", "validate", "--intent-id", "docs", "--skip-checks"]),
    );

    // A merge done by hand outside Converge is recorded.
    snapshot(
        "merge_confirm",
        &run(&[
            "--json",
            "merge",
            "confirm",
            "--intent-id",
            "docs",
            "--merged-commit",
            "abc123",
        ]),
    );

    // An operator pulls `clash` from the queue, and resets `more` and its queue's lease.
    snapshot(
        "intent_status",
        &run(&[
            "--json",
            "intent",
            "status",
            "--intent-id",
            "clash",
            "--status",
            "REJECTED",
        ]),
    );
    snapshot(
        "queue_reset",
        &run(&[
            "--json",
            "queue",
            "reset",
            "--intent-id",
            "more",
            "--clear-lock",
        ]),
    );
    // The queue: a round with auto-confirm merges `more`.
    snapshot(
        "queue_inspect",
        &run(&["--json", "queue", "inspect", "--only-actionable"]),
    );
    snapshot("queue_state", &run(&["--json", "queue", "state"]));
    snapshot(
        "queue_run",
        &run(&[
            "--json",
            "queue",
            "run",
            "--auto-confirm",
            "--max-retries",
            "1",
        ]),
    );
    snapshot(
        "intent_events",
        &run(&[
            "--json",
            "intent",
            "events",
            "--intent-id",
            "docs",
            "--limit",
            "3",
        ]),
    );
    snapshot(
        "audit_events",
        &run(&["--json", "audit", "events", "--type", "intent.merged"]),
    );

    // Risk and flags.
    snapshot(
        "risk_review",
        &run(&["--json", "risk", "review", "--intent-id", "docs"]),
    );
    snapshot("risk_gate", &run(&["--json", "risk", "gate"]));
    snapshot(
        "flags_set",
        &run(&[
            "--json",
            "flags",
            "set",
            "risk_auto_classify",
            "--enabled",
            "false",
        ]),
    );
    snapshot("flags_list", &run(&["--json", "flags", "list"]));

    // Doctor: the API and the database are fine; nothing configured for GitHub warns.
    let doctor = converge(
        &["--json", "doctor"],
        &[
            ("CONVERGE_API_URL", server.url("")),
            ("CONVERGE_DB_PATH", db.display().to_string()),
        ],
    );
    let doctor = Run {
        stdout: doctor.stdout.replace(&server.url(""), "[api]"),
        ..doctor
    };
    snapshot("doctor", &doctor);

    // Keys: the rotated key works at once, the old one for its grace period.
    let rotated = run(&["--json", "keys", "rotate", "--grace-period-seconds", "60"]);
    snapshot("keys_rotate", &rotated);
    let new_key = rotated.json()["new_key"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let with_new = converge(
        &["intent", "show", "--intent-id", "docs"],
        &[
            ("CONVERGE_API_URL", server.url("")),
            ("CONVERGE_API_KEY", new_key),
        ],
    );
    assert_eq!(with_new.code, 0, "{}", with_new.stderr);
    assert!(with_new.stdout.contains("MERGED"), "{}", with_new.stdout);

    // Errors: one line with the API's code, exit 1.
    let missing = run(&["intent", "show", "--intent-id", "nope"]);
    assert_eq!(missing.code, 1);
    assert_eq!(
        missing.stderr.trim(),
        "error: not_found: intent 'nope' not found (HTTP 404)"
    );
    let anonymous = converge(&["intent", "list"], &[("CONVERGE_API_URL", server.url(""))]);
    assert_eq!(anonymous.code, 1);
    assert!(
        anonymous.stderr.contains("unauthenticated") && anonymous.stderr.contains("--api-key"),
        "{}",
        anonymous.stderr
    );
    assert_eq!(anonymous.stderr.lines().count(), 1, "{}", anonymous.stderr);

    // `--local` with the API down: the runbook's lease reset and inspection.
    drop(server);
    let local_env = [("CONVERGE_DB_PATH", db.display().to_string())];
    let reset = converge(
        &[
            "--local",
            "--json",
            "queue",
            "reset",
            "--intent-id",
            "any",
            "--clear-lock",
        ],
        &local_env,
    );
    snapshot("local_queue_reset_any", &reset);
    let inspect = converge(
        &["--local", "queue", "inspect", "--status", "REJECTED"],
        &local_env,
    );
    assert_eq!(inspect.code, 0, "{}", inspect.stderr);
    assert!(inspect.stdout.contains("clash"), "{}", inspect.stdout);
}

/// A blocked validation's answer, for its snapshot (the command itself exits 3).
fn blocked_as_ok(run: Run) -> Run {
    Run { code: 0, ..run }
}

#[test]
fn network_and_usage_errors_say_what_to_fix() {
    let refused = converge(
        &["intent", "list"],
        &[("CONVERGE_API_URL", "http://127.0.0.1:9".to_owned())],
    );
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains("cannot connect (check --api-url"),
        "{}",
        refused.stderr
    );
    let scheme = converge(&["--api-url", "ftp://x", "intent", "list"], &[]);
    assert_eq!(scheme.code, 1);
    assert!(
        scheme.stderr.contains("must start with https://"),
        "{}",
        scheme.stderr
    );
    let usage = converge(&["queue", "reset"], &[]);
    assert_eq!(usage.code, 2, "{}", usage.stderr);
    assert!(usage.stderr.contains("--intent-id"), "{}", usage.stderr);
    let doctor = converge(
        &["--json", "doctor"],
        &[("CONVERGE_API_URL", "http://127.0.0.1:9".to_owned())],
    );
    assert_eq!(doctor.code, 3, "{}", doctor.stderr);
    assert_eq!(doctor.json()["overall"], "fail");
}

#[test]
fn help_completions_and_the_man_page_cover_every_command() {
    let help = converge(&["--help"], &[]);
    assert_eq!(help.code, 0);
    for command in [
        "intent",
        "simulate",
        "validate",
        "merge",
        "queue",
        "audit",
        "risk",
        "policy",
        "keys",
        "flags",
        "doctor",
        "completions",
        "man",
        "migrate",
        "projections",
        "backfill",
        "serve",
        "worker",
        "demo",
    ] {
        assert!(
            help.stdout
                .lines()
                .any(|l| l.trim_start().starts_with(command)),
            "{command} missing from --help"
        );
    }
    // Every subcommand answers --help (that each has text for itself and every option is
    // checked on the definitions, in the binary's unit tests).
    for path in [
        vec!["intent", "create"],
        vec!["queue", "run"],
        vec!["queue", "reset"],
        vec!["keys", "rotate"],
        vec!["flags", "set"],
    ] {
        let mut args = path.clone();
        args.push("--help");
        let help = converge(&args, &[]);
        assert_eq!(help.code, 0, "{path:?}");
        assert!(help.stdout.contains("Usage: converge"), "{path:?}");
    }
    for shell in ["bash", "zsh", "fish"] {
        let script = converge(&["completions", shell], &[]);
        assert_eq!(script.code, 0, "{shell}: {}", script.stderr);
        assert!(
            script.stdout.contains("queue") && script.stdout.contains("only-actionable"),
            "{shell}"
        );
    }
    let man = converge(&["man"], &[]);
    assert_eq!(man.code, 0);
    assert!(
        man.stdout.starts_with(".ie") || man.stdout.contains(".TH converge 1"),
        "{}",
        man.stdout
    );
    assert!(man.stdout.contains("doctor"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_redrive_moves_dead_letters_back_to_the_queue() {
    let queue = converge_testkit::sqs::queue_with_dlq("converge-redrive", 30, 3).await;
    for n in 0..12 {
        queue
            .client
            .send_message()
            .queue_url(&queue.dlq_url)
            .message_body(format!(
                "{{\"tenant\":\"\",\"repo\":\"\",\"target\":\"t{n}\"}}"
            ))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}", aws_sdk_sqs::error::DisplayErrorContext(e)));
    }
    let env = [
        ("CONVERGE_QUEUE_URL", queue.url.clone()),
        ("CONVERGE_DLQ_URL", queue.dlq_url.clone()),
    ];
    let run = converge(&["--json", "queue", "redrive"], &env);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.json()["moved"], 12, "{}", run.stdout);
    let depth = |url: String| {
        let client = queue.client.clone();
        async move {
            client
                .get_queue_attributes()
                .queue_url(url)
                .attribute_names(
                    aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages,
                )
                .send()
                .await
                .ok()
                .and_then(|a| {
                    a.attributes().and_then(|m| {
                        m.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
                            .cloned()
                    })
                })
                .unwrap_or_default()
        }
    };
    assert_eq!(depth(queue.dlq_url.clone()).await, "0");
    assert_eq!(depth(queue.url.clone()).await, "12");
    let missing = converge(&["queue", "redrive"], &[]);
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.contains("CONVERGE_QUEUE_URL is not set"),
        "{}",
        missing.stderr
    );
}
