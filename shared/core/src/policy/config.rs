//! Policy configuration in the reference's `policy.json` shape, validated on load.
//!
//! ```json
//! {"profiles": {"high": {"entropy_budget": 12.0, "containment_min": 0.7, "checks": ["lint"]}},
//!  "origin_overrides": {"agent": {"_default": {"entropy_budget": 10.0}}},
//!  "queue": {"max_retries": 3, "default_target": "main", "checks_wait_minutes": 120},
//!  "risk": {"max_risk_score": 65.0, "mode": "shadow", "enforce_ratio": 1.0}}
//! ```
//!
//! Two deliberate differences from the reference: a profile given in the file inherits the
//! fields it leaves out from that level's default profile (the reference silently fell back to
//! generic values, so a `high` profile without `checks` required no checks at all), and unknown
//! or ill-typed keys are errors naming the field instead of being ignored. The `queue` and
//! `risk` sections are read and used (the reference loaded and ignored them).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::intent::RiskLevel;

/// A configuration that cannot be used, with the path of the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The text is not JSON.
    #[error("policy config is not valid JSON: {0}")]
    Syntax(String),
    /// A field is missing its expected type or range.
    #[error("{field}: {message}")]
    Invalid {
        /// Dotted path of the field, e.g. `profiles.high.containment_min`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

fn invalid(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// A threshold that remembers whether it was written as an integer, because reasons print it
/// as given (`pass threshold=75`, not `75.0`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    value: f64,
    integral: bool,
}

impl Threshold {
    /// A threshold written as an integer.
    pub const fn int(value: i32) -> Threshold {
        Threshold {
            value: value as f64,
            integral: true,
        }
    }

    /// A threshold written as a float.
    pub const fn float(value: f64) -> Threshold {
        Threshold {
            value,
            integral: false,
        }
    }

    /// The numeric value.
    pub fn value(self) -> f64 {
        self.value
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.integral {
            write!(f, "{}", self.value as i64)
        } else {
            f.write_str(&super::pyfmt::py_float_repr(self.value))
        }
    }
}

/// Limits of the security gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecurityLimits {
    /// Critical findings allowed.
    pub max_critical: u32,
    /// High findings allowed.
    pub max_high: u32,
}

impl Default for SecurityLimits {
    fn default() -> Self {
        SecurityLimits {
            max_critical: 0,
            max_high: 2,
        }
    }
}

/// The thresholds that apply to one risk level.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Highest entropy score allowed.
    pub entropy_budget: f64,
    /// Lowest containment score allowed, in [0, 1].
    pub containment_min: f64,
    /// Blast limit (validated and reported; no gate reads it yet, as in the reference).
    pub blast_limit: f64,
    /// Checks that must pass.
    pub checks: Vec<String>,
    /// Coherence score from which the harness passes outright.
    pub coherence_pass: Threshold,
    /// Coherence score from which the harness passes with a warning; below it the gate fails.
    pub coherence_warn: Threshold,
    /// Security gate limits.
    pub security: SecurityLimits,
}

impl Profile {
    /// The built-in profile of a level (`policy.default.json` of the reference).
    pub fn default_for(level: RiskLevel) -> Profile {
        let checks = |names: &[&str]| names.iter().map(|s| (*s).to_owned()).collect();
        let (entropy_budget, containment_min, blast_limit, checks, pass, warn) = match level {
            RiskLevel::Low => (25.0, 0.3, 50.0, checks(&["lint"]), 75, 60),
            RiskLevel::Medium => (18.0, 0.5, 35.0, checks(&["lint"]), 75, 60),
            RiskLevel::High => (12.0, 0.7, 20.0, checks(&["lint", "unit_tests"]), 80, 65),
            RiskLevel::Critical => (6.0, 0.85, 10.0, checks(&["lint", "unit_tests"]), 85, 70),
        };
        Profile {
            entropy_budget,
            containment_min,
            blast_limit,
            checks,
            coherence_pass: Threshold::int(pass),
            coherence_warn: Threshold::int(warn),
            security: SecurityLimits::default(),
        }
    }

