//! The repository's own queue configuration: `.github/converge.toml` on the target branch.
//!
//! ```toml
//! mode = "tested"            # head (the default) or tested
//! merge_method = "merge"     # merge, squash or rebase (squash and rebase: tested mode)
//! batch_size = 8             # 1 to 64
//! depth = 3                  # 1 to 16
//! flaky_reruns = 1           # 0 to 3
//! known_flaky = ["e2e"]      # reported, never blocking
//!
//! [required_checks]          # per risk level: low, medium, high, critical
//! high = ["lint", "unit_tests"]
//!
//! [required_approvals]       # approving reviews per risk level
//! critical = 2
//! ```
//!
//! Everything is optional: what the file leaves out keeps the deployment's setting
//! (environment and policy file). A file that does not read or holds a value out of range is
//! refused whole, naming its line and field ([`RepoConfigError`]); the caller keeps the last
//! valid one in force.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::RiskLevel;
use crate::policy::PolicyConfig;
use crate::train::{MergeMethod, MergeMode, TrainSettings};

/// Where the file lives in the repository.
pub const PATH: &str = ".github/converge.toml";

/// The most bytes read of the file.
pub const MAX_BYTES: usize = 64 * 1024;

/// The repository's settings, as the file gives them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    /// How queued intents land.
    pub mode: Option<MergeMode>,
    /// How an intent is written onto the target.
    pub merge_method: Option<MergeMethod>,
    /// Most intents per candidate.
    pub batch_size: Option<toml::Spanned<u64>>,
    /// Candidates tested at once.
    pub depth: Option<toml::Spanned<u64>>,
    /// Re-runs of a failed candidate before its failure counts.
    pub flaky_reruns: Option<toml::Spanned<u64>>,
    /// Checks reported but never blocking.
    pub known_flaky: Option<Vec<String>>,
    /// Required checks per risk level.
    #[serde(default)]
    pub required_checks: BTreeMap<RiskLevel, Vec<String>>,
    /// Approving reviews needed per risk level.
    #[serde(default)]
    pub required_approvals: BTreeMap<RiskLevel, toml::Spanned<u64>>,
}

