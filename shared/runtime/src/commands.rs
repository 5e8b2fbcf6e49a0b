//! The write paths, below any transport: what the API and the webhook call to change state.
//! Each records its events (made by the one [`EventFactory`]) in one transaction, with the
//! queue messages the change calls for, and wakes the queue.

use converge_core::event::EventFactory;
use converge_core::intake::{Change, Effect, LinkedCommit, effect, revalidation_after_push};
use converge_core::publication::{self, Publisher as _};
use converge_core::queue::QueueKey;
use converge_core::{Event, EventType, Intent};
use converge_github::webhook::Translation;
use converge_store::{
    Commit, CommitLink, Delivery, DeliveryDecision, Expected, OutboxMessage, StoreError,
    StoredIntent,
};
use serde_json::{Value, json};

use crate::queue_worker::{KeyOutcome, WorkerError, WorkerSettings, queue_message};
use crate::services::{RandomIds, Services};

/// Attempts of a delivery decided under its intent's lock when, on PostgreSQL, the intent was
/// absent as read (no row to lock) and another delivery created it before the commit.
const CREATED_MEANWHILE_ATTEMPTS: usize = 5;

/// The factory of one operation's events, under a fresh trace id.
pub fn events(services: &Services) -> EventFactory<'_> {
    EventFactory::new(
        services.clock.as_ref(),
        &RandomIds,
        format!("trace-{}", services.new_id()),
    )
}

/// An event written by an API caller: its evidence names the actor.
pub fn api_event(
    services: &Services,
    actor: &str,
    event_type: EventType,
    intent_id: Option<&str>,
    tenant: Option<&str>,
    payload: Value,
) -> Event {
    events(services).event(
        event_type,
        intent_id,
        tenant,
        payload,
        json!({"actor": actor}),
    )
}

/// Records events (and whatever projection change they imply) in one transaction.
pub async fn record(services: &Services, events: Vec<Event>) -> Result<(), StoreError> {
    services
        .store
        .commit(&Commit {
            events,
            ..Commit::default()
        })
        .await?;
    Ok(())
}

/// The policy a tenant's intents are judged by: the deployment's, with the tenant's risk
/// policy (`/v1/risk/policy`) over its risk gate. A stored policy that no longer reads (a
/// release tightened the rules) is logged and the deployment's gate applies.
pub async fn policy_for_tenant(
    store: &converge_store::Store,
    policy: &converge_core::PolicyConfig,
    tenant: &str,
) -> Result<converge_core::PolicyConfig, StoreError> {
    Ok(match store.risk_policy(tenant).await? {
        None => policy.clone(),
        Some(document) => policy.with_tenant_risk(&document.data).unwrap_or_else(|e| {
            tracing::warn!(
                tenant,
                "the tenant's risk policy (version {}) does not apply: {e}",
                document.version
            );
            policy.clone()
        }),
    })
}

/// Sets a freeze: the freeze and its `queue.frozen` event in one transaction.
pub async fn put_freeze(
    services: &Services,
    actor: &str,
    freeze: &converge_core::freeze::Freeze,
) -> Result<(), StoreError> {
    let event = api_event(
        services,
        actor,
        EventType::QueueFrozen,
        None,
        freeze.tenant_id.as_deref(),
        serde_json::to_value(freeze).unwrap_or_default(),
    );
    services
        .store
        .commit(&Commit {
            events: vec![event],
            freezes: vec![converge_store::FreezeWrite::Put(freeze.clone())],
            ..Commit::default()
        })
        .await?;
    Ok(())
}