    fn apply(&mut self, patch: &ProfilePatch) {
        if let Some(v) = patch.entropy_budget {
            self.entropy_budget = v;
        }
        if let Some(v) = patch.containment_min {
            self.containment_min = v;
        }
        if let Some(v) = patch.blast_limit {
            self.blast_limit = v;
        }
        if let Some(v) = &patch.checks {
            self.checks = v.clone();
        }
        if let Some(v) = patch.coherence_pass {
            self.coherence_pass = v;
        }
        if let Some(v) = patch.coherence_warn {
            self.coherence_warn = v;
        }
        if let Some(v) = patch.max_critical {
            self.security.max_critical = v;
        }
        if let Some(v) = patch.max_high {
            self.security.max_high = v;
        }
    }

    /// Checks cross-field rules; `field` is the path of the patch that made the profile, and
    /// the error names whichever coherence threshold that patch set.
    fn check_consistent(
        &self,
        field: &str,
        patch: Option<&ProfilePatch>,
    ) -> Result<(), ConfigError> {
        if self.coherence_warn.value() > self.coherence_pass.value() {
            let culprit = match patch {
                Some(p) if p.coherence_warn.is_none() && p.coherence_pass.is_some() => {
                    "coherence_pass"
                }
                _ => "coherence_warn",
            };
            return Err(invalid(
                &format!("{field}.{culprit}"),
                format!(
                    "must be <= coherence_pass ({}), got {}",
                    self.coherence_pass, self.coherence_warn
                ),
            ));
        }
        Ok(())
    }
}

/// Some fields of a profile, as given in the file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProfilePatch {
    /// See [`Profile::entropy_budget`].
    pub entropy_budget: Option<f64>,
    /// See [`Profile::containment_min`].
    pub containment_min: Option<f64>,
    /// See [`Profile::blast_limit`].
    pub blast_limit: Option<f64>,
    /// See [`Profile::checks`].
    pub checks: Option<Vec<String>>,
    /// See [`Profile::coherence_pass`].
    pub coherence_pass: Option<Threshold>,
    /// See [`Profile::coherence_warn`].
    pub coherence_warn: Option<Threshold>,
    /// See [`SecurityLimits::max_critical`] (`security.max_critical` in the file).
    pub max_critical: Option<u32>,
    /// See [`SecurityLimits::max_high`] (`security.max_high` in the file).
    pub max_high: Option<u32>,
}

/// Per-origin adjustments: for each origin type, patches per level and a `_default` patch
/// for the levels not named.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OriginOverrides {
    by_origin: BTreeMap<String, OriginRules>,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct OriginRules {
    by_level: BTreeMap<RiskLevel, ProfilePatch>,
    fallback: Option<ProfilePatch>,
}

/// Queue settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSettings {
    /// Failed attempts after which an intent is rejected.
    pub max_retries: u32,
    /// Target branch when none is given.
    pub default_target: String,
    /// Minutes required checks may stay pending or unreported before that counts as a
    /// failed attempt.
    pub checks_wait_minutes: u32,
    /// Approving pull request reviews an intent from a pull request needs before it merges,
    /// per risk level (`queue.required_approvals`; none by default).
    pub required_approvals: BTreeMap<RiskLevel, u32>,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            max_retries: 3,
            default_target: "main".to_owned(),
            checks_wait_minutes: 120,
            required_approvals: BTreeMap::new(),
        }
    }
}

/// Whether the risk gate only reports or also blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RiskGateMode {
    /// Report breaches, never block.
    Shadow,
    /// Block breaches inside the enforcement group.
    Enforce,
}

impl RiskGateMode {
    /// The stable lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            RiskGateMode::Shadow => "shadow",
            RiskGateMode::Enforce => "enforce",
        }
    }
}

/// Limits and rollout of the risk gate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RiskGateSettings {
    /// Highest risk score allowed.
    pub max_risk_score: f64,
    /// Highest damage score allowed.
    pub max_damage_score: f64,
    /// Highest propagation score allowed.
    pub max_propagation_score: f64,
    /// Shadow or enforce.
    pub mode: RiskGateMode,
    /// Share of intents (by rollout bucket) under enforcement, in [0, 1].
    pub enforce_ratio: f64,
}

impl Default for RiskGateSettings {
    fn default() -> Self {
        RiskGateSettings {
            max_risk_score: 65.0,
            max_damage_score: 60.0,
            max_propagation_score: 55.0,
            mode: RiskGateMode::Shadow,
            enforce_ratio: 1.0,
        }
    }
}

