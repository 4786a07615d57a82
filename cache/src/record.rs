use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Artifact, Hash};

/// Scalar and series metrics a node reported. Every value round-trips, NaN and ±inf
/// included: JSON has no numbers for them, so they are stored as the strings `"NaN"`,
/// `"inf"` and `"-inf"` ([`metric_values`]); a `null` that older versions wrote for them
/// reads back as NaN.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        with = "metric_values::scalars"
    )]
    pub scalars: BTreeMap<String, f64>,
    /// Series of `(step, value)` points, e.g. a loss curve.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        with = "metric_values::series"
    )]
    pub series: BTreeMap<String, Vec<(f64, f64)>>,
    /// Metrics that are not numbers: booleans and strings (from a command stage's
    /// `metrics:` files). Absent from records of older versions.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub other: BTreeMap<String, serde_json::Value>,
}

impl Metrics {
    pub fn is_empty(&self) -> bool {
        self.scalars.is_empty() && self.series.is_empty() && self.other.is_empty()
    }
}

/// Metric values in JSON: finite numbers as numbers, the others as strings.
mod metric_values {
    use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

    /// One value as it is written and read.
    #[derive(Clone, Copy)]
    struct Value(f64);

    impl Serialize for Value {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let v = self.0;
            if v.is_finite() {
                s.serialize_f64(v)
            } else if v.is_nan() {
                s.serialize_str("NaN")
            } else if v > 0.0 {
                s.serialize_str("inf")
            } else {
                s.serialize_str("-inf")
            }
        }
    }

    impl<'de> Deserialize<'de> for Value {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            #[derive(Deserialize)]
            #[serde(untagged)]
            enum Raw {
                Number(f64),
                Text(String),
                /// What serde_json wrote for NaN and ±inf before they were strings.
                Null(()),
            }
            Ok(Value(match Raw::deserialize(d)? {
                Raw::Number(v) => v,
                Raw::Null(()) => f64::NAN,
                Raw::Text(t) => match t.as_str() {
                    "NaN" | "nan" => f64::NAN,
                    "inf" | "+inf" | "infinity" | "Infinity" => f64::INFINITY,
                    "-inf" | "-infinity" | "-Infinity" => f64::NEG_INFINITY,
                    _ => return Err(de::Error::custom(format!("`{t}` is not a metric value"))),
                },
            }))
        }
    }

    pub(super) mod scalars {
        use std::collections::BTreeMap;

        use super::*;

        pub fn serialize<S: Serializer>(
            m: &BTreeMap<String, f64>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            s.collect_map(m.iter().map(|(k, v)| (k, Value(*v))))
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<BTreeMap<String, f64>, D::Error> {
            let m = BTreeMap::<String, Value>::deserialize(d)?;
            Ok(m.into_iter().map(|(k, v)| (k, v.0)).collect())
        }
    }

    pub(super) mod series {
        use std::collections::BTreeMap;

        use super::*;

        type Points = Vec<(f64, f64)>;

        pub fn serialize<S: Serializer>(
            m: &BTreeMap<String, Points>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            s.collect_map(m.iter().map(|(k, pts)| {
                let pts: Vec<(Value, Value)> =
                    pts.iter().map(|&(x, y)| (Value(x), Value(y))).collect();
                (k, pts)
            }))
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<BTreeMap<String, Points>, D::Error> {
            let m = BTreeMap::<String, Vec<(Value, Value)>>::deserialize(d)?;
            Ok(m.into_iter()
                .map(|(k, pts)| (k, pts.into_iter().map(|(x, y)| (x.0, y.0)).collect()))
                .collect())
        }
    }
}

/// When a node ran and how long it took.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub seconds: f64,
}

/// The committed result of one execution of a node, stored under the node's key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub key: Hash,
    /// The node id, e.g. `train[seed=1]`.
    pub node: String,
    /// The stage kind and its implementation version.
    pub kind: String,
    pub kind_version: u32,
    /// Everything the key was computed from, as JSON; `dagrun why` diffs these.
    pub components: serde_json::Value,
    /// Outputs by name.
    pub outputs: BTreeMap<String, Artifact>,
    #[serde(default)]
    pub metrics: Metrics,
    pub timing: Timing,
    /// The captured log (stdout + stderr, or the stage's own log), as an object.
    pub log: Option<Hash>,
    /// The dagrun version that wrote this record.
    pub engine_version: String,
    /// The pipeline file the node came from, relative to the workspace.
    pub pipeline: String,
    /// For a `command` stage: the pipeline params its fields refer to (`lr` for
    /// `${params.lr}`), with their values, so that `dagrun metrics` can show them (its
    /// key has them only inside the command's text). Empty for other kinds, and in
    /// records of older versions.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub param_refs: BTreeMap<String, serde_json::Value>,
}

impl Record {
    /// Every object the record refers to.
    pub fn objects(&self) -> Vec<Hash> {
        let mut v: Vec<Hash> = self.outputs.values().flat_map(|a| a.objects()).collect();
        v.extend(self.log);
        v
    }
}

