//! Pre-evaluation of a draft intent (spec §11, "pre-evaluation harness"): before an intent is
//! created, how much it repeats work already waiting and how well it is described. Similarity
//! uses the original's deterministic embedding (`deterministic-v1`: a hash of the intent's
//! canonical text, so only identical descriptions match); the description scores 1 when it
//! says what and where (more than ten characters, a scope, source and target), with a scope
//! missing weighing 0.3 as in the original. The score is the mean of novelty (1 − the
//! highest similarity) and quality; in `enforce` mode a score under 0.5 fails.

use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The embedding's dimension.
pub const DIMENSION: usize = 64;
/// The score under which `enforce` fails a draft.
pub const PASS_FROM: f64 = 0.5;
/// Similarity from which another intent is listed as similar.
pub const SIMILAR_FROM: f64 = 0.7;

/// The parts of an intent its canonical text reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Draft {
    /// Source branch.
    pub source: String,
    /// Target branch.
    pub target: String,
    /// Risk level name.
    pub risk_level: String,
    /// Free-form description (`semantic`).
    pub semantic: Map<String, Value>,
    /// Scope hints (`technical.scope_hint`).
    pub scope: Vec<String>,
    /// Intents it depends on.
    pub dependencies: Vec<String>,
}

impl Draft {
    /// The text that is embedded: the canonical lines without the id and plan.
    pub fn embedded_text(&self) -> String {
        let mut lines = vec![
            format!("source:{}", self.source),
            format!("target:{}", self.target),
            format!("risk:{}", self.risk_level),
        ];
        let mut keys: Vec<&String> = self.semantic.keys().collect();
        keys.sort();
        for key in keys {
            let value = match &self.semantic[key] {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            if !value.is_empty() {
                lines.push(format!("semantic.{key}:{value}"));
            }
        }
        let mut scope = self.scope.clone();
        scope.sort();
        for s in scope {
            lines.push(format!("scope:{s}"));
        }
        let mut deps = self.dependencies.clone();
        deps.sort();
        for d in deps {
            lines.push(format!("dep:{d}"));
        }
        lines.join("\n")
    }

    /// The description: what the change is for, if it says.
    fn description(&self) -> String {
        ["description", "objective", "problem_statement"]
            .iter()
            .find_map(|k| self.semantic.get(*k).and_then(Value::as_str))
            .unwrap_or_default()
            .to_owned()
    }
}

/// The deterministic embedding of `text`: SHA-256 of `text:0`, `text:1`, … read as big-endian
/// 32-bit words mapped to [−1, 1), then scaled to unit length.
pub fn embed(text: &str) -> [f64; DIMENSION] {
    let mut vector = [0.0; DIMENSION];
    let mut filled = 0;
    let mut block = 0;
    while filled < DIMENSION {
        let digest = Sha256::digest(format!("{text}:{block}").as_bytes());
        for word in digest.chunks_exact(4) {
            if filled == DIMENSION {
                break;
            }
            let n = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
            vector[filled] = f64::from(n) / 2_147_483_648.0 - 1.0;
            filled += 1;
        }
        block += 1;
    }
    let norm = vector.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > 0.0 {
        for x in &mut vector {
            *x /= norm;
        }
    }
    vector
}

/// Cosine similarity of two unit vectors.
pub fn similarity(a: &[f64; DIMENSION], b: &[f64; DIMENSION]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// An intent like the draft.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Similar {
    /// The intent.
    pub intent_id: String,
    /// How alike (cosine, 4 places).
    pub similarity: f64,
}

/// What the evaluation measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Signals {
    /// The highest similarity to a waiting intent (0 with none).
    pub max_similarity: f64,
    /// How well the draft is described, 0 to 1.
    pub quality: f64,
    /// Whether the description says more than ten characters.
    pub has_description: bool,
    /// Whether it names a scope.
    pub has_scope: bool,
    /// Whether source and target are given.
    pub has_refs: bool,
    /// Intents compared.
    pub compared: usize,
}

/// The pre-evaluation of a draft.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PreEvaluation {
    /// Mean of novelty and quality, 0 to 1 (4 places).
    pub score: f64,
    /// Whether it passes (always in `shadow`; from 0.5 in `enforce`).
    pub passed: bool,
    /// Waiting intents at least 0.7 alike, most alike first.
    pub similar_intents: Vec<Similar>,
    /// What was measured.
    pub signals: Signals,
    /// What to improve.
    pub recommendations: Vec<String>,
    /// `shadow` or `enforce`.
    pub mode: &'static str,
}

