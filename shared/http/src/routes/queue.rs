//! The queue: its state, summary and inspection, resets, merge confirmations and rounds run
//! on request (`/queue/…`, `/merge/confirm`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::routing::{get, post};
use converge_core::queue::QueueKey;
use converge_core::{EventType, Intent, Status};
use converge_store::IntentFilter;
use serde::Deserialize;
use serde_json::json;

use super::*;
use crate::AppState;
use crate::api;
use crate::auth::{Principal, Role};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, OptionalJson};

// Queue
/// Actionable intents listed by `/queue/state` and `/summary` at most.
pub(super) const PENDING_LISTED: u32 = 500;

/// The queue of a tenant (every tenant: `None`) at a glance: counts by status from the
/// database (no intent row loaded for them), and the first [`PENDING_LISTED`] actionable
/// intents in queue order.
pub(super) async fn queue_state_of(
    state: &AppState,
    tenant: Option<String>,
) -> Result<api::QueueState, ApiError> {
    let store = &state.services.store;
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    let mut pending_total = 0;
    for (status, count) in store.status_counts(tenant.as_deref()).await? {
        let n = usize::try_from(count).unwrap_or(0);
        *by_status.entry(status.as_str().to_owned()).or_default() += n;
        if status.is_actionable() {
            pending_total += n;
        }
    }
    let mut pending = store
        .intents(&IntentFilter {
            statuses: vec![Status::Ready, Status::Validated, Status::Queued],
            tenant_id: tenant,
            limit: PENDING_LISTED,
            ..IntentFilter::default()
        })
        .await?;
    pending.sort_by(|a, b| a.priority.cmp(&b.priority).then_with(|| a.id.cmp(&b.id)));
    Ok(api::QueueState {
        total: by_status.values().sum(),
        by_status,
        pending: pending
            .iter()
            .map(|i| api::PendingIntent {
                intent_id: i.id.clone(),
                priority: i.priority,
                retries: i.retries,
                status: i.status,
            })
            .collect(),
        pending_total,
    })
}

