//! Queue processing: one round over a queue key, under its lease.
//!
//! The rules are the domain's ([`converge_core::queue`]); this module loads what they need,
//! runs the validation pipeline and the merge through the ports, and commits each decision's
//! events together with the step's event in one transaction guarded by the key's lease — a
//! worker that lost its lease (fencing token superseded) cannot write a decision. A merge
//! follows either a decision just committed under the lease or a renewal of it, both of which
//! fail if it was lost, so a fenced-off worker never merges either.
//!
//! The database-backed queue is the outbox: the API appends a `queue` message naming the key
//! in the same transaction as the change that calls for work, and [`QueueProcessor::poll`]
//! claims those messages, adds every key that has actionable intents (the sweep, which also
//! notices target branches that moved with no message at all), and processes each key.

use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures_util::StreamExt;

use converge_core::event::EventFactory;
use converge_core::pipeline::{
    Checks, Clock, IdSource, Merger, Ports, Scm, ScmError, SimulatedMerge, Tips, ValidationOptions,
    validate,
};
use converge_core::publication::{self, NoPublisher, Publisher};
use converge_core::queue::{
    self, Admission, LastDecision, NextAction, QueueKey, QueueRules, RoundOutcome, Step, Work,
};
use converge_core::repo_config::{self, RepoConfig};
use converge_core::train::{MergeMethod, MergeMode, TrainSettings};
use converge_core::{Event, EventType, Intent, PolicyConfig, Status};
use converge_store::{Commit, IntentCursor, KeyDocument, Lease, OutboxMessage, Store, StoreError};
use serde_json::{Value, json};

use crate::commands::SharedClock;
pub use crate::config::WorkerSettings;
use crate::reported_checks::ReportedChecks;
use crate::services::RandomIds;

mod trains;

/// The outbox topic of queue messages (`{"tenant", "repo", "target"}`).
pub const QUEUE_TOPIC: &str = "queue";

/// The outbox message that asks for a round over `key`.
pub fn queue_message(key: &QueueKey) -> OutboxMessage {
    let mut payload = json!({"tenant": key.tenant, "repo": key.repo, "target": key.target});
    // The trace of the change that calls for the round, so the round continues it.
    if let Some(traceparent) = crate::telemetry::current_traceparent() {
        payload["traceparent"] = json!(traceparent);
    }
    OutboxMessage {
        topic: QUEUE_TOPIC.to_owned(),
        payload,
    }
}

/// Every queue key that has READY, VALIDATED or QUEUED intents (counted in the database).
pub async fn actionable_keys(store: &Store) -> Result<BTreeSet<QueueKey>, StoreError> {
    let counts: Vec<_> = store
        .actionable_counts(None)
        .await?
        .into_iter()
        .filter(|c| c.count > 0)
        .collect();
    // Summed per queue across tenants: metrics never name a tenant.
    let mut depths: BTreeMap<String, u64> = BTreeMap::new();
    for count in &counts {
        *depths.entry(queue_label(&count.key)).or_default() +=
            u64::try_from(count.count).unwrap_or_default();
    }
    crate::telemetry::QueueMetrics::get().depths(&depths);
    Ok(counts.into_iter().map(|c| c.key).collect())
}

/// Ends the pauses of keys left with nothing actionable (their intents merged, closed or
/// rejected meanwhile): no round runs for them any more, so none would end it. `actionable`
/// is [`actionable_keys`]' answer. Answers how many ended.
pub async fn release_idle_holds(
    store: &Store,
    actionable: &BTreeSet<QueueKey>,
) -> Result<usize, StoreError> {
    let mut released = 0;
    for lease in store.leases().await? {
        if lease.hold.is_some()
            && !actionable.contains(&lease.key)
            && store.release_idle_key_hold(&lease.key).await?
        {
            released += 1;
        }
    }
    Ok(released)
}

/// Decisions read back to find the start of a wait for checks.
const TRAIL_DEPTH: u32 = 50;

/// Why a round over a key stopped early.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The store failed or refused; a lost lease shows as [`StoreError::StaleLease`].
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What happened to one intent in a round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntentReport {
    /// The intent.
    pub intent_id: String,
    /// What the round did with it.
    pub outcome: RoundOutcome,
    /// The reason or detail, for the log.
    pub detail: String,
}

impl IntentReport {
    /// Whether the intent needed work this round (see [`RoundOutcome::needed_work`]).
    pub fn needed_work(&self) -> bool {
        self.outcome.needed_work()
    }
}

/// The result of one round over a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOutcome {
    /// Another worker holds the key's lease.
    Busy,
    /// The round ran; one report per intent looked at.
    Processed(Vec<IntentReport>),
    /// The key is paused because its environment failed: by this round (its reports), or
    /// by an earlier one whose backoff has not ended (no reports). No round before `until`.
    Paused {
        /// The end of the backoff.
        until: DateTime<Utc>,
        /// This round's reports, the paused intent's last.
        reports: Vec<IntentReport>,
    },
}

impl KeyOutcome {
    /// The reports of the round (none for a busy key or one still in its backoff).
    pub fn reports(&self) -> &[IntentReport] {
        match self {
            KeyOutcome::Busy => &[],
            KeyOutcome::Processed(reports) | KeyOutcome::Paused { reports, .. } => reports,
        }
    }
}

/// Processes queue keys against one SCM (which also merges), one source of check results and
/// one publisher of reports to the code host.
pub struct QueueProcessor<S, C = ReportedChecks, P = NoPublisher> {
    store: Store,
    scm: S,
    checks: C,
    publisher: P,
    policy: PolicyConfig,
    settings: WorkerSettings,
    clock: Arc<dyn Clock + Send + Sync>,
    holder: String,
    /// (freeze, intent, head) whose check run was told the freeze holds it.
    frozen_notices: std::sync::Mutex<std::collections::HashSet<(String, String, String)>>,
    /// Per key, the repository file as read at a target tip: a commit's file never changes,
    /// so a round whose target has not moved asks source control for the tip only.
    repo_files: std::sync::Mutex<std::collections::HashMap<QueueKey, (String, Option<String>)>>,
}

