//! `parse` never panics, whatever the text: the build script and the `routes!` macro hand it
//! whatever a person wrote. Three kinds of input:
//! - arbitrary strings;
//! - a soup of YAML tokens and schema keys, which reaches deeper into the YAML parsers;
//! - documents shaped like routes files (the schema's keys, plausible and implausible values,
//!   nesting, lists, block and flow style), which reach the checks after parsing.
//!
//! Beyond not panicking: a failure has at least one error (the macro relies on it), positions
//! are 1-based and inside the text, and a file that loads expands to tokens that parse as a Rust
//! file.

use proptest::prelude::*;
use proptest::sample::select;

fn check(text: &str) -> Result<(), TestCaseError> {
    match fanout_model::parse("routes.yaml", text) {
        Ok(routes) => {
            prop_assert!(!routes.routes.is_empty());
            // `file` falls back to the raw tokens when they do not parse: check the tokens.
            let tokens = fanout_model::expand::tokens(&routes);
            if let Err(error) = syn::parse2::<syn::File>(tokens) {
                return Err(TestCaseError::fail(format!(
                    "the expansion is not Rust: {error}"
                )));
            }
        }
        Err(errors) => {
            prop_assert!(!errors.0.is_empty(), "failed without an error");
            // libyaml also breaks lines at NEL, LS and PS (as YAML 1.1 did); one more line for
            // the end of the input.
            let lines = 2 + text
                .matches(['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}'])
                .count();
            for error in &errors.0 {
                prop_assert_eq!(&error.file, "routes.yaml");
                prop_assert!(!error.message.is_empty(), "empty message: {}", error);
                if let Some((line, col)) = error.position {
                    prop_assert!(
                        (1..=lines).contains(&line) && col >= 1,
                        "position out of the text: {}",
                        error
                    );
                }
            }
        }
    }
    Ok(())
}

proptest! {
    // A failure prints its minimal input; it is not saved beside this file.
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_text(text in any::<String>()) {
        check(&text)?;
    }

    #[test]
    fn yaml_token_soup(tokens in prop::collection::vec(select(TOKENS), 0..60)) {
        check(&tokens.concat())?;
    }

    #[test]
    fn routes_shaped_documents(document in file()) {
        check(&document.render())?;
    }
}

const TOKENS: &[&str] = &[
    "\n",
    "\n",
    "\n",
    "  ",
    "  ",
    "    ",
    " ",
    "\t",
    "\r\n",
    "- ",
    "-",
    ": ",
    ":",
    "? ",
    ",",
    "{",
    "}",
    "[",
    "]",
    "'",
    "\"",
    "#",
    "&a ",
    "*a",
    "!!str ",
    "!tag ",
    "|\n",
    ">-\n",
    "---\n",
    "...\n",
    "%YAML 1.2\n",
    "<<: ",
    "~",
    "null",
    "true",
    "0",
    "-1",
    "1.5",
    "5s",
    "64KiB",
    "${",
    "}",
    "${X}",
    "\\",
    "\u{feff}",
    "é",
    "routes",
    "routes:",
    "server:",
    "defaults:",
    "name: ",
    "path: ",
    "targets:",
    "url: ",
    "buffer: ",
    "retry: ",
    "attempts: ",
    "on: ",
    "headers: ",
    "batch: ",
    "/orders",
    "orders",
    "http://127.0.0.1:1/x",
];

/// A YAML node, rendered by hand so that mistakes of layout can be generated too.
#[derive(Clone, Debug)]
enum Node {
    /// Written as is: it may be a number, a quoted string, or something that breaks the line.
    Scalar(String),
    List {
        items: Vec<Node>,
        flow: bool,
    },
    Map {
        entries: Vec<(String, Node)>,
        flow: bool,
    },
}

impl Node {
    fn render(&self) -> String {
        let mut out = String::new();
        self.block(0, &mut out);
        out
    }