/// `GET /queue/state`.
pub(super) async fn queue_state(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult {
    typed(queue_state_of(&state, principal.read_tenant(q.tenant_id)).await?)
}

/// `GET /queue/summary`.
pub(super) async fn queue_summary(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult {
    let tenant = principal.read_tenant(q.tenant_id);
    let counts = state
        .services
        .store
        .intent_counts(tenant.as_deref())
        .await?;
    let mut by_status: BTreeMap<String, i64> = BTreeMap::new();
    for count in &counts {
        *by_status
            .entry(count.status.as_str().to_owned())
            .or_default() += count.count;
    }
    let total: i64 = counts.iter().map(|c| c.count).sum();
    let pending: i64 = counts
        .iter()
        .filter(|c| c.status.is_actionable())
        .map(|c| c.count)
        .sum();
    typed(api::QueueSummary {
        by_status,
        pending_count: pending,
        total,
    })
}

/// `GET /queue/inspect`'s filters.
#[derive(Deserialize, schemars::JsonSchema)]
pub(super) struct InspectQuery {
    #[serde(default)]
    #[schemars(schema_with = "status_list_schema")]
    status: Option<String>,
    /// Only intents with at least this many retries.
    #[schemars(range(max = 4_294_967_295u32))]
    min_retries: Option<u32>,
    /// Only READY, VALIDATED and QUEUED intents, in that order (`status` is then ignored).
    #[serde(default)]
    only_actionable: bool,
    /// Page size, 1 to 500 (default 100).
    #[schemars(range(min = 1, max = 500))]
    limit: Option<u32>,
    /// Tenant to read (ignored for tenant-bound keys, which always read their own).
    tenant_id: Option<String>,
}

/// `GET /queue/inspect`.
pub(super) async fn queue_inspect(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<InspectQuery>,
) -> ApiResult {
    let limit = page_limit(q.limit, INTENTS_PAGE_DEFAULT, INTENTS_PAGE_MAX)? as usize;
    // A malformed `status` is refused even where `only_actionable` overrides it.
    let requested = parse_statuses(q.status)?;
    let statuses = if q.only_actionable {
        vec![Status::Ready, Status::Validated, Status::Queued]
    } else {
        requested
    };
    let intents = state
        .services
        .store
        .intents(&IntentFilter {
            statuses: statuses.clone(),
            tenant_id: principal.read_tenant(q.tenant_id),
            limit: 100_000,
            ..IntentFilter::default()
        })
        .await?;
    let mut rows: Vec<&Intent> = intents
        .iter()
        .filter(|i| i.retries >= q.min_retries.unwrap_or(0))
        .collect();
    // Actionable intents are listed READY first, then VALIDATED, then QUEUED.
    rows.sort_by_key(|i| {
        statuses
            .iter()
            .position(|s| *s == i.status)
            .unwrap_or(usize::MAX)
    });
    rows.truncate(limit);
    let rows: Vec<api::InspectedIntent> = rows
        .iter()
        .map(|i| api::InspectedIntent {
            intent_id: i.id.clone(),
            priority: i.priority,
            retries: i.retries,
            risk_level: i.risk_level,
            source: i.source.clone(),
            status: i.status,
            target: i.target.clone(),
        })
        .collect();
    let paused_keys = paused_keys(&state.services.store.leases().await?, &principal);
    typed(api::QueueInspection {
        intents: rows,
        paused_keys,
    })
}

/// The keys among `leases` that `principal` may see and that are paused because their
/// environment failed (for `queue inspect` and the dashboard, which read the leases once).
pub(crate) fn paused_keys(
    leases: &[converge_store::LeaseState],
    principal: &Principal,
) -> Vec<api::PausedKey> {
    leases
        .iter()
        .filter(|l| principal.can_see(Some(l.key.tenant.as_str()).filter(|t| !t.is_empty())))
        .filter_map(|l| {
            let hold = l.hold.as_ref()?;
            Some(api::PausedKey {
                tenant: l.key.tenant.clone(),
                repo: l.key.repo.clone(),
                target: l.key.target.clone(),
                reason: hold.reason.clone(),
                since: hold.since,
                until: hold.until,
                failures: hold.failures,
            })
        })
        .collect()
}

/// The body of `POST /queue/reset`.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct QueueReset {
    /// The intent, or `any` with `clear_lock` for every lease the caller may touch.
    intent_id: String,
    /// A status to set (any case), besides retries back to 0.
    #[schemars(regex(pattern = "(?i)^(ready|validated|queued|merged|rejected)$"))]
    set_status: Option<String>,
    /// Also clear the queue key's lease (fencing its holder).
    #[serde(default)]
    clear_lock: bool,
}

/// `POST /queue/reset`: retries back to 0 (optionally a new status; a REJECTED intent is
/// requeued as READY) and, with `clear_lock`, the queue key's lease cleared. `intent_id: "any"` with `clear_lock` clears every lease the
/// caller's tenant may touch (the runbook's stale-lock recovery).
pub(super) async fn queue_reset(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiJson(body): ApiJson<QueueReset>,
) -> ApiResult {
    let mut cleared = Vec::new();
    if body.intent_id == "any" {
        if !body.clear_lock {
            return Err(ApiError::BadRequest(
                "intent_id \"any\" only makes sense with clear_lock: true".to_owned(),
            ));
        }
        for lease in state.services.store.leases().await? {
            let visible = principal
                .tenant
                .as_deref()
                .is_none_or(|t| t == lease.key.tenant);
            if visible
                && (lease.holder.is_some() || lease.hold.is_some())
                && state.services.store.force_clear_lease(&lease.key).await?
            {
                cleared.push(lease.key.to_string());
            }
        }
        return typed(api::QueueReset {
            cleared_leases: cleared,
            intent_id: "any".to_owned(),
            retries: None,
            status: None,
        });
    }
    let new_status = body
        .set_status
        .as_deref()
        .map(|s| {
            s.to_uppercase()
                .parse::<Status>()
                .map_err(|e| ApiError::BadRequest(format!("set_status: {e}")))
        })
        .transpose()?;
    let decided = decide_about_intent(&state, &principal, &body.intent_id, |intent| {
        let status = intent
            .status
            .reset_to(new_status)
            .map_err(|e| ApiError::Conflict(format!("intent {}: {e}", intent.id)))?;
        // A rejected intent requeued by an operator: recorded as such, with the actor.
        let requeued = intent.status == Status::Rejected;
        let payload = json!({"new_status": status, "retries_reset": true, "previous_retries": intent.retries, "previous_status": intent.status, "requeued": requeued});
        Ok((vec![(EventType::QueueReset, payload)], status))
    })
    .await?;
    let (intent, status) = (decided.intent, decided.answer);
    if body.clear_lock {
        let key = QueueKey::for_intent(&intent);
        if state.services.store.force_clear_lease(&key).await? {
            cleared.push(key.to_string());
        }
    }
    typed(api::QueueReset {
        cleared_leases: cleared,
        intent_id: intent.id,
        retries: Some(0),
        status: Some(status),
    })
}

/// The body of `POST /merge/confirm`.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct MergeConfirm {
    /// The intent (QUEUED or VALIDATED).
    intent_id: String,
    /// The commit it was merged as (default `confirmed-<id prefix>`).
    merged_commit: Option<String>,
}

