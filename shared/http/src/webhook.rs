//! `POST /integrations/github/webhook`: GitHub deliveries in.
//!
//! Only fast work happens here: size guard, signature, parse, translate, one transaction
//! (the delivery record, `webhook.received`, the intent's events and projection, queue
//! messages), then 202. The queue worker does the rest. A delivery id already handled writes
//! nothing and is acknowledged as a duplicate, also when copies arrive concurrently (the
//! delivery row is inserted inside the same transaction).

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use converge_core::intake::{Change, Effect, effect};
use converge_core::queue::QueueKey;
use converge_core::{Event, EventType, Intent};
use converge_github::signature;
use converge_github::webhook::{IntakeContext, Translation, action_of, translate};
use converge_runtime::queue_worker::queue_message;
use converge_store::{Commit, Delivery, StoreError};
use serde_json::{Value, json};

use crate::{ApiError, AppState};

/// Attempts when a concurrent change to the same intent made the first decision stale.
const ATTEMPTS: usize = 3;

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// The handler.
pub(crate) async fn github_webhook(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    use tracing::Instrument;
    let span = tracing::info_span!(
        "webhook.delivery",
        delivery_id = header(&headers, "x-github-delivery").unwrap_or(""),
        event = header(&headers, "x-github-event").unwrap_or(""),
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    converge_runtime::telemetry::record_ids(&span);
    receive(state, headers, body).instrument(span).await
}

/// Verifies, deduplicates, translates and commits one delivery.
async fn receive(
    state: Arc<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let limit = state.settings.webhook_max_body_bytes;
    let declared = header(&headers, "content-length").and_then(|v| v.parse::<usize>().ok());
    if let Some(declared) = declared.filter(|n| *n > limit) {
        // Read a body up to twice the limit before refusing it, so the sender gets the 413
        // instead of a connection closed under it; anything larger is cut off at once.
        if declared <= limit.saturating_mul(2) {
            let _ = axum::body::to_bytes(body, limit.saturating_mul(2)).await;
        }
        return Err(ApiError::PayloadTooLarge(limit));
    }
    let body = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::PayloadTooLarge(limit))?;

    let secrets = webhook_secrets(&state).await?;
    let signed = !secrets.is_empty();
    if signed {
        signature::verify(&secrets, &body, header(&headers, "x-hub-signature-256"))
            .map_err(|e| ApiError::BadSignature(format!("webhook refused: {e}")))?;
    } else if state.settings.auth_required {
        return Err(ApiError::Forbidden(
            "webhook signature verification is not configured: set CONVERGE_GITHUB_WEBHOOK_SECRET \
             (or CONVERGE_AUTH_REQUIRED=0 on a private machine)"
                .to_owned(),
        ));
    }
    let event_name = header(&headers, "x-github-event")
        .ok_or_else(|| ApiError::BadRequest("missing X-GitHub-Event header".to_owned()))?
        .to_owned();
    let delivery_id = header(&headers, "x-github-delivery")
        .ok_or_else(|| ApiError::BadRequest("missing X-GitHub-Delivery header".to_owned()))?
        .to_owned();
    if delivery_id.len() > 200 || event_name.len() > 100 {
        return Err(ApiError::BadRequest(
            "X-GitHub-Delivery or X-GitHub-Event is too long".to_owned(),
        ));
    }
    if body.is_empty() {
        return Err(ApiError::BadRequest(
            "empty body: a JSON payload is required".to_owned(),
        ));
    }
    let context = IntakeContext {
        tenant: state.settings.github_default_tenant.as_deref(),
        now: state.clock.now(),
    };
    let translation =
        translate(&event_name, &body, context).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let action = action_of(&body);
    let delivery = Delivery {
        id: delivery_id.clone(),
        event_name: event_name.clone(),
        body_sha256: signature::body_sha256(&body),
    };
    let received = json!({"github_event": event_name, "delivery_id": delivery_id,
                          "action": action, "signed": signed});

    let mut attempt = 0;
    let (outcome, commit) = loop {
        attempt += 1;
        let (outcome, commit) = plan(&state, &translation, &received, &delivery).await?;
        match state.store.commit(&commit).await {
            Ok(_) => break (outcome, commit),
            Err(StoreError::AlreadyDelivered {
                same_body: true, ..
            }) => {
                return Ok(accepted(json!({"ok": true, "delivery_id": delivery_id,
                                          "event": event_name, "duplicate": true})));
            }
            Err(StoreError::AlreadyDelivered {
                same_body: false, ..
            }) => {
                return Err(ApiError::Conflict(format!(
                    "delivery {delivery_id} was already received with a different body"
                )));
            }
            // Another change to the intent landed between reading and writing: decide again.
            Err(StoreError::Projection(_)) if attempt < ATTEMPTS => continue,
            Err(e) => return Err(e.into()),
        }
    };
    if !commit.outbox.is_empty() {
        state.queue_work_committed().await;
    }
    let mut response =
        json!({"ok": true, "delivery_id": delivery_id, "event": event_name, "action": action});
    if let (Value::Object(map), Value::Object(more)) = (&mut response, outcome) {
        map.extend(more);
    }
    Ok(accepted(response))
}

