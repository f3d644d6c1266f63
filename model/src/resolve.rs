//! Raw schema to resolved model: applies defaults (built-in < `defaults:` < target) and checks
//! every rule of the routes.yaml language, collecting every problem before giving up.

use serde::de::DeserializeOwned;
use serde_yaml::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::error::ConfigError;
use crate::ident;
use crate::locate::Positions;
use crate::model::{self, Overflow, Route, Routes, Server, Target};
use crate::raw;
use crate::units;

use fanout_contract::{PlaceholderError, RESERVED_PATHS};

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
    let defaults = Layered::builtin().over(&defaults_raw, "defaults");
    cx.check_policy(&defaults, "defaults", "section \"defaults\"");

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

struct Checker<'a> {
    file: &'a str,
    positions: Positions,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    fn report(&mut self, path: &str, context: &str, message: String) {
        self.errors.push(ConfigError {
            file: self.file.to_owned(),
            position: self.positions.find(path),
            context: context.to_owned(),
            message,
        });
    }

    /// Reports a problem with `field` of the node at `base`.
    fn report_field(&mut self, base: &str, context: &str, field: &str, message: String) {
        let path = child(base, field);
        let context = with_field(context, field);
        self.report(&path, &context, message);
    }

    /// Deserialises one node, reporting the failure at the exact path serde stopped at.
    fn deserialize<T: DeserializeOwned>(
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

    fn server(&mut self, raw: raw::Server) -> Server {
        const CONTEXT: &str = "section \"server\"";
        let listen = raw.listen.unwrap_or_else(|| "127.0.0.1:8000".to_owned());
        if listen.parse::<SocketAddr>().is_err() {
            self.report_field(
                "server",
                CONTEXT,
                "listen",
                format!("\"{listen}\" is not an address: write IP:PORT, e.g. 127.0.0.1:8000"),
            );
        }
        let max_body = raw.max_body.map_or(1 << 20, |s| s.0);
        if let Err(message) = check_max_body(max_body) {
            self.report_field("server", CONTEXT, "max_body", message);
        }
        let secs =
            |d: Option<raw::Dur>, default: u64| d.map_or(Duration::from_secs(default), |d| d.0);
        let server = Server {
            listen,
            max_body,
            drain_timeout: secs(raw.drain_timeout, 10),
            metrics_log_interval: secs(raw.metrics_log_interval, 5),
            first_byte_timeout: secs(raw.first_byte_timeout, 10),
            header_read_timeout: secs(raw.header_read_timeout, 10),
            body_read_timeout: secs(raw.body_read_timeout, 30),
            idle_timeout: secs(raw.idle_timeout, 60),
            max_connections: raw.max_connections.unwrap_or(10_000),
            tcp_keepalive: secs(raw.tcp_keepalive, 60),
            http2_max_streams: raw.http2_max_streams.unwrap_or(32),
            max_header_bytes: raw.max_header_bytes.map_or(16 * 1024, |s| s.0),
            memory_budget: raw.memory_budget.map_or(1 << 30, |s| s.0),
        };
        for (field, zero) in [
            ("first_byte_timeout", server.first_byte_timeout.is_zero()),
            ("header_read_timeout", server.header_read_timeout.is_zero()),
            ("body_read_timeout", server.body_read_timeout.is_zero()),
            ("idle_timeout", server.idle_timeout.is_zero()),
        ] {
            if zero {
                self.report_field("server", CONTEXT, field, "must be longer than 0s".into());
            }
        }
        if !(1..=1_000_000).contains(&server.max_connections) {
            let message = "must be from 1 to 1000000".into();
            self.report_field("server", CONTEXT, "max_connections", message);
        }
        if !(1..=1000).contains(&server.http2_max_streams) {
            let message = "must be from 1 to 1000".into();
            self.report_field("server", CONTEXT, "http2_max_streams", message);
        }
        if !(8 * 1024..=1 << 20).contains(&server.max_header_bytes) {
            let message = "must be from 8KiB to 1MiB".into();
            self.report_field("server", CONTEXT, "max_header_bytes", message);
        }
        if server.memory_budget < server.max_body {
            let message = format!(
                "must be at least max_body ({} bytes), or no event that large could be held",
                server.max_body
            );
            self.report_field("server", CONTEXT, "memory_budget", message);
        }
        server
    }

    /// Checks one route. Returns it whenever it could be read, problems or not, so that the
    /// checks across routes see every name and path; nothing is kept once a problem is found.
    fn route(
        &mut self,
        index: usize,
        value: Value,
        server: &Server,
        defaults: &Layered,
    ) -> Option<Route> {
        let base = format!("routes[{index}]");
        let context = match value.get("name").and_then(Value::as_str) {
            Some(name) => format!("route \"{name}\""),
            None => format!("route #{}", index + 1),
        };
        let raw: raw::Route = self.deserialize(&base, &context, value)?;
        self.check_name(&base, &context, &raw.name);
        self.check_path(&base, &context, &raw.path);
        let max_body = raw.max_body.map_or(server.max_body, |s| s.0);
        if let Err(message) = check_max_body(max_body) {
            self.report_field(&base, &context, "max_body", message);
        }
        if raw.targets.is_empty() {
            self.report_field(
                &base,
                &context,
                "targets",
                "a route needs at least one target".into(),
            );
        }
        let mut targets = Vec::new();
        for (t, value) in raw.targets.into_iter().enumerate() {
            if let Some(target) = self.target(&base, &context, t, value, defaults, max_body) {
                targets.push((t, target));
            }
        }
        self.check_unique_targets(&base, &context, &targets);
        Some(Route {
            ident: ident::snake(&raw.name),
            variant: ident::camel(&raw.name),
            name: raw.name,
            path: raw.path,
            max_body,
            targets: targets.into_iter().map(|(_, target)| target).collect(),
        })
    }

    /// Checks one target. Like [`Checker::route`], returns it whenever it could be read.
    fn target(
        &mut self,
        route_base: &str,
        route_context: &str,
        index: usize,
        value: Value,
        defaults: &Layered,
        max_body: u64,
    ) -> Option<Target> {
        let base = format!("{route_base}.targets[{index}]");
        let context = match value.get("name").and_then(Value::as_str) {
            Some(name) => format!("{route_context}, target \"{name}\""),
            None => format!("{route_context}, target #{}", index + 1),
        };
        let raw: raw::Target = self.deserialize(&base, &context, value)?;
        self.check_name(&base, &context, &raw.name);
        self.check_url(&base, &context, &raw.url);
        let headers = self.headers(&base, &context, &raw.headers);
        let authorization = headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("authorization"));
        if authorization && url_userinfo(&raw.url).is_some() {
            self.report_field(
                &base,
                &context,
                "url",
                "credentials in the url are sent as an Authorization header, and `headers` sets \
                 one too: keep one of the two"
                    .into(),
            );
        }
        if let Some(ca_file) = &raw.ca_file {
            if ca_file.is_empty() {
                self.report_field(&base, &context, "ca_file", "must name a PEM file".into());
            } else if let Err(message) = check_placeholders(ca_file) {
                self.report_field(&base, &context, "ca_file", message);
            } else if !raw.url.starts_with("https://") {
                self.report_field(
                    &base,
                    &context,
                    "ca_file",
                    "only https:// targets use a CA file".into(),
                );
            }
        }
        let policy = defaults.over(&raw.policy(), &base);
        self.check_policy(&policy, &base, &context);
        if policy.buffer_bytes.value < max_body && policy.buffer_bytes.value > 0 {
            let message = format!(
                "{} is less than the route's max_body ({max_body} bytes): an event that large could never wait in this lane",
                policy.buffer_bytes.value
            );
            let path = match &policy.buffer_bytes.path {
                Some(path) if path.starts_with(&base) => path.clone(),
                _ => base.clone(),
            };
            self.report(&path, &with_field(&context, "buffer_bytes"), message);
        }
        Some(Target {
            ident: ident::snake(&raw.name),
            name: raw.name,
            url: raw.url,
            headers,
            ca_file: raw.ca_file,
            buffer: policy.buffer.value,
            buffer_bytes: policy.buffer_bytes.value,
            overflow: policy.overflow.value,
            timeout: policy.timeout.value,
            concurrency: policy.concurrency.value,
            retry: model::Retry {
                attempts: u32::try_from(policy.attempts.value).unwrap_or(u32::MAX),
                backoff: policy.backoff.value,
                max_backoff: policy.max_backoff.value,
                on: policy.retry_on.value.iter().map(|&s| s as u16).collect(),
            },
            breaker: model::Breaker {
                failures: u32::try_from(policy.failures.value).unwrap_or(u32::MAX),
                cooldown: policy.cooldown.value,
                max_cooldown: policy.max_cooldown.value,
            },
            http2: policy.http2.value,
            batch: policy.batch.value.then_some(model::Batch {
                max_events: policy.batch_max_events.value,
                max_bytes: policy.batch_max_bytes.value,
                max_wait: policy.batch_max_wait.value,
            }),
        })
    }

    fn check_name(&mut self, base: &str, context: &str, name: &str) {
        if !ident::is_valid_name(name) {
            self.report_field(
                base,
                context,
                "name",
                format!("\"{name}\" is not a valid name: use letters, digits, '-' and '_'"),
            );
        }
    }

    fn check_path(&mut self, base: &str, context: &str, path: &str) {
        let message = if !path.starts_with('/') {
            format!("\"{path}\" must start with '/'")
        } else if RESERVED_PATHS.contains(&path) {
            format!("\"{path}\" is reserved for the proxy's own endpoint")
        } else if path.contains(['?', '#']) {
            format!("\"{path}\" must not contain '?' or '#': routes match the path alone")
        } else if !path.bytes().all(|b| b.is_ascii_graphic()) {
            format!("\"{path}\" must be printable ASCII without spaces (percent-encode the rest)")
        } else {
            return;
        };
        self.report_field(base, context, "path", message);
    }

    fn check_url(&mut self, base: &str, context: &str, url: &str) {
        if let Err(message) = check_url(url) {
            self.report_field(base, context, "url", message);
        }
    }

    fn headers(
        &mut self,
        base: &str,
        context: &str,
        headers: &serde_yaml::Mapping,
    ) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (name, value) in headers {
            let Some(name) = name.as_str() else {
                self.report_field(
                    base,
                    context,
                    "headers",
                    "header names must be strings".into(),
                );
                continue;
            };
            let field = format!("headers.{name}");
            let value = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => {
                    let found = raw::describe(other);
                    self.report_field(
                        base,
                        context,
                        &field,
                        format!("expected a string, found {found}"),
                    );
                    continue;
                }
            };
            if let Err(message) = check_header(name, &value) {
                self.report_field(base, context, &field, message);
                continue;
            }
            out.push((name.to_owned(), value));
        }
        out
    }

    /// Checks the fields of `policy` that were set at `layer` (a path prefix), so a bad default
    /// is reported once, at `defaults:`, and not again for every target inheriting it.
    fn check_policy(&mut self, policy: &Layered, layer: &str, context: &str) {
        let fail = |cx: &mut Self, fields: &[&dyn Sourced], message: &str| {
            if let Some(path) = fields.iter().find_map(|f| f.path_within(layer)) {
                let field = path[layer.len()..].trim_start_matches('.');
                cx.report(path, &with_field(context, field), message.to_owned());
            }
        };
        if policy.buffer.value == 0 {
            fail(self, &[&policy.buffer], "must be at least 1");
        }
        if policy.buffer_bytes.value == 0 {
            fail(self, &[&policy.buffer_bytes], "must be at least 1 byte");
        }
        if policy.concurrency.value == 0 {
            fail(self, &[&policy.concurrency], "must be at least 1");
        }
        if policy.timeout.value.is_zero() {
            fail(self, &[&policy.timeout], "must be longer than 0s");
        }
        if policy.attempts.value == 0 {
            fail(
                self,
                &[&policy.attempts],
                "must be at least 1 (the first attempt counts)",
            );
        }
        if policy.backoff.value > policy.max_backoff.value {
            let message = format!(
                "backoff ({}) must not be longer than max_backoff ({})",
                units::format_duration(policy.backoff.value),
                units::format_duration(policy.max_backoff.value)
            );
            fail(self, &[&policy.backoff, &policy.max_backoff], &message);
        }
        if let Some(bad) = policy
            .retry_on
            .value
            .iter()
            .find(|s| !(100..=599).contains(*s))
        {
            let message = format!("{bad} is not an HTTP status (100-599)");
            fail(self, &[&policy.retry_on], &message);
        }
        if policy.failures.value == 0 {
            fail(self, &[&policy.failures], "must be at least 1");
        }
        if policy.cooldown.value.is_zero() {
            fail(self, &[&policy.cooldown], "must be longer than 0s");
        }
        if policy.batch.value {
            let events = policy.batch_max_events.value;
            if !(1..=model::MAX_BATCH_EVENTS).contains(&events) {
                let message = format!(
                    "must be from 1 to {} (the ids of a batch travel in one header)",
                    model::MAX_BATCH_EVENTS
                );
                fail(self, &[&policy.batch_max_events], &message);
            }
            if policy.batch_max_bytes.value == 0 {
                fail(self, &[&policy.batch_max_bytes], "must be at least 1 byte");
            }
        }
        if policy.cooldown.value > policy.max_cooldown.value {
            let message = format!(
                "cooldown ({}) must not be longer than max_cooldown ({})",
                units::format_duration(policy.cooldown.value),
                units::format_duration(policy.max_cooldown.value)
            );
            fail(self, &[&policy.cooldown, &policy.max_cooldown], &message);
        }
    }

    /// `routes` holds each route that could be read, with its index in the file. Names that are
    /// not valid are reported already; only valid ones are compared as identifiers.
    fn check_unique_routes(&mut self, routes: &[(usize, Route)]) {
        let mut names = HashMap::new();
        let mut paths = HashMap::new();
        let mut idents = HashMap::new();
        let mut variants = HashMap::new();
        for (index, route) in routes {
            let base = format!("routes[{index}]");
            let context = format!("route \"{}\"", route.name);
            if let Some(first) = names.insert(&route.name, &route.name) {
                self.report_field(
                    &base,
                    &context,
                    "name",
                    format!("duplicate route name \"{first}\""),
                );
            } else if ident::is_valid_name(&route.name) {
                if let Some(first) = idents
                    .insert(&route.ident, &route.name)
                    .or_else(|| variants.insert(&route.variant, &route.name))
                {
                    self.report_field(
                        &base,
                        &context,
                        "name",
                        format!(
                            "\"{}\" and \"{first}\" become the same Rust identifier; rename one",
                            route.name
                        ),
                    );
                }
            }
            if let Some(first) = paths.insert(&route.path, &route.name) {
                self.report_field(
                    &base,
                    &context,
                    "path",
                    format!(
                        "duplicate path \"{}\": route \"{first}\" has it already",
                        route.path
                    ),
                );
            }
        }
    }

    /// `targets` holds each target of the route at `base` that could be read, with its index
    /// in the route.
    fn check_unique_targets(&mut self, base: &str, context: &str, targets: &[(usize, Target)]) {
        let mut names = HashMap::new();
        let mut idents = HashMap::new();
        for (index, target) in targets {
            let target_base = format!("{base}.targets[{index}]");
            let context = format!("{context}, target \"{}\"", target.name);
            if let Some(first) = names.insert(&target.name, &target.name) {
                self.report_field(
                    &target_base,
                    &context,
                    "name",
                    format!("duplicate target name \"{first}\" in this route"),
                );
            } else if ident::is_valid_name(&target.name) {
                if let Some(first) = idents.insert(&target.ident, &target.name) {
                    self.report_field(
                        &target_base,
                        &context,
                        "name",
                        format!(
                            "\"{}\" and \"{first}\" become the same Rust identifier; rename one",
                            target.name
                        ),
                    );
                }
            }
        }
    }
}