impl<S: Scm + Merger + Sync> QueueProcessor<S, ReportedChecks, NoPublisher> {
    /// A processor over a local repository: checks are those CI reported to Converge, and
    /// nobody is sent reports.
    pub fn new(
        store: Store,
        scm: S,
        policy: PolicyConfig,
        settings: WorkerSettings,
        clock: Arc<dyn Clock + Send + Sync>,
        holder: impl Into<String>,
    ) -> QueueProcessor<S, ReportedChecks, NoPublisher> {
        let checks = ReportedChecks::new(store.clone());
        let ports = WorkerPorts {
            scm,
            checks,
            publisher: NoPublisher,
        };
        QueueProcessor::with_ports(store, ports, policy, settings, clock, holder)
    }
}

/// The three ports a processor works through.
pub struct WorkerPorts<S, C, P> {
    /// Source control (simulation and merges).
    pub scm: S,
    /// Check results.
    pub checks: C,
    /// Reports to the code host.
    pub publisher: P,
}

impl<S: Scm + Merger + Sync, C: Checks + Sync, P: Publisher + Sync> QueueProcessor<S, C, P> {
    /// A processor over `ports` that holds leases as `holder` (unique per worker process).
    pub fn with_ports(
        store: Store,
        ports: WorkerPorts<S, C, P>,
        policy: PolicyConfig,
        settings: WorkerSettings,
        clock: Arc<dyn Clock + Send + Sync>,
        holder: impl Into<String>,
    ) -> QueueProcessor<S, C, P> {
        let WorkerPorts {
            scm,
            checks,
            publisher,
        } = ports;
        QueueProcessor {
            checks,
            publisher,
            store,
            scm,
            policy,
            settings,
            clock,
            holder: holder.into(),
            frozen_notices: std::sync::Mutex::default(),
            repo_files: std::sync::Mutex::default(),
        }
    }

    /// The lease holder name of this processor.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// The worker settings.
    pub fn settings(&self) -> &WorkerSettings {
        &self.settings
    }

    /// Whether a round with these reports stopped at the batch size, so its key may have
    /// work left.
    pub fn filled_batch(&self, reports: &[IntentReport]) -> bool {
        let worked = reports.iter().filter(|r| r.needed_work()).count();
        worked >= self.settings.batch_size as usize
    }

    fn rules(&self) -> QueueRules {
        let mut rules = QueueRules::from_settings(&self.policy.queue, self.settings.auto_confirm);
        if let Some(max) = self.settings.max_retries {
            rules.max_retries = max;
        }
        rules
    }

    /// Every key that has READY, VALIDATED or QUEUED intents.
    pub async fn actionable_keys(&self) -> Result<BTreeSet<QueueKey>, WorkerError> {
        Ok(actionable_keys(&self.store).await?)
    }