/// Lifts freezes (each still live: one lifted meanwhile fails the whole write with
/// [`StoreError::Conflict`]), with a `queue.unfrozen` event each and a queue message for every
/// key with actionable intents they covered, in one transaction; then wakes the queue, so
/// what they held merges now rather than at the next sweep. Returns the freezes as lifted.
pub async fn lift_freezes(
    services: &Services,
    actor: &str,
    freezes: Vec<converge_core::freeze::Freeze>,
) -> Result<Vec<converge_core::freeze::Freeze>, StoreError> {
    let now = services.clock.now();
    let keys = crate::queue_worker::actionable_keys(&services.store).await?;
    let mut events = Vec::new();
    let mut changes = Vec::new();
    let mut woken = std::collections::BTreeSet::new();
    let mut lifted = Vec::new();
    for mut freeze in freezes {
        freeze.lifted_at = Some(now);
        freeze.lifted_by = Some(actor.to_owned());
        events.push(api_event(
            services,
            actor,
            EventType::QueueUnfrozen,
            None,
            freeze.tenant_id.as_deref(),
            serde_json::to_value(&freeze).unwrap_or_default(),
        ));
        changes.push(converge_store::FreezeWrite::Lift {
            id: freeze.id.clone(),
            by: actor.to_owned(),
            at: now,
        });
        woken.extend(keys.iter().filter(|key| freeze.covers(key)));
        lifted.push(freeze);
    }
    if lifted.is_empty() {
        return Ok(lifted);
    }
    services
        .store
        .commit(&Commit {
            events,
            outbox: woken.into_iter().map(queue_message).collect(),
            freezes: changes,
            ..Commit::default()
        })
        .await?;
    services.queue_work_committed().await;
    Ok(lifted)
}

/// Records `events` with a queue message for `intent`'s key in one transaction, then wakes
/// the queue: the change is taken up by a worker. With `expect`, the transaction commits only
/// if the intent is still as the caller read it ([`StoreError::Stale`] otherwise).
pub async fn enqueue(
    services: &Services,
    events: Vec<Event>,
    intent: &Intent,
    expect: Option<Expected>,
) -> Result<(), StoreError> {
    let mut commit = queued(events, intent);
    commit.expect.extend(expect);
    services.store.commit(&commit).await?;
    services.queue_work_committed().await;
    Ok(())
}

/// A commit of `events` with a queue message for `intent`'s key: after it commits, a worker
/// takes the change up ([`Services::queue_work_committed`] wakes one at once).
pub fn queued(events: Vec<Event>, intent: &Intent) -> Commit {
    Commit {
        events,
        outbox: vec![queue_message(&QueueKey::for_intent(intent))],
        ..Commit::default()
    }
}

/// What became of a webhook delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryResult {
    /// Recorded; what it did (`result`, and the intent or queues concerned).
    Recorded(Value),
    /// The same delivery (id and body) was recorded before: nothing was written.
    Duplicate,
    /// The delivery id was recorded before with another body: nothing was written.
    ReusedId,
}

/// Records one translated delivery: the delivery row, `webhook.received`, the delivery's events
/// and the queue messages, in one transaction. A change to an intent and a command about one
/// are decided from the intent as read under its lock in that transaction, so they never go
/// stale (a command's author is asked about before, outside the lock: that asks GitHub). The
/// other deliveries record facts (a check's result on a commit, a wake-up) that no concurrent
/// change makes untrue, and expect nothing of what they read.
pub async fn record_delivery(
    services: &Services,
    translation: &Translation,
    received: &Value,
    delivery: &Delivery,
) -> Result<DeliveryResult, StoreError> {
    match translation {
        Translation::Change(change) => {
            let (intent_id, _) = change_subject(change);
            if let Some(decided) = services
                .delivery_groups
                .decide(grouped_change(services, change, received, delivery))
                .await
            {
                return delivered(services, decided).await;
            }
            // Its group failed as a whole: decided alone.
            let decided =
                decide_under_lock(services, intent_id, received, delivery, |plan, stored| {
                    Ok::<_, std::convert::Infallible>(plan_change(plan, change, stored))
                })
                .await;
            delivered(services, decided.map(|Ok(done)| done)).await
        }
        Translation::Command {
            repo,
            installation,
            intent_id,
            author,
            command,
            ..
        } => {
            let ask = || may_give_commands(services, *installation, repo, author);
            // Asked only about a command that reads, on a pull request with an intent (an
            // intent is not removed, so one seen now is there under the lock).
            let mut allowed = None;
            if command.is_ok() && services.store.intent(intent_id).await?.is_some() {
                allowed = Some(ask().await);
            }
            let decided = loop {
                let decided =
                    decide_under_lock(services, intent_id, received, delivery, |plan, stored| {
                        let current = stored.map(|s| &s.intent);
                        plan_command(plan, intent_id, command, author, current, allowed.as_ref())
                    })
                    .await;
                match decided {
                    // The intent was created since it was looked for: ask, then decide again.
                    Ok(Err(AskFirst)) => allowed = Some(ask().await),
                    Ok(Ok(done)) => break Ok(done),
                    Err(e) => break Err(e),
                }
            };
            let result = delivered(services, decided).await?;
            if let DeliveryResult::Recorded(outcome) = &result {
                answer_command(services, translation, outcome).await;
            }
            Ok(result)
        }
        Translation::Wake { repo } => {
            let mut plan = DeliveryPlan::new(services, delivery, received);
            let keys = repository_queues(services, repo).await?;
            plan.commit.outbox.extend(keys.iter().map(queue_message));
            let outcome = json!({"result": "queued", "queues": keys.len()});
            record_fact(services, plan, outcome).await
        }
        Translation::Pushed { repo, branch, head } => {
            record_push(services, received, delivery, repo, branch, head).await
        }
        Translation::ChecksCompleted {
            repo,
            head_sha,
            name,
            conclusion,
        } => {
            let mut plan = DeliveryPlan::new(services, delivery, received);
            let outcome =
                plan_check_result(services, &mut plan, repo, head_sha, name, conclusion).await?;
            record_fact(services, plan, outcome).await
        }
        Translation::Record {
            event_type,
            payload,
        } => {
            let mut plan = DeliveryPlan::new(services, delivery, received);
            plan.push(*event_type, None, payload.clone());
            record_fact(services, plan, json!({"result": "recorded"})).await
        }
        Translation::Ignored { reason } => {
            let plan = DeliveryPlan::new(services, delivery, received);
            let outcome = json!({"result": "ignored", "ignored": reason});
            record_fact(services, plan, outcome).await
        }
    }
}

