//! Source positions of a YAML document's keys, so that errors found after parsing
//! (unknown stage kind, undefined `${...}`, cycles) can point at `file:line:col`.
//!
//! serde_yaml reports syntax and type errors with positions but gives values no spans,
//! so the document is also read as an event stream, recording where each key path
//! (`stages.train.matrix.seed[1]`) starts. Duplicate keys are found here too.

use std::collections::HashMap;

use yaml_rust2::{
    parser::{Event, MarkedEventReceiver, Parser},
    scanner::Marker,
};

/// A path into the document: mapping keys and sequence indices.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// Positions (1-based line, 1-based column) of every key path.
#[derive(Debug, Default)]
pub struct Positions {
    map: HashMap<Vec<Seg>, (usize, usize)>,
    /// Keys that appear twice in the same mapping: (path of the second, position).
    pub duplicates: Vec<(Vec<Seg>, (usize, usize))>,
    /// Something the file must not hold although it parses (a second document, aliases
    /// that expand past [`MAX_EXPANDED`]): its position and what is wrong.
    pub refused: Option<((usize, usize), String)>,
    /// Where the first alias (`*name`) is: the place to report an alias error that the
    /// deserialiser gives without one.
    pub first_alias: Option<(usize, usize)>,
}

/// How many values (scalars and collections) a pipeline may hold once its aliases are
/// expanded. A pipeline of thousands of stages stays far below; "billion laughs"
/// (aliases of aliases of aliases) is refused before anything expands it.
pub const MAX_EXPANDED: u64 = 1_000_000;

/// serde_yaml refuses a document whose aliases are followed more than 100 times per
/// event it holds ("repetition limit exceeded", with no position); the same rule is
/// checked here, where the alias that crosses it is known.
const JUMPS_PER_EVENT: u64 = 100;

impl Positions {
    /// Reads positions. When the document does not parse, the position (1-based line
    /// and column) and message of the parser's error.
    pub fn read(src: &str) -> Result<Positions, ((usize, usize), String)> {
        let mut rec = Recorder::default();
        // Every document is read (`multi`), so that a second one is found and refused.
        let res = Parser::new_from_str(src).load(&mut rec, true);
        if rec.out.refused.is_some() {
            return Ok(rec.out);
        }
        match res {
            Ok(()) => {
                rec.check_jumps();
                Ok(rec.out)
            }
            Err(e) => Err((Recorder::pos(e.marker()), e.info().to_string())),
        }
    }

    /// The position of the longest prefix of `path` that is known.
    pub fn find(&self, path: &[Seg]) -> Option<(usize, usize)> {
        (1..=path.len())
            .rev()
            .find_map(|n| self.map.get(&path[..n]).copied())
    }
}

/// Builds a path from a dotted spec like `stages.train.params`.
pub fn path(parts: &[&str]) -> Vec<Seg> {
    parts.iter().map(|p| Seg::Key(p.to_string())).collect()
}

enum Frame {
    Map {
        expecting_key: bool,
        keys: Vec<String>,
    },
    Seq {
        next: usize,
    },
}

#[derive(Default)]
struct Recorder {
    out: Positions,
    stack: Vec<Frame>,
    path: Vec<Seg>,
    /// Documents started so far.
    documents: usize,
    /// Values read so far with every alias counted as the values it stands for.
    expanded: u64,
    /// For each open collection: its anchor id (0: none), and `expanded` and `jumps`
    /// at its start.
    open: Vec<(usize, u64, u64)>,
    /// Expanded size of each anchored value, by anchor id.
    anchored: HashMap<usize, u64>,
    /// Events (scalars, aliases, collection starts and ends), as serde_yaml counts them.
    events: u64,
    /// Aliases followed when the whole document is read, nested ones included.
    jumps: u64,
    /// Aliases followed inside each anchored value, by anchor id.
    anchored_jumps: HashMap<usize, u64>,
    /// `jumps` after each alias event, with its position.
    jumps_at: Vec<(u64, (usize, usize))>,
}