    /// One poll of the database-backed queue: claims queue messages, adds every actionable key
    /// and every key with reports waiting (the sweep: [`keys_to_sweep`]), processes each key once, and marks the messages of keys that were
    /// processed as sent. A busy key's messages stay claimed until the claim lapses, then come
    /// back (like an SQS visibility timeout). With `CONVERGE_WORKER_TARGET`, only that target's
    /// keys are processed. Returns the outcome per key.
    pub async fn poll(&self) -> Result<BTreeMap<QueueKey, KeyOutcome>, WorkerError> {
        let claim_ttl = self.settings.lease_ttl;
        let messages = self
            .store
            .claim_outbox(QUEUE_TOPIC, &self.holder, 1_000, claim_ttl)
            .await?;
        let mut by_key: BTreeMap<QueueKey, Vec<i64>> = BTreeMap::new();
        for message in &messages {
            match serde_json::from_value::<QueueKey>(message.payload.clone()) {
                Ok(key) => by_key.entry(key).or_default().push(message.seq),
                Err(e) => {
                    // Nothing can ever process it; the sweep still covers every real key.
                    tracing::warn!("dropping malformed queue message {}: {e}", message.seq);
                    self.store.mark_outbox_sent(message.seq).await?;
                }
            }
        }
        let (actionable, swept) = keys_to_sweep(&self.store).await?;
        release_idle_holds(&self.store, &actionable).await?;
        for key in swept {
            by_key.entry(key).or_default();
        }
        // Another target's keys are left to its worker: their messages stay unsent, and come
        // back to be claimed when this claim lapses.
        by_key.retain(|key, _| self.settings.takes(key));
        // Keys are independent (each has its own lease and target): up to `concurrency` of
        // them are processed at once. Every round runs to its end, so none is left holding a
        // lease when another fails.
        let rounds = futures_util::stream::iter(by_key)
            .map(|(key, seqs)| async move {
                let outcome = self.process_key(&key).await;
                (key, seqs, outcome)
            })
            .buffer_unordered(self.settings.concurrency.max(1))
            .collect::<Vec<_>>()
            .await;
        let mut outcomes = BTreeMap::new();
        let mut done_messages = Vec::new();
        let mut first_error = None;
        for (key, seqs, outcome) in rounds {
            match outcome {
                Ok(outcome) => {
                    // A paused key's messages are done with too: every poll takes up the
                    // actionable keys, so it is tried again once its backoff ends.
                    if outcome != KeyOutcome::Busy {
                        done_messages.extend(seqs);
                    }
                    outcomes.insert(key, outcome);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        self.store.mark_outbox_rows_sent(&done_messages).await?;
        match first_error {
            Some(e) => Err(e),
            None => Ok(outcomes),
        }
    }

    /// Whether a poll's outcomes leave work for the next one at once: a round stopped at
    /// the batch size having moved something (a round of errors only would just repeat them
    /// without pause).
    pub fn work_left(&self, outcomes: &BTreeMap<QueueKey, KeyOutcome>) -> bool {
        outcomes.values().any(|outcome| match outcome {
            KeyOutcome::Processed(reports) => {
                self.filled_batch(reports)
                    && reports
                        .iter()
                        .any(|r| r.needed_work() && r.outcome != RoundOutcome::Error)
            }
            KeyOutcome::Busy | KeyOutcome::Paused { .. } => false,
        })
    }

    /// One round over a key: takes its lease (or reports it busy), handles up to a batch of
    /// its actionable intents in queue order, and gives the lease back — also when the round
    /// fails.
    pub async fn process_key(&self, key: &QueueKey) -> Result<KeyOutcome, WorkerError> {
        use tracing::Instrument;
        let span = tracing::info_span!(
            "queue.round",
            key = %key,
            holder = %self.holder,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        );
        crate::telemetry::record_ids(&span);
        // Boxed: the round is a deep future, and callers nest it further.
        Box::pin(self.process_key_now(key)).instrument(span).await
    }

    async fn process_key_now(&self, key: &QueueKey) -> Result<KeyOutcome, WorkerError> {
        let Some(lease) = self
            .store
            .acquire_lease(key, &self.holder, self.settings.lease_ttl)
            .await?
        else {
            crate::telemetry::QueueMetrics::get().contended(&queue_label(key));
            return Ok(KeyOutcome::Busy);
        };
        let hold = match self.store.inspect_lease(key).await {
            Ok(state) => state.and_then(|s| s.hold),
            Err(e) => {
                self.store.release_lease(&lease).await?;
                return Err(e.into());
            }
        };
        if let Some(hold) = hold.as_ref().filter(|h| self.clock.now() < h.until) {
            // Paused by a failure of its environment: no round before the backoff ends.
            tracing::debug!(key = %key, until = %hold.until, "queue key paused: {}", hold.reason);
            self.store.release_lease(&lease).await?;
            return Ok(KeyOutcome::Paused {
                until: hold.until,
                reports: Vec::new(),
            });
        }
        let result = self.round(lease.clone(), hold.is_some()).await;
        // Releasing a lease that was lost (taken over after expiry) is a no-op.
        let released = self.store.release_lease(&lease).await;
        let (reports, paused_until) = result?;
        released?;
        let outcomes: Vec<RoundOutcome> = reports.iter().map(|r| r.outcome).collect();
        crate::telemetry::QueueMetrics::get().round(&queue_label(key), &outcomes);
        // One line per decision, inside the round's span (so with its trace id).
        for report in reports
            .iter()
            .filter(|r| r.outcome != RoundOutcome::Unchanged)
        {
            tracing::info!(
                intent = %report.intent_id,
                outcome = %report.outcome,
                detail = %report.detail,
                "{} {}{}",
                report.intent_id,
                report.outcome,
                if report.detail.is_empty() {
                    String::new()
                } else {
                    format!(": {}", report.detail)
                }
            );
        }
        Ok(match paused_until {
            Some(until) => KeyOutcome::Paused { until, reports },
            None => KeyOutcome::Processed(reports),
        })
    }

    /// Goes through the key's actionable intents in queue order, page by page, until
    /// `batch_size` of them needed work (validation, merge, rejection): intents that need none
    /// (queued and unmoved, waiting, held) do not use up the batch, so they cannot starve the
    /// intents behind them. The lease is renewed once half its lifetime has passed.
    ///
    /// When the environment fails on an intent (see [`RoundOutcome::Paused`]) the round stops
    /// there and the key is paused with the reason (answered: the end of its backoff); a round
    /// over a paused key (`held`) that worked on an intent without an environment failure, or
    /// found nothing left to do, ends the pause.
    async fn round(
        &self,
        mut lease: Lease,
        held: bool,
    ) -> Result<(Vec<IntentReport>, Option<DateTime<Utc>>), WorkerError> {
        const PAGE: u32 = 100;
        let mut rules = self.rules();
        // The key's tenant's risk policy over the deployment's, read once a round, and the
        // repository's own file over both.
        let policy =
            crate::commands::policy_for_tenant(&self.store, &self.policy, &lease.key().tenant)
                .await?;
        let (policy, knobs, repo) = self.repo_settings(&lease, policy).await?;
        rules.eject_conflicts = knobs.mode == MergeMode::Tested;
        if repo.is_some_and(|r| !r.required_approvals.is_empty()) {
            rules.required_approvals =
                queue::RequiredApprovals::from_map(&policy.queue.required_approvals);
        }
        let auto_classify = self.auto_classify().await?;
        let mut reports = Vec::new();
        let mut worked = 0u32;
        let mut queued_seen = 0usize;
        let mut cursor: Option<IntentCursor> = None;
        let mut pending = Pending {
            knobs,
            ..Pending::default()
        };
        let mut seen = BTreeSet::new();
        'pages: loop {
            let page = self
                .store
                .queue_intents(lease.key(), cursor.as_ref(), PAGE)
                .await?;
            let full = page.len() == PAGE as usize;
            cursor = page.last().map(IntentCursor::after);
            // Where every intent of the page points, read at once where the SCM can: most have
            // nothing to do. The read is after every merge so far.
            let mut page_tips = self.scm.tips_of(&page).await.map(Vec::into_iter);
            // The page's review tasks, in one read: an open or rejecting review holds its intent.
            let ids: Vec<String> = page.iter().map(|i| i.id.clone()).collect();
            let mut reviews: BTreeMap<String, Vec<converge_core::review::ReviewTask>> =
                BTreeMap::new();
            for task in self.store.review_tasks_of(&ids).await? {
                reviews
                    .entry(task.intent_id.clone())
                    .or_default()
                    .push(task);
            }
            // And their pull request reviews on the code host (approvals, changes requested).
            let mut host_reviews: BTreeMap<String, Vec<converge_core::approvals::HostReview>> =
                BTreeMap::new();
            for stored in self
                .store
                .events_for(EventType::IntentPullRequestReview, &ids, 10_000)
                .await?
            {
                let Some(intent_id) = stored.event.intent_id.clone() else {
                    continue;
                };
                match serde_json::from_value(stored.event.payload) {
                    Ok(review) => host_reviews.entry(intent_id).or_default().push(review),
                    Err(e) => {
                        tracing::warn!("a pull request review of {intent_id} does not read: {e}")
                    }
                }
            }
            // And their decision trails.
            let mut trails = self
                .store
                .decision_trails(&ids, TRAIL_DEPTH)
                .await?
                .into_iter();
            pending.target_now = None;
            for intent in &page {
                let tips = page_tips.as_mut().and_then(Iterator::next);
                let trail = trails.next().unwrap_or_default();
                if intent.status == Status::Queued {
                    queued_seen += 1;
                }
                let position = queued_seen + usize::from(intent.status != Status::Queued);
                // A merge earlier in this round moved the target past what the page read.
                let tips = match (tips, &pending.target_now) {
                    (Some(Ok(tips)), Some(target_now)) => Some(Ok(Tips {
                        target_sha: target_now.clone(),
                        ..tips
                    })),
                    (tips, _) => tips,
                };
                let turn = Turn {
                    auto_classify,
                    position,
                    tips,
                    reviews: reviews.remove(&intent.id).unwrap_or_default(),
                    host_reviews: host_reviews.remove(&intent.id).unwrap_or_default(),
                    trail,
                };
                seen.insert(intent.id.clone());
                let report = self
                    .handle(intent, &rules, &policy, &lease, turn, &mut pending)
                    .await?;
                let needed_work = report.needed_work();
                let paused =
                    (report.outcome == RoundOutcome::Paused).then(|| report.detail.clone());
                reports.push(report);
                if let Some(reason) = paused {
                    let until = self.pause_key(&lease, &mut pending, &reason).await?;
                    return Ok((reports, Some(until)));
                }
                if needed_work {
                    worked += 1;
                }
                if pending.decisions >= FLUSH_EVERY {
                    self.flush(&lease, &mut pending).await?;
                    self.send_reports(&lease).await?;
                }
                let remaining = lease.expires_at() - self.clock.now();
                if remaining.to_std().unwrap_or_default() < self.settings.lease_ttl / 2 {
                    lease = self
                        .store
                        .extend_lease(&lease, self.settings.lease_ttl)
                        .await?;
                }
                if worked >= self.settings.batch_size {
                    break 'pages;
                }
            }
            if !full {
                break;
            }
        }
        if pending.tested() {
            let train_reports = self.run_train(&lease, &policy, &seen, &mut pending).await?;
            let paused = train_reports
                .iter()
                .find(|r| r.outcome == RoundOutcome::Paused)
                .map(|r| r.detail.clone());
            reports.extend(train_reports);
            if let Some(reason) = paused {
                let until = self.pause_key(&lease, &mut pending, &reason).await?;
                return Ok((reports, Some(until)));
            }
        }
        self.flush(&lease, &mut pending).await?;
        self.send_reports(&lease).await?;
        // Only work that reached the environment shows it works again: a round of waiting,
        // held or unchanged intents proves nothing, and the pause keeps its count. A key with
        // nothing left to do has nothing to pause.
        let environment_worked = reports
            .iter()
            .any(|r| r.needed_work() && r.outcome != RoundOutcome::Error);
        if held
            && (environment_worked || reports.is_empty())
            && self.store.release_key_hold(&lease).await?
        {
            tracing::info!(key = %lease.key(), "queue key resumed");
        }
        Ok((reports, None))
    }

    /// Ends a round the environment stopped: its decisions are committed and its reports
    /// sent, then the key pauses with `reason` (no retry spent). Returns the end of the pause.
    async fn pause_key(
        &self,
        lease: &Lease,
        pending: &mut Pending,
        reason: &str,
    ) -> Result<DateTime<Utc>, WorkerError> {
        self.flush(lease, pending).await?;
        self.send_reports(lease).await?;
        let hold = self.store.hold_key(lease, reason).await?;
        tracing::warn!(
            key = %lease.key(),
            until = %hold.until,
            failures = hold.failures,
            "queue key paused, no retry spent: {reason}"
        );
        Ok(hold.until)
    }

    /// Commits the round's deferred decisions in one transaction guarded by the lease.
    async fn flush(&self, lease: &Lease, pending: &mut Pending) -> Result<(), StoreError> {
        if pending.events.is_empty() && pending.outbox.is_empty() {
            return Ok(());
        }
        let events = std::mem::take(&mut pending.events);
        let outbox = std::mem::take(&mut pending.outbox);
        pending.decisions = 0;
        self.store
            .commit(&Commit {
                events,
                outbox,
                guard: Some(lease.clone()),
                ..Commit::default()
            })
            .await?;
        Ok(())
    }

    async fn auto_classify(&self) -> Result<bool, StoreError> {
        crate::commands::flag_value(&self.store, converge_core::flags::RISK_AUTO_CLASSIFY).await
    }

    async fn handle(
        &self,
        intent: &Intent,
        rules: &QueueRules,
        policy: &PolicyConfig,
        lease: &Lease,
        turn: Turn,
        pending: &mut Pending,
    ) -> Result<IntentReport, WorkerError> {
        let Turn {
            auto_classify,
            position: queue_position,
            tips,
            reviews,
            host_reviews,
            trail,
        } = turn;
        let report = |outcome: RoundOutcome, detail: String| IntentReport {
            intent_id: intent.id.clone(),
            outcome,
            detail,
        };
        if !intent.dependencies.is_empty() {
            // A dependency merged earlier in this round must be seen merged.
            self.flush(lease, pending).await?;
        }
        let mut dependency_status = BTreeMap::new();
        for dep in &intent.dependencies {
            let status = self.store.intent(dep).await?.map(|d| d.status);
            dependency_status.insert(dep.clone(), status);
        }
        let status_of = |id: &str| dependency_status.get(id).copied().flatten();
        match queue::admit(intent, rules, status_of) {
            Admission::Skip => return Ok(report(RoundOutcome::Unchanged, "terminal".to_owned())),
            Admission::Held { reason } => return Ok(report(RoundOutcome::Held, reason)),
            Admission::WaitForDependencies { unmet } => {
                return Ok(report(
                    RoundOutcome::WaitingForDependencies,
                    unmet.join(", "),
                ));
            }
            Admission::Reject(step) => {
                let notice = intent
                    .head_sha()
                    .map(|head| publication::merge_result(intent, head, &step, "", ""));
                self.commit_step(intent, lease, Vec::new(), &step, "", notice, pending);
                return Ok(report(RoundOutcome::Rejected, reason_of(&step)));
            }
            Admission::Process => {}
        }
        if let Some(reason) = converge_core::review::review_hold(&reviews) {
            return Ok(self.held_by_reviews(intent, lease, reason, pending));
        }
        // Approvals are required of pull requests only: an intent made through the API has no
        // reviews to count. Changes requested hold any intent that has them.
        let required = if intent.technical.contains_key("pr_number") {
            rules.required_approvals.at(intent.risk_level)
        } else {
            0
        };
        let tally = converge_core::approvals::tally(&host_reviews);
        if let Some(reason) = converge_core::approvals::approval_hold(&tally, required) {
            return Ok(self.held_by_reviews(intent, lease, reason, pending));
        }

        let history: Vec<Event> = trail.decisions.iter().map(|d| d.event.clone()).collect();
        let last = LastDecision::from_events(&history);
        let now = self.clock.now();
        // What the page read decides only that there is nothing to do: the intents before this
        // one may have taken long, so work is planned again on a fresh read of its refs.
        let (mut read, mut prefetched) = match tips {
            Some(tips) => (tips, true),
            None => (self.scm.tips(intent).await, false),
        };
        let (tips, work) = loop {
            let tips = match read {
                Ok(tips) => tips,
                // A missing ref is the pipeline's to judge (a MissingRef block), once.
                Err(ScmError::UnknownRef(name)) => {
                    if last.as_ref().is_some_and(|l| l.head_sha.is_empty()) {
                        return Ok(report(
                            RoundOutcome::Unchanged,
                            format!("unknown ref '{name}'"),
                        ));
                    }
                    Default::default()
                }
                Err(e) => {
                    return Ok(self.environment_failed(intent, lease, &e.to_string(), pending));
                }
            };
            let work = queue::plan_work(
                intent,
                last.as_ref(),
                &tips,
                trail.new_evidence_since(),
                now,
                rules,
            );
            if prefetched && work != Work::Nothing {
                (read, prefetched) = (self.scm.tips(intent).await, false);
                continue;
            }
            break (tips, work);
        };
        match work {
            Work::Nothing => Ok(report(RoundOutcome::Unchanged, String::new())),
            Work::Merge { head_sha, .. } if pending.tested() => {
                Ok(self.ride(intent, head_sha, pending))
            }
            Work::Merge {
                head_sha,
                target_sha,
            } => {
                let validated = SimulatedMerge {
                    head_sha,
                    target_sha,
                    ..SimulatedMerge::default()
                };
                self.merge(intent, lease, &validated, "", pending).await
            }
            Work::Validate { waiting_since } => {
                // Only queued work can have been merged by a worker whose record was lost.
                if intent.status == Status::Queued
                    && !tips.head_sha.is_empty()
                    && self
                        .scm
                        .landed(intent, &tips.head_sha)
                        .await
                        .unwrap_or(false)
                {
                    let step = queue::after_merge(intent, &tips.target_sha);
                    let notice = publication::merge_result(
                        intent,
                        &tips.head_sha,
                        &step,
                        &tips.target_sha,
                        "",
                    );
                    self.commit_step(intent, lease, Vec::new(), &step, "", Some(notice), pending);
                    return Ok(report(
                        RoundOutcome::Merged,
                        format!("{} is already in {}", tips.head_sha, intent.target),
                    ));
                }
                if !tips.head_sha.is_empty() {
                    let trace = RandomIds.new_id();
                    let notice = publication::validating(intent, &tips.head_sha, &trace);
                    self.enqueue_notice(intent, lease, notice, pending);
                }
                let ports = Ports {
                    scm: &self.scm,
                    checks: &self.checks,
                    clock: &SharedClock(self.clock.as_ref()),
                    ids: &RandomIds,
                };
                let options = ValidationOptions {
                    auto_classify,
                    // Tested mode requires the checks of the candidate, not of the head.
                    skip_checks: self.settings.skip_checks || pending.tested(),
                };
                let decision = match validate(intent, ports, policy, options).await {
                    Ok(decision) => decision,
                    Err(e) if e.is_environmental() => {
                        return Ok(self.environment_failed(intent, lease, &e.to_string(), pending));
                    }
                    Err(e) => return Ok(report(RoundOutcome::Error, e.to_string())),
                };
                let step = queue::after_validation(intent, &decision, rules, waiting_since);
                // The decision says what evidence it saw: a check reported while this round
                // decides commits first, and must still be new to the next round.
                let mut decision = decision;
                for event in &mut decision.events {
                    if matches!(
                        event.event_type,
                        EventType::IntentValidated | EventType::IntentBlocked
                    ) && let Value::Object(evidence) = &mut event.evidence
                    {
                        evidence.insert(
                            converge_store::EVIDENCE_SEQ.to_owned(),
                            json!(trail.last_new_evidence),
                        );
                    }
                }
                let trace = decision.trace_id.clone();
                let notice = (!decision.merge.head_sha.is_empty())
                    .then(|| publication::decided(intent, &decision, &step, Some(queue_position)));
                self.commit_step(
                    intent,
                    lease,
                    decision.events.clone(),
                    &step,
                    &trace,
                    notice,
                    pending,
                );
                match step.action {
                    NextAction::Merge if pending.tested() => {
                        Ok(self.ride(intent, decision.merge.head_sha.clone(), pending))
                    }
                    NextAction::Merge => {
                        self.merge(intent, lease, &decision.merge, &trace, pending)
                            .await
                    }
                    NextAction::RetryLater => Ok(report(
                        RoundOutcome::WaitingForChecks,
                        reason_of_decision(&decision),
                    )),
                    NextAction::None => Ok(report(RoundOutcome::of_step(&step), reason_of(&step))),
                }
            }
        }
    }

    /// The round's settings: the repository's `.github/converge.toml` on the target's tip
    /// over the deployment's. A file that is refused leaves the last valid one in force (kept
    /// in the key's lease row) and is reported on the round's check runs; a file removed
    /// brings the deployment's settings back. When the target's tip does not read, the last
    /// valid file stays in force (none: the deployment's settings).
    async fn repo_settings(
        &self,
        lease: &Lease,
        mut policy: PolicyConfig,
    ) -> Result<(PolicyConfig, Knobs, Option<RepoConfig>), WorkerError> {
        let mut knobs = Knobs::of(&self.settings);
        let first = self.store.queue_intents(lease.key(), None, 1).await?;
        let Some(sample) = first.first() else {
            return Ok((policy, knobs, None));
        };
        let stored = self
            .store
            .key_document(lease.key(), KeyDocument::RepoConfig)
            .await?;
        let last_valid = || {
            stored
                .as_deref()
                .and_then(|text| repo_config::parse(text).ok())
        };
        let (tip, read) = match self.scm.target_tip(sample).await {
            Ok(tip) => {
                let read = self.repo_file_at(lease.key(), sample, &tip).await;
                (tip, Some(read))
            }
            // Where the target is cannot be read (source control down, or none that can say):
            // the last valid file stays in force, so a tested repository is not merged untested.
            Err(e) => {
                if stored.is_some() {
                    tracing::warn!(key = %lease.key(), "the target's tip does not read, the last valid {} stays in force: {e}", repo_config::PATH);
                }
                (String::new(), None)
            }
        };
        let config = match read {
            None => last_valid(),
            Some(Ok(None)) => {
                if stored.is_some() {
                    self.store
                        .save_key_document(lease, KeyDocument::RepoConfig, None)
                        .await?;
                }
                None
            }
            Some(Ok(Some(text))) => match repo_config::parse(&text) {
                Ok(config) => {
                    if stored.as_deref() != Some(text.as_str()) {
                        self.store
                            .save_key_document(lease, KeyDocument::RepoConfig, Some(&text))
                            .await?;
                        tracing::info!(key = %lease.key(), commit = %tip, "{} in force", repo_config::PATH);
                    }
                    Some(config)
                }
                Err(e) => {
                    tracing::warn!(key = %lease.key(), commit = %tip, "{e}; the last valid configuration stays in force");
                    knobs.config_problem = Some(format!(
                        "{e} (at {tip}); the last valid configuration stays in force"
                    ));
                    last_valid()
                }
            },
            Some(Err(e)) => {
                tracing::warn!(key = %lease.key(), "{} does not read: {e}", repo_config::PATH);
                last_valid()
            }
        };
        if let Some(config) = &config {
            config.apply(
                &mut knobs.mode,
                &mut knobs.method,
                &mut knobs.train,
                &mut policy,
            );
        }
        Ok((policy, knobs, config))
    }

    /// The repository file at the target's `tip`, read from source control once per tip (on
    /// GitHub, a contents call a round saved while the target stays put).
    async fn repo_file_at(
        &self,
        key: &QueueKey,
        sample: &Intent,
        tip: &str,
    ) -> Result<Option<String>, ScmError> {
        /// A worker serves a bounded set of keys; past this, the memory starts again.
        const KEYS_REMEMBERED: usize = 4_096;
        let known = self.repo_files.lock().ok().and_then(|files| {
            files
                .get(key)
                .filter(|(at, _)| at == tip)
                .map(|(_, text)| text.clone())
        });
        if let Some(text) = known {
            return Ok(text);
        }
        let text = self.scm.read_file(sample, tip, repo_config::PATH).await?;
        if let Ok(mut files) = self.repo_files.lock() {
            if files.len() >= KEYS_REMEMBERED {
                files.clear();
            }
            files.insert(key.clone(), (tip.to_owned(), text.clone()));
        }
        Ok(text)
    }

    /// Tested mode: the intent rides the train (after the round's pages) instead of merging.
    fn ride(&self, intent: &Intent, head_sha: String, pending: &mut Pending) -> IntentReport {
        pending.riding.push(trains::Riding {
            intent: intent.clone(),
            head_sha,
        });
        IntentReport {
            intent_id: intent.id.clone(),
            outcome: RoundOutcome::Unchanged,
            detail: "in the tested queue".to_owned(),
        }
    }

    /// Merges exactly `validated` and defers the record of the result. The decision to merge
    /// is committed first (a merge is never made on an unrecorded validation), and the lease
    /// must be known to be held, so a worker that lost it stops before touching the target:
    /// either that commit, guarded by the lease, just went through and the lease still has
    /// half its lifetime, or the lease is renewed here, which fails if it was lost.
    async fn merge(
        &self,
        intent: &Intent,
        lease: &Lease,
        validated: &SimulatedMerge,
        trace: &str,
        pending: &mut Pending,
    ) -> Result<IntentReport, WorkerError> {
        let just_committed = !pending.is_empty();
        self.flush(lease, pending).await?;
        let (lease, permit) = self
            .store
            .merge_permit(
                lease,
                self.settings.lease_ttl,
                just_committed,
                self.clock.now(),
            )
            .await?;
        // A freeze committed before this point holds, one answered while the permit was taken
        // too: read once, after the permit (a frozen key's intents cost a flush, which the
        // round does anyway, and not a second read each on the path every merge takes).
        if let Some(report) = self
            .frozen(intent, &lease, validated, trace, pending)
            .await?
        {
            return Ok(report);
        }
        let rules = self.rules();
        let (step, outcome, detail) = match self.scm.merge(intent, validated, &permit).await {
            Ok(commit) => {
                pending.target_now = Some(commit.clone());
                crate::telemetry::QueueMetrics::get().merged(
                    &queue_label(lease.key()),
                    self.clock.now() - intent.created_at,
                );
                (
                    queue::after_merge(intent, &commit),
                    RoundOutcome::Merged,
                    commit,
                )
            }
            Err(e) if e.is_environmental() => {
                return Ok(self.environment_failed(intent, &lease, &e.to_string(), pending));
            }
            Err(e) if e.needs_revalidation() => (
                queue::after_merge_refused(intent, &e.to_string()),
                RoundOutcome::Requeued,
                e.to_string(),
            ),
            Err(e) => {
                let step = queue::after_merge_failure(intent, rules.max_retries, &e.to_string());
                let outcome = if step.status == Status::Rejected {
                    RoundOutcome::Rejected
                } else {
                    RoundOutcome::Requeued
                };
                (step, outcome, e.to_string())
            }
        };
        let notice = publication::merge_result(intent, &validated.head_sha, &step, &detail, trace);
        // Deferred: if this record is lost, the next round finds the head in the target and
        // records the merge then.
        self.commit_step(
            intent,
            &lease,
            Vec::new(),
            &step,
            trace,
            Some(notice),
            pending,
        );
        Ok(IntentReport {
            intent_id: intent.id.clone(),
            outcome,
            detail,
        })
    }

    /// The environment failed while working on `intent`: the intent keeps its status and
    /// retries, the pause is recorded with `reason`, and the round reports it paused (the
    /// round then pauses the key).
    fn environment_failed(
        &self,
        intent: &Intent,
        lease: &Lease,
        reason: &str,
        pending: &mut Pending,
    ) -> IntentReport {
        let step = queue::after_environment_failure(intent, reason);
        self.commit_step(intent, lease, Vec::new(), &step, "", None, pending);
        IntentReport {
            intent_id: intent.id.clone(),
            outcome: RoundOutcome::Paused,
            detail: reason.to_owned(),
        }
    }

    /// Adds a decision's events, followed by the step's event, and the report for the code
    /// host (when there is one to tell) to the round's deferred commit.
    #[allow(clippy::too_many_arguments)]
    fn commit_step(
        &self,
        intent: &Intent,
        lease: &Lease,
        mut events: Vec<Event>,
        step: &Step,
        trace: &str,
        notice: Option<publication::Report>,
        pending: &mut Pending,
    ) {
        if step.retries > intent.retries {
            crate::telemetry::QueueMetrics::get().retry_spent(&queue_label(lease.key()));
        }
        if let Some((event_type, payload, evidence)) = &step.event {
            let trace_id = if trace.is_empty() {
                RandomIds.new_id()
            } else {
                trace.to_owned()
            };
            let mut evidence = evidence.clone();
            if let Value::Object(map) = &mut evidence {
                map.insert("worker".into(), json!(self.holder));
                map.insert("fencing_token".into(), json!(lease.token().value()));
            }
            let clock = SharedClock(self.clock.as_ref());
            let factory = EventFactory::new(&clock, &RandomIds, trace_id);
            events.push(factory.event(
                *event_type,
                Some(&intent.id),
                intent.tenant_id.as_deref(),
                payload.clone(),
                evidence,
            ));
        }
        let reported = notice
            .filter(|_| self.publisher.enabled())
            .map(|n| report_message(lease.key(), &pending.knobs.annotate(n)));
        if events.is_empty() && reported.is_none() {
            return;
        }
        pending.events.extend(events);
        pending.outbox.extend(reported);
        pending.decisions += 1;
    }

    /// Adds a report alone (validation starting) to the round's deferred commit.
    /// Whether an operator's freeze holds the key's merges now: the intent stays QUEUED and
    /// merges on a round after the freeze ends; its check run is told why, once per freeze and
    /// head in this process.
    async fn frozen(
        &self,
        intent: &Intent,
        lease: &Lease,
        validated: &SimulatedMerge,
        trace: &str,
        pending: &mut Pending,
    ) -> Result<Option<IntentReport>, WorkerError> {
        let now = self.clock.now();
        let freezes = self.store.freezes_of_key(lease.key()).await?;
        let Some(freeze) = converge_core::freeze::holding(&freezes, lease.key(), now) else {
            return Ok(None);
        };
        let detail = freeze.describe(now);
        if self.first_notice_of(&freeze.id, intent, &validated.head_sha) {
            let notice = publication::frozen(intent, &validated.head_sha, &detail, trace);
            self.enqueue_notice(intent, lease, notice, pending);
        }
        Ok(Some(IntentReport {
            intent_id: intent.id.clone(),
            outcome: RoundOutcome::Frozen,
            detail,
        }))
    }

    /// An intent its reviews hold: reported `held`, and its head's check run told why, once
    /// per reason and head in this process.
    fn held_by_reviews(
        &self,
        intent: &Intent,
        lease: &Lease,
        reason: String,
        pending: &mut Pending,
    ) -> IntentReport {
        if let Some(head) = intent.head_sha()
            && self.first_notice_of(&format!("held: {reason}"), intent, head)
        {
            let notice = publication::held(intent, head, &reason);
            self.enqueue_notice(intent, lease, notice, pending);
        }
        IntentReport {
            intent_id: intent.id.clone(),
            outcome: RoundOutcome::Held,
            detail: reason,
        }
    }

    /// Whether this process has not yet told `intent`'s head that `freeze` holds it (and
    /// remembers that it now has): a frozen key is looked at every round, and its check runs
    /// need the news once, not every few seconds. Another process tells them once more.
    fn first_notice_of(&self, freeze: &str, intent: &Intent, head_sha: &str) -> bool {
        const REMEMBERED: usize = 10_000;
        let Ok(mut told) = self.frozen_notices.lock() else {
            return true;
        };
        if told.len() >= REMEMBERED {
            told.clear();
        }
        told.insert((freeze.to_owned(), intent.id.clone(), head_sha.to_owned()))
    }

    fn enqueue_notice(
        &self,
        intent: &Intent,
        lease: &Lease,
        notice: publication::Report,
        pending: &mut Pending,
    ) {
        let no_step = Step {
            status: intent.status,
            retries: intent.retries,
            event: None,
            action: NextAction::None,
        };
        self.commit_step(
            intent,
            lease,
            Vec::new(),
            &no_step,
            "",
            Some(notice),
            pending,
        );
    }

    /// Sends the key's pending reports, oldest first, while holding its lease: reports of one
    /// key are only ever sent by one worker at a time, in order. When one cannot be sent, it
    /// and the rest are given back for the next round (none overtakes an older one).
    async fn send_reports(&self, lease: &Lease) -> Result<(), StoreError> {
        if !self.publisher.enabled() {
            return Ok(());
        }
        let topic = report_topic(lease.key());
        let pending = self
            .store
            .claim_outbox(&topic, &self.holder, 100, self.settings.lease_ttl)
            .await?;
        let mut failed = false;
        for entry in pending {
            if !failed {
                match serde_json::from_value::<publication::Report>(entry.payload.clone()) {
                    Ok(notice) => match self.store.intent(&notice.intent_id).await? {
                        Some(intent) => match self.publisher.publish(&intent, &notice).await {
                            Ok(()) => {
                                self.store.mark_outbox_sent(entry.seq).await?;
                                continue;
                            }
                            Err(e) => {
                                tracing::warn!(
                                    "report for {} not sent, will retry: {e}",
                                    notice.intent_id
                                );
                                failed = true;
                            }
                        },
                        None => {
                            self.store.mark_outbox_sent(entry.seq).await?;
                            continue;
                        }
                    },
                    Err(e) => {
                        tracing::warn!("dropping malformed report {}: {e}", entry.seq);
                        self.store.mark_outbox_sent(entry.seq).await?;
                        continue;
                    }
                }
            }
            self.store.release_outbox(entry.seq).await?;
        }
        Ok(())
    }
}

/// Decisions held back so a round commits them together (one transaction guarded by the
/// lease) instead of one by one; flushed before a merge, before reading the status of a
/// dependency, every [`FLUSH_EVERY`] decisions, and at the end of the round. Losing them in a
/// crash loses nothing but work: the next round decides again.
#[derive(Default)]
struct Pending {
    events: Vec<Event>,
    outbox: Vec<OutboxMessage>,
    decisions: usize,
    /// Where this round's merges left the key's target (the tips read for a page before
    /// them are corrected with it).
    target_now: Option<String>,
    /// Tested mode: the intents this round hands to the train instead of merging them.
    riding: Vec<trains::Riding>,
    /// The round's queue settings.
    knobs: Knobs,
    /// Tested mode: candidates whose checks CI was asked to run again this round.
    rerun_asked: BTreeSet<u64>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.events.is_empty() && self.outbox.is_empty()
    }

    /// Whether queued intents land through the tested queue this round.
    fn tested(&self) -> bool {
        self.knobs.mode == MergeMode::Tested
    }
}

/// A round's queue settings: the deployment's, with the repository's file
/// (`.github/converge.toml` on the target) over them.
#[derive(Debug, Clone, Default)]
struct Knobs {
    mode: MergeMode,
    method: MergeMethod,
    train: TrainSettings,
    /// Why the repository's file was refused (shown on the check runs of the round), if it was.
    config_problem: Option<String>,
}

impl Knobs {
    fn of(settings: &WorkerSettings) -> Knobs {
        Knobs {
            mode: settings.merge_mode,
            method: settings.merge_method,
            train: settings.train.clone(),
            config_problem: None,
        }
    }