/// A change's delivery, to be decided with the deliveries that arrive with it
/// (`converge_store::DeliveryGroups`): planned as [`plan_change`] plans it alone.
fn grouped_change(
    services: &Services,
    change: &Change,
    received: &Value,
    delivery: &Delivery,
) -> DeliveryDecision<(Value, bool)> {
    let (intent_id, _) = change_subject(change);
    let clock = services.clock.clone();
    let trace_id = format!("trace-{}", services.new_id());
    let reports = services.ports.enabled();
    let (change, received, recorded) = (change.clone(), received.clone(), delivery.clone());
    // Decided in the group's task: inside the delivery's span, so that the queue messages it
    // plans carry the delivery's trace.
    let span = tracing::Span::current();
    DeliveryDecision {
        intent_id: Some(intent_id.to_owned()),
        delivery: delivery.clone(),
        decide: Box::new(move |stored| {
            let _delivery_span = span.enter();
            let factory = EventFactory::new(clock.as_ref(), &RandomIds, trace_id);
            let mut plan = DeliveryPlan::with_factory(factory, &recorded, &received, reports);
            let outcome = plan_change(&mut plan, &change, stored);
            let queued = !plan.commit.outbox.is_empty();
            let (commit, _) = plan.finish_for_group();
            (commit, (outcome, queued))
        }),
    }
}

/// Commits a delivery that records facts (a check's result on a commit, a wake-up, a fact
/// about the installation, or nothing but itself): no concurrent change makes them untrue, so
/// it expects nothing of what it read, and it is written with the deliveries that arrive with
/// it (`converge_store::DeliveryGroups`), or alone when its group fails.
async fn record_fact(
    services: &Services,
    plan: DeliveryPlan<'_>,
    outcome: Value,
) -> Result<DeliveryResult, StoreError> {
    let (planned, delivery) = plan.finish_for_group();
    let queued = !planned.outbox.is_empty();
    // Kept to be written alone should the group fail (the group's copy is spent deciding).
    let alone = Commit {
        delivery: Some(delivery.clone()),
        ..planned.clone()
    };
    let answer = (outcome.clone(), queued);
    let member = DeliveryDecision {
        intent_id: None,
        delivery,
        decide: Box::new(move |_| (planned, answer)),
    };
    if let Some(decided) = services.delivery_groups.decide(member).await {
        return delivered(services, decided).await;
    }
    // Its group failed as a whole: written alone.
    let committed = services.store.commit(&alone).await;
    delivered(services, committed.map(|_| (outcome, queued))).await
}

