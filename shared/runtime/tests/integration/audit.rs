//! The audit chain on both backends, through the code the API and the sweep run
//! (`runtime::audit`): concurrent commits keep every tenant's chain whole; altering, deleting,
//! reordering or slipping in a row is found at its position; retention prunes behind a signed
//! anchor and the rest still verifies; rows from before the chain are sealed on migrate.

use chrono::Duration;
use converge_core::audit::SigningKey;
use converge_core::pipeline::Clock;
use converge_core::{Event, EventType};
use converge_runtime::audit::{AnchorSignature, ChainCheck, apply_retention, verify_chain};
use converge_runtime::config::AuditSettings;
use converge_store::{Commit, OutboxMessage, Store};
use converge_testkit::ManualClock;
use serde_json::json;

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let clock = converge_testkit::ManualClock::new();
                    let dir = tempfile::tempdir().unwrap();
                    let store = converge_store::Store::from_url(
                        &format!("sqlite://{}", dir.path().join("audit.db").display()),
                        std::sync::Arc::new(clock.clone()),
                    )
                    .unwrap();
                    store.migrate().await.unwrap();
                    super::$name(store, clock).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let clock = converge_testkit::ManualClock::new();
                    let url = converge_testkit::fresh_pg_database().await;
                    let store = converge_store::Store::from_url(&url, std::sync::Arc::new(clock.clone())).unwrap();
                    store.migrate().await.unwrap();
                    super::$name(store, clock).await;
                    converge_testkit::drop_pg_database(&url).await;
                }
            )*
        }
    };
}

on_both_backends!(
    concurrent_commits_keep_each_chain_whole_and_every_tampering_is_found_where_it_is,
    retention_prunes_behind_a_signed_anchor_and_the_rest_still_verifies,
    events_from_before_the_chain_are_sealed_when_a_process_migrates,
    verifying_while_events_are_appended_finds_the_chain_sound,
    retention_keeps_the_events_of_intents_still_in_the_queue,
    events_of_any_text_link_as_the_verifier_hashes_them,
);

fn event(n: usize, tenant: Option<&str>, clock: &ManualClock) -> Event {
    let mut event = Event::about_intent(
        format!("ev-{}-{n}", tenant.unwrap_or("none")),
        format!("trace-{n}"),
        clock.now(),
        EventType::WebhookReceived,
        format!("intent-{n}"),
        json!({"n": n, "score": 0.1 * n as f64, "whole": 5.0, "big": 1e16, "negative_zero": -0.0, "nested": {"b": [1, 2], "a": "x"}}),
    );
    event.intent_id = None;
    event.tenant_id = tenant.map(str::to_owned);
    event.evidence = json!({"why": format!("because {n}")});
    event
}

async fn execute(store: &Store, sql: &str) {
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    match store {
        Store::Postgres(s) => {
            sqlx::query(sql).execute(s.pool()).await.unwrap();
        }
        Store::Sqlite(s) => {
            sqlx::query(sql).execute(s.pool()).await.unwrap();
        }
    }
}

async fn verify(store: &Store, chain: &str, key: Option<&SigningKey>) -> ChainCheck {
    verify_chain(store, chain, key, None, 1_000_000)
        .await
        .unwrap()
}

/// The broken position of a check, or a panic naming what was found instead.
fn broken_at(check: &ChainCheck) -> i64 {
    assert_eq!(check.status(), "broken", "{check:?}");
    check.first_broken.as_ref().expect("a break").chain_index
}

fn key() -> SigningKey {
    SigningKey::new(b"an audit signing key of at least 32 bytes".to_vec()).unwrap()
}

