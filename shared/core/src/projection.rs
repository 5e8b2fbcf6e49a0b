//! The intents projection: the current state of each intent, as a fold over its events.
//!
//! The event log is the source of truth. Every event that changes an intent says so by its
//! type (and, for retries and forced statuses, its payload), so the projection can be rebuilt
//! by replaying events into an empty table and yields the same rows. The store applies this
//! fold inside the transaction that appends the events; an event that would move an intent
//! illegally fails the whole transaction.

use serde_json::Value;

use crate::event::{Event, EventType};
use crate::intent::{Intent, RiskLevel, Status, TransitionError};

/// Why an event cannot be applied to the projection.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProjectionError {
    /// The event would move the intent along an illegal edge of its life cycle.
    #[error("event {event_type} for intent {intent_id}: {source}")]
    Transition {
        /// The event.
        event_type: EventType,
        /// The intent.
        intent_id: String,
        /// The refused move.
        source: TransitionError,
    },
    /// The event changes an intent that does not exist (yet): refused, so the log never holds
    /// a change the projection did not make.
    #[error("event {event_type} for intent {intent_id}: no such intent")]
    UnknownIntent {
        /// The event.
        event_type: EventType,
        /// The intent.
        intent_id: String,
    },
    /// The event's payload lacks a field the projection needs, or holds a bad value.
    #[error("event {event_type} for intent {intent_id}: payload field '{field}' {problem}")]
    Payload {
        /// The event.
        event_type: EventType,
        /// The intent.
        intent_id: String,
        /// The field.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
}

/// Whether events of this type change the intents projection.
pub fn changes_projection(event_type: EventType) -> bool {
    use EventType::*;
    matches!(
        event_type,
        IntentCreated
            | IntentValidated
            | RiskLevelReclassified
            | IntentQueued
            | IntentRequeued
            | IntentRejected
            | IntentMerged
            | IntentMergeFailed
            | IntentStatusChanged
            | QueueReset
            | MergeGroupChecksRequested
            | MergeGroupDestroyed
            | IntentPriorityChanged
    )
}

