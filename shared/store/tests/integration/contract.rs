//! The store contract, run against both backends: every operation, and the races that matter
//! (one lease holder at a time with growing fencing tokens, exactly one new delivery among
//! concurrent duplicates, a stale holder fenced off after takeover).

use crate::support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::Duration;
use converge_core::pipeline::Clock;
use converge_core::queue::QueueKey;
use converge_core::{EventType, Intent, Status};
use converge_store::backfill::summaries;
use converge_store::{
    ApiKeyRecord, Commit, CommitLink, DecisionTrail, Delivery, DeliveryDecision, DeliveryGroups,
    DeliveryOutcome, EventFilter, Expected, IdempotencyClaim, IntentCursor, IntentFilter,
    KeyDocument, OutboxMessage, Store, StoreError, SystemClock,
};
use serde_json::{Value, json};
use support::{ManualClock, created, event, pg_store_at, sqlite_store};

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let clock = super::ManualClock::new();
                    let (store, _dir) = super::sqlite_store(&clock).await;
                    super::$name(store, clock).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let clock = super::ManualClock::new();
                    let url = converge_testkit::fresh_pg_database().await;
                    let store = super::pg_store_at(&url, &clock).await;
                    super::$name(store, clock).await;
                    converge_testkit::drop_pg_database(&url).await;
                }
            )*
        }
    };
}

on_both_backends!(
    a_commit_appends_events_and_moves_the_projection,
    an_illegal_move_rolls_back_the_whole_commit,
    a_tenant_s_log_order_is_its_chain_order_and_a_commit_refused_at_its_end_leaves_nothing,
    intents_list_in_queue_order_with_filters_and_cursor,
    events_list_newest_first_with_filters_and_cursor,
    a_rebuild_reproduces_the_projection_exactly,
    concurrent_identical_deliveries_yield_one_new,
    eight_workers_take_turns_on_one_lease_with_growing_tokens,
    an_expired_lease_is_taken_over_and_the_old_holder_is_fenced,
    force_clearing_a_lease_fences_its_holder,
    a_paused_key_backs_off_by_its_failures_and_only_its_holder_pauses_or_resumes_it,
    outbox_rows_are_claimed_once_and_reclaimed_after_a_lapsed_claim,
    api_keys_are_found_by_hash_until_they_expire,
    rate_limit_windows_count_hits_per_tenant,
    policy_documents_are_versioned,
    migrations_are_idempotent_and_cover_every_table,
    concurrent_creations_of_one_intent_keep_the_first_birth,
    concurrent_commits_on_one_intent_apply_in_log_order,
    a_rebuild_during_commits_loses_nothing,
    the_schema_matches_what_backfill_copies,
    flags_are_set_and_listed,
    intents_are_counted_by_key_and_status,
    a_queue_key_lists_its_actionable_intents_in_order,
    the_actionable_intents_at_a_head_are_found_across_tenants_and_targets,
    a_repository_s_trains_are_read_by_key,
    a_delivery_changes_state_once_however_often_it_arrives,
    the_decision_trail_tells_whether_checks_arrived_since,
    the_decision_trails_of_a_page_are_read_together,
    the_latest_event_of_many_intents_comes_in_one_query,
    driver_errors_are_classified_for_callers,
    a_commit_expecting_a_version_commits_only_while_the_row_is_unchanged,
    of_concurrent_commits_expecting_one_version_exactly_one_lands,
    concurrent_decisions_under_an_intents_lock_each_see_the_one_before,
    deliveries_decided_as_a_group_each_see_the_one_before_and_are_recorded_once,
    deliveries_arriving_together_are_all_decided_in_turn,
    a_group_whose_decision_panics_hands_its_delivery_back_and_groups_go_on,
    decisions_about_an_absent_intent_create_it_once,
    idempotency_keys_replay_for_a_day_and_free_an_abandoned_claim,
    the_intents_version_moves_with_every_change_of_a_tenants_intents,
    of_concurrent_commits_the_failed_and_the_abandoned_leave_no_trace,
    a_freeze_is_written_with_its_event_read_by_key_and_lifted_exactly_once,
);

fn ok<T>(result: Result<T, StoreError>) -> T {
    result.unwrap_or_else(|e| panic!("store error: {e}"))
}

/// Commits each event in a commit of its own, all at once (one task each), and requires every
/// commit to land.
async fn commit_each_at_once(store: &Store, events: Vec<converge_core::Event>) {
    let tasks: Vec<_> = events
        .into_iter()
        .map(|e| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .commit(&Commit {
                        events: vec![e],
                        ..Commit::default()
                    })
                    .await
            })
        })
        .collect();
    for task in tasks {
        ok(task.await.unwrap_or_else(|e| panic!("task: {e}")));
    }
}

/// Every table's summary but the tenants' versions, which a rebuild moves on purpose.
async fn state_tables(store: &Store) -> Vec<converge_store::backfill::TableSummary> {
    let mut tables = ok(summaries(store).await);
    tables.retain(|t| t.table != "tenant_versions");
    tables
}