async fn concurrent_commits_keep_each_chain_whole_and_every_tampering_is_found_where_it_is(
    store: Store,
    clock: ManualClock,
) {
    // 60 writers at once, each committing one to three events of three chains.
    let tenants = [Some("acme"), Some("globex"), None];
    let mut writers = Vec::new();
    for w in 0..60usize {
        let (store, clock) = (store.clone(), clock.clone());
        writers.push(tokio::spawn(async move {
            let events = (0..=(w % 3))
                .map(|k| event(w * 10 + k, tenants[(w + k) % 3], &clock))
                .collect();
            store
                .commit(&Commit {
                    events,
                    ..Commit::default()
                })
                .await
                .unwrap();
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let mut total = 0;
    for chain in ["acme", "globex", ""] {
        let check = verify(&store, chain, None).await;
        assert_eq!(check.status(), "valid", "{check:?}");
        let head = check.head.clone().unwrap();
        assert_eq!(head.next_index, check.checked as i64);
        total += check.checked;
        // In pages of 7, going on from each call's last position, the same.
        let (mut after, mut paged) = (None, 0);
        loop {
            let page = verify_chain(&store, chain, None, after, 7).await.unwrap();
            assert_ne!(page.status(), "broken", "{page:?}");
            paged += page.checked;
            match page.next_after {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(paged, check.checked, "{chain}");
    }
    assert_eq!(total, (0..60).map(|w| w % 3 + 1).sum::<usize>() as u64);

    // Altered: the evidence of one event.
    execute(
        &store,
        "UPDATE events SET evidence = payload WHERE tenant_id = 'acme' AND chain_index = 5",
    )
    .await;
    assert_eq!(broken_at(&verify(&store, "acme", None).await), 5);

    // Deleted from the middle.
    execute(
        &store,
        "DELETE FROM events WHERE tenant_id = 'globex' AND chain_index = 3",
    )
    .await;
    let check = verify(&store, "globex", None).await;
    assert_eq!(broken_at(&check), 3);
    assert!(
        check.first_broken.unwrap().reason.contains("missing"),
        "a deletion reads as one"
    );

    // Reordered: two events of the untenanted chain trade positions.
    execute(
        &store,
        "UPDATE events SET chain_index = -1 WHERE tenant_id IS NULL AND chain_index = 2",
    )
    .await;
    execute(
        &store,
        "UPDATE events SET chain_index = 2 WHERE tenant_id IS NULL AND chain_index = 4",
    )
    .await;
    execute(
        &store,
        "UPDATE events SET chain_index = 4 WHERE tenant_id IS NULL AND chain_index = -1",
    )
    .await;
    assert_eq!(broken_at(&verify(&store, "", None).await), 2);

    // The tail cut off: the head still counts it.
    let fresh = Some("initech");
    store
        .commit(&Commit {
            events: (0..4).map(|n| event(900 + n, fresh, &clock)).collect(),
            ..Commit::default()
        })
        .await
        .unwrap();
    assert_eq!(verify(&store, "initech", None).await.status(), "valid");
    execute(
        &store,
        "DELETE FROM events WHERE tenant_id = 'initech' AND chain_index = 3",
    )
    .await;
    let check = verify(&store, "initech", None).await;
    assert_eq!(broken_at(&check), 3);
    assert_eq!(check.checked, 3);

    // Slipped in around the chain: a row without a position is reported.
    store
        .commit(&Commit {
            events: vec![event(950, Some("umbrella"), &clock)],
            ..Commit::default()
        })
        .await
        .unwrap();
    execute(
        &store,
        "INSERT INTO events (id, trace_id, timestamp, event_type, tenant_id, payload, evidence) \
         SELECT 'slipped-in', trace_id, timestamp, event_type, tenant_id, payload, evidence \
         FROM events WHERE tenant_id = 'umbrella'",
    )
    .await;
    let check = verify(&store, "umbrella", None).await;
    assert_eq!(check.status(), "broken");
    assert_eq!(check.unchained_event.as_deref(), Some("slipped-in"));
    assert_eq!(check.checked, 1);

    // The head removed: events without a head are reported.
    execute(&store, "DELETE FROM audit_chains WHERE tenant = 'initech'").await;
    let check = verify(&store, "initech", None).await;
    assert_eq!(broken_at(&check), 0);
    assert!(
        check.first_broken.unwrap().reason.contains("no head"),
        "a removed head reads as one"
    );
}

async fn retention_prunes_behind_a_signed_anchor_and_the_rest_still_verifies(
    store: Store,
    clock: ManualClock,
) {
    let old: Vec<Event> = (0..10).map(|n| event(n, Some("acme"), &clock)).collect();
    store
        .commit(&Commit {
            events: old,
            outbox: vec![OutboxMessage {
                topic: "queue".to_owned(),
                payload: json!({"sent": true}),
            }],
            ..Commit::default()
        })
        .await
        .unwrap();
    store
        .commit(&Commit {
            events: vec![event(1, Some("globex"), &clock)],
            outbox: vec![OutboxMessage {
                topic: "queue".to_owned(),
                payload: json!({"sent": false}),
            }],
            ..Commit::default()
        })
        .await
        .unwrap();
    let claimed = store
        .claim_outbox("queue", "test", 10, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    let sent = claimed
        .iter()
        .find(|row| row.payload == json!({"sent": true}))
        .unwrap();
    store.mark_outbox_sent(sent.seq).await.unwrap();

    clock.advance(Duration::days(40));
    store
        .commit(&Commit {
            events: (10..15).map(|n| event(n, Some("acme"), &clock)).collect(),
            ..Commit::default()
        })
        .await
        .unwrap();

    let settings = AuditSettings {
        events: Some(Duration::days(30)),
        sent_outbox: Some(Duration::days(7)),
        signing_key: Some(key()),
        signing_key_secret_arn: None,
    };
    let report = apply_retention(&store, &settings, clock.now())
        .await
        .unwrap();
    // acme's ten old events and globex's one; the sent row, not the unsent one.
    assert_eq!((report.events, report.outbox), (11, 1), "{report:?}");
    assert!(report.broken_chains.is_empty());
    assert_eq!(store.unsent_outbox_count().await.unwrap(), 1);

    let check = verify(&store, "acme", Some(&key())).await;
    assert_eq!(check.status(), "valid", "{check:?}");
    assert_eq!((check.from_index, check.checked), (10, 5));
    let (anchor, signature) = check.anchor.clone().unwrap();
    assert_eq!(signature, AnchorSignature::Valid);
    assert_eq!((anchor.through_index, anchor.pruned_events), (9, 10));
    let check = verify(&store, "globex", Some(&key())).await;
    assert_eq!((check.status(), check.checked), ("valid", 0));

    // Without the key the anchor cannot be checked; with another key it is refused.
    assert_eq!(verify(&store, "acme", None).await.status(), "unverifiable");
    let other = SigningKey::new(vec![9u8; 32]).unwrap();
    assert_eq!(broken_at(&verify(&store, "acme", Some(&other)).await), 9);

    // The projection cannot be rebuilt from a pruned log.
    let refused = store.rebuild_projections().await.unwrap_err();
    assert!(refused.to_string().contains("pruned"), "{refused}");

    // A second pass has nothing old enough left.
    let again = apply_retention(&store, &settings, clock.now())
        .await
        .unwrap();
    assert_eq!((again.events, again.outbox), (0, 0));

    // Deleting what follows the anchor is found; retention then prunes nothing of that chain.
    execute(
        &store,
        "DELETE FROM events WHERE tenant_id = 'acme' AND chain_index = 10",
    )
    .await;
    assert_eq!(broken_at(&verify(&store, "acme", Some(&key())).await), 10);
    clock.advance(Duration::days(40));
    let report = apply_retention(&store, &settings, clock.now())
        .await
        .unwrap();
    assert_eq!(report.broken_chains, vec!["acme".to_owned()]);
    assert_eq!(report.events, 0);
    let left = verify_chain(&store, "acme", Some(&key()), None, 100)
        .await
        .unwrap();
    assert_eq!(
        left.anchor.unwrap().0.pruned_events,
        10,
        "nothing more pruned"
    );

    // A forged anchor (moved on without the key) is refused by retention as well.
    execute(
        &store,
        "UPDATE audit_anchors SET through_index = 5 WHERE tenant = 'globex'",
    )
    .await;
    assert_eq!(broken_at(&verify(&store, "globex", Some(&key())).await), 5);
    let report = apply_retention(&store, &settings, clock.now())
        .await
        .unwrap();
    assert!(
        report.broken_chains.contains(&"globex".to_owned()),
        "{report:?}"
    );
}

async fn events_from_before_the_chain_are_sealed_when_a_process_migrates(
    store: Store,
    clock: ManualClock,
) {
    store
        .commit(&Commit {
            events: (0..3).map(|n| event(n, Some("acme"), &clock)).collect(),
            ..Commit::default()
        })
        .await
        .unwrap();
    // Rows as an older version wrote them: no position, no hash.
    execute(
        &store,
        "UPDATE events SET chain_index = NULL, chain_hash = NULL",
    )
    .await;
    execute(&store, "DELETE FROM audit_chains").await;
    assert_eq!(
        verify(&store, "acme", None)
            .await
            .unchained_event
            .as_deref(),
        Some("ev-acme-0")
    );
    assert_eq!(store.seal_unchained_events().await.unwrap(), 3);
    let check = verify(&store, "acme", None).await;
    assert_eq!((check.status(), check.checked), ("valid", 3), "{check:?}");
    // Sealed once: migrating again changes nothing, and new commits go on from there.
    store.migrate().await.unwrap();
    store
        .commit(&Commit {
            events: vec![event(3, Some("acme"), &clock)],
            ..Commit::default()
        })
        .await
        .unwrap();
    let check = verify(&store, "acme", None).await;
    assert_eq!((check.status(), check.checked), ("valid", 4), "{check:?}");
}

async fn verifying_while_events_are_appended_finds_the_chain_sound(
    store: Store,
    clock: ManualClock,
) {
    let writer = {
        let (store, clock) = (store.clone(), clock.clone());
        tokio::spawn(async move {
            for n in 0..300 {
                store
                    .commit(&Commit {
                        events: vec![event(n, Some("busy"), &clock)],
                        ..Commit::default()
                    })
                    .await
                    .unwrap();
            }
        })
    };
    let mut checked = 0;
    while !writer.is_finished() {
        let check = verify(&store, "busy", None).await;
        assert_eq!(check.status(), "valid", "{check:?}");
        checked += 1;
    }
    writer.await.unwrap();
    let check = verify(&store, "busy", None).await;
    assert_eq!((check.status(), check.checked), ("valid", 300));
    assert!(checked > 0);
}

async fn retention_keeps_the_events_of_intents_still_in_the_queue(
    store: Store,
    clock: ManualClock,
) {
    let intent = converge_core::Intent::new("live-1", "feature/x", "main", clock.now());
    let mut created = Event::about_intent(
        "ev-live-created",
        "t",
        clock.now(),
        EventType::IntentCreated,
        "live-1",
        serde_json::to_value(&intent).unwrap(),
    );
    created.tenant_id = None;
    store
        .commit(&Commit {
            events: vec![event(0, None, &clock), created, event(2, None, &clock)],
            ..Commit::default()
        })
        .await
        .unwrap();
    clock.advance(Duration::days(40));
    let settings = AuditSettings {
        events: Some(Duration::days(30)),
        sent_outbox: None,
        signing_key: Some(key()),
        signing_key_secret_arn: None,
    };
    // The READY intent's creation is kept, and what follows it.
    let report = apply_retention(&store, &settings, clock.now())
        .await
        .unwrap();
    assert_eq!(report.events, 1, "{report:?}");
    let check = verify(&store, "", Some(&key())).await;
    assert_eq!(
        (check.status(), check.from_index, check.checked),
        ("valid", 1, 2)
    );
    // Rejected, it leaves the queue: its old events go at the next pass.
    let mut rejected = Event::about_intent(
        "ev-live-rejected",
        "t",
        clock.now(),
        EventType::IntentRejected,
        "live-1",
        json!({"reason": "closed"}),
    );
    rejected.tenant_id = None;
    store
        .commit(&Commit {
            events: vec![rejected],
            ..Commit::default()
        })
        .await
        .unwrap();
    let report = apply_retention(&store, &settings, clock.now())
        .await
        .unwrap();
    assert_eq!(report.events, 2, "{report:?}");
    let check = verify(&store, "", Some(&key())).await;
    assert_eq!(
        (check.status(), check.from_index, check.checked),
        ("valid", 3, 1)
    );
}

/// PostgreSQL hashes a one-tenant commit's links in SQL; the verifier hashes in Rust. Text that
/// JSON escapes (quotes, backslashes, control characters), characters beyond ASCII and long
/// payloads must come out the same, whichever tenant and however many events a commit has.
async fn events_of_any_text_link_as_the_verifier_hashes_them(store: Store, clock: ManualClock) {
    let awkward = [
        "plain",
        "quote \" backslash \\ slash /",
        "tab\tnewline\nreturn\rbell\u{7}",
        "Grüße, 東京, emoji 🚀, combining é",
        "\u{2028}line separator\u{2029}",
    ];
    for tenant in [Some("ténant ü"), None] {
        for size in [1usize, 4, 17] {
            let events = (0..size)
                .map(|k| {
                    let mut event = event(size * 100 + k, tenant, &clock);
                    event.id = format!("{}-{size}-{k}", event.id);
                    event.payload = json!({
                        "text": awkward[k % awkward.len()],
                        "long": "x".repeat(5_000 * (k % 2)),
                        "keys": {"z": 1, "a": [null, true, 1.5e-7]},
                    });
                    event
                })
                .collect();
            store
                .commit(&Commit {
                    events,
                    ..Commit::default()
                })
                .await
                .unwrap();
        }
        let chain = tenant.unwrap_or("");
        let check = verify(&store, chain, None).await;
        assert_eq!(check.status(), "valid", "{check:?}");
        assert_eq!(check.head.clone().unwrap().next_index, 22);
    }
}
