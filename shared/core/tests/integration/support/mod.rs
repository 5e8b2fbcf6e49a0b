//! In-memory doubles of the pipeline's ports, for tests of the domain only (adapters are
//! tested against real git, a real GitHub fake and a real database).

#![allow(
    dead_code,
    reason = "each test file uses a different subset of the doubles"
)]

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, TimeZone, Utc};
use converge_core::Intent;
use converge_core::pipeline::{
    CheckOutcome, CheckState, Checks, ChecksError, Clock, IdSource, Ports, Scm, ScmError,
    SimulatedMerge, Tips,
};
use converge_core::risk::CouplingPair;
use converge_core::simulation::Simulation;

/// Runs a future whose ports answer immediately (all the doubles here do).
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
    }
}

/// A repository whose merge simulation and history are given.
pub struct FakeScm {
    pub result: Result<SimulatedMerge, ScmError>,
    pub coupling: Vec<CouplingPair>,
}

impl FakeScm {
    pub fn clean(files: &[&str]) -> FakeScm {
        FakeScm {
            result: Ok(SimulatedMerge {
                simulation: Simulation {
                    mergeable: true,
                    conflicts: Vec::new(),
                    files_changed: files.iter().map(|f| (*f).to_owned()).collect(),
                },
                head_sha: "1".repeat(40),
                target_sha: "2".repeat(40),
            }),
            coupling: Vec::new(),
        }
    }

    pub fn conflicting(conflicts: &[&str]) -> FakeScm {
        let mut scm = FakeScm::clean(conflicts);
        if let Ok(merge) = &mut scm.result {
            merge.simulation.mergeable = false;
            merge.simulation.conflicts = conflicts.iter().map(|f| (*f).to_owned()).collect();
        }
        scm
    }
}

impl Scm for FakeScm {
    async fn tips(&self, _intent: &Intent) -> Result<Tips, ScmError> {
        self.result.clone().map(|m| Tips {
            head_sha: m.head_sha,
            target_sha: m.target_sha,
        })
    }

    async fn simulate(&self, _intent: &Intent) -> Result<SimulatedMerge, ScmError> {
        self.result.clone()
    }

    async fn co_changes(
        &self,
        _intent: &Intent,
        _files: &[String],
    ) -> Result<Vec<CouplingPair>, ScmError> {
        Ok(self.coupling.clone())
    }
}

/// CI results by check name; a check not listed was never reported.
#[derive(Default)]
pub struct FakeChecks {
    pub states: HashMap<String, CheckState>,
    pub unavailable: bool,
}

impl FakeChecks {
    pub fn with(states: &[(&str, CheckState)]) -> FakeChecks {
        FakeChecks {
            states: states.iter().map(|(n, s)| ((*n).to_owned(), *s)).collect(),
            unavailable: false,
        }
    }
}

impl Checks for FakeChecks {
    async fn outcomes(
        &self,
        _intent: &Intent,
        _head: &str,
        required: &[String],
    ) -> Result<Vec<CheckOutcome>, ChecksError> {
        if self.unavailable {
            return Err(ChecksError("CI status API down".to_owned()));
        }
        Ok(required
            .iter()
            .filter_map(|name| {
                self.states.get(name).map(|state| CheckOutcome {
                    name: name.clone(),
                    state: *state,
                    details: String::new(),
                })
            })
            .collect())
    }
}

pub struct FixedClock(pub DateTime<Utc>);

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

#[derive(Default)]
pub struct SequentialIds(AtomicU64);

impl IdSource for SequentialIds {
    fn new_id(&self) -> String {
        format!("{:012x}", self.0.fetch_add(1, Ordering::Relaxed))
    }
}

pub fn epoch() -> DateTime<Utc> {
    Utc.timestamp_opt(1_790_000_000, 0)
        .single()
        .unwrap_or_default()
}

pub fn intent(id: &str) -> Intent {
    Intent::new(id, "feature/x", "main", epoch())
}

/// Bundles the doubles for one run.
pub struct World {
    pub scm: FakeScm,
    pub checks: FakeChecks,
    pub clock: FixedClock,
    pub ids: SequentialIds,
}

impl World {
    pub fn new(scm: FakeScm, checks: FakeChecks) -> World {
        World {
            scm,
            checks,
            clock: FixedClock(epoch()),
            ids: SequentialIds::default(),
        }
    }

    pub fn ports(&self) -> Ports<'_, FakeScm, FakeChecks, FixedClock, SequentialIds> {
        Ports {
            scm: &self.scm,
            checks: &self.checks,
            clock: &self.clock,
            ids: &self.ids,
        }
    }
}

/// An event about `intent` at the fixed test time (for steps the queue adds to a decision).
pub fn event_for(
    intent: &Intent,
    event_type: converge_core::EventType,
    payload: serde_json::Value,
    evidence: serde_json::Value,
) -> converge_core::Event {
    converge_core::Event {
        id: format!("step-{}", event_type.as_str()),
        trace_id: "trace-step".into(),
        timestamp: epoch(),
        event_type,
        intent_id: Some(intent.id.clone()),
        agent_id: None,
        tenant_id: intent.tenant_id.clone(),
        payload,
        evidence,
    }
}