/// What a delivery's commit comes to for its sender: recorded (the local worker woken when it
/// queued work: `(answer, queued)`), or a duplicate or reused id; any other error stays one.
async fn delivered(
    services: &Services,
    committed: Result<(Value, bool), StoreError>,
) -> Result<DeliveryResult, StoreError> {
    match committed {
        Ok((outcome, queued)) => {
            if queued {
                services.queue_work_committed().await;
            }
            Ok(DeliveryResult::Recorded(outcome))
        }
        Err(e) => already_delivered(e),
    }
}

/// Records a push of `head` to `branch` of `repo`: the READY and VALIDATED intents of the
/// branch go back to READY at the new head (`core::intake::revalidation_after_push`), decided
/// from their rows read under their locks in the delivery's transaction, and the repository's
/// queues are woken.
async fn record_push(
    services: &Services,
    received: &Value,
    delivery: &Delivery,
    repo: &str,
    branch: &str,
    head: &str,
) -> Result<DeliveryResult, StoreError> {
    // Read before: a queue woken needlessly, or one created meanwhile and not woken, is
    // harmless (its intents' own commits wake it).
    let repository_keys = repository_queues(services, repo).await?;
    let decided = services
        .store
        .decide_on_branch(repo, branch, INTENTS_ON_ONE_BRANCH, |on_branch| {
            let mut plan = DeliveryPlan::new(services, delivery, received);
            let mut keys: std::collections::BTreeSet<QueueKey> =
                repository_keys.iter().cloned().collect();
            let mut revalidated = Vec::new();
            for intent in on_branch.iter().map(|stored| &stored.intent) {
                let Some(Effect::Events { events, links, .. }) =
                    revalidation_after_push(intent, repo, branch, head)
                else {
                    continue;
                };
                for (event_type, payload) in events {
                    let about = Some((intent.id.as_str(), intent.tenant_id.as_deref()));
                    plan.push(event_type, about, payload);
                }
                plan.link(&intent.id, &links);
                keys.insert(QueueKey::for_intent(intent));
                revalidated.push(intent.id.clone());
            }
            plan.commit.outbox.extend(keys.iter().map(queue_message));
            let outcome =
                json!({"result": "queued", "queues": keys.len(), "revalidated": revalidated});
            (Some(plan.finish()), (outcome, !keys.is_empty()))
        })
        .await;
    delivered(services, decided).await
}

/// The most intents of one branch a push revalidates (the rest are revalidated by their rounds,
/// which read where the head is).
const INTENTS_ON_ONE_BRANCH: u32 = 500;

/// Plans a delivery about one intent from its row read under its lock (`plan` answers what to
/// reply, or why it will not plan yet: then nothing is written) and commits the plan in the same
/// transaction. Decided again only when the intent did not exist and another delivery created
/// it meanwhile: what is decided from a locked row cannot have gone stale. Answers the plan's
/// answer and whether it queued work.
async fn decide_under_lock<E>(
    services: &Services,
    intent_id: &str,
    received: &Value,
    delivery: &Delivery,
    plan: impl Fn(&mut DeliveryPlan<'_>, Option<&StoredIntent>) -> Result<Value, E>,
) -> Result<Result<(Value, bool), E>, StoreError> {
    let mut attempt = 1;
    loop {
        let decided = services.store.decide_and_commit(intent_id, |stored| {
            let mut planned = DeliveryPlan::new(services, delivery, received);
            match plan(&mut planned, stored) {
                Err(not_yet) => (None, Err(not_yet)),
                Ok(outcome) => {
                    let queued = !planned.commit.outbox.is_empty();
                    (Some(planned.finish()), Ok((outcome, queued)))
                }
            }
        });
        match decided.await {
            Err(StoreError::Stale { .. }) if attempt < CREATED_MEANWHILE_ATTEMPTS => attempt += 1,
            other => return other,
        }
    }
}

/// A delivery id seen before is answered as a duplicate (same body) or a reused id; any other
/// error stays one.
fn already_delivered(error: StoreError) -> Result<DeliveryResult, StoreError> {
    match error {
        StoreError::AlreadyDelivered {
            same_body: true, ..
        } => Ok(DeliveryResult::Duplicate),
        StoreError::AlreadyDelivered {
            same_body: false, ..
        } => Ok(DeliveryResult::ReusedId),
        e => Err(e),
    }
}

/// A delivery's transaction while it is planned: the delivery row, and its events (each with
/// the delivery id as evidence), `webhook.received` first.
struct DeliveryPlan<'a> {
    factory: EventFactory<'a>,
    evidence: Value,
    received: &'a Value,
    /// The delivery, recorded with the commit (or by its group).
    delivery: Delivery,
    commit: Commit,
    /// Whether reports reach the code host (a GitHub App is configured).
    reports: bool,
}

