//! Raw schema to resolved model: applies defaults (built-in < `defaults:` < target) and checks
//! every rule of the routes.yaml language, collecting every problem before giving up, as
//! serde_derive's `Ctxt` does. One file per job:
//! - here: the document, and how a problem is reported at its place;
//! - `server`: the `server:` section;
//! - `routes`: each route, its route-level settings and its mode;
//! - `targets`: each target, its url and headers;
//! - `matching`: which requests a route takes (path, `match:`), and overlapping routes;
//! - `balance`: the fields of balance routes, and the fields each mode has alone;
//! - `policy`: the layering of lane and delivery policies, and their checks;
//! - `security`: `auth:`, `rate_limit:`, `sign:` and `server.tls`;
//! - `unique`: the checks across routes and targets (names, identifiers).

mod balance;
mod matching;
mod nats;
mod policy;
mod routes;
mod security;
mod server;
mod targets;
mod unique;

use serde::de::DeserializeOwned;
use serde_yaml::Value;

use crate::error::ConfigError;
use crate::locate::Positions;
use crate::model::Routes;
use crate::raw;
use policy::Layered;

pub fn resolve(file: &str, text: &str) -> Result<Routes, Vec<ConfigError>> {
    let mut cx = Checker {
        file,
        positions: Positions::of(text),
        errors: Vec::new(),
    };
    let document: Value = match serde_yaml::from_str(text) {
        Ok(Value::Null) => {
            cx.report(
                "",
                "",
                "the file is empty: it needs at least a `routes:` list".into(),
            );
            return Err(cx.errors);
        }
        Ok(document) => document,
        Err(e) => {
            let position = e.location().map(|l| (l.line(), l.column()));
            cx.errors.push(ConfigError {
                file: file.to_owned(),
                position,
                context: String::new(),
                message: format!("YAML syntax error: {}", without_position(&e)),
            });
            return Err(cx.errors);
        }
    };
    let raw: raw::File = cx
        .deserialize("", "", document)
        .ok_or_else(|| cx.errors.clone())?;

    let server_raw: raw::Server = match raw.server {
        Some(v) => cx
            .deserialize("server", "section \"server\"", v)
            .unwrap_or_default(),
        None => raw::Server::default(),
    };
    let server = cx.server(server_raw);
    let defaults_raw: raw::Policy = match raw.defaults {
        Some(v) => cx
            .deserialize("defaults", "section \"defaults\"", v)
            .unwrap_or_default(),
        None => raw::Policy::default(),
    };
    let mut defaults = Layered::builtin().over(&defaults_raw, "defaults");
    const DEFAULTS: &str = "section \"defaults\"";
    cx.check_policy(&defaults, "defaults", DEFAULTS);
    if let Some(auth) = &defaults_raw.auth {
        defaults.auth = cx.auth(auth, "defaults", DEFAULTS);
    }
    if let Some(limit) = &defaults_raw.rate_limit {
        defaults.rate_limit = cx.rate_limit(limit, "defaults", DEFAULTS);
    }

    if raw.routes.is_empty() {
        cx.report_field("", "", "routes", "must list at least one route".into());
    }
    let mut routes = Vec::new();
    for (index, value) in raw.routes.into_iter().enumerate() {
        if let Some(route) = cx.route(index, value, &server, &defaults) {
            routes.push((index, route));
        }
    }
    cx.check_unique_routes(&routes);
    cx.check_overlapping_routes(&routes);

    if cx.errors.is_empty() {
        let routes = routes.into_iter().map(|(_, route)| route).collect();
        Ok(Routes { server, routes })
    } else {
        // Checks across routes run last; people read the list top to bottom, like the file.
        cx.errors.sort_by_key(|e| e.position);
        Err(cx.errors)
    }
}

/// serde_yaml puts " at line L column C" of the problem in its messages; that position is
/// printed up front. A second one, of what was being read ("while parsing a flow mapping at
/// line 6 column 9"), stays: it is often where the mistake is.
fn without_position(error: &serde_yaml::Error) -> String {
    let message = error.to_string();
    match error.location() {
        Some(at) => {
            let position = format!(" at line {} column {}", at.line(), at.column());
            message.replacen(&position, "", 1)
        }
        None => message,
    }
}

pub(super) struct Checker<'a> {
    pub(super) file: &'a str,
    pub(super) positions: Positions,
    pub(super) errors: Vec<ConfigError>,
}

impl Checker<'_> {
    pub(super) fn report(&mut self, path: &str, context: &str, message: String) {
        self.errors.push(ConfigError {
            file: self.file.to_owned(),
            position: self.positions.find(path),
            context: context.to_owned(),
            message,
        });
    }

    /// Reports a problem with `field` of the node at `base`.
    pub(super) fn report_field(&mut self, base: &str, context: &str, field: &str, message: String) {
        let path = child(base, field);
        let context = with_field(context, field);
        self.report(&path, &context, message);
    }

    /// Deserialises one node, reporting the failure at the exact path serde stopped at.
    pub(super) fn deserialize<T: DeserializeOwned>(
        &mut self,
        base: &str,
        context: &str,
        value: Value,
    ) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(parsed) => Some(parsed),
            Err(e) => {
                let inner = e.path().to_string();
                let field = if inner == "." { String::new() } else { inner };
                let message =
                    without_position(e.inner()).replace("expected u64", "expected a whole number");
                if field.is_empty() {
                    let message = match message.strip_prefix("invalid type: ") {
                        Some(rest) => format!("wrong shape: {rest}"),
                        None => message,
                    };
                    self.report(base, context, message);
                } else {
                    self.report_field(base, context, &field, message);
                }
                None
            }
        }
    }
}

pub(super) fn child(base: &str, field: &str) -> String {
    match (base.is_empty(), field.starts_with('[')) {
        (true, _) => field.to_owned(),
        (false, true) => format!("{base}{field}"),
        (false, false) => format!("{base}.{field}"),
    }
}

pub(super) fn with_field(context: &str, field: &str) -> String {
    match (context.is_empty(), field.is_empty()) {
        (_, true) => context.to_owned(),
        (true, false) => format!("field \"{field}\""),
        (false, false) => format!("{context}, field \"{field}\""),
    }
}