/// The whole policy configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyConfig {
    profiles: BTreeMap<RiskLevel, Profile>,
    origin_overrides: OriginOverrides,
    /// Queue settings.
    pub queue: QueueSettings,
    /// Risk gate settings.
    pub risk: RiskGateSettings,
}

impl PolicyConfig {
    /// Sets the required checks of a risk level's profile (the repository's own
    /// configuration, `crate::repo_config`).
    pub fn set_checks(&mut self, level: RiskLevel, checks: Vec<String>) {
        self.profiles
            .entry(level)
            .or_insert_with(|| Profile::default_for(level))
            .checks = checks;
    }
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            profiles: RiskLevel::ALL
                .into_iter()
                .map(|l| (l, Profile::default_for(l)))
                .collect(),
            origin_overrides: OriginOverrides::default(),
            queue: QueueSettings::default(),
            risk: RiskGateSettings::default(),
        }
    }
}

impl PolicyConfig {
    /// Parses and validates a `policy.json` text.
    pub fn from_json_str(text: &str) -> Result<PolicyConfig, ConfigError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        PolicyConfig::from_json(&value)
    }

    /// Validates a parsed `policy.json` document.
    pub fn from_json(value: &Value) -> Result<PolicyConfig, ConfigError> {
        let root = object(value, "policy")?;
        only_keys(
            root,
            "policy",
            &["profiles", "origin_overrides", "queue", "risk"],
        )?;
        let mut config = PolicyConfig::default();

        if let Some(profiles) = root.get("profiles") {
            for (name, body) in object(profiles, "profiles")? {
                let field = format!("profiles.{name}");
                let level = parse_level(name, &field)?;
                let patch = parse_patch(body, &field)?;
                if let Some(profile) = config.profiles.get_mut(&level) {
                    profile.apply(&patch);
                    profile.check_consistent(&field, Some(&patch))?;
                }
            }
        }
        if let Some(overrides) = root.get("origin_overrides") {
            for (origin, rules) in object(overrides, "origin_overrides")? {
                let field = format!("origin_overrides.{origin}");
                let mut parsed = OriginRules::default();
                for (key, body) in object(rules, &field)? {
                    let field = format!("{field}.{key}");
                    let patch = parse_patch(body, &field)?;
                    if key == "_default" {
                        parsed.fallback = Some(patch);
                    } else {
                        parsed.by_level.insert(parse_level(key, &field)?, patch);
                    }
                }
                config
                    .origin_overrides
                    .by_origin
                    .insert(origin.clone(), parsed);
            }
            for (origin, rules) in &config.origin_overrides.by_origin {
                for level in RiskLevel::ALL {
                    let (key, patch) = match rules.by_level.get(&level) {
                        Some(patch) => (level.as_str(), Some(patch)),
                        None => ("_default", rules.fallback.as_ref()),
                    };
                    config
                        .profile_for(level, Some(origin))
                        .check_consistent(&format!("origin_overrides.{origin}.{key}"), patch)?;
                }
            }
        }
        if let Some(queue) = root.get("queue") {
            let queue = object(queue, "queue")?;
            only_keys(
                queue,
                "queue",
                &[
                    "max_retries",
                    "default_target",
                    "checks_wait_minutes",
                    "required_approvals",
                ],
            )?;
            if let Some(v) = queue.get("required_approvals") {
                for (level, n) in object(v, "queue.required_approvals")? {
                    let field = format!("queue.required_approvals.{level}");
                    let level = parse_level(level, &field)?;
                    let n = match n.as_u64() {
                        Some(n @ 0..=10) => n as u32,
                        _ => {
                            return Err(invalid(
                                &field,
                                format!("must be an integer in [0, 10], got {n}"),
                            ));
                        }
                    };
                    config.queue.required_approvals.insert(level, n);
                }
            }
            if let Some(v) = queue.get("checks_wait_minutes") {
                config.queue.checks_wait_minutes = match v.as_u64() {
                    Some(n @ 1..=10_080) => n as u32,
                    _ => {
                        return Err(invalid(
                            "queue.checks_wait_minutes",
                            format!("must be an integer in [1, 10080] (a week), got {v}"),
                        ));
                    }
                };
            }
            if let Some(v) = queue.get("max_retries") {
                config.queue.max_retries = match v.as_u64() {
                    Some(n @ 1..=1000) => n as u32,
                    _ => {
                        return Err(invalid(
                            "queue.max_retries",
                            format!("must be an integer in [1, 1000], got {v}"),
                        ));
                    }
                };
            }
            if let Some(v) = queue.get("default_target") {
                config.queue.default_target = match v.as_str() {
                    Some(s) if !s.trim().is_empty() => s.to_owned(),
                    _ => {
                        return Err(invalid(
                            "queue.default_target",
                            format!("must be a branch name, got {v}"),
                        ));
                    }
                };
            }
        }
        if let Some(risk) = root.get("risk") {
            apply_risk(&mut config.risk, risk)?;
        }
        Ok(config)
    }

    /// This configuration with a tenant's risk policy (the `risk` section's keys it sets,
    /// as `/v1/risk/policy` stores it) over its risk gate: the tenant's thresholds and mode
    /// decide its intents' risk gate; what the tenant leaves out stays as configured here.
    pub fn with_tenant_risk(&self, tenant_risk: &Value) -> Result<PolicyConfig, ConfigError> {
        let mut config = self.clone();
        apply_risk(&mut config.risk, tenant_risk)?;
        Ok(config)
    }

    /// The profile for a level, with the origin's overrides applied: the level's own patch if
    /// the origin has one, else its `_default` patch.
    pub fn profile_for(&self, level: RiskLevel, origin_type: Option<&str>) -> Profile {
        let mut profile = self
            .profiles
            .get(&level)
            .cloned()
            .unwrap_or_else(|| Profile::default_for(level));
        let rules = origin_type.and_then(|o| self.origin_overrides.by_origin.get(o));
        if let Some(patch) = rules.and_then(|r| r.by_level.get(&level).or(r.fallback.as_ref())) {
            profile.apply(patch);
        }
        profile
    }
}

