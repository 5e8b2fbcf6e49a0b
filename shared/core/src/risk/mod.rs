//! The risk engine: how much a change could hurt, from the shape of what it touches.
//!
//! A change becomes a dependency graph (files, their directories, scope hints, dependencies,
//! the intent and its target, and files coupled by history). From it come four signals
//! (entropic load, contextual value, complexity delta, path dependence), the composite risk,
//! damage and entropy scores, propagation and containment, findings, "bombs" (cascade, spiral,
//! thermal death) and graph metrics. Risk never blocks by itself: policy reads it.
//!
//! Every number matches the reference implementation exactly, rounding included; the operation
//! order below is deliberate (see `numeric`). No function here performs I/O.

mod cycles;
pub mod diagnostics;
pub mod graph;
mod pagerank;
mod path;

use serde::{Deserialize, Serialize};

use crate::intent::RiskLevel;
use crate::numeric::{neumaier_sum, py_round};
use crate::simulation::Simulation;
use graph::{DiGraph, NodeKind};
use rustc_hash::{FxHashMap, FxHashSet};

pub use pagerank::pagerank;

/// Edge weights of the dependency graph.
mod weight {
    /// File → its parent directory.
    pub const CONTAINED_IN: f64 = 0.3;
    /// Between two files of one directory, both ways.
    pub const CO_LOCATED: f64 = 0.2;
    /// Scope hint → a file whose path contains the hint.
    pub const SCOPE_CONTAINS: f64 = 0.5;
    /// Scope hint → any other changed file.
    pub const SCOPE_TOUCHES: f64 = 0.2;
    /// Intent → an intent it depends on.
    pub const DEPENDS_ON: f64 = 0.8;
    /// Intent → its target branch.
    pub const MERGE_TARGET: f64 = 1.0;
    /// Per co-change of a coupled pair, capped at 1.0.
    pub const CO_CHANGE_FACTOR: f64 = 0.1;
}

/// Target branches whose breakage hurts everyone.
pub const CORE_TARGETS: [&str; 5] = ["main", "master", "release", "production", "prod"];
/// Path prefixes of core code (high contention).
pub const CORE_PATHS: [&str; 6] = ["src/", "lib/", "core/", "pkg/", "internal/", "app/"];

/// The most changed files the engine evaluates. Same-folder files are linked pairwise, so the
/// graph grows with the square of a folder's size; GitHub itself lists at most 3,000 files of
/// a pull request. Callers refuse larger changes before evaluating them.
pub const MAX_CHANGED_FILES: usize = 3_000;

/// Cap on cycles counted for path dependence.
const PATH_DEPENDENCE_CYCLE_CAP: usize = 20;
/// Cap on cycles counted for the spiral bomb.
const SPIRAL_CYCLE_CAP: usize = 10;
/// Cycles shown in the spiral bomb, and nodes shown per cycle.
const SPIRAL_CYCLES_SHOWN: usize = 3;
const SPIRAL_NODES_SHOWN: usize = 5;
/// Changed files listed as impact edges.
const IMPACT_FILES_LIMIT: usize = 20;
/// PageRank entries considered for critical files, and entries shown.
const PAGERANK_TOP_N: usize = 10;
const PAGERANK_SHOWN: usize = 5;
/// Trigger nodes shown in the cascade bomb.
const CASCADE_TRIGGERS_SHOWN: usize = 5;
/// A changed file touching more than this many files is a large change.
const LARGE_CHANGE_FILES: usize = 15;
/// Depending on more than this many intents is a dependency spread.
const DEPENDENCY_SPREAD: usize = 3;

/// What the risk engine needs to know about an intent.
#[derive(Debug, Clone, Copy)]
pub struct ChangeSubject<'a> {
    /// The intent's id (a graph node).
    pub intent_id: &'a str,
    /// Source branch.
    pub source: &'a str,
    /// Target branch.
    pub target: &'a str,
    /// Declared risk level (adds a bonus to contextual value).
    pub risk_level: RiskLevel,
    /// Intents this one depends on.
    pub dependencies: &'a [String],
    /// Scope hints given by the author.
    pub scope_hints: &'a [String],
}