async fn a_commit_appends_events_and_moves_the_projection(store: Store, clock: ManualClock) {
    let (intent, created_event) = created(&clock, "acme/app:pr-1", 3);
    clock.advance(Duration::seconds(1));
    let validated = event(
        &clock,
        &intent.id,
        EventType::IntentValidated,
        json!({"risk_level": "high"}),
    );
    let link = CommitLink {
        intent_id: intent.id.clone(),
        repo: "acme/app".into(),
        sha: "a".repeat(40),
        role: "head".into(),
        observed_at: clock.now(),
    };
    ok(store
        .commit(&Commit {
            events: vec![created_event, validated],
            commit_links: vec![link.clone(), link.clone()],
            outbox: vec![OutboxMessage {
                topic: "queue".into(),
                payload: json!({"key": "acme/app@main"}),
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
        })
        .await);

    let row = ok(store.intent(&intent.id).await).unwrap_or_else(|| panic!("no projection row"));
    assert_eq!(row.status, Status::Validated);
    assert_eq!(
        row.risk_level.as_str(),
        "high",
        "the reclassified level is persisted"
    );
    assert_eq!(row.technical, intent.technical, "non-ASCII JSON survives");
    assert_eq!(row.created_at, intent.created_at);

    let events = ok(store
        .events(&EventFilter {
            intent_id: Some(intent.id.clone()),
            ..EventFilter::default()
        })
        .await);
    let types: Vec<&str> = events.iter().map(|e| e.event.event_type.as_str()).collect();
    assert_eq!(
        types,
        ["intent.validated", "intent.created"],
        "newest first"
    );
    assert!(
        events[0].seq > events[1].seq,
        "the events took sequence numbers in their order"
    );
    assert_eq!(
        ok(store.commit_links(&intent.id).await),
        vec![link],
        "duplicate links are ignored"
    );
    assert_eq!(ok(store.unsent_outbox_count().await), 1);
}

async fn an_illegal_move_rolls_back_the_whole_commit(store: Store, clock: ManualClock) {
    let (intent, created_event) = created(&clock, "i-illegal", 3);
    ok(store
        .commit(&Commit {
            events: vec![created_event],
            ..Commit::default()
        })
        .await);
    let before = ok(summaries(&store).await);

    let requeued = event(
        &clock,
        &intent.id,
        EventType::IntentRequeued,
        json!({"retries": 1}),
    );
    let queued_from_ready = event(&clock, &intent.id, EventType::IntentQueued, json!({}));
    let result = store
        .commit(&Commit {
            events: vec![requeued, queued_from_ready],
            outbox: vec![OutboxMessage {
                topic: "queue".into(),
                payload: json!({}),
            }],
            ..Commit::default()
        })
        .await;
    assert!(
        matches!(result, Err(StoreError::Projection(_))),
        "got {result:?}"
    );
    assert_eq!(
        ok(summaries(&store).await),
        before,
        "no event, row or outbox message was kept"
    );
}

/// Many commits of one tenant at once: each event takes its sequence number in its chain's
/// order (a reader following the log by sequence reads the chain in order). A commit refused
/// at its very end (on PostgreSQL, its log tail is written as it commits: here an event id
/// already in the log) answers an error and leaves nothing: no event, row change, tally or
/// version, and nothing on its way to the log.
async fn a_tenant_s_log_order_is_its_chain_order_and_a_commit_refused_at_its_end_leaves_nothing(
    store: Store,
    clock: ManualClock,
) {
    let (intent, created_event) = created(&clock, "i-chained", 3);
    ok(store
        .commit(&Commit {
            events: vec![created_event],
            ..Commit::default()
        })
        .await);
    let evaluations: Vec<_> = (0..40)
        .map(|n| {
            event(
                &clock,
                &intent.id,
                EventType::RiskEvaluated,
                json!({"entropy_score": n}),
            )
        })
        .collect();
    let taken = evaluations[7].id.clone();
    commit_each_at_once(&store, evaluations).await;
    let links = ok(store.audit_links("acme", -1, 100).await);
    assert_eq!(links.len(), 41, "every event joined the chain");
    for (position, pair) in links.windows(2).enumerate() {
        assert_eq!(
            pair[1].chain_index,
            pair[0].chain_index + 1,
            "at {position}"
        );
        assert!(
            pair[1].seq > pair[0].seq,
            "chain position {} took sequence number {} after {}",
            pair[1].chain_index,
            pair[1].seq,
            pair[0].seq
        );
    }

    let before = ok(summaries(&store).await);
    let version = ok(store.intents_version(Some("acme")).await);
    let mut reused = event(&clock, &intent.id, EventType::RiskEvaluated, json!({}));
    reused.id = taken;
    let validated = event(&clock, &intent.id, EventType::IntentValidated, json!({}));
    let result = store
        .commit(&Commit {
            events: vec![validated, reused],
            ..Commit::default()
        })
        .await;
    assert!(
        result.is_err(),
        "a commit that did not land answered {result:?}"
    );
    assert_eq!(
        ok(summaries(&store).await),
        before,
        "nothing of it was kept"
    );
    assert_eq!(ok(store.intents_version(Some("acme")).await), version);
    assert_eq!(
        ok(store.intent(&intent.id).await).map(|i| i.status),
        Some(Status::Ready)
    );
    if let Store::Postgres(pg) = &store {
        let in_transit: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM log_tails")
            .fetch_one(pg.pool())
            .await
            .unwrap();
        assert_eq!(in_transit, 0, "no log tail outlives its transaction");
    }
}

/// The version read caches key on: each committed change to a tenant's intents moves it (none
/// is lost among concurrent commits), a refused commit or another tenant's leaves it, and a
/// rebuild moves every tenant's.
async fn the_intents_version_moves_with_every_change_of_a_tenants_intents(
    store: Store,
    clock: ManualClock,
) {
    assert_eq!(ok(store.intents_version(Some("acme")).await), 0);
    assert_eq!(ok(store.intents_version(None).await), 0);
    let (intent, created_event) = created(&clock, "i-versioned", 3);
    ok(store
        .commit(&Commit {
            events: vec![created_event],
            ..Commit::default()
        })
        .await);
    let acme = ok(store.intents_version(Some("acme")).await);
    assert!(acme > 0);
    assert_eq!(ok(store.intents_version(Some("globex")).await), 0);

    // Another tenant's intent (and one without a tenant) move their own versions only, and
    // every tenant's sum.
    let (mut other, _) = created(&clock, "i-globex", 3);
    other.tenant_id = Some("globex".into());
    let (mut untenanted, _) = created(&clock, "i-nobody", 3);
    untenanted.tenant_id = None;
    for intent in [&other, &untenanted] {
        let payload = serde_json::to_value(intent).unwrap();
        ok(store
            .commit(&Commit {
                events: vec![event(&clock, &intent.id, EventType::IntentCreated, payload)],
                ..Commit::default()
            })
            .await);
    }
    assert_eq!(ok(store.intents_version(Some("acme")).await), acme);
    assert!(ok(store.intents_version(Some("globex")).await) > 0);
    assert!(ok(store.intents_version(Some("")).await) > 0);
    let all = ok(store.intents_version(None).await);
    assert!(all > acme);

    // A commit the projection refuses writes no version either.
    let refused = store
        .commit(&Commit {
            events: vec![event(
                &clock,
                &intent.id,
                EventType::IntentQueued,
                json!({}),
            )],
            ..Commit::default()
        })
        .await;
    assert!(refused.is_err(), "queued from READY was accepted");
    assert_eq!(ok(store.intents_version(Some("acme")).await), acme);

    // Sixteen concurrent commits, each changing one of the tenant's intents: sixteen moves.
    let creations = (0..16)
        .map(|n| created(&clock, &format!("i-concurrent-{n}"), 3).1)
        .collect();
    commit_each_at_once(&store, creations).await;
    let after = ok(store.intents_version(Some("acme")).await);
    assert_eq!(after, acme + 16, "a concurrent commit's move was lost");
    assert!(ok(store.intents_version(None).await) > all);

    ok(store.rebuild_projections().await);
    assert!(ok(store.intents_version(Some("acme")).await) > after);
}

async fn intents_list_in_queue_order_with_filters_and_cursor(store: Store, clock: ManualClock) {
    let mut events = Vec::new();
    for (id, priority) in [("c", 1), ("a", 3), ("b", 3), ("d", 2)] {
        clock.advance(Duration::seconds(1));
        events.push(created(&clock, id, priority).1);
    }
    let (mut other_target, _) = created(&clock, "e", 0);
    other_target.target = "develop".into();
    events.push(event(
        &clock,
        "e",
        EventType::IntentCreated,
        serde_json::to_value(&other_target).unwrap_or_default(),
    ));
    events.push(event(&clock, "b", EventType::IntentValidated, json!({})));
    ok(store
        .commit(&Commit {
            events,
            ..Commit::default()
        })
        .await);

    let ids =
        |intents: Vec<converge_core::Intent>| intents.into_iter().map(|i| i.id).collect::<Vec<_>>();
    let main = IntentFilter {
        target: Some("main".into()),
        ..IntentFilter::default()
    };
    assert_eq!(ids(ok(store.intents(&main).await)), ["c", "d", "a", "b"]);

    let first_page = ok(store
        .intents(&IntentFilter {
            limit: 2,
            ..main.clone()
        })
        .await);
    let last = first_page
        .last()
        .cloned()
        .unwrap_or_else(|| panic!("empty page"));
    let cursor = IntentCursor {
        priority: last.priority,
        created_at: last.created_at,
        id: last.id,
    };
    let second_page = ok(store
        .intents(&IntentFilter {
            limit: 2,
            after: Some(cursor),
            ..main.clone()
        })
        .await);
    assert_eq!(
        (ids(first_page), ids(second_page)),
        (
            vec!["c".to_owned(), "d".into()],
            vec!["a".to_owned(), "b".into()]
        )
    );

    let validated = IntentFilter {
        statuses: vec![Status::Validated, Status::Queued],
        ..IntentFilter::default()
    };
    assert_eq!(ids(ok(store.intents(&validated).await)), ["b"]);
    let other_tenant = IntentFilter {
        tenant_id: Some("globex".into()),
        ..IntentFilter::default()
    };
    assert!(ok(store.intents(&other_tenant).await).is_empty());
}

async fn events_list_newest_first_with_filters_and_cursor(store: Store, clock: ManualClock) {
    let (intent, first) = created(&clock, "i-ev", 3);
    let start = clock.now();
    let mut events = vec![first];
    for n in 0..5 {
        clock.advance(Duration::minutes(1));
        events.push(event(
            &clock,
            &intent.id,
            EventType::IntentBlocked,
            json!({"reason": format!("r{n}")}),
        ));
    }
    ok(store
        .commit(&Commit {
            events,
            ..Commit::default()
        })
        .await);

    let blocked = EventFilter {
        event_type: Some(EventType::IntentBlocked),
        limit: 2,
        ..EventFilter::default()
    };
    let page = ok(store.events(&blocked).await);
    let reasons: Vec<String> = page
        .iter()
        .map(|e| e.event.payload["reason"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(reasons, ["r4", "r3"]);
    let before_seq = page.last().map(|e| e.seq);
    let next = ok(store
        .events(&EventFilter {
            before_seq,
            ..blocked.clone()
        })
        .await);
    assert_eq!(
        next.iter()
            .map(|e| e.event.payload["reason"].clone())
            .collect::<Vec<_>>(),
        [json!("r2"), json!("r1")]
    );

    let window = EventFilter {
        since: Some(start + Duration::minutes(2)),
        until: Some(start + Duration::minutes(3)),
        ..EventFilter::default()
    };
    assert_eq!(ok(store.events(&window).await).len(), 2);
    let tenant = EventFilter {
        tenant_id: Some("acme".into()),
        ..EventFilter::default()
    };
    assert_eq!(ok(store.events(&tenant).await).len(), 6);
}

async fn the_latest_event_of_many_intents_comes_in_one_query(store: Store, clock: ManualClock) {
    let mut events = Vec::new();
    for (id, scores) in [
        ("a/b:pr-1", vec![10.0, 20.0]),
        ("c\"d", vec![5.0]),
        ("e", vec![]),
    ] {
        let (_, create) = created(&clock, id, 0);
        events.push(create);
        for score in scores {
            clock.advance(Duration::seconds(1));
            events.push(event(
                &clock,
                id,
                EventType::RiskEvaluated,
                json!({"risk_score": score}),
            ));
        }
    }
    ok(store
        .commit(&Commit {
            events,
            ..Commit::default()
        })
        .await);
    let ids: Vec<String> = ["a/b:pr-1", "c\"d", "e", "missing"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    let latest = ok(store.latest_events(EventType::RiskEvaluated, &ids).await);
    let scores: Vec<(String, Value)> = latest
        .iter()
        .map(|e| {
            (
                e.event.intent_id.clone().unwrap_or_default(),
                e.event.payload["risk_score"].clone(),
            )
        })
        .collect();
    // Newest first; only the latest per intent; intents without one are left out.
    assert_eq!(
        scores,
        [
            ("c\"d".to_owned(), json!(5.0)),
            ("a/b:pr-1".to_owned(), json!(20.0))
        ]
    );
    assert!(ok(store.latest_events(EventType::RiskEvaluated, &[]).await).is_empty());
}

/// Callers act on the class of a failure, never on the driver's error: a duplicate key is a
/// conflict (HTTP answers 409), a database that cannot be reached is unavailable (503).
async fn driver_errors_are_classified_for_callers(store: Store, _clock: ManualClock) {
    let insert = "INSERT INTO feature_flags (name, enabled, updated_at, updated_by) \
                  VALUES ('twice', true, CURRENT_TIMESTAMP, 'test')";
    let duplicate = match &store {
        Store::Postgres(pg) => {
            sqlx::query(insert).execute(pg.pool()).await.unwrap();
            sqlx::query(insert).execute(pg.pool()).await.map(|_| ())
        }
        Store::Sqlite(lite) => {
            sqlx::query(insert).execute(lite.pool()).await.unwrap();
            sqlx::query(insert).execute(lite.pool()).await.map(|_| ())
        }
    };
    let error = StoreError::from(duplicate.expect_err("a duplicate key is refused"));
    assert!(matches!(error, StoreError::Conflict(_)), "{error:?}");

    // A database that cannot be reached is a PostgreSQL matter (a SQLite file is opened, not
    // reached): checked once, in the PostgreSQL run. Nothing listens on port 9 of the loopback.
    if store.backend() != converge_store::Backend::Postgres {
        return;
    }
    let gone = Store::from_url(
        "postgres://nobody:secret@127.0.0.1:9/converge?connect_timeout=2",
        Arc::new(SystemClock),
    )
    .unwrap();
    let error = gone.ping().await.expect_err("nothing is there");
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    assert!(!error.to_string().contains("secret"), "{error}");
}

async fn a_rebuild_reproduces_the_projection_exactly(store: Store, clock: ManualClock) {
    for n in 0..6 {
        let (intent, created_event) = created(&clock, &format!("i-{n}"), n % 3);
        clock.advance(Duration::seconds(1));
        let mut events = vec![
            created_event,
            event(&clock, &intent.id, EventType::IntentValidated, json!({})),
        ];
        match n % 3 {
            0 => events.push(event(
                &clock,
                &intent.id,
                EventType::IntentQueued,
                json!({}),
            )),
            1 => events.push(event(
                &clock,
                &intent.id,
                EventType::IntentRequeued,
                json!({"retries": 2}),
            )),
            _ => events.push(event(
                &clock,
                &intent.id,
                EventType::RiskLevelReclassified,
                json!({"old": "medium", "new": "critical"}),
            )),
        }
        ok(store
            .commit(&Commit {
                events,
                ..Commit::default()
            })
            .await);
        clock.advance(Duration::seconds(1));
        if n % 2 == 0 {
            let merged = event(
                &clock,
                &intent.id,
                EventType::IntentMerged,
                json!({"merged_commit": "abc"}),
            );
            ok(store
                .commit(&Commit {
                    events: vec![merged],
                    ..Commit::default()
                })
                .await);
        }
    }
    let before = state_tables(&store).await;
    assert_eq!(ok(store.rebuild_projections().await), 6);
    assert_eq!(
        state_tables(&store).await,
        before,
        "identical rows, updated_at included"
    );
}

async fn concurrent_identical_deliveries_yield_one_new(store: Store, _clock: ManualClock) {
    let store = Arc::new(store);
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            store
                .record_delivery("delivery-1", "pull_request", "hash-a")
                .await
        }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(ok(task.await.unwrap_or_else(|e| panic!("task: {e}"))));
    }
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == DeliveryOutcome::New)
            .count(),
        1
    );
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == DeliveryOutcome::Duplicate)
            .count(),
        49
    );
    assert_eq!(
        ok(store
            .record_delivery("delivery-1", "pull_request", "hash-b")
            .await),
        DeliveryOutcome::BodyMismatch
    );
}

