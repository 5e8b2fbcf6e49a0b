//! The SQS side of the queue: the worker's batch handler, the relay that moves queue messages
//! from the outbox to SQS, the scheduled sweep, and the polling loop `converge worker` runs
//! when `CONVERGE_QUEUE_URL` is set.
//!
//! A message body names a queue key (`{"tenant", "repo", "target"}`). The handler groups a
//! batch by key and runs one round per key; a key whose round failed has its messages reported
//! as batch item failures, so SQS delivers them again after the visibility timeout. A body that
//! is not a key is logged with its message id and reported as a failure too, so the queue's
//! redrive policy moves it to the DLQ after `maxReceiveCount` receives; the rest of the batch
//! is unaffected. A key whose lease is held elsewhere is not a failure: it is sent again with a
//! delay ([`SqsQueue::requeue_busy`]) and its messages count as handled once SQS accepted that
//! message; only if the send fails are they reported as failures. A round that stopped at the
//! batch size with work left sends its key again, so a long queue keeps moving without waiting
//! for the sweep.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use aws_sdk_sqs::error::DisplayErrorContext;
use converge_core::pipeline::{Checks, Merger, Scm};
use converge_core::publication::Publisher;
use converge_core::queue::QueueKey;
use converge_store::Store;

use crate::queue_worker::{KeyOutcome, QUEUE_TOPIC, QueueProcessor, queue_message};

/// Why the relay, the sweep or a receive stopped.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] converge_store::StoreError),
    /// SQS refused or could not be reached.
    #[error("SQS: {0}")]
    Sqs(String),
}

fn sqs_error<E: std::error::Error + 'static, R: std::fmt::Debug>(
    e: aws_sdk_sqs::error::SdkError<E, R>,
) -> RelayError {
    RelayError::Sqs(DisplayErrorContext(e).to_string())
}

/// The SQS queue of queue keys (`CONVERGE_QUEUE_URL`), reached through the AWS SDK.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    url: String,
}

impl SqsQueue {
    /// The queue at `url` through `client`.
    pub fn new(client: aws_sdk_sqs::Client, url: impl Into<String>) -> SqsQueue {
        SqsQueue {
            client,
            url: url.into(),
        }
    }

    /// The queue of `settings` and its dead-letter queue (sharing one client), with the
    /// SDK's configuration from the environment (`AWS_ENDPOINT_URL` points it at an emulator);
    /// `None` when no queue is configured.
    pub async fn from_settings(
        settings: &crate::config::QueueSettings,
    ) -> Option<(SqsQueue, Option<SqsQueue>)> {
        let url = settings.queue_url.clone()?;
        let queue = SqsQueue::new(
            aws_sdk_sqs::Client::new(crate::aws::sdk_config().await),
            url,
        );
        let dlq = settings
            .dlq_url
            .clone()
            .map(|url| SqsQueue::new(queue.client.clone(), url));
        Some((queue, dlq))
    }

    /// Like [`SqsQueue::from_settings`], with the settings read from the environment (for the
    /// CLI's commands that need only the queues).
    pub async fn from_env() -> Option<(SqsQueue, Option<SqsQueue>)> {
        let env = |name: &str| std::env::var(name).ok();
        SqsQueue::from_settings(&crate::config::QueueSettings::from_lookup(&env)).await
    }

    /// The queue's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Moves every message of this queue (a DLQ) to `target`, ten at a time: each is sent
    /// there before it is deleted here, so a failure in between duplicates a message (rounds
    /// are idempotent) rather than losing one. Returns how many moved.
    pub async fn move_all_to(&self, target: &SqsQueue) -> Result<usize, RelayError> {
        let mut moved = 0;
        loop {
            let batch = self.receive(10, Duration::from_secs(1)).await?;
            if batch.records.is_empty() {
                return Ok(moved);
            }
            let messages: Vec<(String, String)> = batch
                .records
                .iter()
                .enumerate()
                .map(|(n, m)| (format!("m{n}"), m.body.clone().unwrap_or_default()))
                .collect();
            let accepted = target.send(&messages, None).await?;
            let mut settled = SqsBatchResponse::default();
            for (n, message) in batch.records.iter().enumerate() {
                if !accepted.contains(&format!("m{n}")) {
                    let mut failure = BatchItemFailure::default();
                    failure.item_identifier = message.message_id.clone().unwrap_or_default();
                    settled.batch_item_failures.push(failure);
                }
            }
            // Deletes what was sent; what was not stays in the DLQ, visible again at once.
            self.settle(&batch, &settled, Duration::ZERO).await?;
            moved += accepted.len();
            if accepted.is_empty() {
                return Err(RelayError::Sqs(
                    "the queue accepted none of the dead letters".to_owned(),
                ));
            }
        }
    }

