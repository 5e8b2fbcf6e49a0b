//! `converge serve` on SQLite when the disk fills up and then frees: writes fail without a 2xx,
//! readiness says the store cannot write, and once space is back writes work again without a
//! restart. The disk is a small tmpfs mounted for the test (CI and developers run as root).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use converge_testkit::ServerProcess;
use serde_json::{Value, json};

const KEY: &str = "disk-key";

/// A tmpfs of `size` mounted on a fresh folder, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap_or_else(|e| panic!("cannot run mount: {e}"));
        assert!(
            status.success(),
            "mounting a tmpfs failed ({status}): this test needs root, as CI has"
        );
        SmallDisk { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fills the disk with a file until it is full; the file.
fn fill(disk: &SmallDisk) -> PathBuf {
    let path = disk.path().join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 4096];
    while file.write_all(&chunk).and_then(|()| file.flush()).is_ok() {}
    path
}

async fn create(client: &reqwest::Client, server: &ServerProcess, n: usize) -> (u16, Value) {
    let response = client
        .post(server.url("/v1/intents"))
        .header("x-api-key", KEY)
        .json(&json!({
            "id": format!("disk-{n}"),
            "source": format!("feature/{n}"),
            "semantic": {"notes": "x".repeat(3_000)}
        }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn ready(client: &reqwest::Client, server: &ServerProcess) -> (u16, Value) {
    let response = client
        .get(server.url("/health/ready"))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_writes_work_again_once_a_full_disk_has_room() {
    let disk = SmallDisk::mount("8m");
    let env = vec![
        ("CONVERGE_DB_BACKEND", "sqlite".to_owned()),
        (
            "CONVERGE_DB_PATH",
            disk.path().join("state.db").display().to_string(),
        ),
        ("CONVERGE_API_KEYS", format!("{KEY}:admin:ops")),
        ("CONVERGE_RATE_LIMIT_ENABLED", "0".to_owned()),
    ];
    let work = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with(
        env!("CARGO_BIN_EXE_converge"),
        work.path(),
        &env,
        &["--no-worker"],
    );
    let client = reqwest::Client::new();
    assert_eq!(create(&client, &server, 0).await.0, 201);
    assert_eq!(ready(&client, &server).await.0, 200);

    let filler = fill(&disk);
    let mut acknowledged = vec![0];
    let mut refused = 0;
    for n in 1..=40 {
        let (status, answer) = create(&client, &server, n).await;
        match status {
            201 => acknowledged.push(n),
            503 => refused += 1,
            other => panic!("create {n} on a full disk: {other} {answer}"),
        }
    }
    assert!(refused > 0, "the disk never filled: {acknowledged:?}");
    let (status, answer) = ready(&client, &server).await;
    assert_eq!(status, 503, "readiness on a full disk: {answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot be written"),
        "{answer}"
    );

    std::fs::remove_file(filler).unwrap();
    for n in 100..105 {
        let (status, answer) = create(&client, &server, n).await;
        assert_eq!(status, 201, "create {n} after space came back: {answer}");
        acknowledged.push(n);
    }
    assert_eq!(ready(&client, &server).await.0, 200);

    // Every write that was acknowledged is there.
    for n in acknowledged {
        let response = client
            .get(server.url(&format!("/v1/intents/disk-{n}")))
            .header("x-api-key", KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status().as_u16(),
            200,
            "disk-{n} was acknowledged and lost"
        );
    }
}