fn check_max_body(max_body: u64) -> Result<(), String> {
    match max_body {
        0 => Err("must be at least 1 byte".into()),
        n if n > fanout_contract::MAX_BODY_LIMIT => {
            Err("must be less than 1GiB (an event's length has 30 bits)".into())
        }
        _ => Ok(()),
    }
}

fn child(base: &str, field: &str) -> String {
    match (base.is_empty(), field.starts_with('[')) {
        (true, _) => field.to_owned(),
        (false, true) => format!("{base}{field}"),
        (false, false) => format!("{base}.{field}"),
    }
}

fn with_field(context: &str, field: &str) -> String {
    match (context.is_empty(), field.is_empty()) {
        (_, true) => context.to_owned(),
        (true, false) => format!("field \"{field}\""),
        (false, false) => format!("{context}, field \"{field}\""),
    }
}

/// An `http://` or `https://` url with a host; `${NAME}` placeholders are allowed anywhere
/// after the scheme.
fn check_url(url: &str) -> Result<(), String> {
    check_placeholders(url)?;
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("\"{url}\" must start with http:// or https://"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    if host_port.is_empty() {
        return Err(format!("\"{url}\" has no host"));
    }
    if !url.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("\"{url}\" must be printable ASCII without spaces"));
    }
    if host_port.contains("${") {
        return Ok(());
    }
    let (host, port) = match host_port.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => (host, Some(port)),
        _ => (host_port, None),
    };
    if host.is_empty() {
        return Err(format!("\"{url}\" has no host"));
    }
    if let Some(port) = port {
        if port.parse::<u16>().is_err() {
            return Err(format!("\"{url}\" has an invalid port \"{port}\""));
        }
    }
    Ok(())
}