/// Applies one event to the current state of its intent. Returns the new state, or `None`
/// when the event does not concern the projection. An event that would change an intent that
/// does not exist is an error.
pub fn apply(current: Option<&Intent>, event: &Event) -> Result<Option<Intent>, ProjectionError> {
    let Some(intent_id) = event.intent_id.as_deref() else {
        return Ok(None);
    };
    if !changes_projection(event.event_type) {
        return Ok(None);
    }
    let payload_error = |field: &'static str, problem: String| ProjectionError::Payload {
        event_type: event.event_type,
        intent_id: intent_id.to_owned(),
        field,
        problem,
    };

    if matches!(
        event.event_type,
        EventType::IntentCreated | EventType::MergeGroupChecksRequested
    ) {
        let mut created: Intent = serde_json::from_value(event.payload.clone())
            .map_err(|e| payload_error("(intent)", format!("is not an intent: {e}")))?;
        if created.id != intent_id {
            return Err(payload_error(
                "id",
                format!("'{}' differs from the event's intent", created.id),
            ));
        }
        if let Some(existing) = current {
            // Re-creation (a pull request pushed or reopened): a fresh start that keeps the
            // intent's identity and birth. A REJECTED intent may start again as READY (its
            // pull request was reopened); that is the only way out of REJECTED, and MERGED
            // has none.
            let reopened = existing.status == Status::Rejected && created.status == Status::Ready;
            if !reopened {
                existing
                    .status
                    .transition(created.status)
                    .map_err(|source| ProjectionError::Transition {
                        event_type: event.event_type,
                        intent_id: intent_id.to_owned(),
                        source,
                    })?;
            }
            if created.tenant_id != existing.tenant_id {
                return Err(payload_error(
                    "tenant_id",
                    "cannot change when an intent is created again".to_owned(),
                ));
            }
            created.created_at = existing.created_at;
            created.created_by = existing.created_by.clone();
        }
        return Ok(Some(created));
    }

    let Some(existing) = current else {
        return Err(ProjectionError::UnknownIntent {
            event_type: event.event_type,
            intent_id: intent_id.to_owned(),
        });
    };
    let mut next = existing.clone();
    let retries_in_payload = || -> Result<Option<u32>, ProjectionError> {
        match event.payload.get("retries") {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| payload_error("retries", format!("is not a count: {v}"))),
        }
    };
    let status_in_payload = |field: &'static str| -> Result<Status, ProjectionError> {
        let value = event.payload.get(field).and_then(Value::as_str);
        value
            .ok_or_else(|| payload_error(field, "is missing".to_owned()))?
            .parse()
            .map_err(|e| payload_error(field, format!("{e}")))
    };

    let moved = match event.event_type {
        // An operator's reset follows its own rule (a REJECTED intent may come back).
        EventType::QueueReset => {
            let requested = match event.payload.get("new_status") {
                None | Some(Value::Null) => None,
                Some(_) => Some(status_in_payload("new_status")?),
            };
            existing.status.reset_to(requested)
        }
        _ => {
            let to = match event.event_type {
                // A queued intent that passes revalidation stays queued.
                EventType::IntentValidated if existing.status == Status::Queued => Status::Queued,
                EventType::IntentValidated => Status::Validated,
                EventType::IntentQueued => Status::Queued,
                EventType::IntentRequeued => Status::Ready,
                EventType::IntentRejected | EventType::MergeGroupDestroyed => Status::Rejected,
                EventType::IntentMerged => Status::Merged,
                EventType::IntentMergeFailed => status_in_payload("status")?,
                EventType::IntentStatusChanged => status_in_payload("to")?,
                _ => existing.status,
            };
            existing.status.transition(to)
        }
    };
    next.status = moved.map_err(|source| ProjectionError::Transition {
        event_type: event.event_type,
        intent_id: intent_id.to_owned(),
        source,
    })?;

    match event.event_type {
        EventType::QueueReset => next.retries = 0,
        EventType::IntentPriorityChanged => {
            next.priority = event
                .payload
                .get("priority")
                .and_then(Value::as_i64)
                .ok_or_else(|| payload_error("priority", "is not a whole number".to_owned()))?;
        }
        EventType::RiskLevelReclassified => {
            let level = event
                .payload
                .get("new")
                .and_then(Value::as_str)
                .unwrap_or_default();
            next.risk_level = level
                .parse::<RiskLevel>()
                .map_err(|e| payload_error("new", format!("{e}")))?;
        }
        EventType::IntentValidated => {
            if let Some(level) = event.payload.get("risk_level").and_then(Value::as_str) {
                next.risk_level = level
                    .parse()
                    .map_err(|e| payload_error("risk_level", format!("{e}")))?;
            }
        }
        _ => {
            if let Some(retries) = retries_in_payload()? {
                next.retries = retries;
            }
        }
    }
    // A push to the intent's branch (`intake::revalidation_after_push`) moves its head.
    if event.event_type == EventType::IntentRequeued
        && let Some(head) = event.payload.get("new_head_sha")
    {
        let head = head
            .as_str()
            .ok_or_else(|| payload_error("new_head_sha", format!("is not a commit: {head}")))?;
        next.technical
            .insert("initial_base_commit".into(), Value::String(head.to_owned()));
    }
    Ok(Some(next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn event(event_type: EventType, payload: Value) -> Event {
        Event {
            id: "e".into(),
            trace_id: "t".into(),
            timestamp: chrono::Utc
                .timestamp_opt(1_800_000_000, 0)
                .single()
                .unwrap_or_default(),
            event_type,
            intent_id: Some("i-1".into()),
            agent_id: None,
            tenant_id: None,
            payload,
            evidence: json!({}),
        }
    }

    fn created() -> Intent {
        Intent::new(
            "i-1",
            "feature",
            "main",
            chrono::Utc
                .timestamp_opt(1_700_000_000, 0)
                .single()
                .unwrap_or_default(),
        )
    }

    fn fold(events: &[Event]) -> Result<Option<Intent>, ProjectionError> {
        let mut state: Option<Intent> = None;
        for e in events {
            if let Some(next) = apply(state.as_ref(), e)? {
                state = Some(next);
            }
        }
        Ok(state)
    }

    #[test]
    fn a_life_cycle_folds_into_the_expected_row() {
        let payload = serde_json::to_value(created()).unwrap_or_default();
        let state = fold(&[
            event(EventType::IntentCreated, payload),
            event(EventType::IntentValidated, json!({"risk_level": "high"})),
            event(EventType::IntentBlocked, json!({"reason": "x"})),
            event(
                EventType::IntentRequeued,
                json!({"reason": "x", "retries": 1}),
            ),
            event(EventType::IntentValidated, json!({})),
            event(EventType::IntentQueued, json!({})),
            event(EventType::IntentValidated, json!({})),
            event(EventType::IntentMerged, json!({"merged_commit": "abc"})),
        ]);
        let state = state.ok().flatten().unwrap_or_else(created);
        assert_eq!(state.status, Status::Merged);
        assert_eq!(state.retries, 1);
        assert_eq!(state.risk_level, RiskLevel::High);
    }

    #[test]
    fn a_re_creation_cannot_move_an_intent_to_another_tenant() {
        let mut first = created();
        first.tenant_id = Some("globex".into());
        let mut second = created();
        second.tenant_id = Some("acme".into());
        let result = fold(&[
            event(
                EventType::IntentCreated,
                serde_json::to_value(first).unwrap_or_default(),
            ),
            event(
                EventType::IntentCreated,
                serde_json::to_value(second).unwrap_or_default(),
            ),
        ]);
        assert!(
            matches!(
                result,
                Err(ProjectionError::Payload {
                    field: "tenant_id",
                    ..
                })
            ),
            "{result:?}"
        );
    }

    #[test]
    fn illegal_moves_are_refused() {
        let payload = serde_json::to_value(created()).unwrap_or_default();
        let result = fold(&[
            event(EventType::IntentCreated, payload),
            event(EventType::IntentQueued, json!({})),
        ]);
        assert!(matches!(result, Err(ProjectionError::Transition { .. })));
    }

    #[test]
    fn events_for_unknown_intents_are_refused() {
        assert!(matches!(
            apply(None, &event(EventType::IntentMerged, json!({}))),
            Err(ProjectionError::UnknownIntent { .. })
        ));
        assert_eq!(
            apply(None, &event(EventType::IntentBlocked, json!({}))),
            Ok(None)
        );
        assert!(matches!(
            apply(
                Some(&created()),
                &event(EventType::IntentStatusChanged, json!({"to": "LIMBO"}))
            ),
            Err(ProjectionError::Payload { field: "to", .. })
        ));
    }
}