/// Evaluates `draft` against the waiting intents `others` (id and embedded text).
pub fn evaluate(draft: &Draft, others: &[(String, String)], enforce: bool) -> PreEvaluation {
    let mine = embed(&draft.embedded_text());
    let mut similar: Vec<Similar> = others
        .iter()
        .map(|(id, text)| Similar {
            intent_id: id.clone(),
            similarity: crate::numeric::py_round(similarity(&mine, &embed(text)), 4),
        })
        .collect();
    similar.sort_by(|a, b| b.similarity.total_cmp(&a.similarity));
    let max_similarity = similar.first().map_or(0.0, |s| s.similarity.max(0.0));
    similar.retain(|s| s.similarity >= SIMILAR_FROM);
    similar.truncate(10);

    let has_description = draft.description().chars().count() > 10;
    let has_scope = !draft.scope.is_empty();
    let has_refs = !draft.source.trim().is_empty() && !draft.target.trim().is_empty();
    let quality = (f64::from(u8::from(has_description))
        + if has_scope { 1.0 } else { 0.3 }
        + f64::from(u8::from(has_refs)))
        / 3.0;
    let score = crate::numeric::py_round(((1.0 - max_similarity) + quality) / 2.0, 4);
    let mut recommendations = Vec::new();
    if !similar.is_empty() {
        recommendations.push(format!(
            "an intent like this one is already waiting ({}): extend it instead of opening another",
            similar[0].intent_id
        ));
    }
    if !has_description {
        recommendations.push(
            "say what the change is for (semantic.description, more than ten characters)"
                .to_owned(),
        );
    }
    if !has_scope {
        recommendations.push(
            "name the parts it touches (technical.scope_hint) so conflicts can be foreseen"
                .to_owned(),
        );
    }
    if !has_refs {
        recommendations.push("give the source and target branches".to_owned());
    }
    PreEvaluation {
        score,
        passed: !enforce || score >= PASS_FROM,
        similar_intents: similar,
        signals: Signals {
            max_similarity,
            quality: crate::numeric::py_round(quality, 4),
            has_description,
            has_scope,
            has_refs,
            compared: others.len(),
        },
        recommendations,
        mode: if enforce { "enforce" } else { "shadow" },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(description: &str, scope: &[&str]) -> Draft {
        let mut semantic = Map::new();
        semantic.insert("description".into(), Value::from(description));
        Draft {
            source: "feature/a".into(),
            target: "main".into(),
            risk_level: "medium".into(),
            semantic,
            scope: scope.iter().map(|s| (*s).to_owned()).collect(),
            dependencies: Vec::new(),
        }
    }

    #[test]
    fn embeddings_are_unit_vectors_and_only_the_same_text_matches() {
        let a = embed("source:a");
        assert!((similarity(&a, &a) - 1.0).abs() < 1e-12);
        assert!(similarity(&a, &embed("source:b")).abs() < 0.5);
    }

    #[test]
    fn a_repeated_or_vague_draft_scores_low_and_fails_in_enforce_only() {
        let good = draft("retry payments on timeout", &["payments"]);
        let fresh = evaluate(&good, &[("other".into(), "source:x".into())], true);
        assert!(fresh.passed && fresh.score > 0.8, "{fresh:?}");
        assert!(fresh.recommendations.is_empty(), "{fresh:?}");

        let copy = evaluate(&good, &[("twin".into(), good.embedded_text())], true);
        assert_eq!(copy.similar_intents[0].intent_id, "twin");
        assert_eq!(copy.signals.max_similarity, 1.0);
        assert_eq!(copy.score, 0.5, "novelty 0, quality 1: {copy:?}");
        let vague = draft("fix", &[]);
        let vague_copy = evaluate(&vague, &[("twin".into(), vague.embedded_text())], true);
        assert!(
            vague_copy.score < 0.5 && !vague_copy.passed,
            "{vague_copy:?}"
        );

        let vague = evaluate(&draft("fix", &[]), &[], false);
        assert!(vague.passed, "shadow never fails");
        assert_eq!(vague.recommendations.len(), 2, "{vague:?}");
        assert_eq!(vague.mode, "shadow");
    }
}
