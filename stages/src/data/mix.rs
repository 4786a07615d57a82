//! The `dataset_mix` logic: filters, deduplication, weights or caps, a seeded shuffle and
//! a train/eval split.
//!
//! Per source, in order, a pair is dropped by the first rule it breaks:
//!
//! 1. **empty**: `prompt`, `chosen` or `rejected` is empty or only whitespace;
//! 2. **identical**: `chosen` equals `rejected` (after trimming whitespace);
//! 3. **too long**: chars(prompt) + max(chars(chosen), chars(rejected)) > `max_chars`
//!    (Unicode scalar values);
//! 4. **duplicate**: the blake3 hash of `prompt ⊕ chosen ⊕ rejected` (NUL-separated) was
//!    seen before, in this source or an earlier one (when `dedup` is on).
//!
//! Then each source's kept pairs are shuffled with the source's own stream and selected:
//! a `cap` N takes the first min(N, kept); a `weight` w takes round(w × kept) pairs: whole
//! copies of every pair while that count exceeds `kept`, then the first of the shuffled
//! list for the rest (so the amount is exact, and no pair is repeated more than once more
//! than another). The selected distinct pairs of all sources are shuffled together and the
//! first round(`eval_fraction` × their number) go to eval, the rest to train: a pair and
//! its repeats always land in the same split, train holds the repeats, eval holds each of
//! its pairs once. Train and eval are finally shuffled. Everything is seeded by `seed`.

use std::collections::HashSet;

use rand::seq::SliceRandom;
use serde::Serialize;

use super::{rng_for, PreferencePair};

/// How much of a source to take.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Amount {
    /// round(weight × kept) pairs, repeating pairs when weight > 1.
    Weight(f64),
    /// At most this many distinct pairs.
    Cap(usize),
}

/// One source to mix: its pairs as read, and how much of it to take.
#[derive(Clone, Debug)]
pub struct MixSource {
    pub name: String,
    pub pairs: Vec<PreferencePair>,
    pub amount: Amount,
}

/// Options of the mix.
#[derive(Clone, Debug, PartialEq)]
pub struct MixOptions {
    pub seed: u64,
    pub eval_fraction: f64,
    pub max_chars: Option<usize>,
    pub dedup: bool,
}

/// Per-source counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SourceCounts {
    pub read: usize,
    pub dropped_empty: usize,
    pub dropped_identical: usize,
    pub dropped_too_long: usize,
    pub dropped_duplicate: usize,
    /// Distinct pairs that passed every filter.
    pub kept: usize,
    /// Pairs after the weight or cap (with repeats).
    pub selected: usize,
    pub train: usize,
    pub eval: usize,
}

impl SourceCounts {
    /// The counts as `(name, value)`, in a fixed order (for metrics).
    pub fn fields(&self) -> [(&'static str, usize); 9] {
        [
            ("read", self.read),
            ("dropped_empty", self.dropped_empty),
            ("dropped_identical", self.dropped_identical),
            ("dropped_too_long", self.dropped_too_long),
            ("dropped_duplicate", self.dropped_duplicate),
            ("kept", self.kept),
            ("selected", self.selected),
            ("train", self.train),
            ("eval", self.eval),
        ]
    }

    fn add(&mut self, o: &SourceCounts) {
        self.read += o.read;
        self.dropped_empty += o.dropped_empty;
        self.dropped_identical += o.dropped_identical;
        self.dropped_too_long += o.dropped_too_long;
        self.dropped_duplicate += o.dropped_duplicate;
        self.kept += o.kept;
        self.selected += o.selected;
        self.train += o.train;
        self.eval += o.eval;
    }
}

/// A pair of the mix and the name of its source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MixedPair {
    #[serde(flatten)]
    pub pair: PreferencePair,
    pub source: String,
}

/// The result of [`mix`].
#[derive(Clone, Debug)]
pub struct Mixed {
    pub train: Vec<MixedPair>,
    pub eval: Vec<MixedPair>,
    /// `(source name, counts)` in source order.
    pub counts: Vec<(String, SourceCounts)>,
    pub total: SourceCounts,
}

