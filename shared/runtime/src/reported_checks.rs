//! The `Checks` port over results CI reported to Converge: the latest `check.reported` event per
//! check name for the intent and the exact head commit. A check never reported for that commit
//! is `Missing` (a push makes earlier results irrelevant).

use converge_core::pipeline::{CheckOutcome, CheckState, Checks, ChecksError};
use converge_core::{EventType, Intent};
use converge_store::{EventFilter, Store};

/// How many reported results of one intent are read (newest first).
const RESULTS_READ: u32 = 1_000;

/// Check results recorded in the store.
#[derive(Debug, Clone)]
pub struct ReportedChecks {
    store: Store,
}

impl ReportedChecks {
    /// Reads results from `store`.
    pub fn new(store: Store) -> ReportedChecks {
        ReportedChecks { store }
    }
}

impl Checks for ReportedChecks {
    async fn outcomes(
        &self,
        intent: &Intent,
        head_sha: &str,
        required: &[String],
    ) -> Result<Vec<CheckOutcome>, ChecksError> {
        let filter = EventFilter {
            intent_id: Some(intent.id.clone()),
            event_type: Some(EventType::CheckReported),
            limit: RESULTS_READ,
            ..EventFilter::default()
        };
        let reported = self
            .store
            .events(&filter)
            .await
            .map_err(|e| ChecksError(e.to_string()))?;
        Ok(required
            .iter()
            .map(|name| {
                // Newest first: the first match is the latest report.
                let latest = reported.iter().map(|e| &e.event.payload).find(|p| {
                    p["name"].as_str() == Some(name.as_str())
                        && p["head_sha"].as_str() == Some(head_sha)
                });
                let state = match latest.and_then(|p| p["state"].as_str()) {
                    Some("passed") => CheckState::Passed,
                    Some("failed") => CheckState::Failed,
                    Some("pending") => CheckState::Pending,
                    _ => CheckState::Missing,
                };
                let details = latest
                    .and_then(|p| p["details"].as_str())
                    .unwrap_or_default()
                    .to_owned();
                CheckOutcome {
                    name: name.clone(),
                    state,
                    details,
                }
            })
            .collect())
    }
}
