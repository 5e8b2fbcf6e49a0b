//! Enumeration of simple cycles (Johnson's algorithm) that stops after a given number.
//!
//! The risk engine only needs the first few cycles of length ≥ 2: it counts up to 20 for path
//! dependence and shows up to 3 in the spiral bomb. Enumeration is lazy per strongly connected
//! component, so a graph with thousands of cycles costs about as much as the cycles asked for.
//! Self-loops are cycles of length 1 and are never reported.

use super::graph::{DiGraph, NodeIndex};

/// Up to `limit` simple cycles of at least two distinct nodes. Each cycle starts at its
/// lowest-indexed node and follows edges; the closing edge back to the start exists.
pub fn simple_cycles(graph: &DiGraph, limit: usize) -> Vec<Vec<NodeIndex>> {
    let mut found = Vec::new();
    if limit == 0 {
        return found;
    }
    let all = vec![true; graph.node_count()];
    let mut pending: Vec<Vec<NodeIndex>> = strongly_connected_components(graph, &all);
    let mut search = CircuitSearch::new(graph.node_count());
    while let Some(component) = pending.pop() {
        if component.len() < 2 {
            continue;
        }
        let mut allowed = vec![false; graph.node_count()];
        for &node in &component {
            allowed[node] = true;
        }
        let start = component.iter().copied().min().unwrap_or(component[0]);
        if search.circuits_through(graph, start, &allowed, &mut found, limit) {
            return found;
        }
        // Every cycle through `start` is listed: drop it and look at what remains.
        allowed[start] = false;
        pending.extend(strongly_connected_components(graph, &allowed));
    }
    found
}

/// Tarjan's strongly connected components of the subgraph induced by `allowed` nodes.
fn strongly_connected_components(graph: &DiGraph, allowed: &[bool]) -> Vec<Vec<NodeIndex>> {
    const UNVISITED: usize = usize::MAX;
    let n = graph.node_count();
    let mut index = vec![UNVISITED; n];
    let mut low = vec![0usize; n];
    let mut on_stack = vec![false; n];
    let mut stack: Vec<NodeIndex> = Vec::new();
    let mut components = Vec::new();
    let mut next_index = 0usize;
    // Explicit call stack of (node, next successor position).
    let mut frames: Vec<(NodeIndex, usize)> = Vec::new();

    for root in (0..n).filter(|&v| allowed[v]) {
        if index[root] != UNVISITED {
            continue;
        }
        frames.push((root, 0));
        index[root] = next_index;
        low[root] = next_index;
        next_index += 1;
        stack.push(root);
        on_stack[root] = true;

        while let Some(&mut (v, ref mut position)) = frames.last_mut() {
            let successors = graph.successors(v);
            if *position < successors.len() {
                let w = successors[*position].0;
                *position += 1;
                if !allowed[w] {
                    continue;
                }
                if index[w] == UNVISITED {
                    index[w] = next_index;
                    low[w] = next_index;
                    next_index += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    frames.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            frames.pop();
            if let Some(&(parent, _)) = frames.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut component = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                components.push(component);
            }
        }
    }
    components
}

/// Johnson's blocked-set bookkeeping, reused across start nodes.
struct CircuitSearch {
    blocked: Vec<bool>,
    blocked_by: Vec<Vec<NodeIndex>>,
}

impl CircuitSearch {
    fn new(n: usize) -> Self {
        Self {
            blocked: vec![false; n],
            blocked_by: vec![Vec::new(); n],
        }
    }

    /// Appends the cycles through `start` inside `allowed`; true once `found` holds `limit`.
    fn circuits_through(
        &mut self,
        graph: &DiGraph,
        start: NodeIndex,
        allowed: &[bool],
        found: &mut Vec<Vec<NodeIndex>>,
        limit: usize,
    ) -> bool {
        self.blocked.iter_mut().for_each(|b| *b = false);
        self.blocked_by.iter_mut().for_each(Vec::clear);
        let next = |v: NodeIndex| {
            graph
                .successors(v)
                .iter()
                .map(|&(w, _)| w)
                .filter(move |&w| allowed[w] && w != v)
        };

        let mut path = vec![start];
        self.blocked[start] = true;
        // (node, next successor position, whether a cycle was closed below this node)
        let mut frames: Vec<(NodeIndex, usize, bool)> = vec![(start, 0, false)];
        while let Some(frame) = frames.last_mut() {
            let v = frame.0;
            let successors = graph.successors(v);
            while frame.1 < successors.len() && {
                let w = successors[frame.1].0;
                !allowed[w] || w == v
            } {
                frame.1 += 1;
            }
            if let Some(&(w, _)) = successors.get(frame.1) {
                frame.1 += 1;
                if w == start {
                    frame.2 = true;
                    found.push(path.clone());
                    if found.len() >= limit {
                        return true;
                    }
                } else if !self.blocked[w] {
                    path.push(w);
                    self.blocked[w] = true;
                    frames.push((w, 0, false));
                }
                continue;
            }
            let closed = frame.2;
            if closed {
                self.unblock(v);
            } else {
                for w in next(v) {
                    if !self.blocked_by[w].contains(&v) {
                        self.blocked_by[w].push(v);
                    }
                }
            }
            frames.pop();
            path.pop();
            if let Some(parent) = frames.last_mut() {
                parent.2 |= closed;
            }
        }
        false
    }

    fn unblock(&mut self, node: NodeIndex) {
        let mut work = vec![node];
        while let Some(u) = work.pop() {
            if !self.blocked[u] {
                continue;
            }
            self.blocked[u] = false;
            work.append(&mut self.blocked_by[u]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &str)]) -> DiGraph {
        let mut g = DiGraph::default();
        for (a, b) in edges {
            g.add_edge(a, b, 1.0);
        }
        g
    }

    fn is_cycle(g: &DiGraph, cycle: &[NodeIndex]) -> bool {
        let closes = |a: NodeIndex, b: NodeIndex| g.has_edge(a, b);
        cycle.windows(2).all(|w| closes(w[0], w[1]))
            && closes(cycle[cycle.len() - 1], cycle[0])
            && {
                let mut sorted = cycle.to_vec();
                sorted.sort_unstable();
                sorted.dedup();
                sorted.len() == cycle.len()
            }
    }

    #[test]
    fn complete_graph_on_four_nodes_has_twenty_cycles() {
        let names = ["a", "b", "c", "d"];
        let mut edges = Vec::new();
        for a in names {
            for b in names {
                if a != b {
                    edges.push((a, b));
                }
            }
        }
        let g = graph(&edges);
        // 6 two-cycles + 8 three-cycles + 6 four-cycles.
        let cycles = simple_cycles(&g, 100);
        assert_eq!(cycles.len(), 20);
        assert!(cycles.iter().all(|c| is_cycle(&g, c)));
        let mut canonical: Vec<Vec<NodeIndex>> = cycles.clone();
        canonical.sort();
        canonical.dedup();
        assert_eq!(canonical.len(), 20, "no cycle is listed twice");
        assert_eq!(simple_cycles(&g, 7).len(), 7);
    }

    #[test]
    fn self_loops_and_dags_have_no_cycles() {
        assert!(simple_cycles(&graph(&[("a", "a"), ("a", "b"), ("b", "c")]), 10).is_empty());
    }

    #[test]
    fn cycles_in_separate_components_are_found() {
        let g = graph(&[("a", "b"), ("b", "a"), ("c", "d"), ("d", "e"), ("e", "c")]);
        let cycles = simple_cycles(&g, 10);
        assert_eq!(cycles.len(), 2);
        assert!(cycles.iter().all(|c| is_cycle(&g, c)));
    }
}