fn key() -> QueueKey {
    QueueKey {
        tenant: "acme".into(),
        repo: "acme/app".into(),
        target: "main".into(),
    }
}

async fn eight_workers_take_turns_on_one_lease_with_growing_tokens(
    store: Store,
    _clock: ManualClock,
) {
    let store = Arc::new(store);
    // Holding state shared by the workers: who holds the lease now, and every token handed out
    // in the order the holders saw them.
    let holding = Arc::new(std::sync::Mutex::new((None::<usize>, Vec::<i64>::new())));
    let mut tasks = Vec::new();
    for worker in 0..8usize {
        let (store, holding) = (Arc::clone(&store), Arc::clone(&holding));
        tasks.push(tokio::spawn(async move {
            let mut turns = 0;
            let deadline = std::time::Instant::now() + StdDuration::from_secs(60);
            while turns < 3 && std::time::Instant::now() < deadline {
                let lease = store
                    .acquire_lease(
                        &key(),
                        &format!("worker-{worker}"),
                        StdDuration::from_secs(60),
                    )
                    .await;
                let Some(lease) = lease.unwrap_or_else(|e| panic!("acquire: {e}")) else {
                    tokio::time::sleep(StdDuration::from_millis(1)).await;
                    continue;
                };
                {
                    let mut h = holding.lock().unwrap_or_else(|e| e.into_inner());
                    assert_eq!(
                        h.0, None,
                        "worker {worker} got the lease while {:?} held it",
                        h.0
                    );
                    h.0 = Some(worker);
                    h.1.push(lease.token().value());
                }
                tokio::time::sleep(StdDuration::from_millis(2)).await;
                holding.lock().unwrap_or_else(|e| e.into_inner()).0 = None;
                assert!(
                    store
                        .release_lease(&lease)
                        .await
                        .unwrap_or_else(|e| panic!("release: {e}"))
                );
                turns += 1;
            }
            turns
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap_or_else(|e| panic!("task: {e}"));
    }
    let tokens = holding.lock().unwrap_or_else(|e| e.into_inner()).1.clone();
    assert_eq!(total, 24, "every worker got its three turns");
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "tokens must strictly increase: {tokens:?}"
    );
}

/// Checks of PostgreSQL alone: on SQLite, with one writer, every write waits its turn by design.
mod postgres_only {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_lease_row_in_use_is_answered_busy_without_waiting() {
        let clock = super::ManualClock::new();
        let url = converge_testkit::fresh_pg_database().await;
        let store = super::pg_store_at(&url, &clock).await;
        super::a_lease_row_in_use_is_answered_busy_without_waiting(store).await;
        converge_testkit::drop_pg_database(&url).await;
    }
}

/// A key whose lease row is locked (its holder committing, with the row locked by the commit's
/// lease guard until it ends) is answered busy at once: a worker does not wait out another's
/// commit to learn the key is taken. Once the row is free again, it is taken.
async fn a_lease_row_in_use_is_answered_busy_without_waiting(store: Store) {
    let ttl = StdDuration::from_secs(60);
    let held = store
        .acquire_lease(&key(), "worker-a", ttl)
        .await
        .unwrap()
        .expect("a new key's lease is free");
    // Held, its row locked as a commit guarded by the lease locks it: busy, at once.
    acquire_while_the_row_is_locked(&store, "the key is held by worker-a").await;
    // Released, but its row locked again (another worker taking it): still busy, at once.
    assert!(store.release_lease(&held).await.unwrap());
    acquire_while_the_row_is_locked(&store, "the row is in use").await;

    // Free and unlocked: taken, with the next token.
    let taken = store
        .acquire_lease(&key(), "worker-b", ttl)
        .await
        .unwrap()
        .expect("a free key's lease is taken");
    assert_eq!(taken.token().value(), held.token().value() + 1);
}

/// Locks the lease row of `key()` in a transaction kept open, checks that worker-b's acquire
/// answers busy while it is (`why`), then ends the transaction.
async fn acquire_while_the_row_is_locked(store: &Store, why: &str) {
    let Store::Postgres(pg) = store else {
        panic!("the lease row is locked on PostgreSQL only");
    };
    let mut locking = pg.pool().begin().await.unwrap();
    sqlx::query(
        "SELECT token FROM queue_leases WHERE tenant = $1 AND repo = $2 AND target = $3 FOR UPDATE",
    )
    .bind(&key().tenant)
    .bind(&key().repo)
    .bind(&key().target)
    .execute(&mut *locking)
    .await
    .unwrap();
    let answer = tokio::time::timeout(
        StdDuration::from_secs(10),
        store.acquire_lease(&key(), "worker-b", StdDuration::from_secs(60)),
    )
    .await
    .expect("acquiring a key whose row is locked answers without waiting for the lock");
    assert!(answer.unwrap().is_none(), "{why}");
    locking.rollback().await.unwrap();
}

async fn an_expired_lease_is_taken_over_and_the_old_holder_is_fenced(
    store: Store,
    clock: ManualClock,
) {
    let (intent, created_event) = created(&clock, "i-fence", 3);
    ok(store
        .commit(&Commit {
            events: vec![created_event],
            ..Commit::default()
        })
        .await);

    let old = ok(store
        .acquire_lease(&key(), "slow-worker", StdDuration::from_secs(30))
        .await)
    .unwrap_or_else(|| panic!("free lease not granted"));
    assert!(
        ok(store
            .acquire_lease(&key(), "other", StdDuration::from_secs(30))
            .await)
        .is_none(),
        "held lease granted twice"
    );

    clock.advance(Duration::seconds(31));
    let new = ok(store
        .acquire_lease(&key(), "fresh-worker", StdDuration::from_secs(30))
        .await)
    .unwrap_or_else(|| panic!("expired lease not taken over"));
    assert!(new.token() > old.token());

    // Each commit touches two intents (the guard and their rows are read together): one
    // that exists, one it creates.
    let validated = event(&clock, &intent.id, EventType::IntentValidated, json!({}));
    let (second, second_created) = created(&clock, "i-fence-2", 3);
    let stale = store
        .commit(&Commit {
            events: vec![validated.clone(), second_created.clone()],
            guard: Some(old.clone()),
            ..Commit::default()
        })
        .await;
    assert!(
        matches!(stale, Err(StoreError::StaleLease { .. })),
        "got {stale:?}"
    );
    assert_eq!(
        ok(store.intent(&intent.id).await).map(|i| i.status),
        Some(Status::Ready),
        "nothing written"
    );
    assert_eq!(ok(store.intent(&second.id).await), None, "nothing created");
    assert!(matches!(
        store.extend_lease(&old, StdDuration::from_secs(30)).await,
        Err(StoreError::StaleLease { .. })
    ));
    assert!(
        !ok(store.release_lease(&old).await),
        "a stale holder cannot release the new holding"
    );

    ok(store
        .commit(&Commit {
            events: vec![validated, second_created],
            guard: Some(new.clone()),
            ..Commit::default()
        })
        .await);
    assert_eq!(
        ok(store.intent(&intent.id).await).map(|i| i.status),
        Some(Status::Validated)
    );
    assert_eq!(
        ok(store.intent(&second.id).await).map(|i| i.status),
        Some(Status::Ready)
    );
    // Two intents that do not exist yet, under the guard.
    let (third, third_created) = created(&clock, "i-fence-3", 3);
    let (fourth, fourth_created) = created(&clock, "i-fence-4", 3);
    ok(store
        .commit(&Commit {
            events: vec![third_created, fourth_created],
            guard: Some(new.clone()),
            ..Commit::default()
        })
        .await);
    for id in [&third.id, &fourth.id] {
        assert!(ok(store.intent(id).await).is_some(), "{id} created");
    }
    let extended = ok(store.extend_lease(&new, StdDuration::from_secs(120)).await);
    assert!(extended.expires_at() > new.expires_at());
    let state = ok(store.inspect_lease(&key()).await).unwrap_or_else(|| panic!("no lease row"));
    assert_eq!(
        (state.holder.as_deref(), state.token),
        (Some("fresh-worker"), new.token().value())
    );
}

async fn force_clearing_a_lease_fences_its_holder(store: Store, clock: ManualClock) {
    let held = ok(store
        .acquire_lease(&key(), "stuck", StdDuration::from_secs(300))
        .await)
    .unwrap_or_else(|| panic!("free lease not granted"));
    assert!(ok(store.force_clear_lease(&key()).await));
    assert!(
        !ok(store.force_clear_lease(&key()).await),
        "nothing left to clear"
    );
    let next = ok(store
        .acquire_lease(&key(), "operator", StdDuration::from_secs(300))
        .await)
    .unwrap_or_else(|| panic!("cleared lease not granted"));
    assert!(next.token() > held.token());
    let stale = store
        .commit(&Commit {
            guard: Some(held),
            ..Commit::default()
        })
        .await;
    assert!(matches!(stale, Err(StoreError::StaleLease { .. })));
    assert_eq!(ok(store.leases().await).len(), 1);
    // The sweep clears expired holders only.
    assert_eq!(
        ok(store.clear_expired_leases().await),
        0,
        "the live lease stays"
    );
    clock.advance(Duration::seconds(3_600));
    assert_eq!(ok(store.clear_expired_leases().await), 1);
    assert!(ok(store.leases().await).iter().all(|l| l.holder.is_none()));
}

async fn a_paused_key_backs_off_by_its_failures_and_only_its_holder_pauses_or_resumes_it(
    store: Store,
    clock: ManualClock,
) {
    let ttl = StdDuration::from_secs(30);
    let lease = ok(store.acquire_lease(&key(), "w1", ttl).await)
        .unwrap_or_else(|| panic!("free lease not granted"));
    let first = ok(store.hold_key(&lease, "target is protected").await);
    assert_eq!(
        (first.failures, first.reason.as_str()),
        (1, "target is protected")
    );
    assert_eq!(first.until - first.since, Duration::seconds(5));
    clock.advance(Duration::seconds(6));
    let second = ok(store.hold_key(&lease, "GitHub unreachable").await);
    assert_eq!(second.failures, 2);
    assert_eq!(
        second.since, first.since,
        "the pause started with the first failure"
    );
    assert_eq!(second.until - clock.now(), Duration::seconds(10));
    let state = ok(store.inspect_lease(&key()).await).unwrap_or_else(|| panic!("no lease row"));
    assert_eq!(state.hold.as_ref(), Some(&second));

    // A holder that lost the lease can neither pause nor resume the key.
    ok(store.release_lease(&lease).await);
    let next = ok(store.acquire_lease(&key(), "w2", ttl).await)
        .unwrap_or_else(|| panic!("released lease not granted"));
    assert!(matches!(
        store.hold_key(&lease, "late").await,
        Err(StoreError::StaleLease { .. })
    ));
    assert!(!ok(store.release_key_hold(&lease).await));
    assert!(ok(store.release_key_hold(&next).await));
    assert!(
        !ok(store.release_key_hold(&next).await),
        "nothing left to resume"
    );
    let state = ok(store.inspect_lease(&key()).await).unwrap_or_else(|| panic!("no lease row"));
    assert_eq!(state.hold, None);
    // After a resume the backoff starts over.
    let again = ok(store.hold_key(&next, "again").await);
    assert_eq!(again.failures, 1);
    // A key nobody holds any more, with nothing left to do, can be let go of; a held one not.
    assert!(!ok(store.release_idle_key_hold(&key()).await));
    ok(store.release_lease(&next).await);
    assert!(ok(store.release_idle_key_hold(&key()).await));
    // An operator's clear ends a pause too, held or not.
    let last = ok(store.acquire_lease(&key(), "w3", ttl).await)
        .unwrap_or_else(|| panic!("released lease not granted"));
    ok(store.hold_key(&last, "once more").await);
    ok(store.release_lease(&last).await);
    assert!(ok(store.force_clear_lease(&key()).await));
    let state = ok(store.inspect_lease(&key()).await).unwrap_or_else(|| panic!("no lease row"));
    assert_eq!((state.holder, state.hold), (None, None));
}

async fn outbox_rows_are_claimed_once_and_reclaimed_after_a_lapsed_claim(
    store: Store,
    clock: ManualClock,
) {
    let mut outbox: Vec<OutboxMessage> = (0..5)
        .map(|n| OutboxMessage {
            topic: "queue".into(),
            payload: json!({"n": n}),
        })
        .collect();
    // Another topic is never handed to a claimer of "queue".
    outbox.push(OutboxMessage {
        topic: "publish".into(),
        payload: json!({}),
    });
    ok(store
        .commit(&Commit {
            outbox,
            ..Commit::default()
        })
        .await);

    let store = Arc::new(store);
    let (a, b) = tokio::join!(
        store.claim_outbox("queue", "sender-a", 3, StdDuration::from_secs(60)),
        store.claim_outbox("queue", "sender-b", 3, StdDuration::from_secs(60)),
    );
    let (a, b) = (ok(a), ok(b));
    let seqs: BTreeSet<i64> = a.iter().chain(&b).map(|e| e.seq).collect();
    assert_eq!(seqs.len(), a.len() + b.len(), "a row was claimed twice");
    assert_eq!(seqs.len(), 5);

    for entry in &a {
        assert!(ok(store.mark_outbox_sent(entry.seq).await));
        assert!(!ok(store.mark_outbox_sent(entry.seq).await), "marked twice");
    }
    // Sender b dies without marking: its rows come back once the claim lapses.
    assert!(
        ok(store
            .claim_outbox("queue", "sender-c", 10, StdDuration::from_secs(60))
            .await)
        .is_empty()
    );
    clock.advance(Duration::seconds(61));
    let reclaimed = ok(store
        .claim_outbox("queue", "sender-c", 10, StdDuration::from_secs(60))
        .await);
    assert_eq!(
        reclaimed.iter().map(|e| e.seq).collect::<Vec<_>>(),
        b.iter().map(|e| e.seq).collect::<Vec<_>>()
    );
    assert!(reclaimed.iter().all(|e| e.attempts == 2));
    assert_eq!(ok(store.unsent_outbox_count().await), b.len() as i64 + 1);
    let other = ok(store
        .claim_outbox("publish", "sender-d", 10, StdDuration::from_secs(60))
        .await);
    assert_eq!(other.len(), 1);
    // A released claim is claimable again at once.
    assert!(ok(store.release_outbox(other[0].seq).await));
    let again = ok(store
        .claim_outbox("publish", "sender-e", 10, StdDuration::from_secs(60))
        .await);
    assert_eq!(
        again.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [other[0].seq]
    );
}

async fn api_keys_are_found_by_hash_until_they_expire(store: Store, clock: ManualClock) {
    let record = ApiKeyRecord {
        key_hash: "ab".repeat(32),
        role: "operator".into(),
        actor: "ci-bot".into(),
        tenant_id: Some("acme".into()),
        scopes: vec!["intents:read".into(), "queue:write".into()],
        created_at: clock.now(),
        expires_at: None,
        origin: Some("secret:keys".into()),
    };
    ok(store.put_api_key(&record).await);
    assert_eq!(
        ok(store.find_api_key(&record.key_hash).await),
        Some(record.clone())
    );
    let unsourced = ApiKeyRecord {
        key_hash: "ef".repeat(32),
        origin: None,
        ..record.clone()
    };
    ok(store.put_api_key(&unsourced).await);
    assert_eq!(
        ok(store.api_keys_from("secret:keys").await),
        vec![record.key_hash.clone()],
        "only the live keys of that origin"
    );
    // Seeded again without an origin (CONVERGE_API_KEYS lists it too): still the secret's.
    ok(store
        .put_api_key(&ApiKeyRecord {
            origin: None,
            ..record.clone()
        })
        .await);
    assert_eq!(
        ok(store.api_keys_from("secret:keys").await),
        vec![record.key_hash.clone()],
        "an origin is never cleared"
    );
    assert_eq!(ok(store.find_api_key(&"cd".repeat(32)).await), None);
    assert!(ok(store
        .expire_api_key(&record.key_hash, clock.now() + Duration::seconds(60))
        .await));
    assert!(
        ok(store.find_api_key(&record.key_hash).await).is_some(),
        "still valid during the grace period"
    );
    clock.advance(Duration::seconds(61));
    assert_eq!(ok(store.find_api_key(&record.key_hash).await), None);
    assert!(ok(store.api_keys_from("secret:keys").await).is_empty());
}

async fn rate_limit_windows_count_hits_per_tenant(store: Store, clock: ManualClock) {
    let window = clock.now();
    for expected in 1..=3 {
        assert_eq!(ok(store.hit_rate_limit("acme", window, 1).await), expected);
    }
    // A block of hits counts at once (an instance taking its share of the budget).
    assert_eq!(ok(store.hit_rate_limit("acme", window, 10).await), 13);
    assert_eq!(ok(store.hit_rate_limit("globex", window, 1).await), 1);
    assert_eq!(
        ok(store
            .hit_rate_limit("acme", window + Duration::minutes(1), 1)
            .await),
        1
    );
    assert_eq!(
        ok(store.prune_rate_limits(window + Duration::seconds(1)).await),
        2
    );
}

async fn policy_documents_are_versioned(store: Store, _clock: ManualClock) {
    assert_eq!(ok(store.risk_policy("acme").await), None);
    assert_eq!(
        ok(store
            .put_risk_policy("acme", &json!({"mode": "shadow"}))
            .await),
        1
    );
    assert_eq!(
        ok(store
            .put_risk_policy("acme", &json!({"mode": "enforce", "enforce_ratio": 0.5}))
            .await),
        2
    );
    let policy = ok(store.risk_policy("acme").await).unwrap_or_else(|| panic!("no policy"));
    assert_eq!(
        (policy.version, policy.data),
        (2, json!({"mode": "enforce", "enforce_ratio": 0.5}))
    );
    ok(store
        .put_compliance_thresholds("", &json!({"min_mergeable_rate": 0.8}))
        .await);
    assert_eq!(
        ok(store.compliance_thresholds("").await).map(|d| d.data),
        Some(json!({"min_mergeable_rate": 0.8}))
    );
}

async fn migrations_are_idempotent_and_cover_every_table(store: Store, _clock: ManualClock) {
    ok(store.migrate().await);
    ok(store.migrate().await);
    // Each embedded migration is recorded once, however often migrate runs.
    let applied: i64 = match &store {
        Store::Postgres(s) => {
            sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
                .fetch_one(s.pool())
                .await
        }
        Store::Sqlite(s) => {
            sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
                .fetch_one(s.pool())
                .await
        }
    }
    .unwrap();
    let folder = match &store {
        Store::Postgres(_) => concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"),
        Store::Sqlite(_) => concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"),
    };
    let on_disk = std::fs::read_dir(folder)
        .map(|d| d.count())
        .unwrap_or_default();
    assert_eq!(applied as usize, on_disk);
    ok(store.ping().await);
}

async fn concurrent_creations_of_one_intent_keep_the_first_birth(store: Store, clock: ManualClock) {
    let creations = (0..8)
        .map(|n| {
            let (mut intent, _) = created(&clock, "acme/app:pr-9", 3);
            intent.created_by = format!("creator-{n}");
            event(
                &clock,
                &intent.id,
                EventType::IntentCreated,
                serde_json::to_value(&intent).unwrap_or_default(),
            )
        })
        .collect();
    commit_each_at_once(&store, creations).await;
    let events = ok(store
        .events(&EventFilter {
            intent_id: Some("acme/app:pr-9".into()),
            ..EventFilter::default()
        })
        .await);
    assert_eq!(events.len(), 8);
    let first = events
        .iter()
        .min_by_key(|e| e.seq)
        .map(|e| e.event.payload["created_by"].clone());
    let row = ok(store.intent("acme/app:pr-9").await).unwrap_or_else(|| panic!("no row"));
    assert_eq!(
        Some(json!(row.created_by)),
        first,
        "a re-creation overwrote the intent's birth"
    );
    let before = state_tables(&store).await;
    ok(store.rebuild_projections().await);
    assert_eq!(state_tables(&store).await, before);
}

async fn concurrent_commits_on_one_intent_apply_in_log_order(store: Store, clock: ManualClock) {
    let (intent, created_event) = created(&clock, "i-order", 3);
    ok(store
        .commit(&Commit {
            events: vec![created_event],
            ..Commit::default()
        })
        .await);
    let requeues = (1..=16u32)
        .map(|n| {
            event(
                &clock,
                &intent.id,
                EventType::IntentRequeued,
                json!({"reason": "x", "retries": n}),
            )
        })
        .collect();
    commit_each_at_once(&store, requeues).await;
    let events = ok(store
        .events(&EventFilter {
            event_type: Some(EventType::IntentRequeued),
            ..EventFilter::default()
        })
        .await);
    let last_in_log = events
        .iter()
        .max_by_key(|e| e.seq)
        .map(|e| e.event.payload["retries"].clone());
    let row = ok(store.intent(&intent.id).await).unwrap_or_else(|| panic!("no row"));
    assert_eq!(
        Some(json!(row.retries)),
        last_in_log,
        "the row was changed in another order than the log says"
    );
    let before = state_tables(&store).await;
    ok(store.rebuild_projections().await);
    assert_eq!(state_tables(&store).await, before);
}

async fn a_rebuild_during_commits_loses_nothing(store: Store, clock: ManualClock) {
    let ids: Vec<String> = (0..4).map(|n| format!("i-live-{n}")).collect();
    let creations = ids.iter().map(|id| created(&clock, id, 3).1).collect();
    ok(store
        .commit(&Commit {
            events: creations,
            ..Commit::default()
        })
        .await);
    let store = Arc::new(store);
    let mut writers = Vec::new();
    for id in ids.clone() {
        let (store, clock) = (Arc::clone(&store), clock.clone());
        writers.push(tokio::spawn(async move {
            for n in 1..=25u32 {
                let e = event(
                    &clock,
                    &id,
                    EventType::IntentRequeued,
                    json!({"reason": "x", "retries": n}),
                );
                store
                    .commit(&Commit {
                        events: vec![e],
                        ..Commit::default()
                    })
                    .await?;
            }
            Ok::<(), StoreError>(())
        }));
    }
    for _ in 0..5 {
        ok(store.rebuild_projections().await);
        tokio::time::sleep(StdDuration::from_millis(2)).await;
    }
    for writer in writers {
        ok(writer.await.unwrap_or_else(|e| panic!("task: {e}")));
    }
    for id in &ids {
        let row = ok(store.intent(id).await).unwrap_or_else(|| panic!("{id} lost its row"));
        assert_eq!(row.retries, 25, "{id} lost a change made during a rebuild");
    }
    let before = state_tables(&store).await;
    ok(store.rebuild_projections().await);
    assert_eq!(state_tables(&store).await, before);
}

async fn the_schema_matches_what_backfill_copies(store: Store, _clock: ManualClock) {
    let live: Vec<(String, String)> = match &store {
        Store::Postgres(s) => sqlx::query_as(
            "SELECT table_name::text, column_name::text FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name NOT IN ('_sqlx_migrations', 'log_tails') \
             ORDER BY table_name, ordinal_position",
        )
        .fetch_all(s.pool())
        .await
        .unwrap(),
        Store::Sqlite(s) => sqlx::query_as(
            "SELECT m.name, p.name FROM sqlite_master m JOIN pragma_table_info(m.name) p \
             WHERE m.type = 'table' AND m.name NOT IN ('_sqlx_migrations', 'sqlite_sequence') ORDER BY m.name, p.cid",
        )
        .fetch_all(s.pool())
        .await
        .unwrap(),
    };
    let mut expected: Vec<(String, String)> = converge_store::backfill::table_columns()
        .into_iter()
        .flat_map(|(table, columns)| {
            columns
                .into_iter()
                .map(move |c| (table.to_owned(), c.to_owned()))
        })
        .collect();
    let mut live_sorted = live.clone();
    live_sorted.sort();
    expected.sort();
    assert_eq!(
        live_sorted, expected,
        "a table or column is missing from the backfill's list, or the reverse"
    );
}

async fn flags_are_set_and_listed(store: Store, clock: ManualClock) {
    assert!(ok(store.flags().await).is_empty());
    ok(store.set_flag("risk_auto_classify", false, "ops").await);
    clock.advance(Duration::seconds(5));
    ok(store.set_flag("risk_auto_classify", true, "oncall").await);
    let flags = ok(store.flags().await);
    assert_eq!(flags.len(), 1);
    assert_eq!(
        (
            flags[0].enabled,
            flags[0].updated_by.as_str(),
            flags[0].updated_at
        ),
        (true, "oncall", clock.now())
    );
}

async fn intents_are_counted_by_key_and_status(store: Store, clock: ManualClock) {
    // created() puts intents in tenant acme, repo acme/app, target main.
    let mut events: Vec<_> = (0..3)
        .map(|n| created(&clock, &format!("c-{n}"), 3).1)
        .collect();
    let (mut other, _) = created(&clock, "c-other", 3);
    other.tenant_id = Some("globex".into());
    other.technical.remove("repo");
    other.target = "develop".into();
    events.push(event(
        &clock,
        "c-other",
        EventType::IntentCreated,
        serde_json::to_value(&other).unwrap_or_default(),
    ));
    events.push(event(&clock, "c-0", EventType::IntentValidated, json!({})));
    ok(store
        .commit(&Commit {
            events,
            ..Commit::default()
        })
        .await);

    let counts = ok(store.intent_counts(None).await);
    let find = |tenant: &str, repo: &str, target: &str, status: Status| {
        counts
            .iter()
            .find(|c| {
                c.key.tenant == tenant
                    && c.key.repo == repo
                    && c.key.target == target
                    && c.status == status
            })
            .map(|c| c.count)
    };
    assert_eq!(find("acme", "acme/app", "main", Status::Ready), Some(2));
    assert_eq!(find("acme", "acme/app", "main", Status::Validated), Some(1));
    assert_eq!(find("globex", "", "develop", Status::Ready), Some(1));
    assert_eq!(counts.len(), 3);
    let acme = ok(store.intent_counts(Some("acme")).await);
    assert_eq!(acme.iter().map(|c| c.count).sum::<i64>(), 3);
    // Every status here is actionable: the queues' counts are the same rows.
    assert_eq!(ok(store.actionable_counts(None).await), counts);
    assert_eq!(
        ok(store.status_counts(None).await),
        vec![(Status::Ready, 3), (Status::Validated, 1)]
    );
    assert_eq!(
        ok(store.status_counts(Some("globex")).await),
        vec![(Status::Ready, 1)]
    );
}

async fn a_queue_key_lists_its_actionable_intents_in_order(store: Store, clock: ManualClock) {
    // created() puts intents in tenant acme, repo acme/app, target main.
    let (_, late) = created(&clock, "q-late", 3);
    clock.advance(Duration::seconds(1));
    let (_, urgent) = created(&clock, "q-urgent", 1);
    let (_, done) = created(&clock, "q-done", 1);
    let (mut untenanted, _) = created(&clock, "q-none", 1);
    untenanted.tenant_id = None;
    let events = vec![
        late,
        urgent,
        done,
        event(&clock, "q-done", EventType::IntentRejected, json!({})),
        event(
            &clock,
            "q-none",
            EventType::IntentCreated,
            serde_json::to_value(&untenanted).unwrap_or_default(),
        ),
    ];
    ok(store
        .commit(&Commit {
            events,
            ..Commit::default()
        })
        .await);
    let key = |tenant: &str| QueueKey {
        tenant: tenant.into(),
        repo: "acme/app".into(),
        target: "main".into(),
    };
    let ids = |intents: Vec<converge_core::Intent>| -> Vec<String> {
        intents.into_iter().map(|i| i.id).collect()
    };
    assert_eq!(
        ids(ok(store.queue_intents(&key("acme"), None, 10).await)),
        ["q-urgent", "q-late"]
    );
    let first = ok(store.queue_intents(&key("acme"), None, 1).await);
    assert_eq!(ids(first.clone()), ["q-urgent"]);
    let cursor = first.first().map(|i| IntentCursor {
        priority: i.priority,
        created_at: i.created_at,
        id: i.id.clone(),
    });
    assert_eq!(
        ids(ok(store
            .queue_intents(&key("acme"), cursor.as_ref(), 10)
            .await)),
        ["q-late"],
        "the next page starts after the cursor"
    );
    assert_eq!(
        ids(ok(store.queue_intents(&key(""), None, 10).await)),
        ["q-none"]
    );
}

async fn the_actionable_intents_at_a_head_are_found_across_tenants_and_targets(
    store: Store,
    clock: ManualClock,
) {
    // created() puts intents in tenant acme, repo acme/app, target main.
    let at_head = |id: &str, priority: i64, head: &str, edit: &dyn Fn(&mut Intent)| {
        let (mut intent, _) = created(&clock, id, priority);
        intent
            .technical
            .insert("initial_base_commit".into(), json!(head));
        edit(&mut intent);
        event(
            &clock,
            id,
            EventType::IntentCreated,
            serde_json::to_value(&intent).unwrap_or_default(),
        )
    };
    let events = vec![
        at_head("h-main", 2, "abc", &|_| {}),
        at_head("h-release", 1, "abc", &|i| i.target = "release".into()),
        at_head("h-globex", 3, "abc", &|i| {
            i.tenant_id = Some("globex".into())
        }),
        at_head("h-other-head", 1, "def", &|_| {}),
        at_head("h-other-repo", 1, "abc", &|i| {
            i.technical.insert("repo".into(), json!("acme/lib"));
        }),
        at_head("h-rejected", 1, "abc", &|_| {}),
        event(&clock, "h-rejected", EventType::IntentRejected, json!({})),
    ];
    ok(store
        .commit(&Commit {
            events,
            ..Commit::default()
        })
        .await);
    let ids = |intents: Vec<Intent>| -> Vec<String> { intents.into_iter().map(|i| i.id).collect() };
    assert_eq!(
        ids(ok(store.actionable_at_head("acme/app", "abc", 10).await)),
        ["h-release", "h-main", "h-globex"],
        "every actionable intent of the repository at that head, in queue order"
    );
    assert_eq!(
        ids(ok(store.actionable_at_head("acme/app", "abc", 1).await)),
        ["h-release"]
    );
    assert!(ok(store.actionable_at_head("acme/app", "0123", 10).await).is_empty());
    assert_eq!(
        ids(ok(store.actionable_at_head("acme/lib", "abc", 10).await)),
        ["h-other-repo"]
    );
}

async fn a_repository_s_trains_are_read_by_key(store: Store, _clock: ManualClock) {
    let key = |tenant: &str, repo: &str, target: &str| QueueKey {
        tenant: tenant.into(),
        repo: repo.into(),
        target: target.into(),
    };
    let keys = [
        (key("acme", "acme/app", "release"), Some("train-release")),
        (key("acme", "acme/app", "main"), Some("train-main")),
        (key("", "acme/app", "main"), None),
        (key("acme", "acme/lib", "main"), Some("train-lib")),
    ];
    for (key, train) in &keys {
        let lease = ok(store
            .acquire_lease(key, "worker", StdDuration::from_secs(30))
            .await)
        .unwrap();
        ok(store
            .save_key_document(&lease, KeyDocument::Train, *train)
            .await);
    }
    let trains = ok(store.trains_of_repo("acme/app").await);
    assert_eq!(
        trains,
        vec![
            (key("acme", "acme/app", "main"), "train-main".to_owned()),
            (
                key("acme", "acme/app", "release"),
                "train-release".to_owned()
            ),
        ],
        "the repository's keys that keep a train, and no other repository's"
    );
    assert!(ok(store.trains_of_repo("acme/none").await).is_empty());
}

async fn the_decision_trail_tells_whether_checks_arrived_since(store: Store, clock: ManualClock) {
    let (_, birth) = created(&clock, "t-1", 3);
    ok(store
        .commit(&Commit {
            events: vec![birth],
            ..Commit::default()
        })
        .await);
    let trail = ok(store.decision_trail("t-1", 5).await);
    assert!(trail.decisions.is_empty() && !trail.new_evidence_since());

    let append = |event_type: EventType, payload: serde_json::Value| {
        let store = &store;
        let event = event(&clock, "t-1", event_type, payload);
        async move {
            ok(store
                .commit(&Commit {
                    events: vec![event],
                    ..Commit::default()
                })
                .await)
        }
    };
    append(EventType::IntentBlocked, json!({"kind": "checks_pending"})).await;
    append(EventType::CheckReported, json!({"check": "lint"})).await;
    let trail = ok(store.decision_trail("t-1", 5).await);
    assert_eq!(trail.decisions.len(), 1);
    assert!(trail.new_evidence_since());

    append(EventType::IntentValidated, json!({})).await;
    let trail = ok(store.decision_trail("t-1", 5).await);
    assert_eq!(
        trail
            .decisions
            .iter()
            .map(|d| d.event.event_type)
            .collect::<Vec<_>>(),
        [EventType::IntentValidated, EventType::IntentBlocked]
    );
    assert!(!trail.new_evidence_since());
}

async fn the_decision_trails_of_a_page_are_read_together(store: Store, clock: ManualClock) {
    let (_, first) = created(&clock, "p-1", 3);
    let (_, second) = created(&clock, "p-2", 3);
    let (_, third) = created(&clock, "p-3", 3);
    let mut events = vec![first, second, third];
    // p-1: three decisions, then a check report; p-2: a report only; p-3: nothing.
    for kind in ["a", "b", "c"] {
        events.push(event(
            &clock,
            "p-1",
            EventType::IntentBlocked,
            json!({"kind": kind}),
        ));
    }
    events.push(event(&clock, "p-1", EventType::CheckReported, json!({})));
    events.push(event(&clock, "p-2", EventType::CheckReported, json!({})));
    ok(store
        .commit(&Commit {
            events,
            ..Commit::default()
        })
        .await);
    let ids = ["p-3", "nobody", "p-1", "p-2"].map(String::from);
    let trails = ok(store.decision_trails(&ids, 2).await);
    assert_eq!(trails.len(), 4, "one trail per id, in the order given");
    // Each is what the one-intent read gives.
    for (id, trail) in ids.iter().zip(&trails) {
        assert_eq!(trail, &ok(store.decision_trail(id, 2).await), "{id}");
    }
    let kinds: Vec<&str> = trails[2]
        .decisions
        .iter()
        .filter_map(|d| d.event.payload["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["c", "b"], "the newest two, newest first");
    assert!(trails[2].new_evidence_since() && trails[3].new_evidence_since());
    assert_eq!(trails[0], DecisionTrail::default());
    assert_eq!(trails[1], DecisionTrail::default());
    assert!(ok(store.decision_trails(&[], 2).await).is_empty());
    let twice = ok(store
        .decision_trails(&["p-1".to_owned(), "p-1".to_owned()], 2)
        .await);
    assert_eq!(
        twice,
        [trails[2].clone(), trails[2].clone()],
        "an id given twice"
    );
}

async fn a_delivery_changes_state_once_however_often_it_arrives(store: Store, clock: ManualClock) {
    let delivery = |body: &str| Delivery {
        id: "d-1".into(),
        event_name: "pull_request".into(),
        body_sha256: body.into(),
    };
    let store = Arc::new(store);
    let attempts = (0..20).map(|_| {
        let store = store.clone();
        let (_, birth) = created(&clock, "delivered", 3);
        let commit = Commit {
            events: vec![birth],
            delivery: Some(delivery("aa")),
            ..Commit::default()
        };
        tokio::spawn(async move { store.commit(&commit).await })
    });
    let mut applied = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(_) => applied += 1,
            Err(StoreError::AlreadyDelivered {
                same_body: true, ..
            }) => {}
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    assert_eq!(applied, 1);
    let events = ok(store
        .events(&EventFilter {
            intent_id: Some("delivered".into()),
            ..EventFilter::default()
        })
        .await);
    assert_eq!(events.len(), 1, "one delivery, one change");
    let reused = store
        .commit(&Commit {
            delivery: Some(delivery("bb")),
            ..Commit::default()
        })
        .await;
    assert!(matches!(
        reused,
        Err(StoreError::AlreadyDelivered {
            same_body: false,
            ..
        })
    ));
}

async fn a_commit_expecting_a_version_commits_only_while_the_row_is_unchanged(
    store: Store,
    clock: ManualClock,
) {
    let (intent, created_event) = created(&clock, "i-versioned", 3);
    let create = |e: converge_core::Event| Commit {
        events: vec![e],
        expect: vec![Expected::absent("i-versioned")],
        ..Commit::default()
    };
    ok(store.commit(&create(created_event.clone())).await);
    let read = ok(store.stored_intent("i-versioned").await).unwrap_or_else(|| panic!("no row"));
    assert_eq!((read.version, &read.intent.id), (1, &intent.id));

    // A second create expecting no such intent is refused, and writes nothing.
    let again = created(&clock, "i-versioned", 3).1;
    match store.commit(&create(again)).await {
        Err(StoreError::Stale {
            expected: 0,
            found: 1,
            ..
        }) => {}
        other => panic!("a create over an existing intent: {other:?}"),
    }

    // A decision from version 1 lands; one more from the same read is stale.
    let validated = event(&clock, "i-versioned", EventType::IntentValidated, json!({}));
    let decided = |e: converge_core::Event| Commit {
        events: vec![e],
        expect: vec![read.expected()],
        ..Commit::default()
    };
    ok(store.commit(&decided(validated)).await);
    let queued = event(&clock, "i-versioned", EventType::IntentQueued, json!({}));
    match store.commit(&decided(queued)).await {
        Err(StoreError::Stale {
            expected: 1,
            found: 2,
            ..
        }) => {}
        other => panic!("a decision from a stale read: {other:?}"),
    }
    let now = ok(store.stored_intent("i-versioned").await).unwrap_or_else(|| panic!("no row"));
    assert_eq!((now.version, now.intent.status), (2, Status::Validated));
    let events = ok(store
        .events(&EventFilter {
            intent_id: Some("i-versioned".into()),
            ..EventFilter::default()
        })
        .await);
    assert_eq!(events.len(), 2, "a refused commit appended events");

    // An expectation alone (no event about the intent) still guards the commit.
    let unrelated = event(&clock, "i-other", EventType::WebhookReceived, json!({}));
    let guarded = Commit {
        events: vec![unrelated],
        expect: vec![read.expected()],
        ..Commit::default()
    };
    assert!(matches!(
        store.commit(&guarded).await,
        Err(StoreError::Stale { .. })
    ));

    // A rebuild gives each row the version it had, so reads on either side of it agree.
    ok(store.rebuild_projections().await);
    let rebuilt = ok(store.stored_intent("i-versioned").await).unwrap_or_else(|| panic!("no row"));
    assert!(
        rebuilt.version >= now.version,
        "{} < {}",
        rebuilt.version,
        now.version
    );
    assert_eq!(rebuilt.intent, now.intent);
}

async fn of_concurrent_commits_expecting_one_version_exactly_one_lands(
    store: Store,
    clock: ManualClock,
) {
    let (_, created_event) = created(&clock, "i-contended", 3);
    ok(store
        .commit(&Commit {
            events: vec![created_event],
            ..Commit::default()
        })
        .await);
    let read = ok(store.stored_intent("i-contended").await).unwrap_or_else(|| panic!("no row"));
    let store = Arc::new(store);
    let tasks: Vec<_> = (0..12)
        .map(|n| {
            let store = Arc::clone(&store);
            let e = event(
                &clock,
                "i-contended",
                EventType::IntentPriorityChanged,
                json!({"priority": n}),
            );
            let expect = vec![read.expected()];
            tokio::spawn(async move {
                store
                    .commit(&Commit {
                        events: vec![e],
                        expect,
                        ..Commit::default()
                    })
                    .await
            })
        })
        .collect();
    let mut landed = 0;
    for task in tasks {
        match task.await.unwrap_or_else(|e| panic!("task: {e}")) {
            Ok(_) => landed += 1,
            Err(StoreError::Stale { .. }) => {}
            Err(e) => panic!("store error: {e}"),
        }
    }
    assert_eq!(landed, 1);
    let now = ok(store.stored_intent("i-contended").await).unwrap_or_else(|| panic!("no row"));
    assert_eq!(now.version, 2);
}

/// Decisions made under the intent's lock (`decide_and_commit`), all at once: each reads the
/// row the one before it left, so every one lands (none is stale) and none is lost.
async fn concurrent_decisions_under_an_intents_lock_each_see_the_one_before(
    store: Store,
    clock: ManualClock,
) {
    let (_, created_event) = created(&clock, "i-decided", 3);
    ok(store
        .commit(&Commit {
            events: vec![created_event],
            ..Commit::default()
        })
        .await);
    let store = Arc::new(store);
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let store = Arc::clone(&store);
            let clock = clock.clone();
            tokio::spawn(async move {
                store
                    .decide_and_commit("i-decided", |stored| {
                        let stored = stored.unwrap_or_else(|| panic!("the intent exists"));
                        let raised = event(
                            &clock,
                            "i-decided",
                            EventType::IntentPriorityChanged,
                            json!({"priority": stored.intent.priority + 1}),
                        );
                        let commit = Commit {
                            events: vec![raised],
                            ..Commit::default()
                        };
                        (Some(commit), stored.version)
                    })
                    .await
            })
        })
        .collect();
    let mut versions_read = Vec::new();
    for task in tasks {
        versions_read.push(ok(task.await.unwrap_or_else(|e| panic!("task: {e}"))));
    }
    versions_read.sort_unstable();
    assert_eq!(
        versions_read,
        (1..=12).collect::<Vec<i64>>(),
        "each decision read the row the one before it left"
    );
    let now = ok(store.stored_intent("i-decided").await).unwrap_or_else(|| panic!("no row"));
    assert_eq!((now.version, now.intent.priority), (13, 15));

    // A plan carrying a lease guard is refused (a lease is locked before intents), and
    // nothing of it is written.
    let lease = ok(store
        .acquire_lease(&key(), "worker-a", StdDuration::from_secs(60))
        .await)
    .unwrap_or_else(|| panic!("a new key's lease is free"));
    let guarded = store
        .decide_and_commit("i-decided", |_| {
            let commit = Commit {
                events: vec![event(
                    &clock,
                    "i-decided",
                    EventType::IntentPriorityChanged,
                    json!({"priority": 0}),
                )],
                guard: Some(lease.clone()),
                ..Commit::default()
            };
            (Some(commit), ())
        })
        .await;
    assert!(matches!(guarded, Err(StoreError::Config(_))), "{guarded:?}");
    let after = ok(store.stored_intent("i-decided").await).unwrap_or_else(|| panic!("no row"));
    assert_eq!((after.version, after.intent.priority), (13, 15));

    // A decision to write nothing answers, writes nothing, and leaves the writer free.
    let seen = ok(store
        .decide_and_commit("i-decided", |stored| (None, stored.map(|s| s.version)))
        .await);
    assert_eq!(seen, Some(13));
    let events_before = ok(store.events(&EventFilter::default()).await).len();
    let (_, other) = created(&clock, "i-after-nothing", 1);
    ok(store
        .commit(&Commit {
            events: vec![other],
            ..Commit::default()
        })
        .await);
    assert_eq!(
        ok(store.events(&EventFilter::default()).await).len(),
        events_before + 1
    );
    let unchanged = ok(store.stored_intent("i-decided").await).unwrap_or_else(|| panic!("no row"));
    assert_eq!(unchanged.version, 13);
}

/// A delivery of a group (`decide_for_deliveries`) that raises the priority of `intent_id` by
/// one, or creates it with priority 0; it answers the version it read (0: absent).
fn raise_priority(
    clock: &ManualClock,
    intent_id: &str,
    delivery_id: &str,
    body: &str,
) -> DeliveryDecision<i64> {
    let clock = clock.clone();
    let id = intent_id.to_owned();
    DeliveryDecision {
        intent_id: Some(intent_id.to_owned()),
        delivery: Delivery {
            id: delivery_id.into(),
            event_name: "pull_request".into(),
            body_sha256: body.into(),
        },
        decide: Box::new(move |stored| {
            let change = match stored {
                None => created(&clock, &id, 0).1,
                Some(stored) => event(
                    &clock,
                    &id,
                    EventType::IntentPriorityChanged,
                    json!({"priority": stored.intent.priority + 1}),
                ),
            };
            let commit = Commit {
                events: vec![change],
                ..Commit::default()
            };
            (commit, stored.map_or(0, |s| s.version))
        }),
    }
}

/// A delivery of a group about no intent: it records a check's result (which moves no
/// intent) and an outbox row, and answers -1.
fn a_fact(clock: &ManualClock, delivery_id: &str) -> DeliveryDecision<i64> {
    let reported = event(
        clock,
        "i-grouped",
        EventType::CheckReported,
        json!({"name": "ci", "conclusion": "success"}),
    );
    DeliveryDecision {
        intent_id: None,
        delivery: Delivery {
            id: delivery_id.into(),
            event_name: "check_run".into(),
            body_sha256: "fact".into(),
        },
        decide: Box::new(move |stored| {
            assert!(stored.is_none(), "a fact decides from nothing");
            let commit = Commit {
                events: vec![reported],
                outbox: vec![OutboxMessage {
                    topic: "facts".into(),
                    payload: json!({"fact": true}),
                }],
                ..Commit::default()
            };
            (commit, -1)
        }),
    }
}

/// Deliveries decided together in one transaction: each decides from the intent as the ones
/// before it left it; a delivery recorded before, or twice in the group, is answered as such
/// and not decided; the others are all recorded, with their events in the group's order. A
/// group that cannot be written leaves nothing, its deliveries unrecorded.
async fn deliveries_decided_as_a_group_each_see_the_one_before_and_are_recorded_once(
    store: Store,
    clock: ManualClock,
) {
    let (_, birth) = created(&clock, "i-grouped", 3);
    ok(store
        .commit(&Commit {
            events: vec![birth],
            ..Commit::default()
        })
        .await);
    assert_eq!(
        ok(store
            .record_delivery("d-old", "pull_request", "body-a")
            .await),
        DeliveryOutcome::New
    );
    let answers = ok(store
        .decide_for_deliveries(vec![
            raise_priority(&clock, "i-grouped", "d-1", "body-1"),
            raise_priority(&clock, "i-new", "d-2", "body-2"),
            raise_priority(&clock, "i-grouped", "d-3", "body-3"),
            raise_priority(&clock, "i-grouped", "d-1", "body-1"),
            raise_priority(&clock, "i-grouped", "d-old", "body-a"),
            raise_priority(&clock, "i-grouped", "d-old", "body-b"),
            raise_priority(&clock, "i-new", "d-4", "body-4"),
            a_fact(&clock, "d-fact"),
        ])
        .await);
    let summary: Vec<String> = answers
        .iter()
        .map(|answer| match answer {
            Ok(version) => format!("read {version}"),
            Err(StoreError::AlreadyDelivered { same_body, .. }) => format!("delivered {same_body}"),
            Err(e) => format!("error {e}"),
        })
        .collect();
    assert_eq!(
        summary,
        [
            "read 1",
            "read 0",
            "read 2",
            "delivered true",
            "delivered true",
            "delivered false",
            "read 1",
            "read -1"
        ]
    );
    let sent = ok(store
        .claim_outbox("facts", "sender", 10, StdDuration::from_secs(60))
        .await);
    assert_eq!(sent.len(), 1, "the fact's outbox row was written");
    let grouped = ok(store.stored_intent("i-grouped").await).unwrap_or_else(|| panic!("no row"));
    assert_eq!((grouped.version, grouped.intent.priority), (3, 5));
    let born = ok(store.stored_intent("i-new").await).unwrap_or_else(|| panic!("no row"));
    assert_eq!((born.version, born.intent.priority), (2, 1));
    for (id, body) in [
        ("d-1", "body-1"),
        ("d-2", "body-2"),
        ("d-3", "body-3"),
        ("d-4", "body-4"),
        ("d-fact", "fact"),
    ] {
        assert_eq!(
            ok(store.record_delivery(id, "pull_request", body).await),
            DeliveryOutcome::Duplicate,
            "{id} was recorded"
        );
    }
    // The group's events in its order, after the birth: log order is decision order.
    let mut events = ok(store.events(&EventFilter::default()).await);
    events.reverse();
    let order: Vec<(String, &str)> = events
        .iter()
        .map(|e| {
            (
                e.event.intent_id.clone().unwrap_or_default(),
                e.event.event_type.as_str(),
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            ("i-grouped".to_owned(), "intent.created"),
            ("i-grouped".to_owned(), "intent.priority_changed"),
            ("i-new".to_owned(), "intent.created"),
            ("i-grouped".to_owned(), "intent.priority_changed"),
            ("i-new".to_owned(), "intent.priority_changed"),
            ("i-grouped".to_owned(), "check.reported"),
        ]
    );

    // A plan the group cannot write (here a lease guard): nothing of the group is written.
    let lease = ok(store
        .acquire_lease(&key(), "worker-a", StdDuration::from_secs(60))
        .await)
    .unwrap_or_else(|| panic!("a new key's lease is free"));
    let mut guarded = raise_priority(&clock, "i-grouped", "d-6", "body-6");
    let plan = guarded.decide;
    guarded.decide = Box::new(move |stored| {
        let (mut commit, read) = plan(stored);
        commit.guard = Some(lease);
        (commit, read)
    });
    let refused = store
        .decide_for_deliveries(vec![
            raise_priority(&clock, "i-grouped", "d-5", "body-5"),
            guarded,
        ])
        .await;
    assert!(matches!(refused, Err(StoreError::Config(_))), "{refused:?}");
    let after = ok(store.stored_intent("i-grouped").await).unwrap_or_else(|| panic!("no row"));
    assert_eq!((after.version, after.intent.priority), (3, 5));
    assert_eq!(
        ok(store.record_delivery("d-5", "pull_request", "body-5").await),
        DeliveryOutcome::New,
        "the failed group recorded no delivery"
    );

    // A delivery about no intent may not move one: it would decide from a row nobody locked.
    let mut mover = a_fact(&clock, "d-mover");
    let moved = event(
        &clock,
        "i-grouped",
        EventType::IntentPriorityChanged,
        json!({"priority": 0}),
    );
    mover.decide = Box::new(move |_| {
        let commit = Commit {
            events: vec![moved],
            ..Commit::default()
        };
        (commit, -1)
    });
    let refused = store.decide_for_deliveries(vec![mover]).await;
    assert!(matches!(refused, Err(StoreError::Config(_))), "{refused:?}");
    let unmoved = ok(store.stored_intent("i-grouped").await).unwrap_or_else(|| panic!("no row"));
    assert_eq!(unmoved.intent.priority, 5);
}

/// Deliveries about one intent arriving all at once through `DeliveryGroups`: grouped or not,
/// each is decided from the row the one before it left, none is lost, and a delivery whose
/// group cannot be written is handed back to be decided alone.
async fn deliveries_arriving_together_are_all_decided_in_turn(store: Store, clock: ManualClock) {
    let (_, birth) = created(&clock, "i-busy", 3);
    ok(store
        .commit(&Commit {
            events: vec![birth],
            ..Commit::default()
        })
        .await);
    let groups = DeliveryGroups::new(store.clone());
    let tasks: Vec<_> = (0..40)
        .map(|n| {
            let groups = groups.clone();
            let member = raise_priority(&clock, "i-busy", &format!("d-{n}"), "body");
            tokio::spawn(async move { groups.decide(member).await })
        })
        .collect();
    let mut read = Vec::new();
    for task in tasks {
        match task.await.unwrap_or_else(|e| panic!("task: {e}")) {
            Some(Ok(version)) => read.push(version),
            other => panic!("not decided: {other:?}"),
        }
    }
    read.sort_unstable();
    assert_eq!(read, (1..=40).collect::<Vec<i64>>());
    let now = ok(store.stored_intent("i-busy").await).unwrap_or_else(|| panic!("no row"));
    assert_eq!((now.version, now.intent.priority), (41, 43));

    let mut unwritable = raise_priority(&clock, "i-busy", "d-unwritable", "body");
    let plan = unwritable.decide;
    unwritable.decide = Box::new(move |stored| {
        let (mut commit, read) = plan(stored);
        commit.expect.push(Expected::absent("i-busy"));
        (commit, read)
    });
    assert!(groups.decide(unwritable).await.is_none(), "handed back");
    assert_eq!(
        ok(store
            .record_delivery("d-unwritable", "pull_request", "body")
            .await),
        DeliveryOutcome::New
    );
}

/// A decision that panics (in a build that unwinds; release builds abort) ends its group's
/// task: its delivery is handed back, nothing of it is written, and the deliveries after it
/// are grouped and decided as before.
async fn a_group_whose_decision_panics_hands_its_delivery_back_and_groups_go_on(
    store: Store,
    clock: ManualClock,
) {
    let groups = DeliveryGroups::new(store.clone());
    let mut panicking = raise_priority(&clock, "i-calm", "d-panic", "body");
    panicking.decide = Box::new(|_| panic!("a decision that panics"));
    assert!(groups.decide(panicking).await.is_none(), "handed back");
    let after = groups
        .decide(raise_priority(&clock, "i-calm", "d-after", "body"))
        .await;
    assert!(matches!(after, Some(Ok(0))), "{after:?}");
    assert_eq!(
        ok(store
            .record_delivery("d-panic", "pull_request", "body")
            .await),
        DeliveryOutcome::New,
        "the panicking delivery was not recorded"
    );
    let calm = ok(store.stored_intent("i-calm").await).unwrap_or_else(|| panic!("no row"));
    assert_eq!(calm.version, 1);
}

/// Decisions about an intent that does not exist yet, all at once: the first creates it;
/// the others see it (SQLite's writers take turns) or, having read it absent while another
/// transaction created it (PostgreSQL locks no absent row), are refused as stale. Never two
/// creations, never a change applied to a row its decision did not read.
async fn decisions_about_an_absent_intent_create_it_once(store: Store, clock: ManualClock) {
    let store = Arc::new(store);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = Arc::clone(&store);
            let clock = clock.clone();
            tokio::spawn(async move {
                store
                    .decide_and_commit("i-born", |stored| {
                        let e = match stored {
                            None => created(&clock, "i-born", 0).1,
                            Some(stored) => event(
                                &clock,
                                "i-born",
                                EventType::IntentPriorityChanged,
                                json!({"priority": stored.intent.priority + 1}),
                            ),
                        };
                        let commit = Commit {
                            events: vec![e],
                            ..Commit::default()
                        };
                        (Some(commit), stored.is_none())
                    })
                    .await
            })
        })
        .collect();
    let (mut creations, mut changes, mut stale) = (0, 0, 0);
    for task in tasks {
        match task.await.unwrap_or_else(|e| panic!("task: {e}")) {
            Ok(true) => creations += 1,
            Ok(false) => changes += 1,
            Err(StoreError::Stale { .. }) => stale += 1,
            Err(e) => panic!("store error: {e}"),
        }
    }
    assert_eq!(creations, 1, "{changes} changes, {stale} stale");
    let now = ok(store.stored_intent("i-born").await).unwrap_or_else(|| panic!("no row"));
    assert_eq!((now.version, now.intent.priority), (1 + changes, changes));
    let created_events = ok(store
        .events(&EventFilter {
            intent_id: Some("i-born".into()),
            event_type: Some(EventType::IntentCreated),
            ..EventFilter::default()
        })
        .await);
    assert_eq!(created_events.len(), 1);
}

async fn idempotency_keys_replay_for_a_day_and_free_an_abandoned_claim(
    store: Store,
    clock: ManualClock,
) {
    let day = Duration::hours(24);
    let abandoned = Duration::minutes(5);
    let claim = |scope: &'static str, key: &'static str, sha: &'static str| {
        let store = store.clone();
        async move {
            ok(store
                .claim_idempotency_key(scope, key, sha, day, abandoned)
                .await)
        }
    };
    assert_eq!(claim("a", "k", "r1").await, IdempotencyClaim::New);
    assert_eq!(claim("a", "k", "r1").await, IdempotencyClaim::InProgress);
    assert_eq!(claim("a", "k", "r2").await, IdempotencyClaim::Mismatch);
    assert_eq!(
        claim("b", "k", "r2").await,
        IdempotencyClaim::New,
        "scopes are apart"
    );
    ok(store.complete_idempotency_key("a", "k", 201, "{}").await);
    let answered = IdempotencyClaim::Answered {
        status: 201,
        body: "{}".to_owned(),
    };
    clock.advance(Duration::hours(23));
    assert_eq!(claim("a", "k", "r1").await, answered);
    clock.advance(Duration::hours(2));
    assert_eq!(
        claim("a", "k", "r1").await,
        IdempotencyClaim::New,
        "a day later"
    );

    // A claim whose request never completed (its process died) is free after a while.
    assert_eq!(claim("c", "k", "r1").await, IdempotencyClaim::New);
    clock.advance(Duration::minutes(6));
    assert_eq!(claim("c", "k", "r1").await, IdempotencyClaim::New);
    // A released claim is free at once.
    ok(store.release_idempotency_key("c", "k").await);
    assert_eq!(claim("c", "k", "r2").await, IdempotencyClaim::New);
}

