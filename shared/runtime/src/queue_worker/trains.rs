//! Tested mode (`CONVERGE_MERGE_MODE=tested`): the round's queued intents ride the key's
//! tested queue (`core::train`), kept in the key's lease row between rounds.
//!
//! Intents reach QUEUED as in head mode (simulation, risk, policy; their heads' checks are not
//! required, the candidates' are). Where head mode would merge one, the round hands it to the
//! train instead. After the pages, the train is loaded (or started on the target's tip), told
//! where the target is now (a push rebuilds the main line), synced with what the round saw
//! (an intent that left QUEUED or was pushed leaves its candidate), and driven: candidates are
//! built under trial refs, their checks read through the `Checks` port on the candidate's
//! commit, failures bisected, passed candidates landed by fast-forward to exactly the tested
//! commit (under a merge permit, unless a freeze holds the key), ejected intents rejected with
//! the check or the files. Losing the stored train is safe: the next round starts a new one
//! from the queued intents, and the target never moves to an untested commit.

use std::collections::{BTreeMap, BTreeSet};

use converge_core::pipeline::{CheckState, Checks, MergeError, Merger, Scm};
use converge_core::publication::Publisher;
use converge_core::queue::{self, RoundOutcome};
use converge_core::train::{Action, Build, CheckResult, Queued, Train, UnderTest};
use converge_core::{Intent, PolicyConfig, Status};
use converge_store::{KeyDocument, Lease, StoreError};

use super::{IntentReport, Pending, QueueProcessor, WorkerError, queue_label};

/// Rounds of actions and check reads one round drives at most (checks run as commands
/// finish within the round, so a train can go through several generations).
const MAX_STEPS: usize = 64;

/// An intent handed to the train by this round, with the head it was validated on.
pub(super) struct Riding {
    pub(super) intent: Intent,
    pub(super) head_sha: String,
}

impl<S: Scm + Merger + Sync, C: Checks + Sync, P: Publisher + Sync> QueueProcessor<S, C, P> {
    /// Drives the key's tested queue after the round's pages. `seen` holds every intent the
    /// round handled: one of them in the train but not riding now has left the queue.
    pub(super) async fn run_train(
        &self,
        lease: &Lease,
        policy: &PolicyConfig,
        seen: &BTreeSet<String>,
        pending: &mut Pending,
    ) -> Result<Vec<IntentReport>, WorkerError> {
        let riding = std::mem::take(&mut pending.riding);
        // The round's validations first: their simulations tell which files each intent
        // changes (conflict prediction reads them from the store).
        self.flush(lease, pending).await?;
        let stored = self
            .store
            .key_document(lease.key(), KeyDocument::Train)
            .await?;
        let stored: Option<Train> = stored.and_then(|text| match serde_json::from_str(&text) {
            Ok(train) => Some(train),
            Err(e) => {
                tracing::warn!(key = %lease.key(), "the stored tested queue does not read, starting a new one: {e}");
                None
            }
        });
        if stored.as_ref().is_none_or(Train::is_idle) && riding.is_empty() {
            return Ok(Vec::new());
        }
        // Every intent the train or this round knows, by id (the train stores ids only).
        let mut intents: BTreeMap<String, Intent> = riding
            .iter()
            .map(|r| (r.intent.id.clone(), r.intent.clone()))
            .collect();
        if let Some(train) = &stored {
            for (id, _) in train.intents() {
                if !intents.contains_key(&id)
                    && let Some(intent) = self.store.intent(&id).await?
                {
                    intents.insert(id, intent);
                }
            }
        }
        let Some(sample) = intents.values().next().cloned() else {
            return Ok(Vec::new());
        };
        let tip = match self.scm.target_tip(&sample).await {
            Ok(tip) => tip,
            Err(e) => {
                return Ok(vec![self.environment_failed(
                    &sample,
                    lease,
                    &e.to_string(),
                    pending,
                )]);
            }
        };
        let mut train = match stored {
            Some(mut train) => {
                train.resume();
                train
            }
            None => Train::new(pending.knobs.train.clone(), tip.clone()),
        };
        train.reconfigure(pending.knobs.train.clone());
        train.target_moved(&tip);

        // What the round saw: a held intent no longer riding left the queue (or was pushed).
        let now_riding: BTreeMap<&str, &str> = riding
            .iter()
            .map(|r| (r.intent.id.as_str(), r.head_sha.as_str()))
            .collect();
        for (id, head) in train.intents() {
            let stays = match now_riding.get(id.as_str()) {
                // Riding on the same head: it keeps its place.
                Some(riding_head) => *riding_head == head,
                // Handled this round and not riding: it left the queue.
                None if seen.contains(&id) => false,
                // Not reached this round: it stays while it is queued.
                None => intents.get(&id).is_some_and(|i| i.status == Status::Queued),
            };
            if !stays {
                // A new head is queued again below, at its place.
                train.dequeue(&id);
            }
        }
        let held: Vec<(String, String)> = train.intents();
        let newcomers: Vec<&Riding> = riding
            .iter()
            .filter(|r| !held.iter().any(|(id, _)| *id == r.intent.id))
            .collect();
        let mut arriving = Vec::new();
        let mut predicted = self.predicted_conflicts(&sample, &held, &newcomers).await?;
        for r in &newcomers {
            arriving.push(Queued {
                id: r.intent.id.clone(),
                head: r.head_sha.clone(),
                priority: r.intent.priority,
                arrival: u64::try_from(r.intent.created_at.timestamp_millis()).unwrap_or(0),
                conflicts_with: predicted.remove(&r.intent.id).unwrap_or_default(),
            });
        }
        train.enqueue_all(arriving);

        let mut reports = Vec::new();
        let mut lease = lease.clone();
        let mut stop = None;
        for _ in 0..MAX_STEPS {
            let actions = train.take_actions();
            let acted = !actions.is_empty();
            for action in actions {
                if stop.is_some() {
                    self.set_aside(
                        &mut train,
                        action,
                        &intents,
                        &sample,
                        &lease,
                        &mut reports,
                        pending,
                    )
                    .await;
                    continue;
                }
                stop = self
                    .carry_out(
                        &mut train,
                        action,
                        &intents,
                        &sample,
                        &mut lease,
                        &mut reports,
                        pending,
                    )
                    .await?;
            }
            if stop.is_some() {
                break;
            }
            let learned = self
                .read_checks(
                    &mut train,
                    &mut intents,
                    policy,
                    &pending.knobs.train.known_flaky,
                    &pending.rerun_asked,
                )
                .await?;
            if !acted && !learned {
                break;
            }
        }
        // What is left when the round stops (the environment failed, or enough steps).
        for action in train.take_actions() {
            self.set_aside(
                &mut train,
                action,
                &intents,
                &sample,
                &lease,
                &mut reports,
                pending,
            )
            .await;
        }
        reports.extend(stop);
        self.save(&lease, &train, pending, reports).await
    }

