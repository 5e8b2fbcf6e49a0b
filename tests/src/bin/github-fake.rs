//! The GitHub fake as a process, for the local stack (`scripts/dev-stack.sh`): a GitHub App
//! (a fresh key pair; the private key written to `--key-out`) and a demo repository,
//! `demo/app`, with pull request #1 (`feature` → `main`, a docs change whose CI check
//! `ci/lint` passed). It prints one `name=value` line per fact, then serves until killed.

use std::io::Write;

use converge_testkit::git::{commit_file, git};
use converge_testkit::github_fake::{GithubFake, app_key_pair};

const APP_ID: u64 = 1;

fn main() {
    let key_out = std::env::args()
        .skip_while(|a| a != "--key-out")
        .nth(1)
        .unwrap_or_else(|| {
            eprintln!("usage: github-fake --key-out FILE");
            std::process::exit(2)
        });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    runtime.block_on(async {
        let (private_pem, public_pem) = app_key_pair();
        std::fs::write(&key_out, &private_pem)
            .unwrap_or_else(|e| panic!("cannot write {key_out}: {e}"));
        let fake = GithubFake::start(APP_ID, &public_pem).await;
        let repo = fake.create_repo("demo/app");
        commit_file(&repo, "src/lib.rs", "pub fn hello() {}\n", "init");
        git(&repo, &["checkout", "-q", "-b", "feature"]);
        commit_file(&repo, "docs/guide.md", "# Guide\n", "docs");
        git(&repo, &["checkout", "-q", "--detach"]);
        let head = git(&repo, &["rev-parse", "feature"]);
        let base = git(&repo, &["rev-parse", "main"]);
        fake.open_pull("demo/app", 1, "feature", "main");
        fake.complete_check("demo/app", &head, "ci/lint", "success");
        let facts = format!(
            "github_url={}\napp_id={APP_ID}\nrepo=demo/app\nrepo_path={}\npull=1\nhead_sha={head}\nbase_sha={base}\nready=1\n",
            fake.url(),
            repo.display()
        );
        let mut out = std::io::stdout().lock();
        out.write_all(facts.as_bytes())
            .and_then(|()| out.flush())
            .unwrap_or_else(|e| panic!("stdout: {e}"));
        drop(out);
        std::future::pending::<()>().await;
    });
}
