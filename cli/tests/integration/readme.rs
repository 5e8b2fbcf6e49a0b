//! The README's "Try it" steps work when pasted: the block runs in bash as written, except
//! that the `converge` under test stands in for `cargo install` (a release build), the scratch
//! repository goes to a temporary directory, and the server listens on a free port instead of
//! 9876 (so that a server of the developer's is never the one tested).

use std::process::Command;
use std::time::Duration;

#[test]
fn the_readme_quick_start_works_when_pasted() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let section = readme
        .split("\n## Try it\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .unwrap_or_else(|| panic!("README has no \"## Try it\" section"));
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .unwrap_or_else(|| panic!("\"Try it\" has no sh block"));
    assert!(
        block.contains("cargo install --path cli --locked"),
        "{block}"
    );
    let scratch = tempfile::tempdir().unwrap();
    let try_dir = scratch.path().join("converge-try");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    assert!(
        block.contains("converge serve &") && block.contains("127.0.0.1:9876"),
        "{block}"
    );
    // Whatever happens, the background server is stopped with the script.
    let script = format!(
        "trap 'kill %1 2>/dev/null || true' EXIT\n{}",
        block
            .replace("cargo install --path cli --locked", "command -v converge")
            .replace("/tmp/converge-try", &try_dir.display().to_string())
            .replace(
                "converge serve &",
                &format!("converge serve --port {port} &")
            )
            .replace("127.0.0.1:9876", &format!("127.0.0.1:{port}"))
    );
    let binary_dir = std::path::Path::new(env!("CARGO_BIN_EXE_converge"))
        .parent()
        .unwrap()
        .to_owned();
    let path = format!(
        "{}:{}",
        binary_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = Command::new("timeout");
    command
        .arg(Duration::from_secs(180).as_secs().to_string())
        .args(["bash", "-euo", "pipefail", "-c", &script])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .env("PATH", path)
        .env("HOME", scratch.path());
    // After the loop below removes the caller's settings: the CLI's server is this port's.
    let api_url = format!("http://127.0.0.1:{port}");
    for (name, _) in std::env::vars() {
        if name.starts_with("CONVERGE_") {
            command.env_remove(name);
        }
    }
    command.env("CONVERGE_API_URL", &api_url);
    let run = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("Every intent ended as expected"),
        "{stdout}"
    );
    assert!(stdout.contains("MERGED"), "{stdout}");
    let merges = Command::new("git")
        .arg("-C")
        .arg(&try_dir)
        .args(["log", "--merges", "--format=%s", "main"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&merges.stdout).contains("Converge intent my-change"),
        "{stdout}"
    );
}