/// The `user:password` of an `http(s)://user:password@host/...` url, if it has one.
fn url_userinfo(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    authority.rsplit_once('@').map(|(userinfo, _)| userinfo)
}

fn check_header(name: &str, value: &str) -> Result<(), String> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return Err(format!("\"{name}\" is not a valid header name"));
    }
    if let Some(why) = fanout_contract::reserved_header(name) {
        return Err(format!("\"{name}\" {why}"));
    }
    if !value
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
    {
        return Err("header values must be printable ASCII on one line".into());
    }
    check_placeholders(value)
}

/// `${NAME}` or `${NAME:-default}`, NAME of letters, digits and `_`, not starting with a digit
/// (the syntax is defined once, in `fanout_contract::pieces`).
pub(crate) fn check_placeholders(text: &str) -> Result<(), String> {
    for piece in fanout_contract::pieces(text) {
        match piece {
            Ok(_) => {}
            Err(PlaceholderError::Unclosed) => {
                return Err(format!("unclosed \"${{\" in \"{text}\": write ${{NAME}}"))
            }
            Err(PlaceholderError::BadName(name)) => {
                return Err(format!(
                    "\"${{{name}}}\" is not an environment variable reference: use letters, digits and _"
                ))
            }
        }
    }
    Ok(())
}