/// Concurrent commits that land, fail half-way (a delivery recorded, then an illegal move) and
/// are abandoned at any point (their caller gives up): those that answered landed whole, the
/// failed left nothing, the abandoned landed whole or not at all, and the store still takes a
/// write. (SQLite's writers that queue share a transaction: this is what keeps each one's
/// changes its own.)
async fn of_concurrent_commits_the_failed_and_the_abandoned_leave_no_trace(
    store: Store,
    clock: ManualClock,
) {
    const WRITERS: usize = 90;
    let bound = StdDuration::from_secs(10);
    let tasks: Vec<_> = (0..WRITERS)
        .map(|k| {
            let store = store.clone();
            let id = format!("i-race-{k:03}");
            let (_, created_event) = created(&clock, &id, 3);
            let mut events = vec![created_event];
            if k % 3 == 1 {
                // READY → requeued → queued from READY: refused after the delivery was written.
                events.push(event(
                    &clock,
                    &id,
                    EventType::IntentRequeued,
                    json!({"retries": 1}),
                ));
                events.push(event(&clock, &id, EventType::IntentQueued, json!({})));
            }
            let commit = Commit {
                events,
                delivery: Some(Delivery {
                    id: format!("d-race-{k:03}"),
                    event_name: "pull_request".into(),
                    body_sha256: "hash".into(),
                }),
                outbox: vec![OutboxMessage {
                    topic: "race".into(),
                    payload: json!({ "intent": id }),
                }],
                ..Commit::default()
            };
            tokio::spawn(async move {
                if k % 3 == 2 {
                    // Gives up somewhere between before its turn and after its commit.
                    let patience = StdDuration::from_micros((k as u64 * 3_967) % 60_000);
                    tokio::time::timeout(patience, store.commit(&commit))
                        .await
                        .ok()
                } else {
                    let landed = tokio::time::timeout(bound, store.commit(&commit)).await;
                    Some(
                        landed
                            .unwrap_or_else(|_| panic!("commit {k} still waiting after {bound:?}")),
                    )
                }
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap_or_else(|e| panic!("task: {e}")));
    }

    let claimed = ok(store
        .claim_outbox("race", "test", 1_000, StdDuration::from_secs(60))
        .await);
    let messages: BTreeSet<String> = claimed
        .iter()
        .filter_map(|m| m.payload["intent"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(messages.len(), claimed.len(), "one message per commit");
    let mut abandoned_landed = 0;
    for (k, outcome) in outcomes.iter().enumerate() {
        let id = format!("i-race-{k:03}");
        let intent = ok(store.intent(&id).await).is_some();
        let delivery = ok(store
            .record_delivery(&format!("d-race-{k:03}"), "pull_request", "hash")
            .await)
            != DeliveryOutcome::New;
        let message = messages.contains(&id);
        match (k % 3, outcome) {
            (0, Some(result)) => {
                assert!(result.is_ok(), "commit {k}: {result:?}");
                assert!(
                    intent && delivery && message,
                    "commit {k} answered but did not land whole"
                );
            }
            (1, Some(result)) => {
                assert!(
                    matches!(result, Err(StoreError::Projection(_))),
                    "commit {k}: {result:?}"
                );
                assert!(
                    !intent && !delivery && !message,
                    "failed commit {k} left a trace"
                );
            }
            (2, _) => {
                assert!(
                    intent == delivery && delivery == message,
                    "abandoned commit {k} landed in part: intent {intent}, delivery {delivery}, message {message}"
                );
                if let Some(result) = outcome {
                    assert!(result.is_ok() && intent, "commit {k} answered {result:?}");
                }
                abandoned_landed += usize::from(intent);
            }
            (_, None) => panic!("commit {k} was not given a deadline"),
            _ => unreachable!(),
        }
    }
    eprintln!(
        "{abandoned_landed} of {} abandoned commits landed",
        WRITERS / 3
    );

    let (_, after) = created(&clock, "i-race-after", 3);
    let after = tokio::time::timeout(
        bound,
        store.commit(&Commit {
            events: vec![after],
            ..Commit::default()
        }),
    )
    .await;
    assert!(
        matches!(after, Ok(Ok(_))),
        "a write after the race: {after:?}"
    );
}

async fn a_freeze_is_written_with_its_event_read_by_key_and_lifted_exactly_once(
    store: Store,
    clock: ManualClock,
) {
    use converge_core::freeze::{Freeze, Window};
    use converge_store::FreezeWrite;
    let freeze = Freeze {
        id: "frz-1".into(),
        tenant_id: Some("acme".into()),
        repo: None,
        target: Some("main".into()),
        reason: "release".into(),
        window: Window::UntilLifted,
        created_by: "ops".into(),
        created_at: clock.now(),
        lifted_at: None,
        lifted_by: None,
    };
    let mut frozen = converge_core::Event::about_intent(
        "ev-frozen",
        "t",
        clock.now(),
        EventType::QueueFrozen,
        "none",
        serde_json::to_value(&freeze).unwrap(),
    );
    frozen.intent_id = None;
    frozen.tenant_id = Some("acme".into());
    ok(store
        .commit(&Commit {
            events: vec![frozen],
            freezes: vec![FreezeWrite::Put(freeze.clone())],
            ..Commit::default()
        })
        .await);
    assert_eq!(ok(store.freeze("frz-1").await), Some(freeze.clone()));
    let key = |tenant: &str, repo: &str, target: &str| QueueKey {
        tenant: tenant.into(),
        repo: repo.into(),
        target: target.into(),
    };
    assert_eq!(
        ok(store.freezes_of_key(&key("acme", "acme/app", "main")).await).len(),
        1
    );
    assert_eq!(
        ok(store.freezes_of_key(&key("acme", "", "main")).await).len(),
        1
    );
    assert!(ok(store.freezes_of_key(&key("acme", "acme/app", "dev")).await).is_empty());
    assert!(
        ok(store
            .freezes_of_key(&key("globex", "acme/app", "main"))
            .await)
        .is_empty()
    );
    assert_eq!(ok(store.freezes(Some("acme"), false, 10).await).len(), 1);
    assert!(ok(store.freezes(Some("globex"), false, 10).await).is_empty());

    // Eight operators lift it at once: one lift lands, with its event; the others write nothing.
    let store = Arc::new(store);
    let tasks: Vec<_> = (0..8)
        .map(|n| {
            let store = Arc::clone(&store);
            let mut unfrozen = converge_core::Event::about_intent(
                format!("ev-unfrozen-{n}"),
                "t",
                clock.now(),
                EventType::QueueUnfrozen,
                "none",
                json!({"id": "frz-1"}),
            );
            unfrozen.intent_id = None;
            let at = clock.now();
            tokio::spawn(async move {
                store
                    .commit(&Commit {
                        events: vec![unfrozen],
                        freezes: vec![FreezeWrite::Lift {
                            id: "frz-1".into(),
                            by: format!("op-{n}"),
                            at,
                        }],
                        ..Commit::default()
                    })
                    .await
            })
        })
        .collect();
    let mut landed = 0;
    for task in tasks {
        match task.await.unwrap_or_else(|e| panic!("task: {e}")) {
            Ok(_) => landed += 1,
            Err(StoreError::Conflict(_)) => {}
            Err(e) => panic!("store error: {e}"),
        }
    }
    assert_eq!(landed, 1);
    let events = ok(store
        .events(&EventFilter {
            event_type: Some(EventType::QueueUnfrozen),
            limit: 100,
            ..EventFilter::default()
        })
        .await);
    assert_eq!(events.len(), 1, "only the landed lift's event");
    let lifted = ok(store.freeze("frz-1").await).unwrap();
    assert!(lifted.lifted_at.is_some() && lifted.lifted_by.is_some());
    assert!(ok(store.freezes_of_key(&key("acme", "acme/app", "main")).await).is_empty());
    assert!(ok(store.freezes(Some("acme"), false, 10).await).is_empty());
    assert_eq!(ok(store.freezes(Some("acme"), true, 10).await).len(), 1);
}