/// A pair of files that history shows changing together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CouplingPair {
    /// One file.
    #[serde(default)]
    pub file_a: String,
    /// The other file.
    #[serde(default)]
    pub file_b: String,
    /// Commits that touched both.
    #[serde(default = "one")]
    pub co_changes: u64,
    /// Where the pair comes from (`git-log`, `hybrid`).
    #[serde(default)]
    pub source: String,
}

fn one() -> u64 {
    1
}

/// How severe a finding or bomb is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing.
    Low,
    /// Worth a look.
    Medium,
    /// Worth a reviewer's attention.
    High,
    /// Stop and think.
    Critical,
}

impl Severity {
    /// The stable lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// A named observation about the change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// Stable code, e.g. `semantic.core_target`.
    pub code: String,
    /// How much it matters.
    pub severity: Severity,
    /// Human-readable explanation.
    pub message: String,
}

/// A direct impact of the intent (legacy flat list, kept for its consumers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImpactEdge {
    /// Where the impact starts.
    pub source: String,
    /// What it reaches.
    pub target: String,
    /// `merge_target`, `depends_on`, `touches_scope` or `modifies_file`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Strength of the impact.
    pub weight: f64,
}

/// A structural degradation pattern.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Bomb {
    /// Central files with wide fan-out: a change may cascade.
    Cascade {
        /// Always high.
        severity: Severity,
        /// Summary.
        message: String,
        /// The central files (first five).
        trigger_nodes: Vec<String>,
        /// Nodes reachable from them.
        blast_radius: usize,
    },
    /// Circular dependencies.
    Spiral {
        /// Always medium.
        severity: Severity,
        /// Summary with the number of cycles (at most 10 counted).
        message: String,
        /// Up to three cycles, each cut to five nodes.
        cycles: Vec<Vec<String>>,
    },
    /// Several entropy indicators elevated at once.
    ThermalDeath {
        /// Always critical.
        severity: Severity,
        /// Summary with the indicators' values.
        message: String,
        /// How many of the five indicators are elevated.
        indicators: usize,
    },
}

impl Bomb {
    /// `cascade`, `spiral` or `thermal_death`.
    pub fn kind(&self) -> &'static str {
        match self {
            Bomb::Cascade { .. } => "cascade",
            Bomb::Spiral { .. } => "spiral",
            Bomb::ThermalDeath { .. } => "thermal_death",
        }
    }
}

/// A node and its PageRank (rounded to 4 places).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankedNode {
    /// Node name.
    pub node: String,
    /// Rounded rank.
    pub rank: f64,
}

/// A changed or coupled file among the ten most central nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CriticalFile {
    /// File path.
    pub file: String,
    /// Rounded rank.
    pub pagerank: f64,
}

/// Summary of the dependency graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphMetrics {
    /// Node count.
    pub nodes: usize,
    /// Edge count.
    pub edges: usize,
    /// Highest PageRank (4 places).
    pub pagerank_max: f64,
    /// The five most central nodes, highest first, ties in node order.
    pub pagerank_top: Vec<RankedNode>,
    /// Files among the ten most central nodes (at most five); absent for an empty graph.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critical_files: Option<Vec<CriticalFile>>,
    /// Weakly connected components.
    pub components: usize,
    /// Directed density (4 places).
    pub density: f64,
}

/// The four independent signals, each 0–100 with one decimal.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Signals {
    /// Disorder the change introduces.
    pub entropic_load: f64,
    /// Importance of what it touches.
    pub contextual_value: f64,
    /// Structural complexity it adds.
    pub complexity_delta: f64,
    /// Sensitivity to merge order.
    pub path_dependence: f64,
}