impl<'a> DeliveryPlan<'a> {
    fn new(services: &'a Services, delivery: &Delivery, received: &'a Value) -> DeliveryPlan<'a> {
        DeliveryPlan::with_factory(
            events(services),
            delivery,
            received,
            services.ports.enabled(),
        )
    }

    fn with_factory(
        factory: EventFactory<'a>,
        delivery: &Delivery,
        received: &'a Value,
        reports: bool,
    ) -> DeliveryPlan<'a> {
        DeliveryPlan {
            factory,
            evidence: json!({"delivery_id": delivery.id}),
            received,
            delivery: delivery.clone(),
            commit: Commit::default(),
            reports,
        }
    }

    /// An event of this delivery, about an intent (with its tenant) or none.
    fn event(
        &self,
        event_type: EventType,
        intent: Option<(&str, Option<&str>)>,
        payload: Value,
    ) -> Event {
        self.factory.event(
            event_type,
            intent.map(|(id, _)| id),
            intent.and_then(|(_, tenant)| tenant),
            payload,
            self.evidence.clone(),
        )
    }

    fn push(
        &mut self,
        event_type: EventType,
        intent: Option<(&str, Option<&str>)>,
        payload: Value,
    ) {
        let event = self.event(event_type, intent, payload);
        self.commit.events.push(event);
    }

    /// Keeps `links` as the commit links of `intent_id`, seen now.
    fn link(&mut self, intent_id: &str, links: &[LinkedCommit]) {
        let observed_at = self.factory.now();
        self.commit
            .commit_links
            .extend(links.iter().map(|link| CommitLink {
                intent_id: intent_id.to_owned(),
                repo: link.repo.clone(),
                sha: link.sha.clone(),
                role: link.role.to_owned(),
                observed_at,
            }));
    }

    /// The commit, `webhook.received` first.
    fn finish(self) -> Commit {
        let (mut commit, delivery) = self.finish_for_group();
        commit.delivery = Some(delivery);
        commit
    }

    /// The commit without its delivery, which a group records itself, and the delivery.
    fn finish_for_group(mut self) -> (Commit, Delivery) {
        let received = self.event(EventType::WebhookReceived, None, self.received.clone());
        self.commit.events.insert(0, received);
        (self.commit, self.delivery)
    }
}

/// Plans a change to one intent from its row as stored (read under its lock); what to answer.
fn plan_change(
    plan: &mut DeliveryPlan<'_>,
    change: &Change,
    stored: Option<&StoredIntent>,
) -> Value {
    let (_, proposed) = change_subject(change);
    let current = stored.map(|s| &s.intent);
    match effect(current, change) {
        Effect::Ignored { intent_id, reason } => {
            json!({"intent_id": intent_id, "result": "ignored", "reason": reason})
        }
        Effect::Events {
            intent_id,
            events,
            links,
        } => {
            // The queue the intent is in after the change (a new target moves it).
            let subject = proposed.or(current);
            let tenant = subject.and_then(|i| i.tenant_id.as_deref());
            for (event_type, payload) in events {
                plan.push(event_type, Some((&intent_id, tenant)), payload);
            }
            plan.link(&intent_id, &links);
            // Ended by the host: its check run is told (by the key's next round, in order).
            if let (Some(intent), Some((merged, detail))) = (current, ended_by_host(change))
                && let Some(head) = intent.head_sha().filter(|_| plan.reports)
            {
                let trace = plan.factory.trace_id().to_owned();
                let report = publication::ended_by_host(intent, head, merged, detail, &trace);
                let key = QueueKey::for_intent(intent);
                plan.commit
                    .outbox
                    .push(crate::queue_worker::report_message(&key, &report));
            }
            if let Some(subject) = subject {
                plan.commit
                    .outbox
                    .push(queue_message(&QueueKey::for_intent(subject)));
            }
            json!({"intent_id": intent_id, "result": "applied"})
        }
    }
}

