//! Commands in pull request comments, end to end: `converge serve` as a GitHub App receives
//! signed `issue_comment` deliveries from the GitHub fake, asks GitHub whether the commenter
//! may write to the repository, carries out or refuses the command, and answers with a
//! reaction (and a reply when there is something to say).

use converge_testkit::ServerProcess;
use converge_testkit::git::{commit_file, git};
use converge_testkit::github_fake::{GithubFake, app_key_pair};
use serde_json::{Value, json};

const SECRET: &str = "hook-secret";
const KEY: &str = "app-key";
const REPO: &str = "acme/app";

struct Conversation {
    fake: GithubFake,
    server: ServerProcess,
    next: u64,
}

impl Conversation {
    /// `user` comments `body` on pull request 5; the delivery's answer.
    async fn comment(&mut self, user: &str, body: &str) -> (u64, Value) {
        self.next += 1;
        let comment_id = 1000 + self.next;
        let payload = json!({
            "action": "created",
            "issue": {"number": 5, "pull_request": {"url": "https://example.invalid/pulls/5"}},
            "comment": {"id": comment_id, "body": body, "user": {"login": user}},
            "repository": {"full_name": REPO},
            "installation": {"id": 31}
        });
        let hook = self.server.url("/integrations/github/webhook");
        let delivery = format!("comment-{}", self.next);
        let (status, answer) = self
            .fake
            .send_webhook(&hook, SECRET, "issue_comment", &delivery, &payload)
            .await;
        assert_eq!(status, 202, "{answer}");
        (comment_id, answer)
    }

    fn reaction_to(&self, comment_id: u64) -> Option<String> {
        self.fake
            .reactions()
            .into_iter()
            .find(|(_, id, _)| *id == comment_id)
            .map(|(_, _, content)| content)
    }

    fn last_reply(&self) -> String {
        self.fake
            .comments()
            .last()
            .map(|(_, _, body)| body.clone())
            .unwrap_or_default()
    }

    /// A GET of the API, which must answer 200 with JSON.
    async fn read(&self, path: &str) -> Value {
        let response = reqwest::Client::new()
            .get(self.server.url(path))
            .header("x-api-key", KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "GET {path}");
        response.json().await.unwrap()
    }

    async fn intent(&self) -> Value {
        self.read("/v1/intents/acme%2Fapp:pr-5").await
    }