/// Applies the keys a `risk` section sets over `gate`.
fn apply_risk(gate: &mut RiskGateSettings, risk: &Value) -> Result<(), ConfigError> {
    let risk = object(risk, "risk")?;
    only_keys(
        risk,
        "risk",
        &[
            "max_risk_score",
            "max_damage_score",
            "max_propagation_score",
            "mode",
            "enforce_ratio",
        ],
    )?;
    for (key, slot) in [
        ("max_risk_score", &mut gate.max_risk_score),
        ("max_damage_score", &mut gate.max_damage_score),
        ("max_propagation_score", &mut gate.max_propagation_score),
    ] {
        if let Some(v) = risk.get(key) {
            *slot = number_in(v, &format!("risk.{key}"), 0.0, 100.0)?;
        }
    }
    if let Some(v) = risk.get("mode") {
        gate.mode = match v.as_str() {
            Some("shadow") => RiskGateMode::Shadow,
            Some("enforce") => RiskGateMode::Enforce,
            _ => {
                return Err(invalid(
                    "risk.mode",
                    format!("must be \"shadow\" or \"enforce\", got {v}"),
                ));
            }
        };
    }
    if let Some(v) = risk.get("enforce_ratio") {
        gate.enforce_ratio = number_in(v, "risk.enforce_ratio", 0.0, 1.0)?;
    }
    Ok(())
}

fn object<'a>(value: &'a Value, field: &str) -> Result<&'a Map<String, Value>, ConfigError> {
    value
        .as_object()
        .ok_or_else(|| invalid(field, format!("must be an object, got {value}")))
}

fn only_keys(map: &Map<String, Value>, field: &str, allowed: &[&str]) -> Result<(), ConfigError> {
    match map.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(key) => Err(invalid(
            &format!("{field}.{key}"),
            format!("unknown field; expected one of {}", allowed.join(", ")),
        )),
        None => Ok(()),
    }
}

fn parse_level(name: &str, field: &str) -> Result<RiskLevel, ConfigError> {
    name.parse().map_err(|_| {
        invalid(
            field,
            "unknown risk level; expected low, medium, high or critical",
        )
    })
}

fn number_in(value: &Value, field: &str, min: f64, max: f64) -> Result<f64, ConfigError> {
    match value.as_f64() {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(invalid(
            field,
            format!("must be a number in [{min}, {max}], got {value}"),
        )),
    }
}