/// The secrets deliveries may be signed with: from Secrets Manager when an ARN is set (read
/// again once the cache's lifetime has passed, so a rotation needs no redeploy), else from
/// the environment. Secrets Manager failing is a 503: GitHub delivers again later.
async fn webhook_secrets(
    state: &AppState,
) -> Result<std::borrow::Cow<'_, [signature::WebhookSecret]>, ApiError> {
    match (&state.settings.webhook_secret_arn, &state.secrets) {
        (Some(arn), Some(secrets)) => {
            let value = secrets.get(arn).await.map_err(|e| {
                tracing::error!("webhook: {e}");
                ApiError::DependencyUnavailable(
                    "the webhook secret cannot be read from Secrets Manager".to_owned(),
                )
            })?;
            Ok(std::borrow::Cow::Owned(signature::parse_secrets(&value)))
        }
        _ => Ok(std::borrow::Cow::Borrowed(&state.settings.webhook_secrets)),
    }
}

fn accepted(body: Value) -> Response {
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

/// The transaction a delivery calls for, and what to answer about it.
async fn plan(
    state: &AppState,
    translation: &Translation,
    received: &Value,
    delivery: &Delivery,
) -> Result<(Value, Commit), ApiError> {
    let trace_id = format!("trace-{}", state.new_id());
    let event =
        |event_type: EventType, intent: Option<(&str, Option<String>)>, payload: Value| Event {
            id: state.new_id(),
            trace_id: trace_id.clone(),
            timestamp: state.clock.now(),
            event_type,
            intent_id: intent.as_ref().map(|(id, _)| (*id).to_owned()),
            agent_id: None,
            tenant_id: intent.and_then(|(_, tenant)| tenant),
            payload,
            evidence: json!({"delivery_id": delivery.id}),
        };
    let mut commit = Commit {
        delivery: Some(delivery.clone()),
        ..Commit::default()
    };
    let outcome = match translation {
        Translation::Change(change) => {
            let (intent_id, proposed) = change_subject(change);
            let current = state.store.intent(intent_id).await?;
            match effect(current.as_ref(), change.as_ref()) {
                Effect::Ignored { intent_id, reason } => {
                    json!({"intent_id": intent_id, "result": "ignored", "reason": reason})
                }
                Effect::Events { intent_id, events } => {
                    // The queue the intent is in after the change (a new target moves it).
                    let subject = proposed.or(current.as_ref());
                    let tenant = subject.and_then(|i| i.tenant_id.clone());
                    for (event_type, payload) in events {
                        commit.events.push(event(
                            event_type,
                            Some((&intent_id, tenant.clone())),
                            payload,
                        ));
                    }
                    if let Some(subject) = subject {
                        commit
                            .outbox
                            .push(queue_message(&QueueKey::for_intent(subject)));
                    }
                    json!({"intent_id": intent_id, "result": "applied"})
                }
            }
        }
        Translation::Wake { repo } => {
            let keys = repository_queues(state, repo).await?;
            commit.outbox.extend(keys.iter().map(queue_message));
            json!({"result": "queued", "queues": keys.len()})
        }
        Translation::ChecksCompleted {
            repo,
            head_sha,
            name,
            conclusion,
        } => {
            let state_name = match conclusion.as_str() {
                "success" | "neutral" | "skipped" => "passed",
                _ => "failed",
            };
            let mut judged = Vec::new();
            for key in repository_queues(state, repo).await? {
                let intents = state.store.queue_intents(&key, None, 1_000).await?;
                let matching: Vec<&Intent> = intents
                    .iter()
                    .filter(|i| i.head_sha() == Some(head_sha.as_str()))
                    .collect();
                for intent in &matching {
                    let payload = json!({"name": name, "state": state_name, "head_sha": head_sha,
                                         "details": conclusion, "reported_by": "github"});
                    commit.events.push(event(
                        EventType::CheckReported,
                        Some((&intent.id, intent.tenant_id.clone())),
                        payload,
                    ));
                    judged.push(intent.id.clone());
                }
                if !matching.is_empty() {
                    commit.outbox.push(queue_message(&key));
                }
            }
            json!({"result": "recorded", "intents": judged})
        }
        Translation::Record {
            event_type,
            payload,
        } => {
            commit
                .events
                .push(event(*event_type, None, payload.clone()));
            json!({"result": "recorded"})
        }
        Translation::Ignored { reason } => json!({"result": "ignored", "ignored": reason}),
    };
    commit
        .events
        .insert(0, event(EventType::WebhookReceived, None, received.clone()));
    Ok((outcome, commit))
}

/// The intent a change is about, and the intent it proposes (if it proposes one).
fn change_subject(change: &Change) -> (&str, Option<&Intent>) {
    match change {
        Change::Proposed { intent, .. } | Change::MergeGroupRequested { intent } => {
            (&intent.id, Some(intent))
        }
        Change::Closed { intent_id, .. }
        | Change::MergeGroupDestroyed { intent_id, .. }
        | Change::Prioritised { intent_id, .. } => (intent_id, None),
    }
}

/// Every queue of `repo` (any tenant, any target) that holds actionable intents.
async fn repository_queues(state: &AppState, repo: &str) -> Result<Vec<QueueKey>, ApiError> {
    Ok(
        converge_runtime::queue_worker::actionable_keys(&state.store)
            .await?
            .into_iter()
            .filter(|k| k.repo == repo)
            .collect(),
    )
}
