//! The decision export: one flat record per intent, from the intent and the payloads of its
//! latest `risk.evaluated`, `simulation.completed` and `policy.evaluated` events, in the
//! original's shape (spec §10; `fixtures/analytics/README.md`, "export_decisions"): the same
//! fields in the same order, `null` where the source is missing.

use serde::Serialize;
use serde_json::Value;

use crate::Intent;

/// One intent's record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecisionRecord {
    /// The intent.
    pub intent_id: String,
    /// Its source branch.
    pub source: String,
    /// Its target branch.
    pub target: String,
    /// Its status.
    pub status: String,
    /// Its risk level.
    pub risk_level: String,
    /// Its priority (1 first).
    pub priority: i64,
    /// Failed attempts so far.
    pub retries: i64,
    /// Its tenant.
    pub tenant_id: Option<String>,
    /// When it was created.
    pub created_at: Value,
    /// Whether the latest simulation merged cleanly.
    pub mergeable: Value,
    /// Files in conflict in the latest simulation.
    pub conflict_count: usize,
    /// Files the latest simulation changed.
    pub files_changed_count: usize,
    /// Latest composite risk.
    pub risk_score: Value,
    /// Latest composite damage.
    pub damage_score: Value,
    /// Latest entropy.
    pub entropy_score: Value,
    /// Latest propagation.
    pub propagation_score: Value,
    /// Latest containment.
    pub containment_score: Value,
    /// Latest entropic load signal.
    pub entropic_load: Value,
    /// Latest contextual value signal.
    pub contextual_value: Value,
    /// Latest complexity delta signal.
    pub complexity_delta: Value,
    /// Latest path dependence signal.
    pub path_dependence: Value,
    /// How many bombs the latest evaluation found.
    pub bomb_count: usize,
    /// Their types.
    pub bomb_types: Vec<Value>,
    /// The latest policy verdict.
    pub policy_verdict: Value,
    /// The profile it used.
    pub policy_profile: Value,
    /// Nodes of the latest dependency graph.
    pub graph_nodes: Value,
    /// Its edges.
    pub graph_edges: Value,
    /// Its directed density.
    pub graph_density: Value,
}

/// The CSV header: the record's fields, in order.
pub const CSV_COLUMNS: [&str; 28] = [
    "intent_id",
    "source",
    "target",
    "status",
    "risk_level",
    "priority",
    "retries",
    "tenant_id",
    "created_at",
    "mergeable",
    "conflict_count",
    "files_changed_count",
    "risk_score",
    "damage_score",
    "entropy_score",
    "propagation_score",
    "containment_score",
    "entropic_load",
    "contextual_value",
    "complexity_delta",
    "path_dependence",
    "bomb_count",
    "bomb_types",
    "policy_verdict",
    "policy_profile",
    "graph_nodes",
    "graph_edges",
    "graph_density",
];

/// What a record takes from the intent itself.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordHead {
    /// The intent.
    pub intent_id: String,
    /// Its source branch.
    pub source: String,
    /// Its target branch.
    pub target: String,
    /// Its status.
    pub status: String,
    /// Its risk level.
    pub risk_level: String,
    /// Its priority.
    pub priority: i64,
    /// Failed attempts so far.
    pub retries: i64,
    /// Its tenant.
    pub tenant_id: Option<String>,
    /// When it was created, as the record prints it.
    pub created_at: Value,
}

impl RecordHead {
    /// The head of `intent`'s record.
    pub fn of(intent: &Intent) -> RecordHead {
        RecordHead {
            intent_id: intent.id.clone(),
            source: intent.source.clone(),
            target: intent.target.clone(),
            status: intent.status.as_str().to_owned(),
            risk_level: intent.risk_level.as_str().to_owned(),
            priority: intent.priority,
            retries: i64::from(intent.retries),
            tenant_id: intent.tenant_id.clone(),
            created_at: serde_json::to_value(intent.created_at).unwrap_or(Value::Null),
        }
    }
}