    /// Appends the node as the value of a key or list item already written, in block style.
    fn block(&self, indent: usize, out: &mut String) {
        let pad = " ".repeat(indent);
        match self {
            Node::List { items, flow: false } if !items.is_empty() => {
                for item in items {
                    out.push_str(&format!("\n{pad}-"));
                    if item.is_flow() {
                        out.push(' ');
                        item.block(indent + 2, out);
                    } else if let Node::Map { .. } = item {
                        // `- key: value` with the other keys under the first.
                        let mut nested = String::new();
                        item.block(indent + 2, &mut nested);
                        out.push(' ');
                        out.push_str(nested.trim_start());
                    } else {
                        item.block(indent + 2, out);
                    }
                }
            }
            Node::Map {
                entries,
                flow: false,
            } if !entries.is_empty() => {
                for (key, value) in entries {
                    out.push_str(&format!("\n{pad}{key}:"));
                    if matches!(value, Node::Scalar(_)) || value.is_flow() {
                        out.push(' ');
                    }
                    value.block(indent + 2, out);
                }
            }
            _ => self.flow(out),
        }
    }

    fn flow(&self, out: &mut String) {
        match self {
            // In flow style `,[]{}` end a plain scalar, so the plausible ones are quoted there.
            Node::Scalar(text)
                if text.contains([',', '[', ']', '{', '}']) && !text.starts_with(['\'', '"']) =>
            {
                out.push_str(&format!("'{}'", text.replace('\'', "''")));
            }
            Node::Scalar(text) => out.push_str(text),
            Node::List { items, .. } => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    item.flow(out);
                }
                out.push(']');
            }
            Node::Map { entries, .. } => {
                out.push('{');
                for (i, (key, value)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(key);
                    out.push_str(": ");
                    value.flow(out);
                }
                out.push('}');
            }
        }
    }

    /// Whether the node is written on the line of its key.
    fn is_flow(&self) -> bool {
        match self {
            Node::Scalar(_) => true,
            Node::List { items, flow } => *flow || items.is_empty(),
            Node::Map { entries, flow } => *flow || entries.is_empty(),
        }
    }
}

// The schema's keys. In each section the keys before `|` in the comment are usually present.
const TOP: &[&str] = &["routes", "server", "defaults"]; // routes |
const SERVER: &[&str] = &[
    "listen",
    "max_body",
    "drain_timeout",
    "metrics_log_interval",
];
const POLICY: &[&str] = &[
    "buffer",
    "overflow",
    "timeout",
    "concurrency",
    "retry",
    "breaker",
    "http2",
    "batch",
];
const ROUTE: &[&str] = &[
    "name", // name, path, targets |
    "path",
    "targets",
    "max_body",
    "mode",
    "match",
    "methods",
    "strategy",
    "health",
    "retry",
    "retry_non_idempotent",
];
const TARGET: &[&str] = &[
    "name", // name, url |
    "url",
    "headers",
    "ca_file",
    "buffer",
    "overflow",
    "timeout",
    "concurrency",
    "retry",
    "breaker",
    "http2",
    "batch",
    "weight",
];
const RETRY: &[&str] = &["attempts", "backoff", "max_backoff", "on"];
const BREAKER: &[&str] = &["failures", "cooldown", "max_cooldown"];
const BATCH: &[&str] = &["max_events", "max_bytes", "max_wait"];
const HEALTH: &[&str] = &[
    "path", // path |
    "interval",
    "timeout",
    "unhealthy_after",
    "healthy_after",
];
const MATCH: &[&str] = &["headers"]; // headers |

