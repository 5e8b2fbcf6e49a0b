//! The Converge domain, pure: what Converge *does*, with no I/O.
//!
//! - [`intake_mode`]: whether a new intent is taken in (open, throttle, pause, or auto by health
//!   and debt);
//! - [`intent`]: intents, their statuses and the legal moves between them;
//! - [`agents`]: agent policies and whether an agent may take an action now;
//! - [`analytics`]: repository and change health, verification debt, compliance, predictions,
//!   integration metrics and calibration, from tallies of the event log (the original's formulas);
//! - [`approvals`]: pull request reviews on the code host as a gate (approvals, changes requested);
//! - [`event`]: the immutable event record and the one registry of event types;
//! - [`export`]: the decision export's record per intent (JSON lines and CSV);
//! - [`comment_command`]: commands in pull request comments (`@converge queue`, …) and their
//!   effect on the pull request's intent;
//! - [`audit`]: the hash chain over each tenant's events, its verification and signed anchors;
//! - [`flags`]: the feature flags the code reads, with their defaults;
//! - [`freeze`]: operators' holds on merges (pauses, spans, weekly windows);
//! - [`risk`]: the dependency graph of a change, PageRank, four signals, composite scores,
//!   findings and bombs — numerically identical to the reference implementation;
//! - [`policy`]: profiles per risk level, origin overrides, the five gates and the risk gate;
//! - [`assessment`]: risk + classification + gates for a change given as data (the
//!   `converge risk eval` / `policy eval` commands and the parity fixtures);
//! - [`pre_evaluation`]: a draft intent judged before it is created (repetition, description);
//! - [`pipeline`]: validation of an intent over the ports it needs (source control, check
//!   outcomes, clock, ids), returning a decision and the events to append;
//! - [`projection`]: the intents table as a fold over events (rebuildable);
//! - [`queue`]: ordering, dependency holds, retries, rejection and revalidation;
//! - [`repo_config`]: the repository's own queue settings (`.github/converge.toml`);
//! - [`review`]: review tasks, their life cycle and SLA, and what holds an intent;
//! - [`train`]: tested merges: candidates (the target plus queued intents) tested in batches and
//!   speculatively, bisected on failure, landed by fast-forward to exactly the tested commit.
//!
//! Nothing here depends on a database, an HTTP stack, an AWS SDK or an async runtime; a CI step
//! (`scripts/check-core-purity.sh`) keeps it that way.

pub mod agents;
pub mod analytics;
pub mod approvals;
pub mod assessment;
pub mod audit;
pub mod comment_command;
pub mod event;
pub mod export;
pub mod flags;
pub mod freeze;
pub mod intake;
pub mod intake_mode;
pub mod intent;
pub mod numeric;
pub mod pipeline;
pub mod policy;
pub mod pre_evaluation;
pub mod projection;
pub mod publication;
pub mod queue;
pub mod repo_config;
pub mod review;
pub mod risk;
pub mod simulation;
pub mod train;

pub use assessment::{Assessment, AssessmentInput, assess};
pub use event::{Event, EventType};
pub use intent::{Intent, RiskLevel, Status, TransitionError};
pub use pipeline::{Decision, Outcome};
pub use policy::PolicyConfig;
pub use risk::{RiskEval, evaluate_risk};
pub use simulation::Simulation;