/// The full risk evaluation of a change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RiskEval {
    /// The intent evaluated.
    pub intent_id: String,
    /// Composite risk, 0–100.
    pub risk_score: f64,
    /// Composite damage, 0–100.
    pub damage_score: f64,
    /// Entropy (the entropic load).
    pub entropy_score: f64,
    /// How far the change's effects travel, 0–100.
    pub propagation_score: f64,
    /// How contained the change is, 0–1 (1 = fully contained).
    pub containment_score: f64,
    /// The four signals.
    pub signals: Signals,
    /// Findings, in rule order.
    pub findings: Vec<Finding>,
    /// Direct impacts.
    pub impact_edges: Vec<ImpactEdge>,
    /// Graph summary.
    pub graph_metrics: GraphMetrics,
    /// Bombs, in the order cascade, spiral, thermal death.
    pub bombs: Vec<Bomb>,
}

impl RiskEval {
    /// The level auto-classification assigns to this evaluation.
    pub fn classified_level(&self) -> RiskLevel {
        RiskLevel::from_risk_score(self.risk_score)
    }
}

/// Evaluates the risk of a change. Pure and deterministic (cycle lists aside, which depend only
/// on the input's order).
pub fn evaluate_risk(
    subject: &ChangeSubject<'_>,
    simulation: &Simulation,
    coupling: &[CouplingPair],
) -> RiskEval {
    let graph = build_dependency_graph(subject, simulation, coupling);
    let ranks = pagerank(&graph);
    let components = graph.weakly_connected_components();
    let cycles = if graph.is_acyclic() {
        Vec::new()
    } else {
        cycles::simple_cycles(&graph, PATH_DEPENDENCE_CYCLE_CAP)
    };
    let files = &simulation.files_changed;

    let signals = Signals {
        entropic_load: entropic_load(subject, simulation, components),
        contextual_value: contextual_value(subject, simulation, &graph, &ranks),
        complexity_delta: complexity_delta(subject, &graph),
        path_dependence: path_dependence(subject, simulation, &graph, cycles.len()),
    };
    let impact_edges = impact_edges(subject, files);
    let propagation_score = propagation_score(&graph, &impact_edges);
    let containment_score = containment_score(subject, &impact_edges, components);

    let mut bombs = Vec::new();
    if !graph.is_empty() {
        bombs.extend(cascade_bomb(files.len(), &graph, &ranks));
        bombs.extend(spiral_bomb(&graph, &cycles));
        bombs.extend(thermal_death_bomb(subject, simulation, &graph, components));
    }

    let Signals {
        entropic_load: el,
        contextual_value: cv,
        complexity_delta: cd,
        path_dependence: pd,
    } = signals;
    let risk_score = py_round(el * 0.30 + cv * 0.25 + cd * 0.20 + pd * 0.25, 1).min(100.0);
    let damage_score = py_round(cv * 0.5 + el * 0.3 + pd * 0.2, 1).min(100.0);

    RiskEval {
        intent_id: subject.intent_id.to_owned(),
        risk_score,
        damage_score,
        entropy_score: el,
        propagation_score,
        containment_score,
        signals,
        findings: findings(subject, simulation),
        impact_edges,
        graph_metrics: graph_metrics(&graph, &ranks, components),
        bombs,
    }
}