    /// How many messages wait in the queue (SQS's approximate count).
    pub async fn depth(&self) -> Result<u64, RelayError> {
        use aws_sdk_sqs::types::QueueAttributeName;
        let answer = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .map_err(sqs_error)?;
        Ok(answer
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessages))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0))
    }

    /// Sends the outbox's unsent queue messages (in batches of ten) and marks each one sent
    /// once SQS accepted it. A message SQS did not take stays unsent and goes with the next
    /// relay. Returns how many were sent.
    pub async fn relay(&self, store: &Store, claimer: &str) -> Result<usize, RelayError> {
        let claimed = store
            .claim_outbox(QUEUE_TOPIC, claimer, 100, Duration::from_secs(60))
            .await?;
        let messages: Vec<(String, String)> = claimed
            .iter()
            .map(|entry| (entry.seq.to_string(), entry.payload.to_string()))
            .collect();
        let mut sent = 0;
        for id in self.send(&messages, None).await? {
            if let Ok(seq) = id.parse::<i64>() {
                store.mark_outbox_sent(seq).await?;
                sent += 1;
            }
        }
        Ok(sent)
    }

    /// Sends one message per key.
    pub async fn send_keys(&self, keys: &BTreeSet<QueueKey>) -> Result<usize, RelayError> {
        let messages: Vec<(String, String)> = keys
            .iter()
            .enumerate()
            .map(|(n, key)| (format!("k{n}"), queue_message(key).payload.to_string()))
            .collect();
        Ok(self.send(&messages, None).await?.len())
    }

    /// Sends the busy keys of `outcome` again, visible after `delay` (at most SQS's 15
    /// minutes), and each paused key once its backoff ends. The messages of a key whose
    /// successor SQS accepted count as handled; the others become batch item failures and
    /// come back as before.
    pub async fn requeue_busy(&self, outcome: &mut BatchOutcome, delay: Duration) {
        let busy = std::mem::take(&mut outcome.busy);
        self.send_again(outcome, busy, delay).await;
        let now = chrono::Utc::now();
        for (key, (ids, until)) in std::mem::take(&mut outcome.paused) {
            let wait = (until - now).to_std().unwrap_or_default();
            self.send_again(
                outcome,
                BTreeMap::from([(key, ids)]),
                wait.max(Duration::from_secs(1)),
            )
            .await;
        }
    }

    async fn send_again(
        &self,
        outcome: &mut BatchOutcome,
        busy: BTreeMap<QueueKey, Vec<String>>,
        delay: Duration,
    ) {
        if busy.is_empty() {
            return;
        }
        let messages: Vec<(String, String)> = busy
            .keys()
            .enumerate()
            .map(|(n, key)| (format!("k{n}"), queue_message(key).payload.to_string()))
            .collect();
        let delay = delay.min(Duration::from_secs(900));
        let accepted = match self.send(&messages, Some(delay)).await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("cannot send busy keys again, their messages will come back: {e}");
                Vec::new()
            }
        };
        for ((id, _), ids) in messages.iter().zip(busy.into_values()) {
            if !accepted.contains(id) {
                for item_identifier in ids {
                    let mut failure = BatchItemFailure::default();
                    failure.item_identifier = item_identifier;
                    outcome.response.batch_item_failures.push(failure);
                }
            }
        }
    }

    /// Sends `(id, body)` messages in batches of ten; returns the ids SQS accepted (the
    /// others are logged and left to the caller's next attempt).
    async fn send(
        &self,
        messages: &[(String, String)],
        delay: Option<Duration>,
    ) -> Result<Vec<String>, RelayError> {
        let delay_seconds = delay.map(|d| i32::try_from(d.as_secs()).unwrap_or(900));
        let mut accepted = Vec::with_capacity(messages.len());
        for chunk in messages.chunks(10) {
            let mut batch = self.client.send_message_batch().queue_url(&self.url);
            for (id, body) in chunk {
                let message = aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(id)
                    .message_body(body)
                    .set_delay_seconds(delay_seconds)
                    .build()
                    .map_err(|e| RelayError::Sqs(e.to_string()))?;
                batch = batch.entries(message);
            }
            let answer = batch.send().await.map_err(sqs_error)?;
            accepted.extend(answer.successful().iter().map(|ok| ok.id().to_owned()));
            for failed in answer.failed() {
                tracing::warn!(
                    "relay: message {} not accepted by SQS: {}",
                    failed.id(),
                    failed.message().unwrap_or("no reason")
                );
            }
        }
        Ok(accepted)
    }

    /// The scheduled sweep: relays unsent outbox messages, sends a message for every key that
    /// has actionable intents or reports waiting (nothing may wait for an event that was lost:
    /// `queue_worker::keys_to_sweep`), and clears leases whose holder let them expire (their
    /// tokens stay, so a late holder is still fenced).
    pub async fn sweep(&self, store: &Store, claimer: &str) -> Result<SweepReport, RelayError> {
        let relayed = self.relay(store, claimer).await?;
        let (actionable, keys) = crate::queue_worker::keys_to_sweep(store).await?;
        crate::queue_worker::release_idle_holds(store, &actionable).await?;
        self.send_keys(&keys).await?;
        let reclaimed = usize::try_from(store.clear_expired_leases().await?).unwrap_or(usize::MAX);
        Ok(SweepReport {
            relayed,
            enqueued: keys.len(),
            reclaimed,
        })
    }

    /// Receives up to `max` messages (1–10), waiting up to `wait` (at most 20 s) for the
    /// first, as the event source mapping would hand them to the function.
    pub async fn receive(&self, max: i32, wait: Duration) -> Result<SqsEvent, RelayError> {
        let answer = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, 10))
            .wait_time_seconds(i32::try_from(wait.as_secs().min(20)).unwrap_or(20))
            .send()
            .await
            .map_err(sqs_error)?;
        let mut event = SqsEvent::default();
        for received in answer.messages() {
            let mut message = SqsMessage::default();
            message.message_id = received.message_id().map(str::to_owned);
            message.receipt_handle = received.receipt_handle().map(str::to_owned);
            message.body = received.body().map(str::to_owned);
            message.event_source = Some("aws:sqs".to_owned());
            event.records.push(message);
        }
        Ok(event)
    }

    /// What the event source mapping does with the function's answer: deletes the messages
    /// that were handled, and makes the failed ones visible again after `retry_after` (a failed
    /// round comes back soon instead of after the full visibility timeout; each receive still
    /// counts towards the redrive policy).
    pub async fn settle(
        &self,
        event: &SqsEvent,
        response: &SqsBatchResponse,
        retry_after: Duration,
    ) -> Result<(), RelayError> {
        let failed: BTreeSet<&str> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        let (mut done, mut retry) = (
            self.client.delete_message_batch().queue_url(&self.url),
            self.client
                .change_message_visibility_batch()
                .queue_url(&self.url),
        );
        let (mut any_done, mut any_retry) = (false, false);
        for (n, message) in event.records.iter().enumerate() {
            let (Some(id), Some(handle)) = (&message.message_id, &message.receipt_handle) else {
                continue;
            };
            if failed.contains(id.as_str()) {
                let entry = aws_sdk_sqs::types::ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(format!("m{n}"))
                    .receipt_handle(handle)
                    .visibility_timeout(i32::try_from(retry_after.as_secs()).unwrap_or(i32::MAX))
                    .build()
                    .map_err(|e| RelayError::Sqs(e.to_string()))?;
                retry = retry.entries(entry);
                any_retry = true;
            } else {
                let entry = aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                    .id(format!("m{n}"))
                    .receipt_handle(handle)
                    .build()
                    .map_err(|e| RelayError::Sqs(e.to_string()))?;
                done = done.entries(entry);
                any_done = true;
            }
        }
        if any_done {
            done.send().await.map_err(sqs_error)?;
        }
        if any_retry {
            retry.send().await.map_err(sqs_error)?;
        }
        Ok(())
    }
}

