//! The dependency graph of a change and the graph algorithms the risk engine needs.
//!
//! Semantics follow a networkx `DiGraph`: nodes keep their insertion order, at most one edge
//! per ordered pair (adding it again overwrites its weight but keeps its place), self-loops are
//! ordinary edges, and setting a node's kind again overwrites the previous kind. Insertion order
//! is observable: it breaks PageRank ties in the reported lists.

use rustc_hash::FxHashMap;

/// What a node of the dependency graph stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// A changed file, or a file coupled to one by history.
    File,
    /// The parent directory of a changed file.
    Directory,
    /// A scope hint of the intent.
    Scope,
    /// An intent this one depends on.
    Dependency,
    /// The intent itself.
    Intent,
}

/// Index of a node in insertion order.
pub type NodeIndex = usize;

/// A directed graph with insertion-ordered nodes and weighted edges.
#[derive(Debug, Default, Clone)]
pub struct DiGraph {
    names: Vec<String>,
    kinds: Vec<Option<NodeKind>>,
    index: FxHashMap<String, NodeIndex>,
    /// Successors of each node in edge insertion order, with the edge weight.
    successors: Vec<Vec<(NodeIndex, f64)>>,
    /// Position of each edge in its source's successor list, for O(1) lookups.
    edge_slots: FxHashMap<(NodeIndex, NodeIndex), usize>,
}

