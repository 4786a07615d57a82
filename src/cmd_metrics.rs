//! `dagrun metrics`: the cached variants of a pipeline's nodes side by side (matrix
//! values, the params that differ, every scalar metric), sorted, aggregated, as a table,
//! markdown, CSV or JSON. The rows come from `dagrun_engine::variants`; this is only
//! their rendering.

use std::collections::BTreeSet;

use dagrun_cache::Cache;
use dagrun_engine::{
    variants::{variant, variants, Variant},
    Pipeline,
};
use serde_json::{json, Value};

use crate::{
    cli::{MetricsArgs, MetricsFormat},
    context::Ctx,
    exit::{usage, CliResult},
};

pub fn cmd_metrics(ctx: &Ctx, a: &MetricsArgs) -> CliResult {
    let cache = ctx.open_existing_cache("metrics")?;
    let file = ctx.pipeline_or_last(a.pipeline.as_deref(), cache.as_ref())?;
    let p = ctx.load_with(&file, &a.overrides)?;
    let Some(cache) = cache else {
        return Err(usage("no cache here yet: run the pipeline first"));
    };
    if let Some(pair) = &a.diff {
        return diff(&p, &cache, &pair[0], &pair[1], a.format);
    }
    let mut nodes = BTreeSet::new();
    if a.stage.is_empty() {
        nodes.extend(0..p.nodes.len());
    }
    for s in &a.stage {
        nodes.extend(p.select(s).map_err(usage)?);
    }
    let nodes: Vec<usize> = nodes.into_iter().collect();
    let found = variants(&p, &cache, &nodes, a.all)?;
    let mut rows = found.rows;
    if !found.not_cached.is_empty() && !ctx.global.quiet {
        let n = found.not_cached.len();
        let shown: Vec<&str> = found
            .not_cached
            .iter()
            .take(5)
            .map(String::as_str)
            .collect();
        eprintln!(
            "note: {n} node(s) have no cached result for their current params ({}{}){}",
            shown.join(", "),
            if n > 5 { ", ..." } else { "" },
            if a.all {
                ""
            } else {
                "; `--all` shows their other cached variants"
            }
        );
    }
    if let Some(key) = &a.sort {
        if !rows.iter().any(|r| lookup(r, key).is_some()) {
            return Err(usage(format!(
                "--sort {key}: no row has a metric, param or matrix value `{key}` (metrics: {})",
                list(metric_names(&rows))
            )));
        }
        rows.sort_by(|x, y| {
            let (vx, vy) = (lookup(x, key), lookup(y, key));
            match (vx, vy) {
                (Some(vx), Some(vy)) => {
                    let o = compare(vx, vy);
                    if a.desc {
                        o.reverse()
                    } else {
                        o
                    }
                }
                // Rows without the value go last either way.
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            }
        });
    }
    if let Some(key) = &a.group_by {
        return grouped(&rows, key, a.format);
    }
    if a.format == MetricsFormat::Json {
        let list: Vec<Value> = rows.iter().map(|r| json!(r)).collect();
        println!("{}", serde_json::to_string_pretty(&list).expect("json"));
        return Ok(());
    }
    if rows.is_empty() {
        eprintln!("no cached results for these nodes: run the pipeline first");
        return Ok(());
    }
    let matrix_keys = ordered(rows.iter().flat_map(|r| r.matrix.keys()));
    let param_keys: Vec<String> = ordered(rows.iter().flat_map(|r| r.params.keys()))
        .into_iter()
        .filter(|k| differs(&rows, |r| r.params.get(k)))
        .collect();
    let metric_keys = metric_names(&rows);
    let full = a.format == MetricsFormat::Csv;
    let mut header: Vec<String> = Vec::new();
    if a.all {
        header.push(if full { "current".into() } else { "".into() });
    }
    header.push("node".into());
    if a.all || full {
        header.push("key".into());
    }
    header.extend(matrix_keys.iter().cloned());
    header.extend(param_keys.iter().cloned());
    header.extend(metric_keys.iter().cloned());
    let cell = |v: Option<&Value>| match v {
        None => String::new(),
        Some(v) if full => raw(v),
        Some(v) => short(v),
    };
    let mut table: Vec<Vec<String>> = Vec::new();
    for r in &rows {
        let mut line = Vec::new();
        if a.all {
            line.push(match (full, r.current) {
                (true, c) => c.to_string(),
                (false, true) => "*".into(),
                (false, false) => String::new(),
            });
        }
        line.push(r.node.clone());
        if full {
            line.push(r.key.clone());
        } else if a.all {
            line.push(r.key[..8.min(r.key.len())].to_string());
        }
        line.extend(matrix_keys.iter().map(|k| cell(r.matrix.get(k))));
        line.extend(param_keys.iter().map(|k| cell(r.params.get(k))));
        line.extend(metric_keys.iter().map(|k| cell(r.metrics.get(k))));
        table.push(line);
    }
    print_table(&header, &table, a.format);
    if a.all && a.format == MetricsFormat::Table && !ctx.global.quiet {
        eprintln!("* the variant the pipeline gives the node now");
    }
    Ok(())
}