/// What one batch did: the answer for SQS, and the keys whose round stopped at the batch size
/// with work left.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    /// Partial batch failures (`ReportBatchItemFailures`).
    pub response: SqsBatchResponse,
    /// Keys to send again.
    pub unfinished: BTreeSet<QueueKey>,
    /// Keys whose lease another worker held, with their messages' ids. They are sent again
    /// after a delay and their messages count as handled ([`SqsQueue::requeue_busy`]): waiting
    /// for a lease must not use up the redrive policy's receives and dead-letter live work.
    pub busy: BTreeMap<QueueKey, Vec<String>>,
    /// Keys paused because their environment failed, with their messages' ids and the end
    /// of their backoff: sent again to be visible then (at most 15 minutes on), their
    /// messages handled like a busy key's.
    pub paused: BTreeMap<QueueKey, (Vec<String>, chrono::DateTime<chrono::Utc>)>,
}

/// Handles one SQS batch: one round per key in it.
pub async fn handle_batch<S, C, P>(
    processor: &QueueProcessor<S, C, P>,
    event: SqsEvent,
) -> BatchOutcome
where
    S: Scm + Merger + Sync,
    C: Checks + Sync,
    P: Publisher + Sync,
{
    let mut failures: Vec<String> = Vec::new();
    let mut by_key: BTreeMap<QueueKey, Vec<String>> = BTreeMap::new();
    let mut traces: BTreeMap<QueueKey, String> = BTreeMap::new();
    let mut unfinished = BTreeSet::new();
    let mut busy = BTreeMap::new();
    let mut paused = BTreeMap::new();
    for record in event.records {
        let id = record.message_id.clone().unwrap_or_default();
        match record.body.as_deref().map(serde_json::from_str::<QueueKey>) {
            Some(Ok(key)) => {
                // The first message's sender's trace is the one the round continues.
                let traceparent = record
                    .body
                    .as_deref()
                    .and_then(|b| serde_json::from_str::<serde_json::Value>(b).ok())
                    .and_then(|b| b["traceparent"].as_str().map(str::to_owned));
                if let Some(traceparent) = traceparent {
                    traces.entry(key.clone()).or_insert(traceparent);
                }
                by_key.entry(key).or_default().push(id);
            }
            Some(Err(e)) => {
                tracing::warn!("message {id} is not a queue key ({e}); left to the redrive policy");
                failures.push(id);
            }
            None => {
                tracing::warn!("message {id} has no body; left to the redrive policy");
                failures.push(id);
            }
        }
    }
    let mut mine = Vec::new();
    for (key, ids) in by_key {
        if !processor.settings().takes(&key) {
            // Not this worker's target (CONVERGE_WORKER_TARGET): acknowledged, not retried
            // into the DLQ; the sweep sends the key again while it has work.
            tracing::info!(
                key = %key,
                "not this worker's target ({}): message acknowledged",
                processor.settings().target.as_deref().unwrap_or_default()
            );
            continue;
        }
        mine.push((key, ids));
    }
    // Keys are independent: up to `CONVERGE_WORKER_CONCURRENCY` of them at once.
    let rounds = futures_util::stream::iter(mine)
        .map(|(key, ids)| {
            use tracing::Instrument;
            let span = tracing::info_span!(
                "sqs.messages",
                key = %key,
                message_ids = ?ids,
                trace_id = tracing::field::Empty,
                span_id = tracing::field::Empty,
            );
            if let Some(traceparent) = traces.get(&key) {
                crate::telemetry::continue_trace(&span, traceparent);
            }
            crate::telemetry::record_ids(&span);
            async move {
                let outcome = processor.process_key(&key).instrument(span).await;
                (key, ids, outcome)
            }
        })
        .buffer_unordered(processor.settings().concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
    for (key, ids, outcome) in rounds {
        match outcome {
            Ok(KeyOutcome::Processed(reports)) => {
                if processor.filled_batch(&reports) {
                    unfinished.insert(key);
                }
            }
            Ok(KeyOutcome::Busy) => {
                busy.insert(key, ids);
            }
            Ok(KeyOutcome::Paused { until, .. }) => {
                paused.insert(key, (ids, until));
            }
            Err(e) => {
                tracing::warn!("round over {key} failed, messages will come back: {e}");
                failures.extend(ids);
            }
        }
    }
    let mut response = SqsBatchResponse::default();
    for id in failures {
        let mut failure = BatchItemFailure::default();
        failure.item_identifier = id;
        response.batch_item_failures.push(failure);
    }
    BatchOutcome {
        response,
        unfinished,
        busy,
        paused,
    }
}

/// What one sweep did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SweepReport {
    /// Outbox messages relayed.
    pub relayed: usize,
    /// Keys with actionable intents sent to the queue.
    pub enqueued: usize,
    /// Expired leases cleared.
    pub reclaimed: usize,
}