impl Recorder {
    fn pos(m: &Marker) -> (usize, usize) {
        (m.line(), m.col() + 1)
    }

    /// Called when a value (scalar, or the start of a collection) begins.
    fn enter_value(&mut self, mark: &Marker) {
        if let Some(Frame::Seq { next }) = self.stack.last_mut() {
            let i = *next;
            *next += 1;
            self.path.push(Seg::Index(i));
            self.out
                .map
                .entry(self.path.clone())
                .or_insert(Self::pos(mark));
        }
    }

    /// Called when a value ends.
    fn leave_value(&mut self) {
        match self.stack.last_mut() {
            Some(Frame::Map { expecting_key, .. }) => {
                *expecting_key = true;
                self.path.pop();
            }
            Some(Frame::Seq { .. }) => {
                self.path.pop();
            }
            None => {}
        }
    }
}

impl Recorder {
    /// Refuses the document where serde_yaml would stop following its aliases.
    fn check_jumps(&mut self) {
        let limit = self.events.saturating_mul(JUMPS_PER_EVENT);
        if self.out.refused.is_some() || self.jumps <= limit {
            return;
        }
        if let Some(&(_, at)) = self.jumps_at.iter().find(|(j, _)| *j > limit) {
            self.out.refused = Some((
                at,
                format!(
                    "aliases here are followed more than {JUMPS_PER_EVENT} times per value \
                     in the file, more than the YAML reader allows; write the values out or \
                     use fewer nested aliases"
                ),
            ));
        }
    }

    /// Counts `n` values (an alias counts as what it stands for); refuses past the limit.
    fn count(&mut self, n: u64, mark: &Marker) {
        self.expanded = self.expanded.saturating_add(n);
        if self.expanded > MAX_EXPANDED && self.out.refused.is_none() {
            self.out.refused = Some((
                Self::pos(mark),
                format!(
                    "aliases here expand the pipeline past {MAX_EXPANDED} values \
                     (an alias bomb?); write the values out or use fewer nested aliases"
                ),
            ));
        }
    }
}