    async fn commands(&self) -> Vec<Value> {
        let page = self.read("/v1/events?type=intent.commanded&limit=50").await;
        page["events"].as_array().cloned().unwrap_or_default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_command_the_queue_from_comments_and_readers_are_refused() {
    let (private_pem, public_pem) = app_key_pair();
    let fake = GithubFake::start(7, &public_pem).await;
    let repo = fake.create_repo(REPO);
    commit_file(&repo, "src/lib.rs", "pub fn f() {}\n", "init");
    git(&repo, &["checkout", "-q", "-b", "feature"]);
    commit_file(&repo, "docs/guide.md", "# Guide\n", "docs");
    git(&repo, &["checkout", "-q", "--detach"]);
    fake.open_pull(REPO, 5, "feature", "main");
    fake.set_permission(REPO, "maintainer", "write");
    fake.set_permission(REPO, "visitor", "read");

    let dir = tempfile::tempdir().unwrap();
    let env = vec![
        ("CONVERGE_API_KEYS", format!("{KEY}:admin:ops")),
        ("CONVERGE_GITHUB_WEBHOOK_SECRET", SECRET.to_owned()),
        ("CONVERGE_GITHUB_APP_ID", "7".to_owned()),
        ("CONVERGE_GITHUB_APP_PRIVATE_KEY", private_pem),
        ("CONVERGE_GITHUB_API_URL", fake.url().to_owned()),
        ("CONVERGE_WORKER_POLL_INTERVAL", "600".to_owned()),
    ];
    let server = ServerProcess::start(env!("CARGO_BIN_EXE_converge"), dir.path(), &env);
    let head = git(&repo, &["rev-parse", "feature"]);
    let base = git(&repo, &["rev-parse", "main"]);
    let opened = json!({
        "action": "opened",
        "pull_request": {"number": 5, "title": "Docs", "head": {"ref": "feature", "sha": head},
                         "base": {"ref": "main", "sha": base}},
        "repository": {"full_name": REPO},
        "installation": {"id": 31}
    });
    let hook = server.url("/integrations/github/webhook");
    let (status, answer) = fake
        .send_webhook(&hook, SECRET, "pull_request", "opened-5", &opened)
        .await;
    assert_eq!(status, 202, "{answer}");
    let mut talk = Conversation {
        fake,
        server,
        next: 0,
    };

    // A reader cannot take the pull request out of the queue.
    let (id, answer) = talk.comment("visitor", "@converge dequeue").await;
    assert_eq!(answer["command_result"], "refused", "{answer}");
    assert_eq!(talk.reaction_to(id).as_deref(), Some("-1"));
    assert!(
        talk.last_reply().contains("write permission"),
        "{}",
        talk.last_reply()
    );
    assert_ne!(talk.intent().await["status"], "REJECTED");

    // A writer can: priority, dequeue, queue again.
    let (id, answer) = talk.comment("maintainer", "@converge priority 1").await;
    assert_eq!(answer["command_result"], "applied", "{answer}");
    assert_eq!(talk.reaction_to(id).as_deref(), Some("+1"));
    assert_eq!(talk.intent().await["priority"], 1);

    let (_, answer) = talk
        .comment("maintainer", "Not this week.\n@converge dequeue")
        .await;
    assert_eq!(answer["command_result"], "applied", "{answer}");
    assert_eq!(talk.intent().await["status"], "REJECTED");

    let (_, answer) = talk.comment("maintainer", "@Converge queue").await;
    assert_eq!(answer["command_result"], "applied", "{answer}");
    let intent = talk.intent().await;
    assert_ne!(intent["status"], "REJECTED", "{intent}");
    assert_eq!(intent["retries"], 0);

    // Status answers in a reply; an unknown command is answered, not guessed.
    let (id, answer) = talk.comment("maintainer", "@converge status").await;
    assert_eq!(answer["command_result"], "answered", "{answer}");
    assert_eq!(talk.reaction_to(id).as_deref(), Some("+1"));
    assert!(
        talk.last_reply().contains("acme/app:pr-5"),
        "{}",
        talk.last_reply()
    );
    let (id, answer) = talk.comment("maintainer", "@converge frobnicate").await;
    assert_eq!(answer["command_result"], "invalid", "{answer}");
    assert_eq!(talk.reaction_to(id).as_deref(), Some("confused"));
    assert!(
        talk.last_reply().contains("unknown command"),
        "{}",
        talk.last_reply()
    );

    // A comment that does not speak to Converge is ignored, and nothing answers it.
    let before = talk.fake.reactions().len();
    let (_, answer) = talk
        .comment("visitor", "Looks good to me, thanks @converge!")
        .await;
    assert_eq!(answer["result"], "ignored", "{answer}");
    assert_eq!(talk.fake.reactions().len(), before);

    // Every command, carried out or refused, is an event on the intent (committed with the
    // delivery, before it was answered).
    let commands = talk.commands().await;
    let refused: Vec<&Value> = commands
        .iter()
        .filter(|e| e["payload"]["allowed"] == false)
        .collect();
    assert_eq!(refused.len(), 1, "{commands:?}");
    assert_eq!(refused[0]["payload"]["by"], "visitor");
}

/// The same commands from the CLI (`converge intent command`, over the API), by an operator of
/// the intent's tenant, on both backends; a viewer may not, and another tenant does not see it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_give_the_same_commands_from_the_cli_on_both_backends() {
    use crate::audit_export::{ACME, ACME_VIEWER, GLOBEX, tenants_server};
    use crate::operator_cli::converge_as;
    let dir = tempfile::tempdir().unwrap();
    for database in converge_testkit::server_databases(dir.path(), "commands.db").await {
        let server = tenants_server(dir.path(), &database);
        let created = reqwest::Client::new()
            .post(server.url("/v1/intents"))
            .header("x-api-key", ACME)
            .json(&json!({"id": "cmd-1", "source": "feature/cmd"}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status().as_u16(), 201);
        let run = |key: &str, args: &[&str]| {
            let mut all = vec!["--json", "intent", "command", "--intent-id", "cmd-1"];
            all.extend_from_slice(args);
            converge_as(&server, key, &all)
        };

        let done = run(ACME, &["priority", "--priority", "1"]);
        assert_eq!(done.code, 0, "{}", done.stderr);
        assert_eq!(done.json()["result"], "applied");
        assert_eq!(done.json()["priority"], 1);
        let done = run(ACME, &["dequeue"]);
        assert_eq!(done.json()["status"], "REJECTED", "{}", done.stdout);
        let done = run(ACME, &["dequeue"]);
        assert_eq!(done.json()["result"], "unchanged", "{}", done.stdout);
        let done = run(ACME, &["queue"]);
        assert_eq!(
            (done.json()["result"].clone(), done.json()["status"].clone()),
            (json!("applied"), json!("READY")),
            "{}",
            done.stdout
        );
        let done = run(ACME, &["status"]);
        assert_eq!(done.json()["result"], "answered");
        assert!(
            done.json()["answer"]
                .as_str()
                .unwrap_or_default()
                .contains("READY")
        );

        // Priority needs its number, in range; a viewer may not command; another tenant sees
        // no such intent.
        assert_ne!(run(ACME, &["priority"]).code, 0);
        assert_ne!(run(ACME, &["priority", "--priority", "12"]).code, 0);
        let refused = run(ACME_VIEWER, &["queue"]);
        assert_ne!(refused.code, 0);
        assert!(refused.stderr.contains("403"), "{}", refused.stderr);
        let hidden = run(GLOBEX, &["status"]);
        assert!(hidden.stderr.contains("404"), "{}", hidden.stderr);

        // Each applied command is on the intent's record, with who gave it.
        let events: Value = reqwest::Client::new()
            .get(server.url("/v1/intents/cmd-1/events"))
            .header("x-api-key", ACME)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let kinds: Vec<&str> = events["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["event_type"].as_str())
            .collect();
        for kind in ["intent.priority_changed", "intent.rejected", "queue.reset"] {
            assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
        }
    }
}