/// Why the file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{PATH}, line {line}, {field}: {message}")]
pub struct RepoConfigError {
    /// 1-based line of the problem.
    pub line: usize,
    /// The field (`batch_size`, `required_checks.high`), or `file` for the whole.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// Reads and checks the file's text.
pub fn parse(text: &str) -> Result<RepoConfig, RepoConfigError> {
    if text.len() > MAX_BYTES {
        return Err(RepoConfigError {
            line: 1,
            field: "file".to_owned(),
            message: format!("is {} bytes; at most {MAX_BYTES} are read", text.len()),
        });
    }
    let config: RepoConfig = toml::from_str(text).map_err(|e| {
        let at = e.span().map_or(0, |s| s.start);
        RepoConfigError {
            line: line_of(text, at),
            field: field_at(text, at),
            message: e.message().trim().to_owned(),
        }
    })?;
    let bounded = |field: &str, value: &Option<toml::Spanned<u64>>, low: u64, high: u64| match value
    {
        Some(v) if !(low..=high).contains(v.get_ref()) => Err(RepoConfigError {
            line: line_of(text, v.span().start),
            field: field.to_owned(),
            message: format!("must be from {low} to {high}, got {}", v.get_ref()),
        }),
        _ => Ok(()),
    };
    bounded("batch_size", &config.batch_size, 1, 64)?;
    bounded("depth", &config.depth, 1, 16)?;
    bounded("flaky_reruns", &config.flaky_reruns, 0, 3)?;
    for (level, count) in &config.required_approvals {
        bounded(
            &format!("required_approvals.{}", level.as_str()),
            &Some(count.clone()),
            0,
            10,
        )?;
    }
    let mode = config.mode.unwrap_or_default();
    let method = config.merge_method.unwrap_or_default();
    if mode == MergeMode::Head && method != MergeMethod::Merge {
        return Err(RepoConfigError {
            line: key_line(text, "merge_method"),
            field: "merge_method".to_owned(),
            message: "squash and rebase need mode = \"tested\" (head mode writes merge commits)"
                .to_owned(),
        });
    }
    Ok(config)
}

impl RepoConfig {
    /// Applies what the file sets over the deployment's settings.
    pub fn apply(
        &self,
        mode: &mut MergeMode,
        method: &mut MergeMethod,
        train: &mut TrainSettings,
        policy: &mut PolicyConfig,
    ) {
        if let Some(m) = self.mode {
            *mode = m;
        }
        if let Some(m) = self.merge_method {
            *method = m;
        }
        let count = |v: &Option<toml::Spanned<u64>>| v.as_ref().map(|v| *v.get_ref());
        if let Some(n) = count(&self.batch_size) {
            train.batch_size = usize::try_from(n).unwrap_or(1);
        }
        if let Some(n) = count(&self.depth) {
            train.depth = usize::try_from(n).unwrap_or(1);
        }
        if let Some(n) = count(&self.flaky_reruns) {
            train.flaky_reruns = u32::try_from(n).unwrap_or(0);
        }
        if let Some(names) = &self.known_flaky {
            train.known_flaky = names.iter().cloned().collect();
        }
        for (level, checks) in &self.required_checks {
            policy.set_checks(*level, checks.clone());
        }
        for (level, n) in &self.required_approvals {
            policy
                .queue
                .required_approvals
                .insert(*level, u32::try_from(*n.get_ref()).unwrap_or(0));
        }
    }
}

/// The 1-based line holding byte `at`.
fn line_of(text: &str, at: usize) -> usize {
    text.get(..at.min(text.len()))
        .map_or(1, |before| before.matches('\n').count() + 1)
}

/// The key of the line holding byte `at` (`section.key`), or the section of a header line.
fn field_at(text: &str, at: usize) -> String {
    let line_start = text
        .get(..at.min(text.len()))
        .and_then(|before| before.rfind('\n').map(|n| n + 1))
        .unwrap_or(0);
    let section = text
        .get(..line_start)
        .and_then(|before| {
            before
                .lines()
                .rev()
                .map(str::trim)
                .find(|l| l.starts_with('[') && l.ends_with(']'))
                .map(|l| l.trim_matches(['[', ']']).trim().to_owned())
        })
        .unwrap_or_default();
    let line = text
        .get(line_start..)
        .and_then(|rest| rest.lines().next())
        .unwrap_or_default()
        .trim();
    if line.starts_with('[') {
        return line.trim_matches(['[', ']']).trim().to_owned();
    }
    let key = line
        .split('=')
        .next()
        .unwrap_or_default()
        .trim()
        .trim_matches('"');
    match (section.is_empty(), key.is_empty()) {
        (_, true) => "file".to_owned(),
        (true, false) => key.to_owned(),
        (false, false) => format!("{section}.{key}"),
    }
}

/// The line where a top-level key is set (1 if it is not found).
fn key_line(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            l.trim_start()
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map_or(1, |n| n + 1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn a_full_file_applies_over_the_deployment() {
        let text = r#"
mode = "tested"
merge_method = "squash"
batch_size = 4
depth = 2
flaky_reruns = 0
known_flaky = ["e2e"]

[required_checks]
high = ["lint", "unit_tests", "e2e"]

[required_approvals]
critical = 2
"#;
        let config = parse(text).unwrap();
        let (mut mode, mut method) = (MergeMode::Head, MergeMethod::Merge);
        let mut train = TrainSettings::default();
        let mut policy = PolicyConfig::default();
        config.apply(&mut mode, &mut method, &mut train, &mut policy);
        assert_eq!(mode, MergeMode::Tested);
        assert_eq!(method, MergeMethod::Squash);
        assert_eq!(
            (train.batch_size, train.depth, train.flaky_reruns),
            (4, 2, 0)
        );
        assert!(train.known_flaky.contains("e2e"));
        assert_eq!(
            policy.profile_for(RiskLevel::High, None).checks,
            ["lint", "unit_tests", "e2e"]
        );
        assert_eq!(
            policy.queue.required_approvals.get(&RiskLevel::Critical),
            Some(&2)
        );
        // What the file leaves out keeps the deployment's.
        assert_eq!(policy.profile_for(RiskLevel::Low, None).checks, ["lint"]);
    }

    #[test]
    fn an_empty_file_changes_nothing() {
        let config = parse("# nothing yet\n").unwrap();
        assert_eq!(config, RepoConfig::default());
    }

    #[test]
    fn errors_name_their_line_and_field() {
        let cases = [
            (
                "mode = \"tested\"\nbatch_size = 100\n",
                2,
                "batch_size",
                "from 1 to 64",
            ),
            ("depth = \"two\"\n", 1, "depth", "invalid type"),
            ("\n\nspeed = 3\n", 3, "speed", "unknown field"),
            (
                "[required_checks]\nhigh = \"lint\"\n",
                2,
                "required_checks.high",
                "invalid type",
            ),
            (
                "[required_checks]\nurgent = [\"lint\"]\n",
                2,
                "required_checks.urgent",
                "unknown variant",
            ),
            (
                "mode = \"head\"\nmerge_method = \"rebase\"\n",
                2,
                "merge_method",
                "tested",
            ),
            ("mode = \"fast\"\n", 1, "mode", "unknown variant"),
            (
                "batch_size = 4\nbatch_size = 5\n",
                2,
                "batch_size",
                "duplicate",
            ),
            (
                "[required_approvals]\nhigh = 11\n",
                2,
                "required_approvals.high",
                "from 0 to 10",
            ),
            ("mode = \n", 1, "mode", ""),
        ];
        for (text, line, field, message) in cases {
            let error = parse(text).expect_err(text);
            assert_eq!(error.line, line, "{text:?}: {error}");
            assert_eq!(error.field, field, "{text:?}: {error}");
            assert!(error.message.contains(message), "{text:?}: {error}");
            assert!(error.to_string().starts_with(".github/converge.toml, line"));
        }
    }
}
