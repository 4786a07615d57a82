//! The pipeline's graph as a petgraph [`DiGraph`] (node `i` of the pipeline is graph
//! node `i`, an edge runs from upstream to downstream): its topological order, walks up
//! and down, and the cycle a pipeline must not have.

use std::collections::{BTreeSet, BinaryHeap};

use petgraph::{
    graph::{DiGraph, NodeIndex},
    visit::{Dfs, Reversed, Walker},
    Direction,
};

use super::*;

/// The dependency graph of a pipeline's nodes.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    g: DiGraph<(), ()>,
}

impl Graph {
    /// The graph whose node `i` waits for `upstream[i]`.
    pub fn new(upstream: &[Vec<usize>]) -> Graph {
        let mut g = DiGraph::with_capacity(upstream.len(), upstream.iter().map(Vec::len).sum());
        for _ in upstream {
            g.add_node(());
        }
        for (i, ups) in upstream.iter().enumerate() {
            for &u in ups {
                g.add_edge(NodeIndex::new(u), NodeIndex::new(i), ());
            }
        }
        Graph { g }
    }

    /// A topological order, stable by declaration (among the nodes whose upstream is
    /// placed, the first declared comes first); `Err` with a cycle (its nodes in order,
    /// the first repeated at the end) when there is one.
    pub fn order(&self) -> Result<Vec<usize>, Vec<usize>> {
        if let Err(c) = petgraph::algo::toposort(&self.g, None) {
            return Err(self.cycle_through(c.node_id()));
        }
        let n = self.g.node_count();
        let mut indeg: Vec<usize> = (0..n)
            .map(|i| {
                self.g
                    .neighbors_directed(NodeIndex::new(i), Direction::Incoming)
                    .count()
            })
            .collect();
        // A min-heap of ready nodes, by declaration index.
        let mut ready: BinaryHeap<std::cmp::Reverse<usize>> = (0..n)
            .filter(|&i| indeg[i] == 0)
            .map(std::cmp::Reverse)
            .collect();
        let mut out = Vec::with_capacity(n);
        while let Some(std::cmp::Reverse(i)) = ready.pop() {
            out.push(i);
            for d in self
                .g
                .neighbors_directed(NodeIndex::new(i), Direction::Outgoing)
            {
                let d = d.index();
                indeg[d] -= 1;
                if indeg[d] == 0 {
                    ready.push(std::cmp::Reverse(d));
                }
            }
        }
        Ok(out)
    }

    /// The shortest cycle through the first declared node of the strongly connected
    /// component that holds `node`.
    fn cycle_through(&self, node: NodeIndex) -> Vec<usize> {
        let scc = petgraph::algo::tarjan_scc(&self.g)
            .into_iter()
            .find(|c| c.contains(&node))
            .expect("every node is in a component");
        let start = *scc.iter().min().expect("non-empty");
        let path = self
            .g
            .neighbors_directed(start, Direction::Outgoing)
            .filter_map(|next| {
                petgraph::algo::astar(&self.g, next, |n| n == start, |_| 1, |_| 0).map(|(_, p)| p)
            })
            .min_by_key(Vec::len)
            .expect("a node on a cycle has a way back");
        std::iter::once(start)
            .chain(path)
            .map(NodeIndex::index)
            .collect()
    }

    /// Every node upstream of `roots`, the roots included.
    pub fn ancestors(&self, roots: &[usize]) -> BTreeSet<usize> {
        let rev = Reversed(&self.g);
        let mut seen = BTreeSet::new();
        for &r in roots {
            if seen.contains(&r) {
                continue;
            }
            seen.extend(
                Dfs::new(rev, NodeIndex::new(r))
                    .iter(rev)
                    .map(|n| n.index()),
            );
        }
        seen
    }

    /// Every node downstream of `roots`, the roots included.
    pub fn descendants(&self, roots: &[usize]) -> BTreeSet<usize> {
        let mut seen = BTreeSet::new();
        for &r in roots {
            if seen.contains(&r) {
                continue;
            }
            seen.extend(
                Dfs::new(&self.g, NodeIndex::new(r))
                    .iter(&self.g)
                    .map(|n| n.index()),
            );
        }
        seen
    }
}

impl Builder<'_> {
    /// The graph and its topological order, or the cycle as an error at its first node.
    pub(super) fn graph(&mut self, nodes: &[Node]) -> Result<(Graph, Vec<usize>), SpecErrors> {
        let upstream: Vec<Vec<usize>> = nodes.iter().map(|n| n.upstream.clone()).collect();
        let graph = Graph::new(&upstream);
        match graph.order() {
            Ok(order) => Ok((graph, order)),
            Err(cycle) => {
                let text: Vec<&str> = cycle.iter().map(|&i| nodes[i].id.as_str()).collect();
                Err(SpecError::new(
                    nodes[cycle[0]].loc.clone(),
                    format!("dependency cycle: {}", text.join(" → ")),
                )
                .into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_topological_and_stable_by_declaration() {
        // 0 ← 2, 1 ← 2 is not an edge: 2 waits on 0; 1 free; 3 waits on 1 and 2.
        let g = Graph::new(&[vec![], vec![], vec![0], vec![2, 1]]);
        assert_eq!(g.order(), Ok(vec![0, 1, 2, 3]));
        let g = Graph::new(&[vec![1], vec![], vec![]]);
        assert_eq!(g.order(), Ok(vec![1, 0, 2]));
    }

    #[test]
    fn a_cycle_is_reported_from_its_first_node_the_short_way_round() {
        // 0 → 1 → 2 → 0, with a shortcut 1 → 0; and 3 outside.
        let g = Graph::new(&[vec![2, 1], vec![0], vec![1], vec![]]);
        assert_eq!(g.order(), Err(vec![0, 1, 0]));
        let g = Graph::new(&[vec![0]]);
        assert_eq!(g.order(), Err(vec![0, 0]), "a node waiting on itself");
    }

    #[test]
    fn walks_go_up_and_down_from_several_roots() {
        // 0 → 1 → 3, 2 → 3, 3 → 4
        let g = Graph::new(&[vec![], vec![0], vec![], vec![1, 2], vec![3]]);
        assert_eq!(g.ancestors(&[3]), BTreeSet::from([0, 1, 2, 3]));
        assert_eq!(g.descendants(&[1, 2]), BTreeSet::from([1, 2, 3, 4]));
        assert_eq!(g.descendants(&[4]), BTreeSet::from([4]));
    }
}