/// Builds the dependency graph in the reference's node and edge order.
pub fn build_dependency_graph(
    subject: &ChangeSubject<'_>,
    simulation: &Simulation,
    coupling: &[CouplingPair],
) -> DiGraph {
    let mut graph = DiGraph::default();
    let files = &simulation.files_changed;
    let directories: Vec<Option<String>> = files.iter().map(|f| path::directory_of(f)).collect();

    // Files and their directories.
    let mut seen_dirs = FxHashSet::default();
    for (file, parent) in files.iter().zip(&directories) {
        let file_node = graph.add_node(file, NodeKind::File);
        if let Some(parent) = parent {
            if seen_dirs.insert(parent.as_str()) {
                graph.add_node(parent, NodeKind::Directory);
            }
            let parent_node = graph.ensure_node(parent);
            graph.add_edge_between(file_node, parent_node, weight::CONTAINED_IN);
        }
    }

    // Files of one directory are coupled by proximity, both ways.
    let mut by_dir: Vec<Vec<usize>> = Vec::new();
    let mut dir_slot: FxHashMap<&str, usize> = FxHashMap::default();
    for (file, parent) in files.iter().zip(&directories) {
        let dir = parent.as_deref().unwrap_or(".");
        let slot = *dir_slot.entry(dir).or_insert_with(|| {
            by_dir.push(Vec::new());
            by_dir.len() - 1
        });
        if let Some(node) = graph.find(file) {
            by_dir[slot].push(node);
        }
    }
    for nodes in &by_dir {
        for (i, &a) in nodes.iter().enumerate() {
            for &b in &nodes[i + 1..] {
                if !graph.has_edge(a, b) {
                    graph.add_edge_between(a, b, weight::CO_LOCATED);
                }
                if !graph.has_edge(b, a) {
                    graph.add_edge_between(b, a, weight::CO_LOCATED);
                }
            }
        }
    }

    // Scope hints point at every changed file, strongly where the path contains the hint.
    let lowered: Vec<(usize, String)> = files
        .iter()
        .filter_map(|f| graph.find(f).map(|node| (node, f.to_lowercase())))
        .collect();
    for scope in subject.scope_hints {
        let scope_node = graph.add_node(scope, NodeKind::Scope);
        let scope_lower = scope.to_lowercase();
        for (file_node, file_lower) in &lowered {
            let w = if file_lower.contains(&scope_lower) {
                weight::SCOPE_CONTAINS
            } else {
                weight::SCOPE_TOUCHES
            };
            graph.add_edge_between(scope_node, *file_node, w);
        }
    }

    // The intent, its dependencies and its target.
    for dependency in subject.dependencies {
        graph.add_node(dependency, NodeKind::Dependency);
        graph.add_edge(subject.intent_id, dependency, weight::DEPENDS_ON);
    }
    graph.add_node(subject.intent_id, NodeKind::Intent);
    graph.add_edge(subject.intent_id, subject.target, weight::MERGE_TARGET);

    // Files that history couples to a changed file.
    if !coupling.is_empty() {
        let changed: std::collections::HashSet<&str> = files.iter().map(String::as_str).collect();
        for pair in coupling {
            let (a, b) = (pair.file_a.as_str(), pair.file_b.as_str());
            if !(changed.contains(a) || changed.contains(b)) {
                continue;
            }
            let w = (pair.co_changes as f64 * weight::CO_CHANGE_FACTOR).min(1.0);
            for name in [a, b] {
                if !graph.contains(name) {
                    graph.add_node(name, NodeKind::File);
                }
            }
            graph.add_edge(a, b, w);
            graph.add_edge(b, a, w);
        }
    }
    graph
}

/// Signal values are rounded to one decimal and capped at 100 (no lower clamp).
fn clamp_signal(raw: f64) -> f64 {
    py_round(raw, 1).min(100.0)
}

fn core_touches(files: &[String]) -> usize {
    files
        .iter()
        .filter(|f| CORE_PATHS.iter().any(|p| f.starts_with(p)))
        .count()
}

fn entropic_load(subject: &ChangeSubject<'_>, simulation: &Simulation, components: usize) -> f64 {
    let files = &simulation.files_changed;
    let dirs: std::collections::HashSet<String> =
        files.iter().filter_map(|f| path::directory_of(f)).collect();
    let components = components.max(1);
    let raw = files.len() as f64 * 2.0
        + simulation.conflicts.len() as f64 * 15.0
        + subject.dependencies.len() as f64 * 6.0
        + dirs.len() as f64 * 3.0
        + (components - 1) as f64 * 5.0;
    clamp_signal(raw)
}

