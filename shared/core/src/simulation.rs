//! The result of simulating a merge of an intent's source onto the current target tip.

use serde::{Deserialize, Serialize};

/// What a merge of `source` into the current `target` would do.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Simulation {
    /// Whether the merge applies without conflicts.
    pub mergeable: bool,
    /// Paths that conflict, sorted; empty when mergeable.
    #[serde(default)]
    pub conflicts: Vec<String>,
    /// Paths the change touches, measured from the merge base (not a diff of the two tips,
    /// which would count the target's own later changes as the intent's).
    #[serde(default)]
    pub files_changed: Vec<String>,
}

/// How many conflicting paths a block reason names.
pub const CONFLICTS_SHOWN: usize = 5;

impl Simulation {
    /// The block reason for an unmergeable simulation: `Merge conflicts: a, b, …` (first five).
    pub fn conflict_reason(&self) -> String {
        let shown: Vec<&str> = self
            .conflicts
            .iter()
            .take(CONFLICTS_SHOWN)
            .map(String::as_str)
            .collect();
        format!("Merge conflicts: {}", shown.join(", "))
    }
}