/// Whether `change` is the host ending the change (merged there, or closed), and what to say.
fn ended_by_host(change: &Change) -> Option<(bool, &'static str)> {
    match change {
        Change::Closed { merged: true, .. } => Some((true, "merged on GitHub")),
        Change::Closed { merged: false, .. } => Some((false, "closed without merging")),
        Change::MergeGroupDestroyed { reason, .. } if reason == "merged" => {
            Some((true, "the merge group merged"))
        }
        Change::MergeGroupDestroyed { .. } => Some((false, "the merge group was dropped")),
        _ => None,
    }
}

/// A command that reads, on an intent whose author's permission was not asked: GitHub is to be
/// asked first (outside the intent's lock).
struct AskFirst;

/// Plans an `@converge` command about the intent `current` (as read under its lock) given by
/// `author`, who `allowed` says may or may not give commands; what to answer.
fn plan_command(
    plan: &mut DeliveryPlan<'_>,
    intent_id: &str,
    command: &Result<converge_core::comment_command::Command, String>,
    author: &str,
    current: Option<&Intent>,
    allowed: Option<&Result<(), String>>,
) -> Result<Value, AskFirst> {
    use converge_core::comment_command::{self, Command};
    let (result, answer) = match (command, current) {
        (Err(problem), _) => ("invalid", problem.clone()),
        (Ok(_), None) => (
            "unknown",
            "this pull request has no intent in Converge yet".to_owned(),
        ),
        (Ok(given), Some(intent)) => match allowed.ok_or(AskFirst)? {
            Err(why) => ("refused", why.clone()),
            Ok(()) => match comment_command::effect(intent, *given, author) {
                comment_command::Effect::Nothing(why) if *given == Command::Status => {
                    ("answered", why)
                }
                comment_command::Effect::Nothing(why) => ("unchanged", why),
                comment_command::Effect::Events(changes) => {
                    let tenant = intent.tenant_id.as_deref();
                    for (event_type, payload) in changes {
                        plan.push(event_type, Some((intent_id, tenant)), payload);
                    }
                    plan.commit
                        .outbox
                        .push(queue_message(&QueueKey::for_intent(intent)));
                    ("applied", format!("{} done", given.name()))
                }
            },
        },
    };
    let name = command.as_ref().ok().map(|c| c.name());
    plan.push(
        EventType::IntentCommanded,
        current.map(|i| (intent_id, i.tenant_id.as_deref())),
        json!({"command": name, "by": author, "result": result, "answer": answer,
               "allowed": !matches!(result, "refused")}),
    );
    Ok(
        json!({"intent_id": intent_id, "result": "command", "command": name,
              "command_result": result, "answer": answer}),
    )
}

/// Plans the recording of a check's result on `head_sha` of `repo`: on the actionable intents
/// whose head it is (which are judged again), or, on a commit no intent's head, a wake-up of
/// the queues testing it; what to answer.
async fn plan_check_result(
    services: &Services,
    plan: &mut DeliveryPlan<'_>,
    repo: &str,
    head_sha: &str,
    name: &str,
    conclusion: &str,
) -> Result<Value, StoreError> {
    let state_name = match conclusion {
        "success" | "neutral" | "skipped" => "passed",
        _ => "failed",
    };
    let mut judged = Vec::new();
    let mut woken = std::collections::BTreeSet::new();
    let matching = services
        .store
        .actionable_at_head(repo, head_sha, INTENTS_AT_ONE_HEAD)
        .await?;
    for intent in &matching {
        let payload = json!({"name": name, "state": state_name, "head_sha": head_sha,
                             "details": conclusion, "reported_by": "github"});
        plan.push(
            EventType::CheckReported,
            Some((&intent.id, intent.tenant_id.as_deref())),
            payload,
        );
        judged.push(intent.id.clone());
        woken.insert(QueueKey::for_intent(intent));
    }
    plan.commit.outbox.extend(woken.iter().map(queue_message));
    if judged.is_empty() {
        // No intent's head: a tested candidate's (trial branches are nobody's pull
        // request), or a commit the queues do not care about (CI on other branches).
        // Only the queues testing it look again; the others learn nothing.
        let testing: Vec<OutboxMessage> = services
            .store
            .trains_of_repo(repo)
            .await?
            .iter()
            .filter(|(_, train)| tests_commit(train, head_sha))
            .map(|(key, _)| queue_message(key))
            .collect();
        let queues = testing.len();
        plan.commit.outbox.extend(testing);
        Ok(json!({"result": if queues == 0 { "ignored" } else { "queued" }, "queues": queues}))
    } else {
        Ok(json!({"result": "recorded", "intents": judged}))
    }
}

