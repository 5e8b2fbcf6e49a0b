//! PageRank exactly as networkx 3.4 computes it (`pagerank(G, weight="weight")`).
//!
//! alpha 0.85, at most 100 iterations, tolerance 1e-6 × N on the L1 change, uniform start,
//! teleport and dangling distribution. The order of every floating-point operation follows the
//! scipy/numpy code networkx runs, because nodes with mathematically equal rank (files in one
//! directory) are told apart by their last bits, and reports sort by rank with ties kept in
//! node order.

use super::graph::DiGraph;
use crate::numeric::pairwise_sum;

/// Damping factor.
const ALPHA: f64 = 0.85;
/// Iteration cap; networkx raises past it, we keep the last iterate (never reached in practice:
/// convergence takes a few dozen rounds on graphs of thousands of nodes).
const MAX_ITERATIONS: usize = 100;
/// Convergence tolerance per node.
const TOLERANCE: f64 = 1e-6;

/// PageRank of every node, indexed like the graph's nodes. Empty for an empty graph.
pub fn pagerank(graph: &DiGraph) -> Vec<f64> {
    let n = graph.node_count();
    if n == 0 {
        return Vec::new();
    }
    let p = 1.0 / n as f64;

    // Row-normalised transition matrix, rows sorted by target position (CSR order).
    let mut rows: Vec<Vec<(usize, f64)>> = Vec::with_capacity(n);
    let mut dangling: Vec<usize> = Vec::new();
    for node in 0..n {
        let mut row: Vec<(usize, f64)> = graph.successors(node).to_vec();
        row.sort_by_key(|&(target, _)| target);
        let weights: Vec<f64> = row.iter().map(|&(_, w)| w).collect();
        let row_sum = match weights.split_first() {
            Some((first, rest)) => first + pairwise_sum(rest),
            None => 0.0,
        };
        // A node whose out-edges all weigh nothing (a pair that never co-changed) is dangling,
        // as in networkx, which leaves zero rows un-normalised.
        if row_sum == 0.0 {
            dangling.push(node);
            rows.push(Vec::new());
            continue;
        }
        let inverse = 1.0 / row_sum;
        rows.push(row.into_iter().map(|(t, w)| (t, inverse * w)).collect());
    }

    let teleport = (1.0 - ALPHA) * p;
    let mut x = vec![p; n];
    let mut y = vec![0.0f64; n];
    let mut change = vec![0.0f64; n];
    for _ in 0..MAX_ITERATIONS {
        y.iter_mut().for_each(|v| *v = 0.0);
        for (i, row) in rows.iter().enumerate() {
            let xi = x[i];
            for &(j, a) in row {
                y[j] += a * xi;
            }
        }
        let mut dangling_mass = 0.0;
        for (k, &node) in dangling.iter().enumerate() {
            dangling_mass = if k == 0 {
                x[node]
            } else {
                dangling_mass + x[node]
            };
        }
        let spread = dangling_mass * p;
        for j in 0..n {
            let next = ALPHA * (y[j] + spread) + teleport;
            change[j] = (next - x[j]).abs();
            x[j] = next;
        }
        if pairwise_sum(&change) < n as f64 * TOLERANCE {
            break;
        }
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_sum_to_one_and_favour_the_sink() {
        let mut g = DiGraph::default();
        g.add_edge("a", "c", 1.0);
        g.add_edge("b", "c", 1.0);
        let pr = pagerank(&g);
        assert!((pr.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        // Nodes in insertion order: a, c, b.
        assert!(pr[1] > pr[0] && pr[0] == pr[2]);
    }

    #[test]
    fn zero_weight_edges_leave_their_source_dangling() {
        let mut g = DiGraph::default();
        g.add_edge("a", "b", 0.0);
        g.add_edge("b", "a", 1.0);
        // networkx 3.4.2 prints exactly these.
        assert_eq!(pagerank(&g), vec![0.649122638064138, 0.3508773619358619]);
    }

    #[test]
    fn matches_networkx_on_a_weighted_cycle() {
        // a→b (1.0), b→a (1.0), b→c (3.0), c dangling; values printed by networkx 3.4.2's
        // `nx.pagerank(G, weight="weight")`, bit for bit.
        let mut g = DiGraph::default();
        g.add_edge("a", "b", 1.0);
        g.add_edge("b", "a", 1.0);
        g.add_edge("b", "c", 3.0);
        assert_eq!(
            pagerank(&g),
            vec![0.23956535123634198, 0.36552262374850947, 0.3949120250151481]
        );
    }
}