/// `POST /merge/confirm`: records a merge done outside Converge (QUEUED or VALIDATED only).
pub(super) async fn merge_confirm(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiJson(body): ApiJson<MergeConfirm>,
) -> ApiResult {
    let decided = decide_about_intent(&state, &principal, &body.intent_id, |intent| {
        if !matches!(intent.status, Status::Queued | Status::Validated) {
            return Err(ApiError::Conflict(format!(
                "intent {} is {}, expected QUEUED or VALIDATED",
                intent.id, intent.status
            )));
        }
        let prefix: String = intent.id.chars().take(8).collect();
        let merged_commit = body
            .merged_commit
            .clone()
            .filter(|c| !c.trim().is_empty())
            .unwrap_or_else(|| format!("confirmed-{prefix}"));
        let payload = json!({"merged_commit": merged_commit, "source": intent.source, "target": intent.target, "trigger": "merge_confirm"});
        // Queued with the key: intents that depended on this one may go on now.
        Ok((vec![(EventType::IntentMerged, payload)], merged_commit))
    })
    .await?;
    let (intent, merged_commit) = (decided.intent, decided.answer);
    typed(api::MergeConfirmed {
        intent_id: intent.id,
        merged_commit,
        status: Status::Merged,
    })
}

/// The body of `POST /queue/run`.
#[derive(Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct QueueRun {
    /// Only this target branch's queues.
    target: Option<String>,
    /// Intents worked on per key, 1 to 1,000 (default: the worker's batch size).
    #[schemars(range(min = 1, max = 1000))]
    #[serde(default, deserialize_with = "crate::extract::integral")]
    limit: Option<u32>,
    /// Merge what passes (default: the worker's setting).
    auto_confirm: Option<bool>,
    /// Failed attempts before rejection, 1 to 100 (default: the worker's setting).
    #[schemars(range(min = 1, max = 100))]
    #[serde(default, deserialize_with = "crate::extract::integral")]
    max_retries: Option<u32>,
}