fn contextual_value(
    subject: &ChangeSubject<'_>,
    simulation: &Simulation,
    graph: &DiGraph,
    ranks: &[f64],
) -> f64 {
    if graph.is_empty() {
        return 0.0;
    }
    let files = &simulation.files_changed;
    let rank_sum = neumaier_sum(
        files
            .iter()
            .map(|f| graph.find(f).map_or(0.0, |node| ranks[node])),
    );
    let expected_per_file = 1.0 / graph.node_count().max(1) as f64;
    let importance = rank_sum / (expected_per_file * files.len().max(1) as f64);
    let core_ratio = core_touches(files) as f64 / files.len().max(1) as f64;
    let target_bonus = if CORE_TARGETS.contains(&subject.target) {
        10.0
    } else {
        0.0
    };
    let level_bonus = match subject.risk_level {
        RiskLevel::Low => 0.0,
        RiskLevel::Medium => 5.0,
        RiskLevel::High => 15.0,
        RiskLevel::Critical => 30.0,
    };
    let raw = (importance * 30.0).min(60.0) + core_ratio * 20.0 + target_bonus + level_bonus;
    clamp_signal(raw)
}

fn complexity_delta(subject: &ChangeSubject<'_>, graph: &DiGraph) -> f64 {
    if graph.is_empty() {
        return 0.0;
    }
    let edge_node_ratio = graph.edge_count() as f64 / graph.node_count().max(1) as f64;
    // Parent folder of every file node, computed once (edges outnumber files tenfold).
    let parents: Vec<Option<String>> = (0..graph.node_count())
        .map(|n| (graph.kind(n) == Some(NodeKind::File)).then(|| path::parent_of(graph.name(n))))
        .collect();
    let cross_dir = graph
        .edges()
        .filter(|&(u, v, _)| match (&parents[u], &parents[v]) {
            (Some(a), Some(b)) => a != b,
            _ => false,
        })
        .count();
    let raw = graph.density() * 40.0
        + (edge_node_ratio * 10.0).min(30.0)
        + cross_dir as f64 * 3.0
        + subject.scope_hints.len() as f64 * 5.0;
    clamp_signal(raw)
}

fn path_dependence(
    subject: &ChangeSubject<'_>,
    simulation: &Simulation,
    graph: &DiGraph,
    cycle_count: usize,
) -> f64 {
    let longest = graph.dag_longest_path_length().unwrap_or(0.0);
    let raw = simulation.conflicts.len() as f64 * 20.0
        + core_touches(&simulation.files_changed) as f64 * 4.0
        + subject.dependencies.len() as f64 * 8.0
        + cycle_count as f64 * 5.0
        + longest * 2.0;
    clamp_signal(raw)
}

fn findings(subject: &ChangeSubject<'_>, simulation: &Simulation) -> Vec<Finding> {
    let mut out = Vec::new();
    let files = simulation.files_changed.len();
    let deps = subject.dependencies.len();
    let conflicts = simulation.conflicts.len();
    let mut push = |code: &str, severity, message: String| {
        out.push(Finding {
            code: code.to_owned(),
            severity,
            message,
        });
    };
    if files > LARGE_CHANGE_FILES {
        push(
            "semantic.large_change",
            Severity::High,
            format!("Change touches {files} files"),
        );
    }
    if deps > DEPENDENCY_SPREAD {
        push(
            "semantic.dependency_spread",
            Severity::Medium,
            format!("Depends on {deps} other intents"),
        );
    }
    if CORE_TARGETS.contains(&subject.target) {
        let target = subject.target;
        push(
            "semantic.core_target",
            Severity::High,
            format!("Targets core branch: {target}"),
        );
    }
    if conflicts > 0 {
        push(
            "semantic.merge_conflict",
            Severity::Critical,
            format!("{conflicts} merge conflict(s) detected"),
        );
    }
    out
}