/// A setting and where it came from: `None` for the built-in default, else the path of the node
/// that set it.
struct Setting<T> {
    value: T,
    path: Option<String>,
}

trait Sourced {
    fn path_within(&self, layer: &str) -> Option<&str>;
}

impl<T> Sourced for Setting<T> {
    fn path_within(&self, layer: &str) -> Option<&str> {
        self.path
            .as_deref()
            .filter(|p| p.starts_with(layer) && p[layer.len()..].starts_with('.'))
    }
}

impl<T: Clone> Setting<T> {
    fn builtin(value: T) -> Self {
        Setting { value, path: None }
    }

    fn over(&self, value: Option<T>, path: String) -> Self {
        match value {
            Some(value) => Setting {
                value,
                path: Some(path),
            },
            None => Setting {
                value: self.value.clone(),
                path: self.path.clone(),
            },
        }
    }
}

/// The delivery policy of one target, field by field from the layer that set it.
struct Layered {
    buffer: Setting<u64>,
    buffer_bytes: Setting<u64>,
    overflow: Setting<Overflow>,
    timeout: Setting<Duration>,
    concurrency: Setting<u64>,
    attempts: Setting<u64>,
    backoff: Setting<Duration>,
    max_backoff: Setting<Duration>,
    retry_on: Setting<Vec<u64>>,
    failures: Setting<u64>,
    cooldown: Setting<Duration>,
    max_cooldown: Setting<Duration>,
    http2: Setting<bool>,
    /// Whether a `batch:` was given at some layer.
    batch: Setting<bool>,
    batch_max_events: Setting<u64>,
    batch_max_bytes: Setting<u64>,
    batch_max_wait: Setting<Duration>,
}