/// `POST /queue/run`: one round now over every queue key with actionable intents or reports
/// waiting that the caller may see (optionally one target), by this instance, with the worker's settings
/// (`limit`, `auto_confirm`, `max_retries` override them for this run). A key another worker
/// is processing is reported busy.
pub(super) async fn queue_run(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    OptionalJson(body): OptionalJson<QueueRun>,
) -> ApiResult {
    use converge_runtime::commands::{self, QueueRunError};
    use converge_runtime::queue_worker::KeyOutcome;
    // Checked before the body's values: a deployment without a repository cannot run the
    // queue, whatever the body asks (a permanent gap, not an outage: 422 naming the setting).
    if state.services.ports.is_empty() {
        return Err(ApiError::NotConfigured(QueueRunError::NoPorts.to_string()));
    }
    let mut settings = state.services.worker.clone();
    if let Some(limit) = body.limit {
        if !(1..=1_000).contains(&limit) {
            return Err(ApiError::BadRequest(format!(
                "limit must be between 1 and 1000, got {limit}"
            )));
        }
        settings.batch_size = limit;
    }
    if let Some(max) = body.max_retries {
        if !(1..=100).contains(&max) {
            return Err(ApiError::BadRequest(format!(
                "max_retries must be between 1 and 100, got {max}"
            )));
        }
        settings.max_retries = Some(max);
    }
    if let Some(auto_confirm) = body.auto_confirm {
        settings.auto_confirm = auto_confirm;
    }
    let rounds = commands::run_queue_now(&state.services, settings, |key| {
        let visible = principal.tenant.as_deref().is_none_or(|t| t == key.tenant);
        let wanted = body.target.as_deref().is_none_or(|t| t == key.target);
        visible && wanted
    })
    .await
    .map_err(|e| match e {
        QueueRunError::NoPorts => ApiError::NotConfigured(e.to_string()),
        // An unreachable database stays a 503, as everywhere.
        QueueRunError::Store(e) => e.into(),
        QueueRunError::Worker(e) => ApiError::Internal(e.to_string()),
    })?;
    let keys = rounds
        .into_iter()
        .map(|(key, outcome)| {
            let busy = outcome == KeyOutcome::Busy;
            let intents = outcome
                .reports()
                .iter()
                .map(|r| api::IntentRound {
                    detail: r.detail.clone(),
                    intent_id: r.intent_id.clone(),
                    outcome: r.outcome,
                })
                .collect();
            api::KeyRound {
                busy,
                intents,
                repo: key.repo,
                target: key.target,
                tenant: key.tenant,
            }
        })
        .collect();
    typed(api::QueueRunAnswer { keys })
}

/// The routes of this resource, for the table.
pub(super) fn routes() -> Vec<Route> {
    vec![
        Route {
            method: "post",
            path: "/queue/run",
            summary: "One queue round now over every key with actionable intents (optionally one target), with the worker's settings; limit, auto_confirm and max_retries override them for this run.",
            role: Role::Operator,
            scope: "queue.write",
            params: &[],
            query: None,
            body: Some(BodySpec::optional::<QueueRun>(
                "Overrides of the worker's settings for this run; or no body.",
            )),
            success: 200,
            conditional: false,
            answer: Answer::Json,
            handler: post(queue_run),
        },
        Route {
            method: "get",
            path: "/queue/state",
            summary: "Actionable intents and counts by status.",
            role: Role::Viewer,
            scope: "queue.read",
            params: &[],
            query: Some(schema_of::<TenantQuery>),
            body: None,
            success: 200,
            conditional: false,
            answer: Answer::Json,
            handler: get(queue_state),
        },
        Route {
            method: "get",
            path: "/queue/summary",
            summary: "Counts by status and pending count.",
            role: Role::Viewer,
            scope: "queue.read",
            params: &[],
            query: Some(schema_of::<TenantQuery>),
            body: None,
            success: 200,
            conditional: false,
            answer: Answer::Json,
            handler: get(queue_summary),
        },
        Route {
            method: "get",
            path: "/queue/inspect",
            summary: "Queue rows for operators.",
            role: Role::Viewer,
            scope: "queue.read",
            params: &[],
            query: Some(schema_of::<InspectQuery>),
            body: None,
            success: 200,
            conditional: false,
            answer: Answer::Json,
            handler: get(queue_inspect),
        },
        Route {
            method: "post",
            path: "/queue/reset",
            summary: "Reset an intent's retries (optionally its status); clear_lock clears its queue lease. intent_id \"any\" with clear_lock clears every visible lease.",
            role: Role::Operator,
            scope: "queue.write",
            params: &[],
            query: None,
            body: Some(BodySpec::of::<QueueReset>(
                "The intent to reset, and what else to do.",
            )),
            success: 200,
            conditional: false,
            answer: Answer::Json,
            handler: post(queue_reset),
        },
        Route {
            method: "post",
            path: "/merge/confirm",
            summary: "Record a merge done outside Converge (QUEUED or VALIDATED intents).",
            role: Role::Operator,
            scope: "queue.write",
            params: &[],
            query: None,
            body: Some(BodySpec::of::<MergeConfirm>(
                "The intent merged outside Converge.",
            )),
            success: 200,
            conditional: false,
            answer: Answer::Json,
            handler: post(merge_confirm),
        },
    ]
}