// Values, by kind: good ones, then bad ones.
const HEADERS: (&[&str], &[&str]) = (
    &["Authorization", "X-Token", "X-Tenant"],
    &[
        "fanout-event-id",
        "Content-Type",
        "Host",
        "X B",
        "\"\"",
        "1",
    ],
);
const NAMES: (&[&str], &[&str]) = (
    &[
        "orders", "leads", "a-b", "a_b", "2fa", "r2fa", "type", "self", "_", "'-'", "CRM", "crm",
        "event",
    ],
    &["a.b", "\"\"", "\"two words\"", "é", "123"],
);
const PATHS: (&[&str], &[&str]) = (
    &[
        "/orders",
        "/leads",
        "/",
        "/a/b",
        "/%20",
        "/a/*",
        "/orders/*",
    ],
    &[
        "/metrics",
        "/healthz",
        "orders",
        "/a?b",
        "\"/a b\"",
        "\"\"",
        "/*",
        "/metrics/*",
        "/a/*/b",
        "//*",
    ],
);
const URLS: (&[&str], &[&str]) = (
    &[
        "http://127.0.0.1:9001/x",
        "https://example.com",
        "http://${HOST}/x",
        "http://[::1]:80/x",
        "http://u@h:1",
    ],
    &[
        "http://",
        "http:///x",
        "http://h:99999/",
        "ftp://h/",
        "http://h/${",
        "\"http://h/a b\"",
        "/etc/ca.pem",
    ],
);
const DURATIONS: (&[&str], &[&str]) = (
    &["1ms", "250ms", "5s", "2m", "1h"],
    &[
        "0s",
        "5",
        "1.5s",
        "-1s",
        "5sec",
        "99999999999999999999h",
        "\"\"",
    ],
);
const SIZES: (&[&str], &[&str]) = (
    &["1", "1024", "64KiB", "1MiB", "2GiB", "18446744073709551615"],
    &["0", "1MB", "KiB", "99999999999GiB", "-5"],
);
const COUNTS: (&[&str], &[&str]) = (
    &["1", "2", "16", "408", "503", "1000", "4294967296"],
    &[
        "0",
        "1001",
        "18446744073709551616",
        "-1",
        "1.5",
        "1e3",
        "lots",
    ],
);
const METHODS: (&[&str], &[&str]) = (&["GET", "POST", "HEAD", "PATCH"], &["get", "FETCH", "\"\""]);
const OTHER: (&[&str], &[&str]) = (
    &[
        "drop_oldest",
        "drop_newest",
        "reject",
        "true",
        "false",
        "127.0.0.1:8000",
        "\"Bearer ${TOKEN}\"",
        "'it''s'",
    ],
    &[
        "block",
        "yes",
        "null",
        "~",
        "localhost",
        "\"${}\"",
        "\"${1X}\"",
        "\"line\\nbreak\"",
        "99",
        "600",
        "&anchor x",
        "*anchor",
        "!!binary aGk=",
        "[a, b",
        "{a: b",
    ],
);

/// Mostly good values of one kind, some bad ones.
fn scalar_from(
    (good, bad): (&'static [&'static str], &'static [&'static str]),
) -> BoxedStrategy<Node> {
    prop_oneof![6 => select(good), 1 => select(bad)]
        .prop_map(|s| Node::Scalar(s.to_owned()))
        .boxed()
}

/// Any scalar, plausible for no key in particular.
fn scalar() -> BoxedStrategy<Node> {
    prop_oneof![
        4 => scalar_from(OTHER),
        1 => scalar_from(COUNTS),
        1 => scalar_from(DURATIONS),
        1 => any::<i64>().prop_map(|n| Node::Scalar(n.to_string())),
        1 => "[a-zA-Z0-9_./$]{1,12}".prop_map(Node::Scalar),
        1 => any::<String>().prop_map(|s| Node::Scalar(format!("'{}'", s.replace('\'', "''")))),
    ]
    .boxed()
}

/// Any node: scalars, lists and maps, nested a few levels, with keys from anywhere.
fn any_node() -> BoxedStrategy<Node> {
    let keys = [
        TOP, SERVER, POLICY, ROUTE, TARGET, RETRY, BREAKER, BATCH, HEALTH, MATCH,
    ]
    .concat();
    scalar()
        .prop_recursive(3, 24, 4, move |inner| {
            prop_oneof![
                (prop::collection::vec(inner.clone(), 0..4), any::<bool>())
                    .prop_map(|(items, flow)| Node::List { items, flow }),
                (
                    prop::collection::vec((select(keys.clone()), inner), 0..4),
                    any::<bool>()
                )
                    .prop_map(|(entries, flow)| Node::Map {
                        entries: entries
                            .into_iter()
                            .map(|(k, v)| (k.to_owned(), v))
                            .collect(),
                        flow,
                    }),
            ]
        })
        .boxed()
}

