//! The decision export, read a page at a time: one record per intent of a tenant (every
//! tenant's when none is given), in queue order (priority, creation, id), each built by
//! `converge_core::export` from the intent's latest risk, simulation and policy events. Memory
//! stays that of one page however many intents and events the store holds.

use converge_core::EventType;
use converge_core::export::{DecisionRecord, decision_record};
use converge_store::{IntentCursor, IntentFilter, Store, StoreError};

/// Intents per page.
pub const PAGE: u32 = 500;

/// Where an export stands between pages.
#[derive(Debug, Clone, Default)]
pub struct ExportCursor {
    after: Option<IntentCursor>,
    done: bool,
}

/// The next page of `tenant`'s records after `cursor` (empty when the export is complete),
/// and the cursor to go on from.
pub async fn next_page(
    store: &Store,
    tenant: Option<&str>,
    cursor: ExportCursor,
) -> Result<(Vec<DecisionRecord>, ExportCursor), StoreError> {
    if cursor.done {
        return Ok((Vec::new(), cursor));
    }
    let intents = store
        .intents(&IntentFilter {
            tenant_id: tenant.map(str::to_owned),
            after: cursor.after,
            limit: PAGE,
            ..IntentFilter::default()
        })
        .await?;
    let ids: Vec<String> = intents.iter().map(|i| i.id.clone()).collect();
    let latest = |event_type| {
        let ids = &ids;
        async move {
            let events = if ids.is_empty() {
                Vec::new()
            } else {
                store.latest_events(event_type, ids).await?
            };
            Ok::<_, StoreError>(
                events
                    .into_iter()
                    .filter_map(|s| Some((s.event.intent_id.clone()?, s.event.payload)))
                    .collect::<std::collections::HashMap<String, serde_json::Value>>(),
            )
        }
    };
    let risk = latest(EventType::RiskEvaluated).await?;
    let simulation = latest(EventType::SimulationCompleted).await?;
    let policy = latest(EventType::PolicyEvaluated).await?;
    let records = intents
        .iter()
        .map(|intent| {
            decision_record(
                intent,
                risk.get(&intent.id),
                simulation.get(&intent.id),
                policy.get(&intent.id),
            )
        })
        .collect();
    let next = ExportCursor {
        done: intents.len() < PAGE as usize,
        after: intents.last().map(IntentCursor::after),
    };
    Ok((records, next))
}
