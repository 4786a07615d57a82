//! Edges: from files (an input that is another node's output, or inside one), from
//! `needs`, and from `${stages...}` references.
use super::*;

impl Builder<'_> {
    pub(super) fn edges(
        &mut self,
        nodes: &mut [Node],
        stages: &IndexMap<String, StageInfo>,
        raw_refs: Vec<Vec<StageRef>>,
        raw_needs: Vec<Vec<(String, Vec<Seg>)>>,
    ) {
        // Who writes which workspace path.
        let mut producers: HashMap<String, usize> = HashMap::new();
        let mut out_errors = Vec::new();
        for (i, n) in nodes.iter().enumerate() {
            for o in &n.outs {
                if let Some(&j) = producers.get(o.as_str()) {
                    out_errors.push((
                        n.loc.clone(),
                        format!(
                            "`{o}` is an output of both `{}` and `{}`",
                            nodes[j].id, n.id
                        ),
                    ));
                } else {
                    producers.insert(o.clone(), i);
                }
            }
        }
        let mut all_outs: Vec<(String, usize)> =
            producers.iter().map(|(k, v)| (k.clone(), *v)).collect();
        all_outs.sort();
        // An output inside another: look each output's ancestors up (O(depth)). Sorted
        // neighbours are not enough: `d`, `d.txt`, `d/f` sort in that order.
        for (o, i) in &all_outs {
            if let Some((outer, _)) = enclosing_output(o, &producers) {
                out_errors.push((
                    nodes[*i].loc.clone(),
                    format!("output `{o}` is inside output `{outer}`"),
                ));
            }
        }
        for (loc, m) in out_errors {
            self.errors.push(SpecError::new(loc, m));
        }

        let mut ups: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); nodes.len()];
        for i in 0..nodes.len() {
            // deps → producers
            let mut deps = std::mem::take(&mut nodes[i].deps);
            for d in &mut deps {
                if let Some(&p) = producers.get(d.path.as_str()) {
                    d.source = DepSource::Produced {
                        node: p,
                        output: d.path.clone(),
                        sub: None,
                    };
                    ups[i].insert(p);
                    continue;
                }
                // A dep inside an output folder.
                let inside = enclosing_output(&d.path, &producers).map(|(o, p)| (o.to_string(), p));
                if let Some((out, p)) = inside {
                    let sub = d.path[out.len() + 1..].to_string();
                    d.source = DepSource::Produced {
                        node: p,
                        output: out,
                        sub: Some(sub),
                    };
                    ups[i].insert(p);
                    continue;
                }
                // A dep folder holding outputs: the sorted outputs under `dep/` are a range.
                let contains: Vec<usize> = if d.path == "." {
                    all_outs.iter().map(|(_, p)| *p).collect()
                } else {
                    let prefix = format!("{}/", d.path);
                    let start = all_outs.partition_point(|(o, _)| o.as_str() < prefix.as_str());
                    all_outs[start..]
                        .iter()
                        .take_while(|(o, _)| o.starts_with(&prefix))
                        .map(|(_, p)| *p)
                        .collect()
                };
                ups[i].extend(contains.iter().copied());
                d.source = DepSource::Workspace { contains };
            }
            nodes[i].deps = deps;
        }
        for (i, needs) in raw_needs.into_iter().enumerate() {
            for (text, path) in needs {
                match select_in(&text, stages, nodes) {
                    Ok(hits) => ups[i].extend(hits),
                    Err(m) => self.err(&path, format!("`needs`: {m}")),
                }
            }
        }
        for (i, refs) in raw_refs.into_iter().enumerate() {
            let mut bindings = Vec::new();
            for r in refs {
                let stage_has_matrix = stages
                    .get(&r.selector.stage)
                    .map(|s| !s.matrix_keys.is_empty())
                    .unwrap_or(false);
                let hits = match select_in(&node_id_or_sel(&r), stages, nodes) {
                    Ok(h) => h,
                    Err(m) => {
                        self.errors.push(SpecError::new(
                            nodes[i].loc.clone(),
                            format!("`${{{}}}`: {m}", r.text),
                        ));
                        continue;
                    }
                };
                let fully = stages
                    .get(&r.selector.stage)
                    .map(|s| {
                        s.matrix_keys
                            .iter()
                            .all(|k| r.selector.filter.iter().any(|(fk, _)| fk == k))
                    })
                    .unwrap_or(true);
                let mut targets = Vec::new();
                for &h in &hits {
                    if nodes[h].outputs.iter().any(|o| o.name == r.output) {
                        targets.push((h, r.output.clone()));
                    } else {
                        let known: Vec<String> = nodes[h]
                            .outputs
                            .iter()
                            .map(|o| format!("`{}`", o.name))
                            .collect();
                        self.errors.push(SpecError::new(
                            nodes[i].loc.clone(),
                            format!(
                                "`${{{}}}`: `{}` has no output `{}` (outputs: {})",
                                r.text,
                                nodes[h].id,
                                r.output,
                                if known.is_empty() {
                                    "none".into()
                                } else {
                                    known.join(", ")
                                }
                            ),
                        ));
                        break;
                    }
                    ups[i].insert(h);
                }
                bindings.push(Binding {
                    text: r.text.clone(),
                    targets,
                    many: stage_has_matrix && !fully,
                });
            }
            // A reference placed inside text must name exactly one node.
            let mut used = Vec::new();
            interp::used_refs(&nodes[i].params, false, &mut used);
            for (bi, in_text) in used {
                if in_text && bindings.get(bi).map(|b| b.many).unwrap_or(false) {
                    self.errors.push(SpecError::new(
                        nodes[i].loc.clone(),
                        format!("`${{{}}}` names a sweep of several nodes and cannot be placed inside text; filter it to one node, e.g. `[key=value]`", bindings[bi].text),
                    ));
                }
            }
            nodes[i].bindings = bindings;
        }
        for (i, u) in ups.into_iter().enumerate() {
            nodes[i].upstream = u.into_iter().collect();
        }
        for i in 0..nodes.len() {
            for u in nodes[i].upstream.clone() {
                nodes[u].downstream.push(i);
            }
        }
    }
}

pub(super) fn node_id_or_sel(r: &StageRef) -> String {
    if r.selector.filter.is_empty() {
        r.selector.stage.clone()
    } else {
        let f: Vec<String> = r
            .selector
            .filter
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!("{}[{}]", r.selector.stage, f.join(","))
    }
}

pub(super) fn select_in(
    text: &str,
    stages: &IndexMap<String, StageInfo>,
    nodes: &[Node],
) -> Result<Vec<usize>, String> {
    let sel = Selector::parse(text)?;
    let info = stages.get(&sel.stage).ok_or_else(|| {
        let known: Vec<String> = stages.keys().map(|s| format!("`{s}`")).collect();
        format!("no stage `{}` (stages: {})", sel.stage, known.join(", "))
    })?;
    for (k, _) in &sel.filter {
        if !info.matrix_keys.contains(k) {
            return Err(format!("stage `{}` has no matrix key `{k}`", sel.stage));
        }
    }
    let hits: Vec<usize> = info
        .nodes
        .iter()
        .copied()
        .filter(|&i| sel.matches(&sel.stage, &nodes[i].matrix))
        .collect();
    if hits.is_empty() {
        return Err(format!("no node of `{}` matches `{text}`", sel.stage));
    }
    Ok(hits)
}
