//! `converge demo`: the fastest way to see Converge work. It makes a throwaway repository with
//! a few branches (one of them conflicting with its target), starts `converge serve` on the
//! embedded default (SQLite, this repository, auto-confirm on), creates an intent per branch,
//! reports their checks green as CI would, and prints what happened with the dashboard's URL.
//! `--once` stops after the summary and exits 0 only when every intent ended as expected.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::client::CliError;
use crate::output::Output;

/// The key the demo server accepts (it listens on loopback only).
const DEMO_KEY: &str = "demo-key";
/// How long the demo waits for the queue to settle.
const PATIENCE: Duration = Duration::from_secs(90);

/// Options of `converge demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Print the summary and stop (exit 0 when every intent ended as expected, 3 otherwise).
    #[arg(long)]
    once: bool,
    /// Where to make the repository and the database (default: a new temporary directory,
    /// kept so that you can look at it).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Port of the demo server (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
}

/// One branch of the demo repository and what should become of its intent.
struct Branch {
    intent: &'static str,
    branch: &'static str,
    /// `MERGED`, or `conflict` (blocked by a merge conflict, never merged).
    expected: &'static str,
    story: &'static str,
}

const BRANCHES: &[Branch] = &[
    Branch {
        intent: "docs",
        branch: "feature/docs",
        expected: "MERGED",
        story: "adds a guide",
    },
    Branch {
        intent: "api",
        branch: "feature/api",
        expected: "MERGED",
        story: "adds a module",
    },
    Branch {
        intent: "greeting",
        branch: "feature/greeting",
        expected: "conflict",
        story: "edits a line main has changed since",
    },
];

/// The demo server, stopped (SIGTERM, then kill) when dropped.
struct DemoServer {
    child: Child,
    url: String,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Drop for DemoServer {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl DemoServer {
    fn last_lines(&self) -> String {
        self.log
            .lock()
            .map(|lines| lines.join("\n"))
            .unwrap_or_default()
    }
}

/// Runs the demo.
pub fn run(args: &DemoArgs, out: Output) -> Result<(), CliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let dir = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            dir.clone()
        }
        None => tempfile::Builder::new()
            .prefix("converge-demo-")
            .tempdir()
            .context("cannot make a temporary directory")?
            .keep(),
    };
    let repo = dir.join("repo");
    if repo.exists() {
        return Err(CliError::Other(anyhow::anyhow!(
            "{} already exists: give --dir a new directory",
            repo.display()
        )));
    }
    make_repository(&repo)?;
    let server = start_server(&dir, &repo, args.port)?;
    let summary = runtime.block_on(drive(&server, &repo))?;
    let as_expected = summary["as_expected"] == true;
    out.emit(&summary, |o| human_summary(o, &summary))?;
    if !as_expected {
        eprintln!("the demo server's last lines:\n{}", server.last_lines());
        return Err(CliError::CheckFailed(
            "an intent did not end as the demo expects".to_owned(),
        ));
    }
    if args.once {
        return Ok(());
    }
    eprintln!("Ctrl-C stops the demo server.");
    runtime
        .block_on(tokio::signal::ctrl_c())
        .context("cannot wait for Ctrl-C")?;
    Ok(())
}