impl MarkedEventReceiver for Recorder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.out.refused.is_some() {
            return;
        }
        match &ev {
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents > 1 {
                    self.out.refused = Some((
                        Self::pos(&mark),
                        "a second YAML document: a pipeline file holds one document \
                         (remove this `---` and what follows, or move it to its own file)"
                            .to_string(),
                    ));
                    return;
                }
            }
            Event::Scalar(_, _, anchor, _) => {
                self.events += 1;
                self.count(1, &mark);
                if *anchor != 0 {
                    self.anchored.insert(*anchor, 1);
                    self.anchored_jumps.insert(*anchor, 0);
                }
            }
            Event::Alias(id) => {
                self.events += 1;
                let n = self.anchored.get(id).copied().unwrap_or(1);
                self.count(n, &mark);
                let j = 1 + self.anchored_jumps.get(id).copied().unwrap_or(0);
                self.jumps = self.jumps.saturating_add(j);
                self.jumps_at.push((self.jumps, Self::pos(&mark)));
                self.out.first_alias.get_or_insert(Self::pos(&mark));
            }
            Event::MappingStart(anchor, _) | Event::SequenceStart(anchor, _) => {
                self.events += 1;
                self.count(1, &mark);
                self.open.push((*anchor, self.expanded - 1, self.jumps));
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.events += 1;
                if let Some((anchor, start, jumps)) = self.open.pop() {
                    if anchor != 0 {
                        self.anchored.insert(anchor, self.expanded - start);
                        self.anchored_jumps.insert(anchor, self.jumps - jumps);
                    }
                }
            }
            _ => {}
        }
        if self.out.refused.is_some() {
            return;
        }
        match ev {
            Event::Scalar(value, ..) => {
                // A byte-order mark inside the stream is dropped by libyaml (serde_yaml) and
                // kept by this reader: drop it from keys too, so both name the same key.
                let value = value.trim_start_matches('\u{feff}').to_string();
                if let Some(Frame::Map {
                    expecting_key: true,
                    keys,
                }) = self.stack.last_mut()
                {
                    let mut p = self.path.clone();
                    p.push(Seg::Key(value.clone()));
                    if keys.contains(&value) {
                        self.out.duplicates.push((p.clone(), Self::pos(&mark)));
                    } else {
                        keys.push(value.clone());
                        self.out.map.insert(p, Self::pos(&mark));
                    }
                    if let Some(Frame::Map { expecting_key, .. }) = self.stack.last_mut() {
                        *expecting_key = false;
                    }
                    self.path.push(Seg::Key(value));
                } else {
                    // A scalar value of a mapping entry: point at the value itself.
                    if let Some(Frame::Map { .. }) = self.stack.last() {
                        if !self.out.duplicates.iter().any(|(p, _)| p == &self.path) {
                            self.out.map.insert(self.path.clone(), Self::pos(&mark));
                        }
                    }
                    self.enter_value(&mark);
                    self.leave_value();
                }
            }
            Event::Alias(_) => {
                self.enter_value(&mark);
                self.leave_value();
            }
            Event::MappingStart(..) => {
                self.enter_value(&mark);
                self.stack.push(Frame::Map {
                    expecting_key: true,
                    keys: Vec::new(),
                });
            }
            Event::SequenceStart(..) => {
                self.enter_value(&mark);
                self.stack.push(Frame::Seq { next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                self.leave_value();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_of_keys_and_items() {
        let src = "params:\n  a: 1\nstages:\n  train:\n    kind: command\n    outs: [x, y]\n    deps:\n      - d1\n      - d2\n";
        let p = Positions::read(src).unwrap();
        assert_eq!(p.find(&path(&["stages", "train", "kind"])), Some((5, 11)));
        assert_eq!(p.find(&path(&["stages", "train"])), Some((4, 3)));
        let mut outs1 = path(&["stages", "train", "outs"]);
        outs1.push(Seg::Index(1));
        assert_eq!(p.find(&outs1), Some((6, 15)));
        let mut deps1 = path(&["stages", "train", "deps"]);
        deps1.push(Seg::Index(1));
        assert_eq!(p.find(&deps1), Some((9, 9)));
        // Unknown tails fall back to the longest known prefix.
        assert_eq!(p.find(&path(&["stages", "train", "nope"])), Some((4, 3)));
    }

    #[test]
    fn aliases_followed_past_serde_yamls_limit_are_refused_in_place() {
        // 8 aliases per level: 8, 72, 584, 4680, 37448 jumps; ~70 events allow 7,000.
        let mut src = String::from("a: &a [1]\n");
        for (name, prev) in [("b", "a"), ("c", "b"), ("d", "c"), ("e", "d"), ("f", "e")] {
            src.push_str(&format!(
                "{name}: &{name} [{}]\n",
                vec![format!("*{prev}"); 8].join(", ")
            ));
        }
        let p = Positions::read(&src).unwrap();
        let ((line, _), msg) = p.refused.expect("refused");
        assert_eq!(line, 6, "{msg}");
        assert!(msg.contains("followed more than 100 times"), "{msg}");
        // serde_yaml agrees that it would not read it.
        let e = serde_yaml::from_str::<serde_yaml::Value>(&src).unwrap_err();
        assert!(e.to_string().contains("repetition limit"), "{e}");
        // One level less is within both limits.
        let short: String = src.lines().take(4).map(|l| format!("{l}\n")).collect();
        let serde = serde_yaml::from_str::<serde_yaml::Value>(&short).map(|_| ());
        let ours = Positions::read(&short).unwrap().refused;
        assert!(ours.is_none() && serde.is_ok(), "{ours:?} {serde:?}");
    }

    #[test]
    fn duplicate_keys_are_reported() {
        let src = "stages:\n  a:\n    kind: command\n  a:\n    kind: command\n";
        let p = Positions::read(src).unwrap();
        assert_eq!(p.duplicates.len(), 1);
        assert_eq!(p.duplicates[0].1, (4, 3));
    }
}
