//! Line and column of every node in a YAML document, keyed by the same paths serde reports
//! (`routes[0].targets[1].buffer`), so that errors found after deserialisation can still point
//! at the line to fix. serde_yaml's values carry no positions, so the document is read a second
//! time with yaml-rust2's marked event parser.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// 1-based (line, column) of each node, by path. A mapping entry points at its key.
#[derive(Default)]
pub struct Positions(HashMap<String, (usize, usize)>);

impl Positions {
    pub fn of(text: &str) -> Positions {
        let mut recorder = Recorder::default();
        // A document yaml-rust2 cannot read still gets errors, only without positions.
        let _ = Parser::new_from_str(text).load(&mut recorder, false);
        Positions(recorder.positions)
    }

    /// The position of `path`, or of its nearest ancestor that has one.
    pub fn find(&self, path: &str) -> Option<(usize, usize)> {
        let mut path = path;
        loop {
            if let Some(&position) = self.0.get(path) {
                return Some(position);
            }
            path = &path[..path.rfind(['.', '['])?];
        }
    }
}

enum Frame {
    /// In a mapping: the path of the mapping, and the key whose value comes next (None when a
    /// key comes next).
    Mapping {
        path: String,
        key: Option<String>,
        keys_seen: bool,
    },
    Sequence {
        path: String,
        next: usize,
    },
}

#[derive(Default)]
struct Recorder {
    stack: Vec<Frame>,
    positions: HashMap<String, (usize, usize)>,
}

impl Recorder {
    /// Called for every node start; returns the node's path, or None for a mapping key.
    fn enter(&mut self, scalar: Option<&str>, mark: Marker) -> Option<String> {
        let position = (mark.line(), mark.col() + 1);
        let path = match self.stack.last_mut() {
            None => String::new(),
            Some(Frame::Sequence { path, next }) => {
                let item = format!("{path}[{next}]");
                *next += 1;
                item
            }
            Some(Frame::Mapping {
                path,
                key,
                keys_seen,
            }) => match key.take() {
                Some(name) => join(path, &name),
                None => {
                    let name = scalar.unwrap_or("?").to_owned();
                    self.positions.entry(join(path, &name)).or_insert(position);
                    if !std::mem::replace(keys_seen, true) {
                        // A block mapping's own mark is at its first `:`; its first key is
                        // where a person sees it start.
                        let start = self.positions.entry(path.clone()).or_insert(position);
                        *start = (*start).min(position);
                    }
                    *key = Some(name);
                    return None;
                }
            },
        };
        self.positions.entry(path.clone()).or_insert(position);
        Some(path)
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

impl MarkedEventReceiver for Recorder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        match event {
            Event::Scalar(value, ..) => {
                self.enter(Some(&value), mark);
            }
            Event::Alias(_) => {
                self.enter(None, mark);
            }
            Event::MappingStart(..) => {
                let path = self.enter(None, mark).unwrap_or_default();
                self.stack.push(Frame::Mapping {
                    path,
                    key: None,
                    keys_seen: false,
                });
            }
            Event::SequenceStart(..) => {
                let path = self.enter(None, mark).unwrap_or_default();
                self.stack.push(Frame::Sequence { path, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_point_at_their_lines() {
        let text = "server:\n  listen: 1\nroutes:\n  - name: a\n    targets:\n      - name: x\n        buffer: 0\n";
        let positions = Positions::of(text);
        assert_eq!(positions.find("server.listen"), Some((2, 3)));
        assert_eq!(positions.find("routes[0].name"), Some((4, 5)));
        assert_eq!(positions.find("routes[0].targets[0].buffer"), Some((7, 9)));
        assert_eq!(positions.find("routes[0].targets[0].nope"), Some((6, 9)));
    }
}