/// `--group-by KEY`: n, mean, sd, min and max of every numeric metric per value of KEY.
fn grouped(rows: &[Variant], key: &str, format: MetricsFormat) -> CliResult {
    let group_of = |r: &Variant| r.matrix.get(key).or_else(|| r.params.get(key)).cloned();
    if !rows.iter().any(|r| group_of(r).is_some()) {
        let mut known: BTreeSet<String> = BTreeSet::new();
        for r in rows {
            known.extend(r.matrix.keys().cloned());
            known.extend(r.params.keys().cloned());
        }
        return Err(usage(format!(
            "--group-by {key}: no row has a matrix value or param `{key}` (they have: {})",
            list(known.into_iter().collect())
        )));
    }
    // Groups in the order their values first appear.
    let mut groups: Vec<(Value, Vec<&Variant>)> = Vec::new();
    for r in rows {
        let Some(g) = group_of(r) else { continue };
        match groups.iter_mut().find(|(v, _)| *v == g) {
            Some((_, members)) => members.push(r),
            None => groups.push((g, vec![r])),
        }
    }
    let metrics = metric_names(rows);
    let mut out = Vec::new();
    for (g, members) in &groups {
        for m in &metrics {
            let xs: Vec<f64> = members
                .iter()
                .filter_map(|r| r.metrics.get(m).and_then(Value::as_f64))
                .collect();
            if xs.is_empty() {
                continue;
            }
            out.push((g.clone(), m.clone(), Stats::of(&xs)));
        }
    }
    if format == MetricsFormat::Json {
        let list: Vec<Value> = out
            .iter()
            .map(|(g, m, s)| {
                json!({"group": {key: g}, "metric": m, "n": s.n, "mean": finite(s.mean),
                       "sd": finite(s.sd), "min": finite(s.min), "max": finite(s.max)})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list).expect("json"));
        return Ok(());
    }
    let full = format == MetricsFormat::Csv;
    let num = |x: f64| {
        if x.is_nan() {
            String::new()
        } else if full {
            x.to_string()
        } else {
            fmt_num(x)
        }
    };
    let header: Vec<String> = [key, "metric", "n", "mean", "sd", "min", "max"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let table: Vec<Vec<String>> = out
        .iter()
        .map(|(g, m, s)| {
            vec![
                if full { raw(g) } else { short(g) },
                m.clone(),
                s.n.to_string(),
                num(s.mean),
                num(s.sd),
                num(s.min),
                num(s.max),
            ]
        })
        .collect();
    print_table(&header, &table, format);
    Ok(())
}

/// `--diff A B`: what differs between two variants, matrix values, params and metrics.
fn diff(p: &Pipeline, cache: &Cache, a: &str, b: &str, format: MetricsFormat) -> CliResult {
    let va = find_variant(p, cache, a)?;
    let vb = find_variant(p, cache, b)?;
    let mut rows: Vec<(&str, String, Option<&Value>, Option<&Value>)> = Vec::new();
    let sections = [
        ("matrix", &va.matrix, &vb.matrix),
        ("param", &va.params, &vb.params),
        ("metric", &va.metrics, &vb.metrics),
    ];
    for (what, ma, mb) in sections {
        let names: BTreeSet<&String> = ma.keys().chain(mb.keys()).collect();
        for name in names {
            let (x, y) = (ma.get(name), mb.get(name));
            if x != y {
                rows.push((what, name.clone(), x, y));
            }
        }
    }
    let change = |x: Option<&Value>, y: Option<&Value>| match (
        x.and_then(Value::as_f64),
        y.and_then(Value::as_f64),
    ) {
        (Some(x), Some(y)) => Some(y - x),
        _ => None,
    };
    let label = |v: &Variant| format!("{} ({})", v.node, &v.key[..8.min(v.key.len())]);
    if format == MetricsFormat::Json {
        let side = |v: &Variant| json!({"node": v.node, "key": v.key, "current": v.current});
        let list: Vec<Value> = rows
            .iter()
            .map(|(what, name, x, y)| {
                json!({"what": what, "name": name, "a": x, "b": y,
                       "change": change(*x, *y).map(finite)})
            })
            .collect();
        let out = json!({"a": side(&va), "b": side(&vb), "differences": list});
        println!("{}", serde_json::to_string_pretty(&out).expect("json"));
        return Ok(());
    }
    let full = format == MetricsFormat::Csv;
    let cell = |v: Option<&Value>| match v {
        None => String::new(),
        Some(v) if full => raw(v),
        Some(v) => short(v),
    };
    let header: Vec<String> = if full {
        ["what", "name", "a", "b", "change"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        vec![
            "".into(),
            "name".into(),
            label(&va),
            label(&vb),
            "change".into(),
        ]
    };
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|(what, name, x, y)| {
            let d = change(*x, *y).map_or(String::new(), |d| match full {
                true => d.to_string(),
                false if d > 0.0 => format!("+{}", fmt_num(d)),
                false => fmt_num(d),
            });
            vec![what.to_string(), name.clone(), cell(*x), cell(*y), d]
        })
        .collect();
    if rows.is_empty() && !full {
        println!(
            "{} and {} have the same matrix values, params and metrics",
            label(&va),
            label(&vb)
        );
        return Ok(());
    }
    print_table(&header, &table, format);
    Ok(())
}

/// A `--diff` operand: a node id of the pipeline (its current variant, which must be
/// cached), else a cache key given by a unique hex prefix.
fn find_variant(p: &Pipeline, cache: &Cache, name: &str) -> CliResult<Variant> {
    if let Some(&i) = p.by_id.get(name) {
        let found = variants(p, cache, &[i], false)?;
        return found.rows.into_iter().next().ok_or_else(|| {
            usage(format!(
                "--diff: node `{name}` has no cached result for its current params (run it, \
                 or name an earlier variant by its key: `dagrun metrics --all`)"
            ))
        });
    }
    let is_key = name.len() >= 4 && name.chars().all(|c| c.is_ascii_hexdigit());
    if !is_key {
        return Err(usage(format!(
            "--diff: `{name}` is neither a node of {} nor a cache key (a hex prefix of at \
             least 4 digits)",
            p.name
        )));
    }
    let prefix = name.to_ascii_lowercase();
    let mut matches: Vec<_> = cache
        .records()?
        .into_iter()
        .filter(|r| r.key.to_hex().starts_with(&prefix))
        .collect();
    match matches.len() {
        0 => Err(usage(format!(
            "--diff: no node `{name}` in {} and no cache key starting with `{name}`",
            p.name
        ))),
        1 => {
            let r = matches.remove(0);
            let stage = match p.by_id.get(&r.node) {
                Some(&i) => p.nodes[i].stage.clone(),
                None => r.node.split('[').next().unwrap_or(&r.node).to_string(),
            };
            // Current: the key the pipeline gives its node now.
            let current = p.by_id.get(&r.node).is_some_and(|&i| {
                variants(p, cache, &[i], false)
                    .is_ok_and(|v| v.rows.iter().any(|x| x.key == r.key.to_hex()))
            });
            Ok(variant(&stage, &r, current))
        }
        n => Err(usage(format!(
            "--diff: `{name}` is the start of {n} cache keys ({}); give more digits",
            matches
                .iter()
                .take(5)
                .map(|r| format!("{} of {}", &r.key.to_hex()[..12], r.node))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Summary statistics of a sample; `sd` is the sample standard deviation (NaN for one
/// value).
#[derive(Debug, PartialEq)]
struct Stats {
    n: usize,
    mean: f64,
    sd: f64,
    min: f64,
    max: f64,
}

impl Stats {
    fn of(xs: &[f64]) -> Stats {
        let n = xs.len();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let sd = if n > 1 {
            (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            f64::NAN
        };
        Stats {
            n,
            mean,
            sd,
            min: xs.iter().copied().fold(f64::INFINITY, f64::min),
            max: xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }
}

fn finite(x: f64) -> Value {
    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
}

/// A row's metric, param or matrix value named `key`.
fn lookup<'r>(r: &'r Variant, key: &str) -> Option<&'r Value> {
    r.metrics
        .get(key)
        .or_else(|| r.params.get(key))
        .or_else(|| r.matrix.get(key))
}

/// Numbers by value, anything else by its text; numbers before text.
fn compare(a: &Value, b: &Value) -> std::cmp::Ordering {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => raw(a).cmp(&raw(b)),
    }
}

/// Whether rows disagree on a value (a row without it disagrees with one with it).
fn differs<'r>(rows: &'r [Variant], get: impl Fn(&'r Variant) -> Option<&'r Value>) -> bool {
    let first = rows.first().and_then(&get);
    rows.iter().any(|r| get(r) != first)
}

/// Names in the order they first appear.
fn ordered<'a>(names: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in names {
        if !out.contains(n) {
            out.push(n.clone());
        }
    }
    out
}

fn metric_names(rows: &[Variant]) -> Vec<String> {
    let set: BTreeSet<&String> = rows.iter().flat_map(|r| r.metrics.keys()).collect();
    set.into_iter().cloned().collect()
}

fn list(v: Vec<String>) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// A value in full (CSV, sorting).
fn raw(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A value for reading: numbers to a few significant digits.
fn short(v: &Value) -> String {
    match v {
        Value::Number(n) if n.is_f64() => n.as_f64().map(fmt_num).unwrap_or_default(),
        other => raw(other),
    }
}

/// `0.1234`, `12.35`, `1.5e-05`, `123457`: enough digits to compare, not every one.
fn fmt_num(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return x.to_string();
    }
    let a = x.abs();
    if x.fract() == 0.0 && a < 1e15 {
        return format!("{x:.0}");
    }
    if !(1e-4..1e6).contains(&a) {
        return format!("{x:.3e}");
    }
    // Four significant digits, trailing zeros dropped.
    let decimals = (3 - a.log10().floor() as i32).max(0) as usize;
    let s = format!("{x:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn print_table(header: &[String], rows: &[Vec<String>], format: MetricsFormat) {
    match format {
        MetricsFormat::Csv => {
            println!("{}", csv_line(header));
            for r in rows {
                println!("{}", csv_line(r));
            }
        }
        MetricsFormat::Md => {
            let esc = |s: &String| s.replace('|', "\\|");
            println!(
                "| {} |",
                header.iter().map(esc).collect::<Vec<_>>().join(" | ")
            );
            println!(
                "|{}|",
                header.iter().map(|_| "---").collect::<Vec<_>>().join("|")
            );
            for r in rows {
                println!("| {} |", r.iter().map(esc).collect::<Vec<_>>().join(" | "));
            }
        }
        MetricsFormat::Table | MetricsFormat::Json => {
            let widths: Vec<usize> = (0..header.len())
                .map(|c| {
                    rows.iter()
                        .map(|r| r[c].chars().count())
                        .chain([header[c].chars().count()])
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            let numeric: Vec<bool> = (0..header.len())
                .map(|c| {
                    rows.iter().any(|r| !r[c].is_empty())
                        && rows
                            .iter()
                            .all(|r| r[c].is_empty() || r[c].parse::<f64>().is_ok())
                })
                .collect();
            let line = |cells: &[String]| {
                let parts: Vec<String> = cells
                    .iter()
                    .enumerate()
                    .map(|(c, s)| {
                        let w = widths[c];
                        if numeric[c] {
                            format!("{s:>w$}")
                        } else {
                            format!("{s:<w$}")
                        }
                    })
                    .collect();
                parts.join("  ").trim_end().to_string()
            };
            println!("{}", line(header));
            for r in rows {
                println!("{}", line(r));
            }
        }
    }
}

/// One CSV line (RFC 4180 quoting).
fn csv_line(cells: &[String]) -> String {
    cells
        .iter()
        .map(|c| {
            if c.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", c.replace('"', "\"\""))
            } else {
                c.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_shortened_for_reading() {
        assert_eq!(fmt_num(0.123456), "0.1235");
        assert_eq!(fmt_num(12.3456), "12.35");
        assert_eq!(fmt_num(3.0), "3");
        assert_eq!(fmt_num(1.5e-5), "1.500e-5");
        assert_eq!(fmt_num(0.5), "0.5");
        assert_eq!(fmt_num(-2.25), "-2.25");
    }

    #[test]
    fn stats_of_a_sample() {
        let s = Stats::of(&[1.0, 2.0, 3.0]);
        assert_eq!((s.n, s.mean, s.sd, s.min, s.max), (3, 2.0, 1.0, 1.0, 3.0));
        assert!(Stats::of(&[4.0]).sd.is_nan());
    }

    #[test]
    fn csv_quotes_what_needs_it() {
        let c = |v: &[&str]| csv_line(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            c(&["a", "b,c", "say \"hi\""]),
            "a,\"b,c\",\"say \"\"hi\"\"\""
        );
    }
}
