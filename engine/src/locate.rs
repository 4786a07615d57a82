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
}

impl Positions {
    /// Reads positions; `None` when the document does not parse (serde_yaml reports that).
    pub fn read(src: &str) -> Option<Positions> {
        let mut rec = Recorder::default();
        Parser::new_from_str(src).load(&mut rec, false).ok()?;
        Some(rec.out)
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

impl MarkedEventReceiver for Recorder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(value, ..) => {
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
    fn duplicate_keys_are_reported() {
        let src = "stages:\n  a:\n    kind: command\n  a:\n    kind: command\n";
        let p = Positions::read(src).unwrap();
        assert_eq!(p.duplicates.len(), 1);
        assert_eq!(p.duplicates[0].1, (4, 3));
    }
}