/// The last committed key of a node id: what `why` compares against.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Latest {
    pub key: Hash,
    pub pipeline: String,
    pub at: DateTime<Utc>,
}

/// One invocation of `dagrun run`, for `dagrun log`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub pipeline: String,
    pub command: String,
    pub executed: Vec<String>,
    pub cached: usize,
    pub cut_off: usize,
    pub failed: Vec<String>,
    /// `success`, `failed` or `interrupted`.
    pub outcome: String,
    /// How many nodes ended each way; absent from records of older versions, whose
    /// `executed` counted failed and interrupted nodes too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<RunCounts>,
    /// The overrides the run's pipeline was loaded with (`-S`, `--params`), each as
    /// `KEY=VALUE`; empty (and absent from the JSON) for runs without, and for records
    /// of older versions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<String>,
}

/// How the nodes of one run ended: each node is counted once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunCounts {
    /// Ran and succeeded.
    pub ran: usize,
    /// Taken from the cache (`cut_off` of them after their upstream reran).
    pub cached: usize,
    pub cut_off: usize,
    pub failed: usize,
    /// Not run because an upstream node failed.
    pub skipped: usize,
    /// Stopped by Ctrl-C, or never started because of it.
    pub interrupted: usize,
}

impl RunCounts {
    pub fn nodes(&self) -> usize {
        self.ran + self.cached + self.failed + self.skipped + self.interrupted
    }
}

impl std::fmt::Display for RunCounts {
    /// `3 ran, 1 cached (1 kept by early cutoff), 2 failed, 1 skipped, 1 interrupted`:
    /// ran and cached always, the others when there are any.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ran, {} cached", self.ran, self.cached)?;
        if self.cut_off > 0 {
            write!(f, " ({} kept by early cutoff)", self.cut_off)?;
        }
        for (n, what) in [
            (self.failed, "failed"),
            (self.skipped, "skipped"),
            (self.interrupted, "interrupted"),
        ] {
            if n > 0 {
                write!(f, ", {n} {what}")?;
            }
        }
        Ok(())
    }
}

/// The last execution of a node that failed (cleared when the node next succeeds):
/// failed nodes leave no record, so `status`, `why` and `show` read this instead.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeFailure {
    pub at: DateTime<Utc>,
    /// What went wrong, e.g. `command exited with status 1`.
    pub error: String,
    /// The node's log, kept under the cache's `logs/`.
    pub log: Option<std::path::PathBuf>,
    /// The pipeline file the node came from, relative to the workspace.
    pub pipeline: String,
}

/// The part of a record the planner needs: decoding only this is much cheaper than the
/// whole record (key components, metrics, log) on a no-op run.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct RecordHead {
    pub key: Hash,
    pub outputs: BTreeMap<String, Artifact>,
    pub timing: Timing,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_round_trip_nan_and_infinities() {
        let mut m = Metrics::default();
        m.scalars.insert("loss".into(), f64::NAN);
        m.scalars.insert("up".into(), f64::INFINITY);
        m.scalars.insert("down".into(), f64::NEG_INFINITY);
        m.scalars.insert("ok".into(), 0.25);
        m.series.insert(
            "curve".into(),
            vec![(0.0, 1.5), (1.0, f64::NAN), (2.0, f64::INFINITY)],
        );
        let json = serde_json::to_string(&m).unwrap();
        let back: Metrics = serde_json::from_str(&json).unwrap();
        assert!(back.scalars["loss"].is_nan(), "{json}");
        assert_eq!(back.scalars["up"], f64::INFINITY);
        assert_eq!(back.scalars["down"], f64::NEG_INFINITY);
        assert_eq!(back.scalars["ok"], 0.25);
        let c = &back.series["curve"];
        assert_eq!(c[0], (0.0, 1.5));
        assert!(c[1].1.is_nan());
        assert_eq!(c[2].1, f64::INFINITY);
        // What older versions wrote for a NaN (JSON null) reads back as NaN.
        let old: Metrics =
            serde_json::from_str(r#"{"scalars":{"loss":null},"series":{"c":[[0,null]]}}"#).unwrap();
        assert!(old.scalars["loss"].is_nan());
        assert!(old.series["c"][0].1.is_nan());
        assert!(serde_json::from_str::<Metrics>(r#"{"scalars":{"x":"many"}}"#).is_err());
    }

    #[test]
    fn run_summaries_of_older_versions_still_read() {
        let old = r#"{"started":"2024-01-01T00:00:00Z","finished":"2024-01-01T00:00:01Z",
            "pipeline":"p.yaml","command":"dagrun p.yaml","executed":["a","b"],"cached":1,
            "cut_off":0,"failed":["b"],"outcome":"failed"}"#;
        let r: RunSummary = serde_json::from_str(old).unwrap();
        assert_eq!(r.counts, None);
        assert!(r.overrides.is_empty());
        assert_eq!(r.executed.len(), 2);
        let c = RunCounts {
            ran: 3,
            failed: 2,
            skipped: 1,
            ..Default::default()
        };
        assert_eq!(c.to_string(), "3 ran, 0 cached, 2 failed, 1 skipped");
        assert_eq!(c.nodes(), 6);
    }
}