/// The worker function's event, by shape: an SQS batch (`Records`) or the sweep's schedule
/// (an EventBridge event, or `{"sweep": true}` from the local timer).
pub async fn handle_event<S, C, P>(
    processor: &QueueProcessor<S, C, P>,
    store: &Store,
    queue: &SqsQueue,
    event: serde_json::Value,
) -> Result<serde_json::Value, RelayError>
where
    S: Scm + Merger + Sync,
    C: Checks + Sync,
    P: Publisher + Sync,
{
    if event.get("Records").is_some() {
        let batch: SqsEvent = serde_json::from_value(event)
            .map_err(|e| RelayError::Sqs(format!("not an SQS batch: {e}")))?;
        let mut outcome = handle_batch(processor, batch).await;
        let delay = processor
            .settings()
            .poll_interval
            .max(Duration::from_secs(1));
        queue.requeue_busy(&mut outcome, delay).await;
        if let Err(e) = queue.send_keys(&outcome.unfinished).await {
            // The sweep sends them later.
            tracing::warn!("cannot send the unfinished keys again: {e}");
        }
        return serde_json::to_value(outcome.response).map_err(|e| RelayError::Sqs(e.to_string()));
    }
    let report = queue.sweep(store, processor.holder()).await?;
    Ok(
        serde_json::json!({"relayed": report.relayed, "enqueued": report.enqueued, "reclaimed": report.reclaimed}),
    )
}