fn git(repo: &Path, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args([
            "-c",
            "user.name=Converge demo",
            "-c",
            "user.email=demo@converge.invalid",
        ])
        .args([
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .context("cannot run git (is it installed?)")?;
    if !output.status.success() {
        bail!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn write(repo: &Path, path: &str, content: &str) -> anyhow::Result<()> {
    let file = repo.join(path);
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&file, content).with_context(|| format!("cannot write {}", file.display()))
}

fn commit(repo: &Path, path: &str, content: &str, message: &str) -> anyhow::Result<()> {
    write(repo, path, content)?;
    git(repo, &["add", "-A"])?;
    git(repo, &["commit", "-q", "-m", message])?;
    Ok(())
}

/// main, three branches off it, then main moves on the line `feature/greeting` edits. HEAD is
/// left detached, so no work tree holds main and Converge may move it.
fn make_repository(repo: &Path) -> anyhow::Result<()> {
    let version = git(Path::new("."), &["version"])?;
    let numbers: Vec<u32> = version
        .split_whitespace()
        .nth(2)
        .unwrap_or_default()
        .split('.')
        .take(2)
        .filter_map(|n| n.parse().ok())
        .collect();
    if numbers.as_slice() < [2, 38].as_slice() {
        bail!("{version}: Converge needs git 2.38 or later (git merge-tree --write-tree)");
    }
    std::fs::create_dir_all(repo)?;
    git(repo, &["init", "-q", "-b", "main"])?;
    commit(repo, "README.md", "# Demo app\n", "Start the demo app")?;
    commit(
        repo,
        "src/app.rs",
        "pub fn greeting() -> &'static str {\n    \"hello\"\n}\n",
        "Greet",
    )?;
    git(repo, &["checkout", "-q", "-b", "feature/docs", "main"])?;
    commit(repo, "docs/guide.md", "# Guide\n\nRun it.\n", "Add a guide")?;
    git(repo, &["checkout", "-q", "-b", "feature/api", "main"])?;
    commit(
        repo,
        "src/api.rs",
        "pub fn version() -> u32 {\n    1\n}\n",
        "Add the API module",
    )?;
    git(repo, &["checkout", "-q", "-b", "feature/greeting", "main"])?;
    commit(
        repo,
        "src/app.rs",
        "pub fn greeting() -> &'static str {\n    \"hi\"\n}\n",
        "Greet shorter",
    )?;
    git(repo, &["checkout", "-q", "main"])?;
    commit(
        repo,
        "src/app.rs",
        "pub fn greeting() -> &'static str {\n    \"hello, world\"\n}\n",
        "Greet the world",
    )?;
    git(repo, &["checkout", "-q", "--detach"])?;
    Ok(())
}

/// `converge serve` (this binary) on the embedded default, in `dir`, over `repo`.
fn start_server(dir: &Path, repo: &Path, port: u16) -> anyhow::Result<DemoServer> {
    let binary = std::env::current_exe().context("cannot find the converge binary")?;
    let mut command = Command::new(binary);
    command
        .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // The demo's own settings, whatever the caller's environment says.
    for (name, _) in std::env::vars() {
        if name.starts_with("CONVERGE_") {
            command.env_remove(name);
        }
    }
    command.envs([
        ("CONVERGE_DB_BACKEND", "sqlite".to_owned()),
        (
            "CONVERGE_DB_PATH",
            dir.join("state.db").display().to_string(),
        ),
        ("CONVERGE_REPO_PATH", repo.display().to_string()),
        ("CONVERGE_API_KEYS", format!("{DEMO_KEY}:admin:demo")),
        ("CONVERGE_RATE_LIMIT_ENABLED", "0".to_owned()),
        ("CONVERGE_WORKER_AUTO_CONFIRM", "1".to_owned()),
        ("CONVERGE_WORKER_POLL_INTERVAL", "1".to_owned()),
        ("CONVERGE_LOG", "warn".to_owned()),
    ]);
    let mut child = command.spawn().context("cannot start converge serve")?;
    let stderr = child
        .stderr
        .take()
        .context("converge serve has no error output")?;
    let log: std::sync::Arc<std::sync::Mutex<Vec<String>>> = std::sync::Arc::default();
    let (found, url) = std::sync::mpsc::channel();
    let kept = log.clone();
    // Reads the server's error output for its address, then keeps its last lines (and keeps
    // the pipe drained, so the server never blocks on it).
    std::thread::spawn(move || {
        let mut found = Some(found);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(sender) = found.take_if(|_| line.contains("serving the API on ")) {
                let _ = sender.send(line.rsplit(' ').next().unwrap_or_default().to_owned());
            }
            if let Ok(mut lines) = kept.lock() {
                lines.push(line);
                let excess = lines.len().saturating_sub(20);
                lines.drain(..excess);
            }
        }
    });
    let mut server = DemoServer {
        child,
        url: String::new(),
        log,
    };
    match url.recv_timeout(Duration::from_secs(30)) {
        Ok(url) => server.url = url,
        Err(_) => bail!("converge serve did not start:\n{}", server.last_lines()),
    }
    Ok(server)
}

/// Creates the intents, reports their checks, and waits until each has ended as expected (or
/// the patience runs out); answers the summary.
async fn drive(server: &DemoServer, repo: &Path) -> anyhow::Result<Value> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let call = |method: reqwest::Method, path: String, body: Option<Value>| {
        let request = client
            .request(method, format!("{}/v1{path}", server.url))
            .header("x-api-key", DEMO_KEY);
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        async move {
            let response = request.send().await?;
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            if !status.is_success() {
                bail!("{status}: {body}");
            }
            anyhow::Ok(body)
        }
    };
    for branch in BRANCHES {
        call(
            reqwest::Method::POST,
            "/intents".to_owned(),
            Some(json!({"id": branch.intent, "source": branch.branch, "target": "main", "risk_level": "low"})),
        )
        .await
        .with_context(|| format!("creating the intent of {}", branch.branch))?;
    }
    // CI reports each branch's lint green on its head commit.
    for branch in BRANCHES {
        let head = git(repo, &["rev-parse", branch.branch])?;
        call(
            reqwest::Method::POST,
            format!("/intents/{}/checks", branch.intent),
            Some(json!({"name": "lint", "state": "passed", "head_sha": head})),
        )
        .await
        .with_context(|| format!("reporting the checks of {}", branch.branch))?;
    }

    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut rows = Vec::new();
        for branch in BRANCHES {
            let intent = call(
                reqwest::Method::GET,
                format!("/intents/{}", branch.intent),
                None,
            )
            .await?;
            let events = call(
                reqwest::Method::GET,
                format!("/intents/{}/events?limit=50", branch.intent),
                None,
            )
            .await?;
            rows.push(row(branch, &intent, &events));
        }
        let as_expected = rows.iter().all(|r| r["as_expected"] == true);
        if as_expected || Instant::now() > deadline {
            return Ok(json!({
                "as_expected": as_expected,
                "repository": repo.display().to_string(),
                "main": git(repo, &["log", "--oneline", "-6", "main"])?.lines().collect::<Vec<_>>(),
                "dashboard": format!("{}/dashboard", server.url),
                "api_key": DEMO_KEY,
                "intents": rows,
            }));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One intent's line of the summary: its status and what its events say happened.
fn row(branch: &Branch, intent: &Value, events: &Value) -> Value {
    let status = intent["status"].as_str().unwrap_or("unknown");
    let events: &[Value] = events["events"].as_array().map_or(&[], Vec::as_slice);
    // Newest first.
    let latest = |event_type: &str| events.iter().find(|e| e["event_type"] == event_type);
    let (outcome, as_expected) = match branch.expected {
        "MERGED" => (
            latest("intent.merged")
                .and_then(|e| e["payload"]["merged_commit"].as_str())
                .map_or_else(
                    || format!("{status}, not merged yet"),
                    |commit| format!("merged as {}", &commit[..commit.len().min(10)]),
                ),
            status == "MERGED",
        ),
        _ => {
            let conflict = latest("intent.blocked")
                .filter(|e| e["payload"]["kind"] == "conflict")
                .and_then(|e| e["payload"]["reason"].as_str());
            (
                conflict.map_or_else(
                    || format!("{status}, no conflict found yet"),
                    |reason| {
                        format!(
                            "blocked: {reason} ({status}, retries: {})",
                            intent["retries"]
                        )
                    },
                ),
                conflict.is_some() && status != "MERGED",
            )
        }
    };
    json!({
        "intent": branch.intent,
        "branch": branch.branch,
        "story": branch.story,
        "expected": branch.expected,
        "status": status,
        "outcome": outcome,
        "as_expected": as_expected,
    })
}

fn human_summary(o: &Output, summary: &Value) -> String {
    let intents: &[Value] = summary["intents"].as_array().map_or(&[], Vec::as_slice);
    let mut text = format!(
        "{}\nA repository with {} branches, Converge on the embedded default (SQLite, auto-confirm on):\n\n",
        o.bold("Converge demo"),
        intents.len()
    );
    text.push_str(&o.table(
        intents,
        &[
            ("intent", "/intent"),
            ("branch", "/branch"),
            ("the branch", "/story"),
            ("what Converge did", "/outcome"),
        ],
    ));
    text.push_str(&format!(
        "\n\nmain now:\n  {}\n\nrepository: {}\ndashboard:  {} (sign in with the key {})\n{}",
        summary["main"]
            .as_array()
            .map(|lines| lines
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("\n  "))
            .unwrap_or_default(),
        summary["repository"].as_str().unwrap_or_default(),
        summary["dashboard"].as_str().unwrap_or_default(),
        summary["api_key"].as_str().unwrap_or_default(),
        if summary["as_expected"] == true {
            "Every intent ended as expected: the clean branches merged, the conflicting one was held back with its reason."
        } else {
            "Not every intent ended as expected (see the table)."
        }
    ));
    text
}
