//! The SQS side of the queue: the worker function's batch handler, the relay that moves queue
//! messages from the outbox to SQS, and the scheduled sweep.
//!
//! A message body names a queue key (`{"tenant", "repo", "target"}`). The handler groups a
//! batch by key and runs one round per key; a key whose lease is held elsewhere, or whose round
//! failed, has its messages reported as batch item failures so SQS delivers them again after
//! the visibility timeout. A body that is not a key is logged with its message id and reported
//! as a failure too, so the queue's redrive policy moves it to the DLQ after
//! `maxReceiveCount` receives; the rest of the batch is unaffected.

use std::collections::BTreeMap;

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use converge_core::pipeline::{Checks, Merger, Scm};
use converge_core::publication::Publisher;
use converge_core::queue::QueueKey;
use converge_store::Store;

use crate::queue_worker::{
    KeyOutcome, QUEUE_TOPIC, QueueProcessor, actionable_keys, queue_message,
};

/// Handles one SQS batch (the event source mapping reports partial failures).
pub async fn handle_batch<S, C, P>(
    processor: &QueueProcessor<S, C, P>,
    event: SqsEvent,
) -> SqsBatchResponse
where
    S: Scm + Merger + Sync,
    C: Checks + Sync,
    P: Publisher + Sync,
{
    let mut failures: Vec<String> = Vec::new();
    let mut by_key: BTreeMap<QueueKey, Vec<String>> = BTreeMap::new();
    for record in event.records {
        let id = record.message_id.clone().unwrap_or_default();
        match record.body.as_deref().map(serde_json::from_str::<QueueKey>) {
            Some(Ok(key)) => by_key.entry(key).or_default().push(id),
            Some(Err(e)) => {
                eprintln!(
                    "converge: worker: message {id} is not a queue key ({e}); left to the redrive policy"
                );
                failures.push(id);
            }
            None => {
                eprintln!("converge: worker: message {id} has no body; left to the redrive policy");
                failures.push(id);
            }
        }
    }
    for (key, ids) in by_key {
        match processor.process_key(&key).await {
            Ok(KeyOutcome::Processed(reports)) => {
                for report in reports.iter().filter(|r| r.outcome != "unchanged") {
                    eprintln!(
                        "converge: worker: {key} {} {} {}",
                        report.intent_id, report.outcome, report.detail
                    );
                }
            }
            Ok(KeyOutcome::Busy) => failures.extend(ids),
            Err(e) => {
                eprintln!(
                    "converge: worker: round over {key} failed, messages will come back: {e}"
                );
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
    response
}

/// Why the relay or the sweep stopped.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] converge_store::StoreError),
    /// SQS refused or could not be reached.
    #[error("SQS: {0}")]
    Sqs(String),
}

/// Sends the outbox's unsent queue messages to SQS (in batches of ten) and marks each one
/// sent once SQS accepted it. A message SQS did not take stays unsent and goes with the next
/// relay. Returns how many were sent.
pub async fn relay_outbox(
    store: &Store,
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    claimer: &str,
) -> Result<usize, RelayError> {
    let claimed = store
        .claim_outbox(
            QUEUE_TOPIC,
            claimer,
            100,
            std::time::Duration::from_secs(60),
        )
        .await?;
    let messages: Vec<(String, String)> = claimed
        .iter()
        .map(|entry| (entry.seq.to_string(), entry.payload.to_string()))
        .collect();
    let mut sent = 0;
    for id in send_batches(sqs, queue_url, &messages).await? {
        if let Ok(seq) = id.parse::<i64>() {
            store.mark_outbox_sent(seq).await?;
            sent += 1;
        }
    }
    Ok(sent)
}

/// Sends `(id, body)` messages to SQS in batches of ten; returns the ids SQS accepted (the
/// others are logged and left to the caller's next attempt).
async fn send_batches(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    messages: &[(String, String)],
) -> Result<Vec<String>, RelayError> {
    let mut accepted = Vec::with_capacity(messages.len());
    for chunk in messages.chunks(10) {
        let mut batch = sqs.send_message_batch().queue_url(queue_url);
        for (id, body) in chunk {
            let message = aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                .id(id)
                .message_body(body)
                .build()
                .map_err(|e| RelayError::Sqs(e.to_string()))?;
            batch = batch.entries(message);
        }
        let answer = batch
            .send()
            .await
            .map_err(|e| RelayError::Sqs(aws_sdk_sqs::error::DisplayErrorContext(e).to_string()))?;
        accepted.extend(answer.successful().iter().map(|ok| ok.id().to_owned()));
        for failed in answer.failed() {
            eprintln!(
                "converge: relay: message {} not accepted by SQS: {}",
                failed.id(),
                failed.message().unwrap_or("no reason")
            );
        }
    }
    Ok(accepted)
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

/// The scheduled sweep: relays unsent outbox messages, sends a message for every key that has
/// actionable intents (nothing may wait for an event that was lost), and clears leases whose
/// holder let them expire (their tokens stay, so a late holder is still fenced).
pub async fn sweep(
    store: &Store,
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    claimer: &str,
) -> Result<SweepReport, RelayError> {
    let relayed = relay_outbox(store, sqs, queue_url, claimer).await?;
    let keys = actionable_keys(store).await?;
    let messages: Vec<(String, String)> = keys
        .iter()
        .enumerate()
        .map(|(n, key)| (format!("k{n}"), queue_message(key).payload.to_string()))
        .collect();
    send_batches(sqs, queue_url, &messages).await?;
    let reclaimed = usize::try_from(store.clear_expired_leases().await?).unwrap_or(usize::MAX);
    Ok(SweepReport {
        relayed,
        enqueued: keys.len(),
        reclaimed,
    })
}

/// The worker function's event, by shape: an SQS batch (`Records`) or the sweep's schedule
/// (an EventBridge event, or `{"sweep": true}` from the local timer).
pub async fn handle_event<S, C, P>(
    processor: &QueueProcessor<S, C, P>,
    store: &Store,
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
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
        let response = handle_batch(processor, batch).await;
        return serde_json::to_value(response).map_err(|e| RelayError::Sqs(e.to_string()));
    }
    let report = sweep(store, sqs, queue_url, processor.holder()).await?;
    Ok(
        serde_json::json!({"relayed": report.relayed, "enqueued": report.enqueued, "reclaimed": report.reclaimed}),
    )
}