impl Layered {
    fn builtin() -> Self {
        Layered {
            buffer: Setting::builtin(10_000),
            buffer_bytes: Setting::builtin(64 << 20),
            overflow: Setting::builtin(Overflow::DropOldest),
            timeout: Setting::builtin(Duration::from_secs(5)),
            concurrency: Setting::builtin(16),
            attempts: Setting::builtin(5),
            backoff: Setting::builtin(Duration::from_millis(100)),
            max_backoff: Setting::builtin(Duration::from_secs(10)),
            retry_on: Setting::builtin(
                model::default_retry_statuses()
                    .into_iter()
                    .map(u64::from)
                    .collect(),
            ),
            failures: Setting::builtin(5),
            cooldown: Setting::builtin(Duration::from_secs(1)),
            max_cooldown: Setting::builtin(Duration::from_secs(30)),
            http2: Setting::builtin(false),
            batch: Setting::builtin(false),
            batch_max_events: Setting::builtin(100),
            batch_max_bytes: Setting::builtin(1 << 20),
            batch_max_wait: Setting::builtin(Duration::from_millis(5)),
        }
    }

    /// This policy with the fields `raw` sets (at `base`) replacing it.
    fn over(&self, raw: &raw::Policy, base: &str) -> Layered {
        let at = |field: &str| format!("{base}.{field}");
        let retry = raw.retry.clone().unwrap_or_default();
        let breaker = raw.breaker.clone().unwrap_or_default();
        let batch = raw.batch.clone().unwrap_or_default();
        let retry_on = retry.on.map(|mut on| {
            on.sort_unstable();
            on.dedup();
            on
        });
        Layered {
            buffer: self.buffer.over(raw.buffer, at("buffer")),
            buffer_bytes: self
                .buffer_bytes
                .over(raw.buffer_bytes.map(|s| s.0), at("buffer_bytes")),
            overflow: self.overflow.over(raw.overflow, at("overflow")),
            timeout: self.timeout.over(raw.timeout.map(|d| d.0), at("timeout")),
            concurrency: self.concurrency.over(raw.concurrency, at("concurrency")),
            attempts: self.attempts.over(retry.attempts, at("retry.attempts")),
            backoff: self
                .backoff
                .over(retry.backoff.map(|d| d.0), at("retry.backoff")),
            max_backoff: self
                .max_backoff
                .over(retry.max_backoff.map(|d| d.0), at("retry.max_backoff")),
            retry_on: self.retry_on.over(retry_on, at("retry.on")),
            failures: self.failures.over(breaker.failures, at("breaker.failures")),
            cooldown: self
                .cooldown
                .over(breaker.cooldown.map(|d| d.0), at("breaker.cooldown")),
            max_cooldown: self.max_cooldown.over(
                breaker.max_cooldown.map(|d| d.0),
                at("breaker.max_cooldown"),
            ),
            http2: self.http2.over(raw.http2, at("http2")),
            batch: self
                .batch
                .over(raw.batch.as_ref().map(|_| true), at("batch")),
            batch_max_events: self
                .batch_max_events
                .over(batch.max_events, at("batch.max_events")),
            batch_max_bytes: self
                .batch_max_bytes
                .over(batch.max_bytes.map(|s| s.0), at("batch.max_bytes")),
            batch_max_wait: self
                .batch_max_wait
                .over(batch.max_wait.map(|d| d.0), at("batch.max_wait")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(check_url("http://127.0.0.1:8001/x").is_ok());
        assert!(check_url("https://example.com").is_ok());
        assert!(check_url("http://${HOST}/x").is_ok());
        assert!(check_url("http://[::1]:80/x").is_ok());
        assert!(check_url("ftp://example.com").is_err());
        assert!(check_url("http://").is_err());
        assert!(check_url("http:///x").is_err());
        assert!(check_url("http://host:99999/").is_err());
        assert!(check_url("http://host/${").is_err());
    }

    #[test]
    fn placeholders() {
        assert!(check_placeholders("Bearer ${TOKEN_1}").is_ok());
        assert!(check_placeholders("cost: $5").is_ok());
        assert!(check_placeholders("${}").is_err());
        assert!(check_placeholders("${1X}").is_err());
        assert!(check_placeholders("${A-B}").is_err());
        assert!(check_placeholders("http://${HOST:-127.0.0.1:8001}/in").is_ok());
    }
}
