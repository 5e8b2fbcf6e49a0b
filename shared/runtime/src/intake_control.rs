//! Intake control as the server runs it: the mode of a tenant (an operator's, or `auto` from
//! health and debt counted in SQL), the decision on each intent created through the API, and
//! setting the mode with the event that records it.

use chrono::{DateTime, Utc};
use converge_core::analytics as core;
use converge_core::intake_mode::{
    self as intake, IntakeDecision, IntakeMode, IntakeSignals, IntakeVerdict,
};
use converge_core::{Event, EventType, Intent};
use converge_store::{Commit, IntakeOverride, IntakeWrite, Store, StoreError};
use serde::Serialize;
use serde_json::json;

use crate::analytics::{AnalyticsError, Today, stamp_of};
use crate::services::Services;

/// The thresholds `auto` uses.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IntakeConfig {
    /// Below this effective score, pause.
    pub pause_threshold: f64,
    /// Below this effective score, throttle.
    pub throttle_threshold: f64,
    /// The share a throttle lets in.
    pub throttle_ratio: f64,
}

/// A tenant's intake now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IntakeStatus {
    /// The mode in force (an operator's, or what `auto` chose).
    pub mode: IntakeMode,
    /// What `auto` would choose now.
    pub auto_mode: IntakeMode,
    /// Whether an operator set the mode.
    pub manual_override: bool,
    /// The operator's setting (the tenant's, else the global one).
    #[serde(rename = "override")]
    pub set: Option<IntakeOverride>,
    /// What `auto` decides from.
    pub signals: IntakeSignals,
    /// Its thresholds.
    pub config: IntakeConfig,
    /// The tenant.
    pub tenant_id: Option<String>,
}

/// The operator's setting for a tenant: its own, else the global one.
async fn override_of(
    store: &Store,
    tenant: Option<&str>,
) -> Result<Option<IntakeOverride>, StoreError> {
    if let Some(tenant) = tenant
        && let Some(own) = store.intake_override(tenant).await?
    {
        return Ok(Some(own));
    }
    store.intake_override("").await
}

async fn signals(
    store: &Store,
    tenant: Option<&str>,
    now: DateTime<Utc>,
) -> Result<IntakeSignals, AnalyticsError> {
    let today = Today::read(store, tenant, now).await?;
    let stamp = stamp_of(tenant, now);
    Ok(intake::signals(
        &today.health(&stamp),
        &today.debt(&stamp),
        today.intents.total,
    ))
}

/// How long one process's creates reuse a tenant's auto intake signals. Counting them reads
/// the day's events and intents of the tenant (a few milliseconds once a day holds thousands),
/// which a create should not pay each time; health and debt measured over 24 hours move little
/// in a second. An operator's mode is read at every create.
pub const SIGNALS_REUSED_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// A tenant's signals: those this process counted less than [`SIGNALS_REUSED_FOR`] ago, or
/// counted now.
async fn recent_signals(
    services: &Services,
    tenant: Option<&str>,
    now: DateTime<Utc>,
) -> Result<IntakeSignals, AnalyticsError> {
    let key = tenant.unwrap_or_default();
    if let Some(kept) = services.kept_intake_signals(key, SIGNALS_REUSED_FOR) {
        return Ok(kept);
    }
    let counted = signals(&services.store, tenant, now).await?;
    services.keep_intake_signals(key.to_owned(), counted.clone(), SIGNALS_REUSED_FOR);
    Ok(counted)
}

fn mode_of(set: Option<&IntakeOverride>) -> Option<IntakeMode> {
    set.and_then(|s| IntakeMode::parse(&s.mode))
        .filter(|m| *m != IntakeMode::Auto)
}

/// A tenant's intake now.
pub async fn status(
    store: &Store,
    tenant: Option<&str>,
    now: DateTime<Utc>,
) -> Result<IntakeStatus, AnalyticsError> {
    let (set, signals) = futures_util::try_join!(
        async { Ok::<_, AnalyticsError>(override_of(store, tenant).await?) },
        signals(store, tenant, now),
    )?;
    Ok(status_of(set, signals, tenant))
}

/// A tenant's intake from health and debt the caller has already counted (the dashboard's
/// overview): only the operator's setting is read.
pub async fn status_given(
    store: &Store,
    tenant: Option<&str>,
    health: &core::RepoHealth,
    debt: &core::VerificationDebt,
    queue_total: u64,
) -> Result<IntakeStatus, AnalyticsError> {
    let set = override_of(store, tenant).await?;
    Ok(status_of(
        set,
        intake::signals(health, debt, queue_total),
        tenant,
    ))
}

