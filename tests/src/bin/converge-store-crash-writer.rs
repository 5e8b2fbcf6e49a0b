//! Test support for the crash test (`tests/tests/integration/crash.rs` of this package):
//! commits intents to the store at the URL given as the only argument, as fast as it can,
//! forever, printing `committed N` after each commit. The test kills it with SIGKILL at random
//! moments and checks what survived.
//! Each commit writes three events (created, validated, queued), one projection row, one
//! commit link and one outbox message: all of them or none must survive a kill.

use std::io::Write;
use std::sync::Arc;

use converge_core::pipeline::Clock;
use converge_core::{Event, EventType, Intent};
use converge_store::{Commit, CommitLink, OutboxMessage, Store, SystemClock};
use serde_json::json;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let url = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: converge-store-crash-writer URL"))?;
    let clock = SystemClock;
    let store = Store::from_url(&url, Arc::new(clock))?;
    store.migrate().await?;
    let pid = std::process::id();
    let mut stdout = std::io::stdout().lock();
    for n in 0u64.. {
        let id = format!("crash-{pid}-{n}");
        let now = clock.now();
        let intent = Intent::new(&id, format!("feature/{n}"), "main", now);
        let event = |event_type: EventType, suffix: &str, payload: serde_json::Value| {
            Event::about_intent(
                format!("{id}-{suffix}"),
                format!("trace-{id}"),
                now,
                event_type,
                id.clone(),
                payload,
            )
        };
        let commit = Commit {
            events: vec![
                event(
                    EventType::IntentCreated,
                    "created",
                    serde_json::to_value(&intent)?,
                ),
                event(EventType::IntentValidated, "validated", json!({})),
                event(EventType::IntentQueued, "queued", json!({})),
            ],
            commit_links: vec![CommitLink {
                intent_id: id.clone(),
                repo: "acme/app".into(),
                sha: format!("{n:040}"),
                role: "head".into(),
                observed_at: now,
            }],
            outbox: vec![OutboxMessage {
                topic: "queue".into(),
                payload: json!({"intent": id}),
            }],
            guard: None,
            expect: Vec::new(),
            delivery: None,
            freezes: Vec::new(),
            reviews: Vec::new(),
            thresholds: Vec::new(),
            intake: Vec::new(),
            agent_policies: Vec::new(),
            risk_policies: Vec::new(),
        };
        store.commit(&commit).await?;
        writeln!(stdout, "committed {n}")?;
        stdout.flush()?;
    }
    Ok(())
}
