//! `dagrun graph`: the pipeline as text, Graphviz DOT or Mermaid.

use std::collections::{BTreeMap, BTreeSet};

use dagrun_engine::plan::{Evaluator, Selection};

use crate::{
    cli::{GraphArgs, GraphFormat},
    context::Ctx,
    exit::CliResult,
};

struct Unit {
    id: String,
    label: String,
    ups: BTreeSet<usize>,
}

pub fn cmd_graph(ctx: &Ctx, a: &GraphArgs) -> CliResult {
    let p = ctx.load_with(&a.pipeline, &a.overrides)?;
    let cache = ctx.open_existing_cache("graph")?;
    let ev = Evaluator::new(&p, cache.as_ref(), false);
    let plan = ev.plan(&Selection::default())?;
    let state = |i: usize| plan[i].as_ref().map(|e| e.state.label()).unwrap_or("?");
    let mut units: Vec<Unit> = Vec::new();
    if a.expand {
        for &i in &p.order {
            let n = &p.nodes[i];
            units.push(Unit {
                id: n.id.clone(),
                label: format!("{} ({})", n.id, state(i)),
                ups: n.upstream.iter().copied().collect(),
            });
        }
        // Map node index → unit position.
        let pos: BTreeMap<usize, usize> =
            p.order.iter().enumerate().map(|(k, &i)| (i, k)).collect();
        for u in &mut units {
            u.ups = u.ups.iter().map(|i| pos[i]).collect();
        }
    } else {
        let stage_pos: BTreeMap<&str, usize> = p
            .stages
            .keys()
            .enumerate()
            .map(|(k, s)| (s.as_str(), k))
            .collect();
        for (name, info) in &p.stages {
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            let mut ups = BTreeSet::new();
            for &i in &info.nodes {
                *counts.entry(state(i)).or_default() += 1;
                for &u in &p.nodes[i].upstream {
                    ups.insert(stage_pos[p.nodes[u].stage.as_str()]);
                }
            }
            let summary: Vec<String> = counts.iter().map(|(s, c)| format!("{c} {s}")).collect();
            let label = if info.nodes.len() == 1 {
                format!("{name} ({})", summary.join("").trim_start_matches("1 "))
            } else {
                format!(
                    "{name} [{} nodes: {}]",
                    info.nodes.len(),
                    summary.join(", ")
                )
            };
            units.push(Unit {
                id: name.clone(),
                label,
                ups,
            });
        }
        // Print stages in a topological order.
        let order = stage_order(&units);
        let remap: BTreeMap<usize, usize> =
            order.iter().enumerate().map(|(k, &i)| (i, k)).collect();
        let mut sorted: Vec<Unit> = Vec::new();
        for &i in &order {
            let u = &units[i];
            sorted.push(Unit {
                id: u.id.clone(),
                label: u.label.clone(),
                ups: u.ups.iter().map(|x| remap[x]).collect(),
            });
        }
        units = sorted;
    }
    match a.format {
        GraphFormat::Text => {
            for u in &units {
                println!("{}", u.label);
                for &x in &u.ups {
                    println!("  <- {}", units[x].id);
                }
            }
        }
        GraphFormat::Dot => {
            println!(
                "digraph dagrun {{\n  rankdir=LR;\n  node [shape=box, fontname=\"Helvetica\"];"
            );
            for (k, u) in units.iter().enumerate() {
                println!(
                    "  n{k} [label=\"{}\"];",
                    u.label.replace('\\', "\\\\").replace('"', "\\\"")
                );
            }
            for (k, u) in units.iter().enumerate() {
                for &x in &u.ups {
                    println!("  n{x} -> n{k};");
                }
            }
            println!("}}");
        }
        GraphFormat::Mermaid => {
            println!("flowchart LR");
            for (k, u) in units.iter().enumerate() {
                println!("  n{k}[\"{}\"]", u.label.replace('"', "#quot;"));
            }
            for (k, u) in units.iter().enumerate() {
                for &x in &u.ups {
                    println!("  n{x} --> n{k}");
                }
            }
        }
    }
    Ok(())
}

fn stage_order(units: &[Unit]) -> Vec<usize> {
    let mut done = BTreeSet::new();
    let mut order = Vec::new();
    while order.len() < units.len() {
        let before = order.len();
        for (i, u) in units.iter().enumerate() {
            if !done.contains(&i) && u.ups.iter().all(|x| *x == i || done.contains(x)) {
                done.insert(i);
                order.push(i);
            }
        }
        if order.len() == before {
            // Unreachable for a checked pipeline (cycles are refused); keep the rest as is.
            order.extend((0..units.len()).filter(|i| !done.contains(i)));
        }
    }
    order
}