    /// The intents each newcomer would conflict with if tested together: pairs whose latest
    /// simulations changed a common file, merged with `merge-tree` (only those pairs, so most
    /// arrivals cost no git process). Kept apart by the train, so a failing intent does not
    /// take down the one that conflicts with it.
    async fn predicted_conflicts(
        &self,
        sample: &Intent,
        held: &[(String, String)],
        newcomers: &[&Riding],
    ) -> Result<BTreeMap<String, BTreeSet<String>>, WorkerError> {
        let mut predicted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        if newcomers.is_empty() || (held.is_empty() && newcomers.len() < 2) {
            return Ok(predicted);
        }
        let mut heads: Vec<(String, String)> = held.to_vec();
        heads.extend(
            newcomers
                .iter()
                .map(|r| (r.intent.id.clone(), r.head_sha.clone())),
        );
        let ids: Vec<String> = heads.iter().map(|(id, _)| id.clone()).collect();
        let mut files: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        // One query, one event per intent: each one's latest simulation.
        for stored in self
            .store
            .latest_events(converge_core::EventType::SimulationCompleted, &ids)
            .await?
        {
            let Some(id) = stored.event.intent_id.clone() else {
                continue;
            };
            let changed = stored.event.payload["files_changed"]
                .as_array()
                .map(|list| {
                    list.iter()
                        .filter_map(|f| f.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            files.insert(id, changed);
        }
        let empty = BTreeSet::new();
        for (n, newcomer) in newcomers.iter().enumerate() {
            let mine = files.get(&newcomer.intent.id).unwrap_or(&empty);
            // Those held, and the newcomers before it.
            for (other, other_head) in heads.iter().take(held.len() + n) {
                let theirs = files.get(other).unwrap_or(&empty);
                if mine.is_disjoint(theirs) {
                    continue;
                }
                match self
                    .scm
                    .conflicts_between(sample, &newcomer.head_sha, other_head)
                    .await
                {
                    Ok(conflicts) if !conflicts.is_empty() => {
                        predicted
                            .entry(newcomer.intent.id.clone())
                            .or_default()
                            .insert(other.clone());
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(intent = %newcomer.intent.id, "no conflict prediction with {other}: {e}")
                    }
                }
            }
        }
        Ok(predicted)
    }

    /// Commits the round's decisions, then the train (a crash between them loses only work:
    /// a merge recorded without its train is found landed by the next round).
    async fn save(
        &self,
        lease: &Lease,
        train: &Train,
        pending: &mut Pending,
        reports: Vec<IntentReport>,
    ) -> Result<Vec<IntentReport>, WorkerError> {
        self.flush(lease, pending).await?;
        let state = serde_json::to_string(train)
            .map_err(|e| StoreError::Config(format!("the tested queue does not write: {e}")))?;
        self.store
            .save_key_document(lease, KeyDocument::Train, Some(&state))
            .await?;
        Ok(reports)
    }

    /// An action the round will not carry out: a build or a fast-forward is asked for again
    /// by the next round (the train is told so); an ejection or a retirement is still done,
    /// so no intent is left out of the train and still queued.
    #[allow(clippy::too_many_arguments)]
    async fn set_aside(
        &self,
        train: &mut Train,
        action: Action,
        intents: &BTreeMap<String, Intent>,
        sample: &Intent,
        lease: &Lease,
        reports: &mut Vec<IntentReport>,
        pending: &mut Pending,
    ) {
        match action {
            Action::Build { candidate, .. } => train.build_failed(candidate),
            Action::FastForward { .. } => train.defer_landing(),
            Action::Test { .. } => {}
            action @ (Action::Retire { .. } | Action::Eject { .. }) => {
                let mut lease = lease.clone();
                if let Err(e) = self
                    .carry_out(train, action, intents, sample, &mut lease, reports, pending)
                    .await
                {
                    tracing::warn!(key = %lease.key(), "an action set aside failed: {e}");
                }
            }
        }
    }

    /// Carries out one action of the train. Answers a report that ends the round (the
    /// environment failed), if any.
    #[allow(clippy::too_many_arguments)]
    async fn carry_out(
        &self,
        train: &mut Train,
        action: Action,
        intents: &BTreeMap<String, Intent>,
        sample: &Intent,
        lease: &mut Lease,
        reports: &mut Vec<IntentReport>,
        pending: &mut Pending,
    ) -> Result<Option<IntentReport>, WorkerError> {
        let key = lease.key().clone();
        let trial_ref = |candidate: u64| {
            let tenant = if key.tenant.is_empty() {
                "-"
            } else {
                &key.tenant
            };
            format!(
                "refs/heads/converge/trial/{tenant}/{}/{candidate}",
                key.target
            )
        };
        match action {
            Action::Build {
                candidate,
                base,
                intents: batch,
            } => {
                let built = self
                    .scm
                    .build_candidate(
                        sample,
                        &base,
                        &batch,
                        pending.knobs.method,
                        &trial_ref(candidate),
                    )
                    .await;
                match built {
                    Ok(build) => {
                        if let Build::Built(commit) = &build {
                            tracing::info!(key = %key, candidate, commit = %commit, intents = batch.len(), "candidate built");
                        }
                        train.built(candidate, build);
                    }
                    Err(e) => {
                        train.build_failed(candidate);
                        return Ok(Some(self.environment_failed(
                            sample,
                            lease,
                            &e.to_string(),
                            pending,
                        )));
                    }
                }
            }
            // CI picks the trial ref up; its results are read with the checks port. A re-run
            // is asked of CI, and then read from a later round.
            Action::Test {
                candidate,
                commit,
                again: true,
            } => match self.checks.rerun(sample, &commit).await {
                Ok(true) => {
                    pending.rerun_asked.insert(candidate);
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(key = %key, candidate, "no re-run of {commit}: {e}"),
            },
            Action::Test { .. } => {}
            Action::Retire { candidate } => {
                if let Err(e) = self.scm.drop_trial(sample, &trial_ref(candidate)).await {
                    tracing::warn!(key = %key, candidate, "a cancelled candidate's trial ref stays: {e}");
                }
            }
            Action::FastForward {
                from,
                to,
                intents: landing,
            } => {
                let now = self.clock.now();
                let just_committed = !pending.is_empty();
                self.flush(lease, pending).await?;
                let (renewed, permit) = self
                    .store
                    .merge_permit(lease, self.settings.lease_ttl, just_committed, now)
                    .await?;
                *lease = renewed;
                // As in head mode: the freezes are read once the permit is in hand, so one
                // answered while it was taken holds too.
                let freezes = self.store.freezes_of_key(&key).await?;
                if let Some(freeze) = converge_core::freeze::holding(&freezes, &key, now) {
                    tracing::info!(key = %key, "a freeze holds the tested {to}: {}", freeze.describe(now));
                    train.defer_landing();
                    return Ok(None);
                }
                match self.scm.fast_forward(sample, &from, &to, &permit).await {
                    Ok(()) => {
                        pending.target_now = Some(to.clone());
                        for id in &landing {
                            let Some(intent) = intents.get(id) else {
                                continue;
                            };
                            crate::telemetry::QueueMetrics::get()
                                .merged(&queue_label(&key), self.clock.now() - intent.created_at);
                            let step = queue::after_merge(intent, &to);
                            self.commit_step(intent, lease, Vec::new(), &step, "", None, pending);
                            reports.push(IntentReport {
                                intent_id: id.clone(),
                                outcome: RoundOutcome::Merged,
                                detail: format!("landed in the tested {to}"),
                            });
                        }
                        train.landed(&to);
                        // Recorded at once: a squashed or rebased head is no ancestor of the
                        // target, so a crash that lost these records could not find them
                        // landed and would test them again.
                        self.flush(lease, pending).await?;
                    }
                    Err(MergeError::TargetMoved { current, .. }) => train.target_moved(&current),
                    // Anything else (protected, refused, unreachable) will not pass by testing
                    // again: the key pauses with the reason and the tested commit waits.
                    Err(e) => {
                        train.defer_landing();
                        let reason = format!("the fast-forward to the tested {to} failed: {e}");
                        return Ok(Some(
                            self.environment_failed(sample, lease, &reason, pending),
                        ));
                    }
                }
            }
            Action::Eject { intent: id, reason } => {
                if let Some(intent) = intents.get(&id) {
                    let step = queue::after_ejection(intent, &reason);
                    let detail = super::reason_of(&step);
                    self.commit_step(intent, lease, Vec::new(), &step, "", None, pending);
                    reports.push(IntentReport {
                        intent_id: id,
                        outcome: RoundOutcome::Rejected,
                        detail,
                    });
                }
            }
        }
        Ok(None)
    }

    /// Reads the checks of every candidate under test and tells the train what finished.
    /// Answers whether anything did.
    async fn read_checks(
        &self,
        train: &mut Train,
        intents: &mut BTreeMap<String, Intent>,
        policy: &PolicyConfig,
        known_flaky: &BTreeSet<String>,
        rerun_asked: &BTreeSet<u64>,
    ) -> Result<bool, WorkerError> {
        let mut learned = false;
        for UnderTest {
            candidate,
            commit,
            intents: held,
        } in train.under_test()
        {
            if rerun_asked.contains(&candidate) {
                // Its old result would answer: the re-run is read from a later round.
                continue;
            }
            // A re-run's commit also holds intents that landed since: read once a round.
            for id in &held {
                if !intents.contains_key(id)
                    && let Some(intent) = self.store.intent(id).await?
                {
                    intents.insert(id.clone(), intent);
                }
            }
            let held: Vec<&Intent> = held.iter().filter_map(|id| intents.get(id)).collect();
            let mut required: Vec<String> = held
                .iter()
                .flat_map(|i| {
                    policy
                        .profile_for(i.risk_level, Some(i.origin_type.as_str()))
                        .checks
                })
                .collect();
            // A known-flaky check is reported but never blocks: it is not waited for either.
            required.retain(|name| !known_flaky.contains(name));
            required.sort();
            required.dedup();
            let results = if self.settings.skip_checks || required.is_empty() {
                Some(Vec::new())
            } else {
                self.candidate_results(&held, &commit, &required).await
            };
            if let Some(results) = results {
                train.checks_finished(candidate, &commit, &results);
                learned = true;
            }
        }
        Ok(learned)
    }

    /// The required checks' results on a candidate's commit, once every one finished or one
    /// failed; `None` while they run. Where the checks answer per commit (the code host's,
    /// commands), the first intent asks for all: on GitHub, two calls a candidate a round
    /// instead of two for each intent it holds. Results CI reported to Converge may be on any
    /// intent of the candidate, so each is asked.
    async fn candidate_results(
        &self,
        held: &[&Intent],
        commit: &str,
        required: &[String],
    ) -> Option<Vec<CheckResult>> {
        let askers = match held.first() {
            Some(first) if self.checks.answers_per_commit(first) => &held[..1],
            _ => held,
        };
        let mut passed: BTreeSet<&str> = BTreeSet::new();
        for intent in askers {
            let outcomes = match self.checks.outcomes(intent, commit, required).await {
                Ok(outcomes) => outcomes,
                Err(e) => {
                    tracing::warn!(intent = %intent.id, "the checks of candidate {commit} do not read: {e}");
                    return None;
                }
            };
            if let Some(failed) = outcomes.iter().find(|o| o.state == CheckState::Failed) {
                return Some(vec![CheckResult {
                    name: failed.name.clone(),
                    passed: false,
                }]);
            }
            for outcome in &outcomes {
                if outcome.state == CheckState::Passed
                    && let Some(name) = required.iter().find(|r| **r == outcome.name)
                {
                    passed.insert(name.as_str());
                }
            }
            if passed.len() == required.len() {
                return Some(
                    required
                        .iter()
                        .map(|name| CheckResult {
                            name: name.clone(),
                            passed: true,
                        })
                        .collect(),
                );
            }
        }
        None
    }
}