fn pair_hash(p: &PreferencePair) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    for s in [&p.prompt, &p.chosen, &p.rejected] {
        h.update(s.as_bytes());
        h.update(&[0]);
    }
    *h.finalize().as_bytes()
}

/// Mixes `sources` (see the module documentation).
pub fn mix(sources: Vec<MixSource>, opts: &MixOptions) -> Mixed {
    let mut seen = HashSet::new();
    let mut counts = Vec::new();
    // (source index, pair, multiplicity)
    let mut items: Vec<(usize, PreferencePair, usize)> = Vec::new();
    for (si, src) in sources.into_iter().enumerate() {
        let mut c = SourceCounts {
            read: src.pairs.len(),
            ..Default::default()
        };
        let mut kept = Vec::new();
        for p in src.pairs {
            let chars = |s: &str| s.chars().count();
            if [&p.prompt, &p.chosen, &p.rejected]
                .iter()
                .any(|s| s.trim().is_empty())
            {
                c.dropped_empty += 1;
            } else if p.chosen.trim() == p.rejected.trim() {
                c.dropped_identical += 1;
            } else if opts
                .max_chars
                .is_some_and(|m| chars(&p.prompt) + chars(&p.chosen).max(chars(&p.rejected)) > m)
            {
                c.dropped_too_long += 1;
            } else if opts.dedup && !seen.insert(pair_hash(&p)) {
                c.dropped_duplicate += 1;
            } else {
                kept.push(p);
            }
        }
        c.kept = kept.len();
        let mut rng = rng_for(opts.seed, &format!("mix:select:{si}:{}", src.name));
        kept.shuffle(&mut rng);
        let k = kept.len();
        let mult: Vec<usize> = match src.amount {
            Amount::Cap(n) => (0..k).map(|i| usize::from(i < n)).collect(),
            Amount::Weight(w) => {
                let target = (w * k as f64).round() as usize;
                let whole = target.checked_div(k).unwrap_or(0);
                let rest = target.checked_rem(k).unwrap_or(0);
                (0..k).map(|i| whole + usize::from(i < rest)).collect()
            }
        };
        c.selected = mult.iter().sum();
        for (p, m) in kept.into_iter().zip(mult) {
            if m > 0 {
                items.push((si, p, m));
            }
        }
        counts.push((src.name, c));
    }
    items.shuffle(&mut rng_for(opts.seed, "mix:split"));
    let n_eval = (opts.eval_fraction * items.len() as f64).round() as usize;
    let (mut train, mut eval) = (Vec::new(), Vec::new());
    for (i, (si, pair, m)) in items.into_iter().enumerate() {
        let row = MixedPair {
            pair,
            source: counts[si].0.clone(),
        };
        if i < n_eval {
            counts[si].1.eval += 1;
            eval.push(row);
        } else {
            counts[si].1.train += m;
            for _ in 1..m {
                train.push(row.clone());
            }
            train.push(row);
        }
    }
    train.shuffle(&mut rng_for(opts.seed, "mix:train-order"));
    eval.shuffle(&mut rng_for(opts.seed, "mix:eval-order"));
    let mut total = SourceCounts::default();
    for (_, c) in &counts {
        total.add(c);
    }
    Mixed {
        train,
        eval,
        counts,
        total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(prompt: &str, chosen: &str, rejected: &str) -> PreferencePair {
        PreferencePair {
            prompt: prompt.into(),
            chosen: chosen.into(),
            rejected: rejected.into(),
            prompt_messages: None,
        }
    }

    fn distinct(n: usize, tag: &str) -> Vec<PreferencePair> {
        (0..n)
            .map(|i| pair(&format!("{tag} prompt {i}"), "good", "bad"))
            .collect()
    }

    fn opts() -> MixOptions {
        MixOptions {
            seed: 0,
            eval_fraction: 0.0,
            max_chars: Some(30),
            dedup: true,
        }
    }

    #[test]
    fn each_filter_counts_what_it_drops() {
        let pairs = vec![
            pair("p", "a", "b"),
            pair(" ", "a", "b"),                      // empty prompt
            pair("p", "", "b"),                       // empty chosen
            pair("p", "same", " same"),               // identical
            pair("p", "a", &"x".repeat(40)),          // too long (1 + 40 > 30)
            pair(&"p".repeat(20), "0123456789", "b"), // 20 + 10 = 30: kept
            pair("p", "a", "b"),                      // duplicate
        ];
        let m = mix(
            vec![MixSource {
                name: "s".into(),
                pairs,
                amount: Amount::Weight(1.0),
            }],
            &opts(),
        );
        let c = &m.counts[0].1;
        assert_eq!(
            (
                c.read,
                c.dropped_empty,
                c.dropped_identical,
                c.dropped_too_long,
                c.dropped_duplicate
            ),
            (7, 2, 1, 1, 1)
        );
        assert_eq!((c.kept, c.selected, c.train, c.eval), (2, 2, 2, 0));
        assert_eq!(m.train.len(), 2);
        assert!(m.train.iter().all(|r| r.source == "s"));
        assert_eq!(&m.total, c);
    }

    #[test]
    fn duplicates_across_sources_and_switches() {
        let a = distinct(3, "x");
        let src = |name: &str, pairs: Vec<PreferencePair>| MixSource {
            name: name.into(),
            pairs,
            amount: Amount::Weight(1.0),
        };
        let m = mix(vec![src("a", a.clone()), src("b", a.clone())], &opts());
        assert_eq!(m.counts[0].1.kept, 3);
        assert_eq!(m.counts[1].1.dropped_duplicate, 3);
        let o = MixOptions {
            dedup: false,
            max_chars: None,
            ..opts()
        };
        let m = mix(vec![src("a", a.clone()), src("b", a)], &o);
        assert_eq!(m.total.kept, 6);
        let long = vec![pair(&"p".repeat(1000), "a", "b")];
        assert_eq!(mix(vec![src("l", long)], &o).total.kept, 1);
    }

    #[test]
    fn weights_and_caps_set_amounts() {
        let src = |name: &str, n, amount| MixSource {
            name: name.into(),
            pairs: distinct(n, name),
            amount,
        };
        let m = mix(
            vec![
                src("up", 10, Amount::Weight(2.5)),
                src("down", 10, Amount::Weight(0.3)),
                src("cap", 10, Amount::Cap(4)),
                src("bigcap", 3, Amount::Cap(100)),
                src("zero", 5, Amount::Weight(0.0)),
            ],
            &opts(),
        );
        let sel: Vec<usize> = m.counts.iter().map(|(_, c)| c.selected).collect();
        assert_eq!(sel, vec![25, 3, 4, 3, 0]);
        assert_eq!(m.train.len(), 35);
        // Weight 2.5 over 10 pairs: five pairs thrice, five twice.
        let mut per_prompt = std::collections::HashMap::new();
        for r in m.train.iter().filter(|r| r.source == "up") {
            *per_prompt.entry(r.pair.prompt.clone()).or_insert(0) += 1;
        }
        let mut reps: Vec<i32> = per_prompt.into_values().collect();
        reps.sort();
        assert_eq!(reps, vec![2, 2, 2, 2, 2, 3, 3, 3, 3, 3]);
    }

    #[test]
    fn split_is_seeded_disjoint_and_keeps_repeats_together() {
        let src = |seed_tag: &str| MixSource {
            name: "s".into(),
            pairs: distinct(200, seed_tag),
            amount: Amount::Weight(2.0),
        };
        let o = MixOptions {
            eval_fraction: 0.25,
            ..opts()
        };
        let a = mix(vec![src("t")], &o);
        let b = mix(vec![src("t")], &o);
        assert_eq!(a.train, b.train);
        assert_eq!(a.eval, b.eval);
        assert_eq!(a.eval.len(), 50);
        assert_eq!(a.train.len(), 300);
        let eval: HashSet<&str> = a.eval.iter().map(|r| r.pair.prompt.as_str()).collect();
        assert_eq!(eval.len(), 50, "eval holds each pair once");
        assert!(a
            .train
            .iter()
            .all(|r| !eval.contains(r.pair.prompt.as_str())));
        let c = mix(vec![src("t")], &MixOptions { seed: 1, ..o });
        assert_ne!(a.eval, c.eval);
        assert_eq!((a.counts[0].1.train, a.counts[0].1.eval), (300, 50));
    }
}