/// `converge worker` on SQS: receives batches of up to `CONVERGE_WORKER_BATCH_SIZE` (at most
/// ten) messages, waiting up to `CONVERGE_WORKER_POLL_INTERVAL` seconds (at most 20) for them,
/// handles each like the worker function and settles it like the event source mapping; and
/// sweeps every `CONVERGE_WORKER_SWEEP_INTERVAL`. When `stop` turns true, a batch in hand is
/// finished and settled (its leases released) before the loop ends; a receive still waiting
/// is abandoned (whatever it would have brought stays in the queue).
pub async fn run_sqs_worker<S, C, P>(
    processor: &QueueProcessor<S, C, P>,
    store: &Store,
    queue: &SqsQueue,
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    S: Scm + Merger + Sync,
    C: Checks + Sync,
    P: Publisher + Sync,
{
    let settings = processor.settings().clone();
    let max = i32::try_from(settings.batch_size.min(10)).unwrap_or(10);
    let wait = settings.poll_interval.min(Duration::from_secs(20));
    // A failed message comes back after one poll interval (at least a second).
    let retry_after = wait.max(Duration::from_secs(1));
    let mut next_sweep = Instant::now();
    while !*stop.borrow() {
        if Instant::now() >= next_sweep {
            match queue.sweep(store, processor.holder()).await {
                Ok(report) => {
                    if report != SweepReport::default() {
                        tracing::info!("sweep {report:?}");
                    }
                }
                Err(e) => tracing::warn!("sweep failed: {e}"),
            }
            next_sweep = Instant::now() + settings.sweep_interval;
        }
        let received = tokio::select! {
            received = queue.receive(max, wait) => received,
            _ = stop.changed() => break,
        };
        let event = match received {
            Ok(event) => event,
            Err(e) => {
                tracing::warn!("receive failed: {e}");
                tokio::select! {
                    () = tokio::time::sleep(wait.max(Duration::from_secs(1))) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
        };
        if event.records.is_empty() {
            continue;
        }
        let mut outcome = handle_batch(processor, event.clone()).await;
        // Before settling: a busy key's message is deleted only once its successor is queued.
        queue.requeue_busy(&mut outcome, retry_after).await;
        if let Err(e) = queue.settle(&event, &outcome.response, retry_after).await {
            // Unsettled messages come back after the visibility timeout: rounds are idempotent.
            tracing::warn!("cannot settle a batch: {e}");
        }
        if let Err(e) = queue.send_keys(&outcome.unfinished).await {
            tracing::warn!("cannot send the unfinished keys again: {e}");
        }
    }
}