impl DiGraph {
    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.names.len()
    }

    /// Number of edges (self-loops included).
    pub fn edge_count(&self) -> usize {
        self.edge_slots.len()
    }

    /// Whether the graph has no node.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The node's name.
    pub fn name(&self, node: NodeIndex) -> &str {
        &self.names[node]
    }

    /// The node's kind; `None` for a node created only as an edge end (the merge target).
    pub fn kind(&self, node: NodeIndex) -> Option<NodeKind> {
        self.kinds[node]
    }

    /// Looks a node up by name.
    pub fn find(&self, name: &str) -> Option<NodeIndex> {
        self.index.get(name).copied()
    }

    /// Whether a node of that name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// Successors of a node, with edge weights, in edge insertion order.
    pub fn successors(&self, node: NodeIndex) -> &[(NodeIndex, f64)] {
        &self.successors[node]
    }

    /// Out-degree of a node.
    pub fn out_degree(&self, node: NodeIndex) -> usize {
        self.successors[node].len()
    }

    /// Adds a node without a kind, or returns the existing one unchanged.
    pub fn ensure_node(&mut self, name: &str) -> NodeIndex {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let i = self.names.len();
        self.names.push(name.to_owned());
        self.kinds.push(None);
        self.successors.push(Vec::new());
        self.index.insert(name.to_owned(), i);
        i
    }

    /// Adds a node, or overwrites the kind of an existing one (networkx `add_node` with attrs).
    pub fn add_node(&mut self, name: &str, kind: NodeKind) -> NodeIndex {
        let i = self.ensure_node(name);
        self.kinds[i] = Some(kind);
        i
    }

    /// Whether the edge `from → to` exists.
    pub fn has_edge(&self, from: NodeIndex, to: NodeIndex) -> bool {
        self.edge_slots.contains_key(&(from, to))
    }

    /// Adds the edge `from → to` (creating missing ends, source first), or overwrites its weight.
    pub fn add_edge(&mut self, from: &str, to: &str, weight: f64) {
        let u = self.ensure_node(from);
        let v = self.ensure_node(to);
        self.add_edge_between(u, v, weight);
    }

    /// [`DiGraph::add_edge`] between existing nodes.
    pub fn add_edge_between(&mut self, u: NodeIndex, v: NodeIndex, weight: f64) {
        match self.edge_slots.get(&(u, v)) {
            Some(&slot) => self.successors[u][slot].1 = weight,
            None => {
                self.edge_slots.insert((u, v), self.successors[u].len());
                self.successors[u].push((v, weight));
            }
        }
    }

    /// Iterates over every edge `(from, to, weight)`, grouped by source in node order.
    pub fn edges(&self) -> impl Iterator<Item = (NodeIndex, NodeIndex, f64)> + '_ {
        self.successors
            .iter()
            .enumerate()
            .flat_map(|(u, succ)| succ.iter().map(move |&(v, w)| (u, v, w)))
    }

    /// Directed density `E / (N (N - 1))`, 0 for fewer than two nodes.
    pub fn density(&self) -> f64 {
        let n = self.node_count();
        if n <= 1 {
            return 0.0;
        }
        self.edge_count() as f64 / (n * (n - 1)) as f64
    }

    /// Number of weakly connected components.
    pub fn weakly_connected_components(&self) -> usize {
        let n = self.node_count();
        let mut parent: Vec<usize> = (0..n).collect();
        fn root(parent: &mut [usize], mut x: usize) -> usize {
            while parent[x] != x {
                parent[x] = parent[parent[x]];
                x = parent[x];
            }
            x
        }
        let mut components = n;
        for (u, v, _) in self.edges() {
            let (ru, rv) = (root(&mut parent, u), root(&mut parent, v));
            if ru != rv {
                parent[ru] = rv;
                components -= 1;
            }
        }
        components
    }

    /// A topological order of the nodes, or `None` when the graph has a cycle (a self-loop
    /// included).
    pub fn topological_order(&self) -> Option<Vec<NodeIndex>> {
        let n = self.node_count();
        let mut in_degree = vec![0usize; n];
        for (_, v, _) in self.edges() {
            in_degree[v] += 1;
        }
        let mut ready: Vec<NodeIndex> = (0..n).filter(|&v| in_degree[v] == 0).collect();
        let mut order = Vec::with_capacity(n);
        while let Some(u) = ready.pop() {
            order.push(u);
            for &(v, _) in &self.successors[u] {
                in_degree[v] -= 1;
                if in_degree[v] == 0 {
                    ready.push(v);
                }
            }
        }
        (order.len() == n).then_some(order)
    }

    /// Whether the graph is a DAG.
    pub fn is_acyclic(&self) -> bool {
        self.topological_order().is_some()
    }

    /// networkx `dag_longest_path_length(G, weight="weight")`: the heaviest path, summed from
    /// its start. `None` when the graph is not a DAG.
    pub fn dag_longest_path_length(&self) -> Option<f64> {
        let order = self.topological_order()?;
        let mut predecessors: Vec<Vec<(NodeIndex, f64)>> = vec![Vec::new(); self.node_count()];
        for (u, v, w) in self.edges() {
            predecessors[v].push((u, w));
        }
        let mut dist = vec![0.0f64; self.node_count()];
        let mut longest = 0.0f64;
        for v in order {
            let best = predecessors[v]
                .iter()
                .map(|&(u, w)| dist[u] + w)
                .fold(None, |acc: Option<f64>, d| {
                    Some(acc.map_or(d, |a| a.max(d)))
                });
            dist[v] = match best {
                Some(d) if d >= 0.0 => d,
                _ => 0.0,
            };
            longest = longest.max(dist[v]);
        }
        Some(longest)
    }

    /// Every node reachable from `start` by a path of at least one edge, `start` excluded
    /// (networkx `descendants`). Marks them in `reached`.
    pub fn mark_descendants(&self, start: NodeIndex, reached: &mut [bool]) {
        let mut seen = vec![false; self.node_count()];
        seen[start] = true;
        let mut stack = vec![start];
        while let Some(u) = stack.pop() {
            for &(v, _) in &self.successors[u] {
                if !seen[v] {
                    seen[v] = true;
                    stack.push(v);
                }
            }
        }
        for (node, was_seen) in seen.into_iter().enumerate() {
            if was_seen && node != start {
                reached[node] = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn re_adding_an_edge_overwrites_weight_but_not_count() {
        let mut g = DiGraph::default();
        g.add_edge("a", "b", 0.2);
        g.add_edge("a", "b", 1.0);
        assert_eq!(g.edge_count(), 1);
        assert_eq!(g.successors(0), &[(1, 1.0)]);
    }

    #[test]
    fn self_loop_makes_the_graph_cyclic() {
        let mut g = DiGraph::default();
        g.add_edge("a", "b", 1.0);
        assert!(g.is_acyclic());
        g.add_edge("b", "b", 1.0);
        assert!(!g.is_acyclic());
        assert_eq!(g.dag_longest_path_length(), None);
    }

    #[test]
    fn longest_path_is_weighted() {
        let mut g = DiGraph::default();
        g.add_edge("a", "b", 0.3);
        g.add_edge("b", "c", 0.5);
        g.add_edge("a", "c", 0.7);
        assert_eq!(g.dag_longest_path_length(), Some(0.8));
    }

    #[test]
    fn components_and_descendants() {
        let mut g = DiGraph::default();
        g.add_edge("a", "b", 1.0);
        g.add_edge("b", "a", 1.0);
        g.add_edge("c", "d", 1.0);
        g.ensure_node("e");
        assert_eq!(g.weakly_connected_components(), 3);
        let mut reached = vec![false; g.node_count()];
        g.mark_descendants(0, &mut reached);
        assert_eq!(reached, vec![false, true, false, false, false]);
    }
}
