//! Support for the test suites: a throwaway PostgreSQL database per test (on the cluster that
//! `scripts/test.sh` starts), a clock that only moves when a test says so ([`ManualClock`]),
//! `converge serve` processes ([`ServerProcess`]), commands on real git repositories
//! ([`git`]), the git-backed GitHub fake ([`github_fake`], also run as a process by the
//! `github-fake` binary), SQS queues on the AWS emulator ([`sqs`]) and a small WebDriver client
//! for headless Chromium ([`webdriver`]).
//!
//! The package also owns the `converge-store-crash-writer` binary, which its crash test
//! (`tests/integration/crash.rs`) kills in the middle of transactions.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test support: a panic fails the test using it.

pub mod github_fake;
pub mod lambda_runtime;
pub mod sqs;
pub mod webdriver;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, TimeZone, Utc};
use converge_core::pipeline::Clock;

/// A clock that only moves when told to. Starts at a fixed instant (microsecond-aligned).
#[derive(Clone)]
pub struct ManualClock(Arc<Mutex<DateTime<Utc>>>);

impl Default for ManualClock {
    fn default() -> Self {
        let start = Utc
            .timestamp_opt(1_800_000_000, 123_456_000)
            .single()
            .unwrap_or_default();
        ManualClock(Arc::new(Mutex::new(start)))
    }
}

impl ManualClock {
    /// A clock at the fixed start instant.
    pub fn new() -> ManualClock {
        ManualClock::default()
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        if let Ok(mut now) = self.0.lock() {
            *now += by;
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        self.0.lock().map(|t| *t).unwrap_or_default()
    }
}

/// The superuser URL of the throwaway PostgreSQL that `scripts/test.sh` starts. Tests that
/// need it fail (they do not skip) when it is missing.
pub fn pg_admin_url() -> String {
    std::env::var("CONVERGE_TEST_PG_URL").unwrap_or_else(|_| {
        panic!("CONVERGE_TEST_PG_URL is not set: run scripts/test.sh, which starts a throwaway PostgreSQL")
    })
}

static DATABASES: AtomicU64 = AtomicU64::new(0);

/// Creates a new, empty PostgreSQL database and returns its URL.
pub async fn fresh_pg_database() -> String {
    let admin = pg_admin_url();
    let name = format!(
        "converge_test_{}_{}_{}",
        std::process::id(),
        DATABASES.fetch_add(1, Ordering::Relaxed),
        Utc::now().timestamp_micros()
    );
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL: {e}"));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
    let base = admin
        .rsplit_once('/')
        .map_or(admin.as_str(), |(base, _)| base);
    format!("{base}/{name}")
}

/// Drops a database [`fresh_pg_database`] made, closing whatever sessions are left: a test
/// run makes many, each about 7.5 MB, and CI's disk is not large.
pub async fn drop_pg_database(url: &str) {
    let name = url.rsplit_once('/').map_or(url, |(_, name)| name);
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&pg_admin_url())
        .await
        .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL: {e}"));
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await
    .unwrap_or_else(|e| panic!("cannot drop database {name}: {e}"));
}

/// The store settings of a `converge serve` on each backend: a SQLite file `file` in `dir`, and
/// a fresh PostgreSQL database. Tests that must hold on both run once per entry.
pub async fn server_databases(
    dir: &std::path::Path,
    file: &str,
) -> Vec<Vec<(&'static str, String)>> {
    vec![
        vec![
            ("CONVERGE_DB_BACKEND", "sqlite".to_owned()),
            ("CONVERGE_DB_PATH", dir.join(file).display().to_string()),
        ],
        vec![
            ("CONVERGE_DB_BACKEND", "postgres".to_owned()),
            ("CONVERGE_PG_DSN", fresh_pg_database().await),
        ],
    ]
}

/// A `converge serve` process on a free port, stopped when dropped.
pub struct ServerProcess {
    child: std::process::Child,
    base_url: String,
}

impl ServerProcess {
    /// Starts `binary serve --port 0` in `cwd` with `env` set (and the store/repository
    /// variables of the calling environment removed first), and waits for its address.
    pub fn start(binary: &str, cwd: &std::path::Path, env: &[(&str, String)]) -> ServerProcess {
        ServerProcess::start_with(binary, cwd, env, &[])
    }

    /// Like [`ServerProcess::start`], with more arguments after `serve --port 0`.
    pub fn start_with(
        binary: &str,
        cwd: &std::path::Path,
        env: &[(&str, String)],
        args: &[&str],
    ) -> ServerProcess {
        let mut command = std::process::Command::new(binary);
        command.args(["serve", "--port", "0"]).args(args);
        ServerProcess::launch(command, cwd, env)
    }