fn non_negative(value: &Value, field: &str) -> Result<f64, ConfigError> {
    match value.as_f64() {
        Some(n) if n >= 0.0 && n.is_finite() => Ok(n),
        _ => Err(invalid(
            field,
            format!("must be a number >= 0, got {value}"),
        )),
    }
}

fn threshold(value: &Value, field: &str) -> Result<Threshold, ConfigError> {
    if let Some(n) = value.as_i64().filter(|n| (0..=100).contains(n)) {
        return Ok(Threshold::int(n as i32));
    }
    match value.as_f64() {
        Some(n) if (0.0..=100.0).contains(&n) => Ok(Threshold::float(n)),
        _ => Err(invalid(
            field,
            format!("must be a number in [0, 100], got {value}"),
        )),
    }
}

fn count(value: &Value, field: &str) -> Result<u32, ConfigError> {
    value
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| {
            invalid(
                field,
                format!("must be a non-negative integer, got {value}"),
            )
        })
}

fn parse_patch(value: &Value, field: &str) -> Result<ProfilePatch, ConfigError> {
    let map = object(value, field)?;
    only_keys(
        map,
        field,
        &[
            "entropy_budget",
            "containment_min",
            "blast_limit",
            "checks",
            "coherence_pass",
            "coherence_warn",
            "security",
        ],
    )?;
    let at = |key: &str| format!("{field}.{key}");
    let mut patch = ProfilePatch::default();
    if let Some(v) = map.get("entropy_budget") {
        patch.entropy_budget = Some(non_negative(v, &at("entropy_budget"))?);
    }
    if let Some(v) = map.get("containment_min") {
        patch.containment_min = Some(number_in(v, &at("containment_min"), 0.0, 1.0)?);
    }
    if let Some(v) = map.get("blast_limit") {
        patch.blast_limit = Some(non_negative(v, &at("blast_limit"))?);
    }
    if let Some(v) = map.get("checks") {
        let items = v.as_array().ok_or_else(|| {
            invalid(
                &at("checks"),
                format!("must be a list of check names, got {v}"),
            )
        })?;
        let mut checks = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item.as_str() {
                Some(name) if !name.trim().is_empty() => checks.push(name.to_owned()),
                _ => {
                    return Err(invalid(
                        &format!("{}[{i}]", at("checks")),
                        format!("must be a check name, got {item}"),
                    ));
                }
            }
        }
        patch.checks = Some(checks);
    }
    if let Some(v) = map.get("coherence_pass") {
        patch.coherence_pass = Some(threshold(v, &at("coherence_pass"))?);
    }
    if let Some(v) = map.get("coherence_warn") {
        patch.coherence_warn = Some(threshold(v, &at("coherence_warn"))?);
    }
    if let Some(v) = map.get("security") {
        let field = at("security");
        let security = object(v, &field)?;
        only_keys(security, &field, &["max_critical", "max_high"])?;
        if let Some(v) = security.get("max_critical") {
            patch.max_critical = Some(count(v, &format!("{field}.max_critical"))?);
        }
        if let Some(v) = security.get("max_high") {
            patch.max_high = Some(count(v, &format!("{field}.max_high"))?);
        }
    }
    Ok(patch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(text: &str) -> String {
        match PolicyConfig::from_json_str(text) {
            Err(ConfigError::Invalid { field, .. }) => field,
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn defaults_match_the_reference_table() {
        let config = PolicyConfig::default();
        let high = config.profile_for(RiskLevel::High, None);
        assert_eq!((high.entropy_budget, high.containment_min), (12.0, 0.7));
        assert_eq!(high.checks, vec!["lint", "unit_tests"]);
        assert_eq!(high.coherence_warn.to_string(), "65");
    }

    #[test]
    fn errors_name_the_offending_field() {
        assert_eq!(
            field_of(r#"{"profiles": {"high": {"containment_min": 1.5}}}"#),
            "profiles.high.containment_min"
        );
        assert_eq!(
            field_of(r#"{"profiles": {"urgent": {}}}"#),
            "profiles.urgent"
        );
        assert_eq!(
            field_of(r#"{"profiles": {"low": {"entropy_budgte": 3}}}"#),
            "profiles.low.entropy_budgte"
        );
        assert_eq!(
            field_of(r#"{"profiles": {"low": {"coherence_warn": 90}}}"#),
            "profiles.low.coherence_warn"
        );
        assert_eq!(
            field_of(r#"{"profiles": {"low": {"checks": ["lint", 3]}}}"#),
            "profiles.low.checks[1]"
        );
        assert_eq!(field_of(r#"{"risk": {"mode": "loud"}}"#), "risk.mode");
        assert_eq!(
            field_of(r#"{"queue": {"max_retries": 0}}"#),
            "queue.max_retries"
        );
        assert_eq!(
            field_of(r#"{"queue": {"required_approvals": {"high": 11}}}"#),
            "queue.required_approvals.high"
        );
        assert_eq!(
            field_of(r#"{"queue": {"required_approvals": {"urgent": 1}}}"#),
            "queue.required_approvals.urgent"
        );
        let approvals = PolicyConfig::from_json_str(
            r#"{"queue": {"required_approvals": {"high": 1, "critical": 2}}}"#,
        )
        .unwrap_or_default();
        let rules = crate::queue::QueueRules::from_settings(&approvals.queue, true);
        assert_eq!(
            [
                RiskLevel::Low,
                RiskLevel::Medium,
                RiskLevel::High,
                RiskLevel::Critical
            ]
            .map(|l| rules.required_approvals.at(l)),
            [0, 0, 1, 2]
        );
        assert_eq!(
            field_of(r#"{"origin_overrides": {"agent": {"_default": {"coherence_pass": 10}}}}"#),
            "origin_overrides.agent._default.coherence_pass"
        );
        assert!(matches!(
            PolicyConfig::from_json_str("{"),
            Err(ConfigError::Syntax(_))
        ));
    }

    #[test]
    fn a_tenants_risk_policy_overlays_only_the_keys_it_sets() {
        let deployed = PolicyConfig::from_json_str(
            r#"{"risk": {"max_risk_score": 60, "max_damage_score": 40}}"#,
        )
        .unwrap_or_default();
        let tenant = deployed
            .with_tenant_risk(&serde_json::json!({"mode": "enforce", "max_risk_score": 10}))
            .unwrap_or_default();
        assert_eq!(tenant.risk.mode, RiskGateMode::Enforce);
        assert_eq!(
            (tenant.risk.max_risk_score, tenant.risk.max_damage_score),
            (10.0, 40.0)
        );
        let refused = deployed.with_tenant_risk(&serde_json::json!({"mode": "loud"}));
        assert!(matches!(refused, Err(ConfigError::Invalid { field, .. }) if field == "risk.mode"));
    }

    #[test]
    fn a_partial_security_override_keeps_the_other_limit() {
        let config = PolicyConfig::from_json_str(
            r#"{"profiles": {"high": {"security": {"max_high": 0}}},
                "origin_overrides": {"agent": {"_default": {"security": {"max_critical": 1}}}}}"#,
        );
        let Ok(config) = config else {
            panic!("valid config refused: {config:?}")
        };
        let agent_high = config.profile_for(RiskLevel::High, Some("agent")).security;
        assert_eq!((agent_high.max_critical, agent_high.max_high), (1, 0));
    }

    #[test]
    fn partial_profiles_inherit_and_origin_overrides_apply() {
        let config = PolicyConfig::from_json_str(
            r#"{"profiles": {"high": {"entropy_budget": 30}},
                "origin_overrides": {"agent": {"_default": {"entropy_budget": 5.0}, "critical": {"checks": []}}}}"#,
        );
        let Ok(config) = config else {
            panic!("valid config refused: {config:?}")
        };
        let high = config.profile_for(RiskLevel::High, None);
        assert_eq!((high.entropy_budget, high.checks.len()), (30.0, 2));
        assert_eq!(
            config
                .profile_for(RiskLevel::High, Some("agent"))
                .entropy_budget,
            5.0
        );
        let critical = config.profile_for(RiskLevel::Critical, Some("agent"));
        assert_eq!((critical.entropy_budget, critical.checks.len()), (6.0, 0));
        assert_eq!(
            config
                .profile_for(RiskLevel::High, Some("human"))
                .entropy_budget,
            30.0
        );
    }
}