/// At most this many intents are judged by one completed check: one head is normally one pull
/// request's (a commit pushed to many branches at once is the rare exception).
const INTENTS_AT_ONE_HEAD: u32 = 1_000;

/// The intent a change is about, and the intent it proposes (if it proposes one).
fn change_subject(change: &Change) -> (&str, Option<&Intent>) {
    match change {
        Change::Proposed { intent, .. } | Change::MergeGroupRequested { intent } => {
            (&intent.id, Some(intent))
        }
        Change::Closed { intent_id, .. }
        | Change::MergeGroupDestroyed { intent_id, .. }
        | Change::Prioritised { intent_id, .. }
        | Change::Reviewed { intent_id, .. } => (intent_id, None),
    }
}

/// Whether a stored train has a candidate under test at `commit` (a train that does not read
/// tests nothing).
fn tests_commit(train: &str, commit: &str) -> bool {
    serde_json::from_str::<converge_core::train::Train>(train)
        .is_ok_and(|train| train.under_test().iter().any(|t| t.commit == commit))
}

/// Every queue of `repo` (any tenant, any target) that holds actionable intents.
async fn repository_queues(services: &Services, repo: &str) -> Result<Vec<QueueKey>, StoreError> {
    Ok(crate::queue_worker::actionable_keys(&services.store)
        .await?
        .into_iter()
        .filter(|k| k.repo == repo)
        .collect())
}

/// Why a queue run on request could not run.
#[derive(Debug, thiserror::Error)]
pub enum QueueRunError {
    /// No local repository and no GitHub App: nothing to work through.
    #[error(
        "nothing to work on: set CONVERGE_REPO_PATH or configure the GitHub App (CONVERGE_GITHUB_APP_ID)"
    )]
    NoPorts,
    /// A round failed.
    #[error(transparent)]
    Worker(#[from] WorkerError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One round now, by this process, over every queue key with actionable intents that `wanted`
/// accepts, with `settings` (the worker's, with a caller's overrides). A key another worker is
/// processing is reported busy.
pub async fn run_queue_now(
    services: &Services,
    settings: WorkerSettings,
    wanted: impl Fn(&QueueKey) -> bool,
) -> Result<Vec<(QueueKey, KeyOutcome)>, QueueRunError> {
    if services.ports.is_empty() {
        return Err(QueueRunError::NoPorts);
    }
    let processor = services.processor_with(settings, format!("api-run-{}", services.new_id()));
    let (_, keys) = crate::queue_worker::keys_to_sweep(&services.store).await?;
    let mut rounds = Vec::new();
    for key in keys.into_iter().filter(|k| wanted(k)) {
        let outcome = processor.process_key(&key).await?;
        rounds.push((key, outcome));
    }
    Ok(rounds)
}

/// The current value of a known flag: the operator's setting, else its default.
pub async fn flag_value(
    store: &converge_store::Store,
    flag: converge_core::flags::Flag,
) -> Result<bool, StoreError> {
    Ok(store
        .flags()
        .await?
        .iter()
        .find(|s| s.name == flag.name)
        .map_or(flag.default, |s| s.enabled))
}

/// Why a validation on request could not reach a decision. Nothing was recorded.
#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    /// No local repository and no GitHub App: nothing to validate against.
    #[error(
        "nothing to validate against: set CONVERGE_REPO_PATH or configure the GitHub App (CONVERGE_GITHUB_APP_ID)"
    )]
    NoPorts,
    /// The pipeline stopped (a terminal intent, source control or checks unreachable).
    #[error(transparent)]
    Pipeline(#[from] converge_core::pipeline::PipelineError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Validates `intent` against its repository now — merge simulation, required checks, risk,
/// policy gates, risk gate — and records the decision's events with a queue message for its
/// key, so the queue takes the decision up. The decision is recorded only if the intent is
/// still as read ([`StoreError::Stale`] otherwise: validate again).
pub async fn validate_now(
    services: &Services,
    stored: &StoredIntent,
    skip_checks: bool,
) -> Result<converge_core::Decision, ValidateError> {
    let intent = &stored.intent;
    use converge_core::pipeline::{Ports, ValidationOptions, validate};
    if services.ports.is_empty() {
        return Err(ValidateError::NoPorts);
    }
    let options = ValidationOptions {
        skip_checks,
        auto_classify: flag_value(&services.store, converge_core::flags::RISK_AUTO_CLASSIFY)
            .await?,
    };
    let clock = SharedClock(services.clock.as_ref());
    let ports = Ports {
        scm: &services.ports,
        checks: &services.ports,
        clock: &clock,
        ids: &RandomIds,
    };
    let policy = policy_for_tenant(
        &services.store,
        &services.policy,
        intent.tenant_id.as_deref().unwrap_or(""),
    )
    .await?;
    let decision = validate(intent, ports, &policy, options).await?;
    enqueue(
        services,
        decision.events.clone(),
        intent,
        Some(stored.expected()),
    )
    .await?;
    Ok(decision)
}

/// A shared clock as a sized port (the pipeline's ports are generic).
pub(crate) struct SharedClock<'a>(
    pub(crate) &'a (dyn converge_core::pipeline::Clock + Send + Sync),
);