    /// A report with the refused configuration said first, so the check run shows it.
    fn annotate(&self, mut report: publication::Report) -> publication::Report {
        if let Some(problem) = &self.config_problem {
            report.summary = format!("**Configuration refused:** {problem}\n\n{}", report.summary);
        }
        report
    }
}

/// What a round knows of one intent before handling it.
struct Turn {
    /// Whether the risk level is classified automatically (a flag, read once per round).
    auto_classify: bool,
    /// Its place in the queue.
    position: usize,
    /// Where its refs pointed when its page was read (corrected for the round's merges since),
    /// when the SCM reads a page's refs together; else they are read when it is handled.
    tips: Option<Result<Tips, ScmError>>,
    /// Its review tasks (read with its page).
    reviews: Vec<converge_core::review::ReviewTask>,
    /// Its pull request's reviews on the code host (read with its page).
    host_reviews: Vec<converge_core::approvals::HostReview>,
    /// Its latest decisions and evidence (read with its page: a check reported after the read
    /// is new to the next round, as its decision records).
    trail: converge_store::DecisionTrail,
}

/// Deferred decisions committed at once, at most.
const FLUSH_EVERY: usize = 32;

/// How metrics name a queue: `repo@target` (`-` for the local repository), never its tenant.
fn queue_label(key: &QueueKey) -> String {
    let repo = if key.repo.is_empty() { "-" } else { &key.repo };
    format!("{repo}@{}", key.target)
}

/// The outbox topic of a key's reports to the code host.
pub fn report_topic(key: &QueueKey) -> String {
    format!("{REPORT_TOPICS}{key}")
}

/// What every report topic starts with.
const REPORT_TOPICS: &str = "report:";

/// The keys whose reports wait in the outbox: a sending failed and no round of the key ran
/// since. A key with no actionable intent left is woken by nothing else, so sweeps wake these
/// too ([`keys_to_sweep`]). A report of an intent that has moved to another key since, or of
/// one that is gone, waits for its key's next round.
pub async fn keys_with_waiting_reports(store: &Store) -> Result<BTreeSet<QueueKey>, StoreError> {
    // At most this many keys a sweep (the rest are woken by later sweeps as these are sent).
    const MOST: u32 = 1_000;
    let mut keys = BTreeSet::new();
    for entry in store.first_unsent_per_topic(REPORT_TOPICS, MOST).await? {
        let Ok(report) = serde_json::from_value::<publication::Report>(entry.payload) else {
            continue;
        };
        let Some(intent) = store.intent(&report.intent_id).await? else {
            continue;
        };
        let key = QueueKey::for_intent(&intent);
        if report_topic(&key) == entry.topic {
            keys.insert(key);
        }
    }
    Ok(keys)
}

/// The keys a sweep wakes: those with actionable intents ([`actionable_keys`], the first set)
/// and, with them, those with reports waiting ([`keys_with_waiting_reports`]).
pub async fn keys_to_sweep(
    store: &Store,
) -> Result<(BTreeSet<QueueKey>, BTreeSet<QueueKey>), StoreError> {
    let actionable = actionable_keys(store).await?;
    let mut all = keys_with_waiting_reports(store).await?;
    all.extend(actionable.iter().cloned());
    Ok((actionable, all))
}

/// The outbox message carrying a report about an intent of `key`.
pub fn report_message(key: &QueueKey, report: &publication::Report) -> OutboxMessage {
    OutboxMessage {
        topic: report_topic(key),
        payload: serde_json::to_value(report).unwrap_or(Value::Null),
    }
}

fn reason_of(step: &Step) -> String {
    step.event
        .as_ref()
        .and_then(|(_, payload, _)| payload.get("reason").and_then(Value::as_str))
        .unwrap_or_default()
        .to_owned()
}

fn reason_of_decision(decision: &converge_core::pipeline::Decision) -> String {
    match &decision.outcome {
        converge_core::pipeline::Outcome::Blocked { reason, .. } => reason.clone(),
        converge_core::pipeline::Outcome::Validated => String::new(),
    }
}

/// Runs `processor` until `stop` turns true: a poll, then, while a round stopped at the batch
/// size, the next poll at once; otherwise a wait of the poll interval cut short by `wakeup`
/// (work just committed) or by the stop. A poll in progress is always
/// finished — its leases released — before the loop looks at `stop`, which is what a graceful
/// shutdown needs. Every decision is logged, one line each, by the round that made it.
pub async fn run_until_stopped<S: Scm + Merger + Sync, C: Checks + Sync, P: Publisher + Sync>(
    processor: &QueueProcessor<S, C, P>,
    wakeup: &tokio::sync::Notify,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let interval = processor.settings.poll_interval;
    while !*stop.borrow() {
        match processor.poll().await {
            Ok(outcomes) if processor.work_left(&outcomes) => continue,
            Ok(_) => {}
            Err(e) => tracing::warn!("poll failed: {e}"),
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = wakeup.notified() => {}
            _ = stop.changed() => {}
        }
    }
}