    /// Like [`ServerProcess::start_with`], in a process that may open at most `open_files`
    /// files (sockets included).
    pub fn start_with_open_files(
        binary: &str,
        cwd: &std::path::Path,
        env: &[(&str, String)],
        args: &[&str],
        open_files: u32,
    ) -> ServerProcess {
        let mut command = std::process::Command::new("sh");
        command
            .arg("-c")
            .arg(format!("ulimit -n {open_files} && exec \"$0\" \"$@\""))
            .arg(binary)
            .args(["serve", "--port", "0"])
            .args(args);
        ServerProcess::launch(command, cwd, env)
    }

    fn launch(
        mut command: std::process::Command,
        cwd: &std::path::Path,
        env: &[(&str, String)],
    ) -> ServerProcess {
        use std::io::{BufRead, BufReader};
        command
            .current_dir(cwd)
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null());
        for inherited in [
            "CONVERGE_DB_BACKEND",
            "CONVERGE_DB_PATH",
            "CONVERGE_PG_DSN",
            "CONVERGE_REPO_PATH",
        ] {
            command.env_remove(inherited);
        }
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start converge serve: {e}"));
        let stderr = child.stderr.take().unwrap_or_else(|| panic!("no stderr"));
        let mut lines = BufReader::new(stderr).lines();
        let base_url = loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("serving the API on ") => {
                    break line.rsplit(' ').next().unwrap_or_default().to_owned();
                }
                Some(Ok(_)) => continue,
                other => panic!("converge serve did not start: {other:?}"),
            }
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        ServerProcess { child, base_url }
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// The process id (to signal it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit.
    pub fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.child.wait()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process killed when dropped, so that a test failing half-way leaves no process
/// behind (a `converge worker` would otherwise poll on long after its test). Derefs to the
/// [`std::process::Child`]; waiting for it first is fine.
#[derive(Debug)]
pub struct KilledOnDrop(pub std::process::Child);

impl std::ops::Deref for KilledOnDrop {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for KilledOnDrop {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Real git repositories for tests: commands with a fixed identity, failing loudly.
pub mod git {
    use std::path::Path;
    use std::process::Command;

    /// Runs `git -C repo args…` and returns its trimmed standard output; panics on failure.
    pub fn git(repo: &Path, args: &[&str]) -> String {
        let output = Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(args)
            .env("GIT_AUTHOR_NAME", "Test")
            .env("GIT_AUTHOR_EMAIL", "test@example.invalid")
            .env("GIT_COMMITTER_NAME", "Test")
            .env("GIT_COMMITTER_EMAIL", "test@example.invalid")
            .output()
            .unwrap_or_else(|e| panic!("git: {e}"));
        assert!(
            output.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// A small repository in `dir`: `main` with a little code, `feature/docs` (a clean change
    /// to one doc) and `feature/clash` (edits what `main` edits after it branched). HEAD is
    /// detached, so `main` is checked out nowhere and can be merged into.
    pub fn docs_and_clash(dir: &Path) {
        git(dir, &["init", "-q", "-b", "main"]);
        commit_file(dir, "src/app/main.rs", "fn main() {}\n", "init");
        commit_file(dir, "docs/guide.md", "# Guide\n", "docs");
        git(dir, &["checkout", "-q", "-b", "feature/docs"]);
        commit_file(dir, "docs/guide.md", "# Guide\n\nMore.\n", "more docs");
        git(dir, &["checkout", "-q", "-b", "feature/clash", "main"]);
        commit_file(dir, "src/app/main.rs", "fn main() { clash(); }\n", "clash");
        git(dir, &["checkout", "-q", "main"]);
        commit_file(
            dir,
            "src/app/main.rs",
            "fn main() { run(); }\n",
            "main moves",
        );
        git(dir, &["checkout", "-q", "--detach"]);
    }

    /// Writes `content` to `path` in the work tree and commits everything.
    pub fn commit_file(repo: &Path, path: &str, content: &str, message: &str) {
        let file = repo.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&file, content).unwrap();
        git(repo, &["add", "."]);
        git(repo, &["commit", "-q", "-m", message]);
    }
}

/// A monotonic clock a test moves by hand, for what ages by `Instant` (the secrets' cache):
/// "not yet" and "after" are then decided by the test, not by how busy the machine is.
#[derive(Clone)]
pub struct MovableClock(std::sync::Arc<std::sync::Mutex<std::time::Instant>>);

impl Default for MovableClock {
    fn default() -> Self {
        MovableClock(std::sync::Arc::new(std::sync::Mutex::new(
            std::time::Instant::now(),
        )))
    }
}

impl MovableClock {
    /// Moves the clock on by `by`.
    pub fn advance(&self, by: std::time::Duration) {
        let mut now = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *now += by;
    }

    /// The clock as a function, for `Secrets::with_clock`.
    pub fn now_fn(&self) -> std::sync::Arc<dyn Fn() -> std::time::Instant + Send + Sync> {
        let clock = self.0.clone();
        std::sync::Arc::new(move || {
            *clock
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        })
    }
}
