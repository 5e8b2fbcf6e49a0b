//! The write paths of review tasks (the API's; the sweep's SLA escalation): each change is
//! decided from the task as read and commits only on that version, with its events and a
//! queue message for the intent's key (a completed or cancelled review may free it).

use converge_core::EventType;
use converge_core::queue::QueueKey;
use converge_core::review::{ReviewChange, ReviewError, ReviewTask, Trigger};
use converge_store::{Commit, ReviewWrite, StoreError, StoredReview};
use serde_json::json;

use crate::commands::api_event;
use crate::queue_worker::queue_message;
use crate::services::Services;

/// Why a review change was not written.
#[derive(Debug, thiserror::Error)]
pub enum ReviewCommandError {
    /// The life cycle does not allow it.
    #[error(transparent)]
    Refused(#[from] ReviewError),
    /// The store failed, or the task changed meanwhile (`StoreError::Conflict`).
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn event_of(change: ReviewChange) -> EventType {
    match change {
        ReviewChange::Assigned => EventType::ReviewAssigned,
        ReviewChange::Reassigned => EventType::ReviewReassigned,
        ReviewChange::Completed => EventType::ReviewCompleted,
        ReviewChange::Cancelled => EventType::ReviewCancelled,
        ReviewChange::Escalated => EventType::ReviewEscalated,
    }
}

/// Requests a review of `intent` (assigned at once when `reviewer` is given).
pub async fn request(
    services: &Services,
    actor: &str,
    intent: &converge_core::Intent,
    trigger: Trigger,
    reviewer: Option<String>,
    priority: Option<i64>,
) -> Result<ReviewTask, StoreError> {
    let task = ReviewTask::request(
        format!("rev-{}", services.new_id()),
        intent,
        trigger,
        reviewer,
        priority,
        services.clock.now(),
    );
    let payload = serde_json::to_value(&task).unwrap_or_default();
    let mut events = vec![api_event(
        services,
        actor,
        EventType::ReviewRequested,
        Some(&intent.id),
        intent.tenant_id.as_deref(),
        payload.clone(),
    )];
    if task.reviewer.is_some() {
        events.push(api_event(
            services,
            actor,
            EventType::ReviewAssigned,
            Some(&intent.id),
            intent.tenant_id.as_deref(),
            json!({"task_id": task.id, "reviewer": task.reviewer}),
        ));
    }
    services
        .store
        .commit(&Commit {
            events,
            reviews: vec![ReviewWrite {
                task: task.clone(),
                expected_version: None,
            }],
            ..Commit::default()
        })
        .await?;
    Ok(task)
}

/// Applies `change` to the task as read, and commits it only on that version.
pub async fn change(
    services: &Services,
    actor: &str,
    stored: StoredReview,
    change: impl FnOnce(&mut ReviewTask) -> Result<ReviewChange, ReviewError>,
) -> Result<ReviewTask, ReviewCommandError> {
    let StoredReview { mut task, version } = stored;
    let happened = change(&mut task)?;
    let mut events = Vec::new();
    push_change(services, actor, &task, happened, &mut events);
    commit_changes(services, vec![(task.clone(), version)], events).await?;
    Ok(task)
}

fn push_change(
    services: &Services,
    actor: &str,
    task: &ReviewTask,
    happened: ReviewChange,
    events: &mut Vec<converge_core::Event>,
) {
    events.push(api_event(
        services,
        actor,
        event_of(happened),
        Some(&task.intent_id),
        task.tenant_id.as_deref(),
        serde_json::to_value(task).unwrap_or_default(),
    ));
}

/// Commits changed tasks (each on the version read) with their events and a queue message
/// for each intent's key, then wakes the queue.
async fn commit_changes(
    services: &Services,
    tasks: Vec<(ReviewTask, i64)>,
    events: Vec<converge_core::Event>,
) -> Result<(), StoreError> {
    let mut keys = std::collections::BTreeSet::new();
    for (task, _) in &tasks {
        if let Some(intent) = services.store.intent(&task.intent_id).await? {
            keys.insert(QueueKey::for_intent(&intent));
        }
    }
    services
        .store
        .commit(&Commit {
            events,
            outbox: keys.iter().map(queue_message).collect(),
            reviews: tasks
                .into_iter()
                .map(|(task, version)| ReviewWrite {
                    task,
                    expected_version: Some(version),
                })
                .collect(),
            ..Commit::default()
        })
        .await?;
    services.queue_work_committed().await;
    Ok(())
}

/// The sweep's SLA check: escalates every open task past its deadline (`review.sla.breached`
/// and `review.escalated`, as the reviewer who missed it is no longer enough). A task another
/// writer changed meanwhile is left to the next sweep. Returns how many were escalated.
pub async fn escalate_overdue(services: &Services) -> Result<usize, StoreError> {
    const PER_SWEEP: u32 = 200;
    let now = services.clock.now();
    let mut escalated = 0;
    for stored in services.store.overdue_reviews(now, PER_SWEEP).await? {
        let StoredReview { mut task, version } = stored;
        let Ok(happened) = task.escalate("sla_breach", now) else {
            continue;
        };
        let mut events = vec![api_event(
            services,
            "sweep",
            EventType::ReviewSlaBreached,
            Some(&task.intent_id),
            task.tenant_id.as_deref(),
            json!({"task_id": task.id, "sla_deadline": task.sla_deadline, "reviewer": task.reviewer}),
        )];
        push_change(services, "sweep", &task, happened, &mut events);
        match commit_changes(services, vec![(task, version)], events).await {
            Ok(()) => escalated += 1,
            Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(escalated)
}