fn impact_edges(subject: &ChangeSubject<'_>, files: &[String]) -> Vec<ImpactEdge> {
    let edge = |source: &str, target: &str, kind: &str, weight: f64| ImpactEdge {
        source: source.to_owned(),
        target: target.to_owned(),
        kind: kind.to_owned(),
        weight,
    };
    let id = subject.intent_id;
    let mut edges = vec![edge(
        subject.source,
        subject.target,
        "merge_target",
        weight::MERGE_TARGET,
    )];
    edges.extend(
        subject
            .dependencies
            .iter()
            .map(|d| edge(id, d, "depends_on", weight::DEPENDS_ON)),
    );
    edges.extend(
        subject
            .scope_hints
            .iter()
            .map(|s| edge(id, s, "touches_scope", weight::SCOPE_CONTAINS)),
    );
    edges.extend(
        files
            .iter()
            .take(IMPACT_FILES_LIMIT)
            .map(|f| edge(id, f, "modifies_file", weight::CONTAINED_IN)),
    );
    edges
}

fn propagation_score(graph: &DiGraph, edges: &[ImpactEdge]) -> f64 {
    if graph.is_empty() && edges.is_empty() {
        return 0.0;
    }
    let file_nodes: Vec<usize> = (0..graph.node_count())
        .filter(|&n| graph.kind(n) == Some(NodeKind::File))
        .collect();
    let graph_part = if file_nodes.is_empty() {
        0.0
    } else {
        let out_degrees: usize = file_nodes.iter().map(|&n| graph.out_degree(n)).sum();
        (out_degrees as f64 / file_nodes.len() as f64 * 10.0).min(50.0)
    };
    let total_weight = neumaier_sum(edges.iter().map(|e| e.weight));
    let targets: std::collections::HashSet<&str> =
        edges.iter().map(|e| e.target.as_str()).collect();
    let edge_part = (total_weight * 3.0 + targets.len() as f64 * 2.0).min(50.0);
    py_round(graph_part + edge_part, 1).min(100.0)
}

fn containment_score(subject: &ChangeSubject<'_>, edges: &[ImpactEdge], components: usize) -> f64 {
    if components == 0 && edges.is_empty() {
        return 1.0;
    }
    let mut boundary: std::collections::HashSet<&str> =
        edges.iter().map(|e| e.target.as_str()).collect();
    boundary.extend(subject.dependencies.iter().map(String::as_str));
    boundary.extend(subject.scope_hints.iter().map(String::as_str));
    if boundary.is_empty() {
        return 1.0;
    }
    let component_penalty = (components.max(1) - 1) as f64 * 0.03;
    py_round(
        (1.0 - boundary.len() as f64 * 0.05 - component_penalty).max(0.0),
        2,
    )
}

fn graph_metrics(graph: &DiGraph, ranks: &[f64], components: usize) -> GraphMetrics {
    if graph.is_empty() {
        return GraphMetrics {
            nodes: 0,
            edges: 0,
            pagerank_max: 0.0,
            pagerank_top: Vec::new(),
            critical_files: None,
            components: 0,
            density: 0.0,
        };
    }
    // Stable sort: exact ties keep node insertion order, as Python's `sorted` does.
    let mut order: Vec<usize> = (0..graph.node_count()).collect();
    order.sort_by(|&a, &b| ranks[b].total_cmp(&ranks[a]));
    order.truncate(PAGERANK_TOP_N);

    let critical_files = order
        .iter()
        .filter(|&&n| graph.kind(n) == Some(NodeKind::File))
        .take(PAGERANK_SHOWN)
        .map(|&n| CriticalFile {
            file: graph.name(n).to_owned(),
            pagerank: py_round(ranks[n], 4),
        })
        .collect();
    GraphMetrics {
        nodes: graph.node_count(),
        edges: graph.edge_count(),
        pagerank_max: order.first().map_or(0.0, |&n| py_round(ranks[n], 4)),
        pagerank_top: order
            .iter()
            .take(PAGERANK_SHOWN)
            .map(|&n| RankedNode {
                node: graph.name(n).to_owned(),
                rank: py_round(ranks[n], 4),
            })
            .collect(),
        critical_files: Some(critical_files),
        components,
        density: py_round(graph.density(), 4),
    }
}