/// The record of `intent`, given the payloads of its latest risk evaluation, merge simulation
/// and policy evaluation (each `None` when it has none).
pub fn decision_record(
    intent: &Intent,
    risk: Option<&Value>,
    simulation: Option<&Value>,
    policy: Option<&Value>,
) -> DecisionRecord {
    record_of(RecordHead::of(intent), risk, simulation, policy)
}

/// The record of an intent given as its head, with the payloads of its latest evaluations.
pub fn record_of(
    head: RecordHead,
    risk: Option<&Value>,
    simulation: Option<&Value>,
    policy: Option<&Value>,
) -> DecisionRecord {
    let field = |source: Option<&Value>, key: &str| -> Value {
        source
            .and_then(|s| s.get(key))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let nested = |source: Option<&Value>, outer: &str, key: &str| -> Value {
        source
            .and_then(|s| s.get(outer))
            .and_then(|o| o.get(key))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let count = |source: Option<&Value>, key: &str| -> usize {
        source
            .and_then(|s| s.get(key))
            .and_then(Value::as_array)
            .map_or(0, Vec::len)
    };
    let bombs: Vec<Value> = risk
        .and_then(|r| r.get("bombs"))
        .and_then(Value::as_array)
        .map(|bombs| {
            bombs
                .iter()
                .map(|b| b.get("type").cloned().unwrap_or(Value::Null))
                .collect()
        })
        .unwrap_or_default();
    DecisionRecord {
        intent_id: head.intent_id,
        source: head.source,
        target: head.target,
        status: head.status,
        risk_level: head.risk_level,
        priority: head.priority,
        retries: head.retries,
        tenant_id: head.tenant_id,
        created_at: head.created_at,
        mergeable: field(simulation, "mergeable"),
        conflict_count: count(simulation, "conflicts"),
        files_changed_count: count(simulation, "files_changed"),
        risk_score: field(risk, "risk_score"),
        damage_score: field(risk, "damage_score"),
        entropy_score: field(risk, "entropy_score"),
        propagation_score: field(risk, "propagation_score"),
        containment_score: field(risk, "containment_score"),
        entropic_load: nested(risk, "signals", "entropic_load"),
        contextual_value: nested(risk, "signals", "contextual_value"),
        complexity_delta: nested(risk, "signals", "complexity_delta"),
        path_dependence: nested(risk, "signals", "path_dependence"),
        bomb_count: bombs.len(),
        bomb_types: bombs,
        policy_verdict: field(policy, "verdict"),
        policy_profile: field(policy, "profile_used"),
        graph_nodes: nested(risk, "graph_metrics", "nodes"),
        graph_edges: nested(risk, "graph_metrics", "edges"),
        graph_density: nested(risk, "graph_metrics", "density"),
    }
}

impl DecisionRecord {
    /// The record as one CSV line (RFC 4180 quoting, `\r\n` ended), in [`CSV_COLUMNS`] order:
    /// `bomb_types` joined by commas, a missing value empty, booleans `True`/`False` as the
    /// original's Python writer printed them.
    pub fn csv_line(&self) -> String {
        let cells: Vec<String> = [
            Value::from(self.intent_id.clone()),
            Value::from(self.source.clone()),
            Value::from(self.target.clone()),
            Value::from(self.status.clone()),
            Value::from(self.risk_level.clone()),
            Value::from(self.priority),
            Value::from(self.retries),
            self.tenant_id.clone().map_or(Value::Null, Value::from),
            self.created_at.clone(),
            self.mergeable.clone(),
            Value::from(self.conflict_count),
            Value::from(self.files_changed_count),
            self.risk_score.clone(),
            self.damage_score.clone(),
            self.entropy_score.clone(),
            self.propagation_score.clone(),
            self.containment_score.clone(),
            self.entropic_load.clone(),
            self.contextual_value.clone(),
            self.complexity_delta.clone(),
            self.path_dependence.clone(),
            Value::from(self.bomb_count),
            Value::from(
                self.bomb_types
                    .iter()
                    .map(csv_text)
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            self.policy_verdict.clone(),
            self.policy_profile.clone(),
            self.graph_nodes.clone(),
            self.graph_edges.clone(),
            self.graph_density.clone(),
        ]
        .iter()
        .map(|v| csv_quote(&csv_text(v)))
        .collect();
        let mut line = cells.join(",");
        line.push_str("\r\n");
        line
    }
}

/// The CSV header line.
pub fn csv_header() -> String {
    let mut line = CSV_COLUMNS.join(",");
    line.push_str("\r\n");
    line
}

fn csv_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::Bool(true) => "True".to_owned(),
        Value::Bool(false) => "False".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn csv_quote(text: &str) -> String {
    if text.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn intent() -> Intent {
        serde_json::from_value(json!({
            "id": "acme/app:pr-7", "source": "feature, \"quoted\"", "target": "main",
            "status": "VALIDATED", "created_at": "2026-12-01T10:00:00Z", "created_by": "api",
            "risk_level": "high", "priority": 2, "semantic": {}, "technical": {},
            "checks_required": [], "dependencies": [], "retries": 1, "tenant_id": "acme",
            "plan_id": null, "origin_type": "api"
        }))
        .unwrap()
    }

    #[test]
    fn a_record_takes_each_field_from_where_the_original_did_in_its_order() {
        let risk = json!({"risk_score": 41.5, "damage_score": 12.0, "entropy_score": 7.25,
            "propagation_score": 30.0, "containment_score": 0.8,
            "signals": {"entropic_load": 1.5, "contextual_value": 2.0, "complexity_delta": 3.0, "path_dependence": 4.0},
            "bombs": [{"type": "cascade"}, {"type": "spiral"}],
            "graph_metrics": {"nodes": 8, "edges": 9, "density": 0.1607}});
        let simulation =
            json!({"mergeable": true, "conflicts": [], "files_changed": ["a.rs", "b.rs"]});
        let policy = json!({"verdict": "ALLOW", "profile_used": "high"});
        let record = decision_record(&intent(), Some(&risk), Some(&simulation), Some(&policy));
        let text = serde_json::to_string(&record).unwrap();
        let keys: Vec<String> = serde_json::from_str::<serde_json::Map<String, Value>>(&text)
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(keys.len(), CSV_COLUMNS.len());
        // The JSON line keeps the documented order (serde writes fields in declaration order).
        let positions: Vec<usize> = CSV_COLUMNS
            .iter()
            .map(|c| text.find(&format!("\"{c}\":")).unwrap())
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert_eq!(record.bomb_count, 2);
        assert_eq!(record.files_changed_count, 2);
        assert_eq!(record.graph_nodes, json!(8));
        assert_eq!(record.policy_profile, json!("high"));
        assert_eq!(
            record.csv_line(),
            "acme/app:pr-7,\"feature, \"\"quoted\"\"\",main,VALIDATED,high,2,1,acme,2026-12-01T10:00:00Z,True,0,2,41.5,12.0,7.25,30.0,0.8,1.5,2.0,3.0,4.0,2,\"cascade,spiral\",ALLOW,high,8,9,0.1607\r\n"
        );
    }

    #[test]
    fn an_intent_without_evaluations_exports_nulls_and_zero_counts() {
        let record = decision_record(&intent(), None, None, None);
        assert_eq!(record.mergeable, Value::Null);
        assert_eq!((record.conflict_count, record.bomb_count), (0, 0));
        assert_eq!(record.risk_score, Value::Null);
        assert_eq!(record.graph_density, Value::Null);
        let line = record.csv_line();
        assert_eq!(
            line.matches(',').count(),
            CSV_COLUMNS.len() - 1 + 1,
            "{line}"
        );
        assert_eq!(csv_header().split(',').count(), CSV_COLUMNS.len());
    }
}