fn status_of(
    set: Option<IntakeOverride>,
    signals: IntakeSignals,
    tenant: Option<&str>,
) -> IntakeStatus {
    let manual = mode_of(set.as_ref());
    IntakeStatus {
        mode: manual.unwrap_or(signals.auto_mode),
        auto_mode: signals.auto_mode,
        manual_override: manual.is_some(),
        set,
        signals,
        config: IntakeConfig {
            pause_threshold: intake::PAUSE_BELOW,
            throttle_threshold: intake::THROTTLE_BELOW,
            throttle_ratio: intake::THROTTLE_RATIO,
        },
        tenant_id: tenant.map(str::to_owned),
    }
}

/// The mode in force for a tenant, and whether an operator set it; health and debt are
/// counted (and returned) only when `auto` decides.
pub async fn mode_in_force(
    store: &Store,
    tenant: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(IntakeMode, Option<IntakeSignals>), AnalyticsError> {
    mode_counting_with(store, tenant, || signals(store, tenant, now)).await
}

/// [`mode_in_force`] with the health and debt counted by `count`, when `auto` decides.
async fn mode_counting_with<Counted>(
    store: &Store,
    tenant: Option<&str>,
    count: impl FnOnce() -> Counted,
) -> Result<(IntakeMode, Option<IntakeSignals>), AnalyticsError>
where
    Counted: std::future::Future<Output = Result<IntakeSignals, AnalyticsError>>,
{
    match mode_of(override_of(store, tenant).await?.as_ref()) {
        Some(mode) => Ok((mode, None)),
        None => {
            let signals = count().await?;
            Ok((signals.auto_mode, Some(signals)))
        }
    }
}

/// Decides whether `intent` comes in, with the `intake.accepted|throttled|rejected` event that
/// records it (about the intent, in its tenant). Health and debt are counted only when the mode
/// is `auto`.
pub async fn admit(
    services: &Services,
    actor: &str,
    intent: &Intent,
) -> Result<(IntakeDecision, Event), AnalyticsError> {
    let tenant = intent.tenant_id.as_deref();
    let now = services.clock.now();
    let (mode, signals) = mode_counting_with(&services.store, tenant, || {
        recent_signals(services, tenant, now)
    })
    .await?;
    let decision = intake::decide(mode, intent.risk_level, &intent.id);
    let event_type = match decision.verdict {
        IntakeVerdict::Accepted => EventType::IntakeAccepted,
        IntakeVerdict::Throttled => EventType::IntakeThrottled,
        IntakeVerdict::Rejected => EventType::IntakeRejected,
    };
    let event = crate::commands::api_event(
        services,
        actor,
        event_type,
        Some(&intent.id),
        tenant,
        json!({
            "intent_id": intent.id,
            "mode": decision.mode,
            "verdict": decision.verdict,
            "reason": decision.reason,
            "bucket": decision.bucket,
            "auto": signals.is_some(),
            "signals": signals,
        }),
    );
    Ok((decision, event))
}

/// Sets a tenant's intake mode (`""`: the global one; `auto`: no operator's mode) with the
/// `intake.mode_changed` event, and answers the status that results.
pub async fn set_mode(
    services: &Services,
    actor: &str,
    tenant: &str,
    mode: IntakeMode,
    reason: &str,
) -> Result<IntakeStatus, AnalyticsError> {
    let now = services.clock.now();
    let event_tenant = (!tenant.is_empty()).then_some(tenant);
    let event = crate::commands::api_event(
        services,
        actor,
        EventType::IntakeModeChanged,
        None,
        event_tenant,
        json!({"tenant_id": tenant, "mode": mode, "reason": reason}),
    );
    let set = (mode != IntakeMode::Auto).then(|| IntakeOverride {
        mode: mode.as_str().to_owned(),
        reason: reason.to_owned(),
        set_by: actor.to_owned(),
        set_at: now,
    });
    services
        .store
        .commit(&Commit {
            events: vec![event],
            intake: vec![IntakeWrite {
                tenant: tenant.to_owned(),
                set,
            }],
            ..Commit::default()
        })
        .await?;
    status(&services.store, event_tenant, now).await
}

/// The event recording a refusal, for a commit of its own.
pub fn refusal_commit(event: Event) -> Commit {
    Commit {
        events: vec![event],
        ..Commit::default()
    }
}