impl converge_core::pipeline::Clock for SharedClock<'_> {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.0.now()
    }
}

/// Whether `user` may give commands on `repo` (write permission, asked of GitHub through the
/// App), or why not.
async fn may_give_commands(
    services: &Services,
    installation: Option<u64>,
    repo: &str,
    user: &str,
) -> Result<(), String> {
    let Some(app) = services.ports.github_app() else {
        return Err("no GitHub App is configured to check who may give commands".to_owned());
    };
    let asked = converge_github::conversation::may_write(app, installation, repo, user);
    match tokio::time::timeout(GITHUB_CALL_BUDGET, asked).await {
        Ok(Ok(true)) => Ok(()),
        Ok(Ok(false)) => Err(format!(
            "@{user} may not give commands here: write permission on {repo} is needed"
        )),
        Ok(Err(e)) => Err(format!(
            "the permission of @{user} could not be checked: {e}"
        )),
        Err(_) => Err(format!(
            "the permission of @{user} could not be checked: GitHub did not answer in {} s",
            GITHUB_CALL_BUDGET.as_secs()
        )),
    }
}

/// How long a webhook delivery waits on GitHub for a command's permission check, and then for
/// its answer (reaction and reply): GitHub gives up on a delivery after 10 seconds.
const GITHUB_CALL_BUDGET: std::time::Duration = std::time::Duration::from_secs(4);

/// Answers a comment command on GitHub once its decision is recorded: a reaction on the
/// comment (+1 done, -1 refused, confused otherwise) and, unless it was simply done, a reply
/// saying what happened (the answer to `status`). Best effort: the record stands either way.
async fn answer_command(services: &Services, translation: &Translation, outcome: &Value) {
    let Translation::Command {
        repo,
        installation,
        number,
        comment_id,
        ..
    } = translation
    else {
        return;
    };
    let Some(app) = services.ports.github_app() else {
        return;
    };
    let result = outcome["command_result"].as_str().unwrap_or_default();
    let answer = outcome["answer"].as_str().unwrap_or_default();
    let reaction = match result {
        "applied" | "answered" => "+1",
        "refused" => "-1",
        _ => "confused",
    };
    use converge_github::conversation::{react, reply};
    let answering = async {
        if let Err(e) = react(app, *installation, repo, *comment_id, reaction).await {
            tracing::warn!(repo = %repo, comment = comment_id, "the reaction to a command was not posted: {e}");
        }
        if result != "applied"
            && let Err(e) = reply(app, *installation, repo, *number, answer).await
        {
            tracing::warn!(repo = %repo, number, "the answer to a command was not posted: {e}");
        }
    };
    if tokio::time::timeout(GITHUB_CALL_BUDGET, answering)
        .await
        .is_err()
    {
        tracing::warn!(repo = %repo, number, "the answer to a command was cut short: GitHub did not answer in time");
    }
}