fn cascade_bomb(files_changed: usize, graph: &DiGraph, ranks: &[f64]) -> Option<Bomb> {
    let threshold = 1.5 / graph.node_count().max(1) as f64;
    let triggers: Vec<usize> = (0..graph.node_count())
        .filter(|&n| graph.kind(n) == Some(NodeKind::File))
        .filter(|&n| ranks[n] > threshold && graph.out_degree(n) >= 3)
        .collect();
    if triggers.is_empty() {
        return None;
    }
    let mut reached = vec![false; graph.node_count()];
    for &n in &triggers {
        graph.mark_descendants(n, &mut reached);
    }
    let blast_radius = reached.iter().filter(|&&r| r).count();
    if (blast_radius as f64) <= files_changed as f64 * 1.5 {
        return None;
    }
    Some(Bomb::Cascade {
        severity: Severity::High,
        message: format!(
            "Change touches {} high-centrality node(s) with potential cascade to {} nodes",
            triggers.len(),
            blast_radius
        ),
        trigger_nodes: triggers
            .iter()
            .take(CASCADE_TRIGGERS_SHOWN)
            .map(|&n| graph.name(n).to_owned())
            .collect(),
        blast_radius,
    })
}

fn spiral_bomb(graph: &DiGraph, cycles: &[Vec<usize>]) -> Option<Bomb> {
    let counted = cycles.len().min(SPIRAL_CYCLE_CAP);
    if counted < 2 {
        return None;
    }
    Some(Bomb::Spiral {
        severity: Severity::Medium,
        message: format!("{counted} circular dependency cycle(s) detected"),
        cycles: cycles
            .iter()
            .take(SPIRAL_CYCLES_SHOWN)
            .map(|c| {
                c.iter()
                    .take(SPIRAL_NODES_SHOWN)
                    .map(|&n| graph.name(n).to_owned())
                    .collect()
            })
            .collect(),
    })
}

fn thermal_death_bomb(
    subject: &ChangeSubject<'_>,
    simulation: &Simulation,
    graph: &DiGraph,
    components: usize,
) -> Option<Bomb> {
    let files = simulation.files_changed.len();
    let conflicts = simulation.conflicts.len();
    let deps = subject.dependencies.len();
    let (nodes, edges) = (graph.node_count(), graph.edge_count());
    let indicators = [
        files > 10,
        conflicts > 0,
        deps > 3,
        components > 3,
        edges > nodes * 2,
    ]
    .into_iter()
    .filter(|&hot| hot)
    .count();
    (indicators >= 3).then(|| Bomb::ThermalDeath {
        severity: Severity::Critical,
        message: format!(
            "{indicators}/5 entropy indicators elevated: files={files}, conflicts={conflicts}, \
             deps={deps}, components={components}, edge_density={edges}/{nodes}"
        ),
        indicators,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    /// The worked example of the reference specification (§3.3).
    #[test]
    fn worked_example_from_the_specification() {
        let scopes = strings(&["auth"]);
        let subject = ChangeSubject {
            intent_id: "i-login",
            source: "feature/login",
            target: "main",
            risk_level: RiskLevel::Medium,
            dependencies: &[],
            scope_hints: &scopes,
        };
        let simulation = Simulation {
            mergeable: true,
            conflicts: vec![],
            files_changed: strings(&["docs/shared.txt", "src/auth/login.py", "src/auth/logout.py"]),
        };
        let eval = evaluate_risk(&subject, &simulation, &[]);
        assert_eq!(eval.signals.entropic_load, 17.0);
        assert_eq!(eval.signals.contextual_value, 58.0);
        assert_eq!(eval.signals.complexity_delta, 22.7);
        assert_eq!(eval.signals.path_dependence, 13.0);
        assert_eq!(eval.risk_score, 27.4);
        assert_eq!(eval.damage_score, 36.7);
        assert_eq!(eval.propagation_score, 33.9);
        assert_eq!(eval.containment_score, 0.72);
        assert_eq!((eval.graph_metrics.nodes, eval.graph_metrics.edges), (8, 9));
        assert_eq!(eval.graph_metrics.density, 0.1607);
        assert!(eval.bombs.is_empty());
        assert_eq!(eval.classified_level(), RiskLevel::Medium);
    }
}