/// A plausible value for `key`, now and then replaced by anything at all.
fn value_for(key: &'static str) -> BoxedStrategy<Node> {
    let plausible = match key {
        "server" => section(SERVER, 0),
        "defaults" => section(POLICY, 0),
        "retry" => section(RETRY, 0),
        "breaker" => section(BREAKER, 0),
        "batch" => section(BATCH, 0),
        "health" => section(HEALTH, 1),
        "match" => section(MATCH, 1),
        "methods" => list(scalar_from(METHODS), 0..4),
        "mode" => scalar_from((&["fanout", "balance"], &["Balance", "proxy"])),
        "strategy" => scalar_from((&["round_robin", "least_inflight", "random"], &["fastest"])),
        "routes" => list(section(ROUTE, 3), 1..4),
        "targets" => list(section(TARGET, 2), 1..4),
        "on" => list(scalar_from(COUNTS), 0..4),
        "headers" => (
            prop::collection::vec(
                (select(HEADERS.0).prop_union(select(HEADERS.1)), scalar()),
                0..3,
            ),
            prop::bool::weighted(0.5),
        )
            .prop_map(|(entries, flow)| Node::Map {
                entries: entries
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect(),
                flow,
            })
            .boxed(),
        "name" => scalar_from(NAMES),
        "path" => scalar_from(PATHS),
        "url" | "ca_file" => scalar_from(URLS),
        "timeout"
        | "backoff"
        | "max_backoff"
        | "cooldown"
        | "max_cooldown"
        | "max_wait"
        | "interval"
        | "drain_timeout"
        | "metrics_log_interval" => scalar_from(DURATIONS),
        "max_body" | "max_bytes" => scalar_from(SIZES),
        "buffer" | "concurrency" | "attempts" | "failures" | "max_events" | "weight"
        | "unhealthy_after" | "healthy_after" => scalar_from(COUNTS),
        _ => scalar(),
    };
    prop_oneof![30 => plausible, 1 => scalar(), 1 => any_node()].boxed()
}

fn list(item: BoxedStrategy<Node>, len: std::ops::Range<usize>) -> BoxedStrategy<Node> {
    (prop::collection::vec(item, len), prop::bool::weighted(0.2))
        .prop_map(|(items, flow)| Node::List { items, flow })
        .boxed()
}

/// A mapping of `keys`, the first `required` of them usually present and a few of the others,
/// with a value for each; now and then one more entry, a repeated or unknown key.
fn section(keys: &'static [&'static str], required: usize) -> BoxedStrategy<Node> {
    let optional = &keys[required..];
    let chosen = (
        prop::collection::vec(prop::bool::weighted(0.97), required),
        prop::sample::subsequence(optional, 0..=optional.len().min(3)),
    )
        .prop_map(move |(present, extra)| {
            let required = keys[..required].iter().zip(present);
            let mut chosen: Vec<&str> = required.filter(|(_, p)| *p).map(|(k, _)| *k).collect();
            chosen.extend(extra);
            chosen
        });
    let entries = chosen.prop_flat_map(|chosen| {
        chosen
            .into_iter()
            .map(|key| value_for(key).prop_map(move |v| (key.to_owned(), v)))
            .collect::<Vec<_>>()
    });
    let stray = prop_oneof![select(keys).prop_map(str::to_owned), "[a-z_<]{1,8}",];
    (
        entries,
        prop::option::weighted(0.05, (stray, any_node())),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(mut entries, stray, flow)| {
            entries.extend(stray);
            Node::Map { entries, flow }
        })
        .boxed()
}

/// A routes file: `routes:` with routes and targets, often `server:` and `defaults:`.
fn file() -> BoxedStrategy<Node> {
    prop_oneof![
        9 => section(TOP, 1).prop_map(|mut file| {
            if let Node::Map { flow, .. } = &mut file {
                *flow = false;
            }
            file
        }),
        1 => any_node(),
    ]
    .boxed()
}
