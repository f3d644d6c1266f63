//! Each route and target: names, paths, urls, headers, and the policies they layer over the
//! defaults.

use serde_yaml::Value;

use super::policy::Layered;
use super::server::check_max_body;
use super::{with_field, Checker};
use crate::contract::{PlaceholderError, RESERVED_PATHS};
use crate::ident;
use crate::model::{leak, leak_slice, leak_str, Route, Target};
use crate::raw;
use crate::spec::{BalancePolicy, DiskPolicy, Endpoint, HttpEndpoint, RouteSpec, ServerSpec, Storage, TargetSpec};
use std::time::Duration;

/// What a log record holds besides the body (its header, the id, the content type), at most:
/// `disk_buffer` must hold one event of `max_body` and this.
const DISK_RECORD_SLACK: u64 = 64 * 1024;

impl Checker<'_> {
    /// Checks one route. Returns it whenever it could be read, problems or not, so that the
    /// checks across routes see every name and path; nothing is kept once a problem is found.
    pub(super) fn route(
        &mut self,
        index: usize,
        value: Value,
        server: &ServerSpec,
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
        let mode = defaults
            .mode
            .over(raw.mode.map(|m| m.0), format!("{base}.mode"));
        let storage = defaults
            .storage
            .over(raw.storage.map(|s| s.0), format!("{base}.storage"));
        let disk_buffer = defaults
            .disk_buffer
            .over(raw.disk_buffer.map(|s| s.0), format!("{base}.disk_buffer"));
        let fsync = defaults
            .fsync
            .over(raw.fsync.map(|f| f.0), format!("{base}.fsync"));
        let idempotency_window = defaults.idempotency_window.over(
            raw.idempotency_window.map(|d| Some(d.0)),
            format!("{base}.idempotency_window"),
        );
        let auth = match &raw.auth {
            Some(auth) => self.auth(auth, &base, &context),
            None => defaults.auth,
        };
        let rate_limit = match &raw.rate_limit {
            Some(limit) => self.rate_limit(limit, &base, &context),
            None => defaults.rate_limit,
        };
        let max_body = raw.max_body.map_or(server.max_body, |s| s.0);
        if storage.value == Storage::Disk && disk_buffer.value < max_body + DISK_RECORD_SLACK {
            let message = format!(
                "{} is less than the route's max_body ({max_body} bytes) plus {DISK_RECORD_SLACK} bytes for a record's header: an event that large could never be logged",
                disk_buffer.value
            );
            self.report_field(&base, &context, "disk_buffer", message);
        }
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
        let name = leak_str(raw.name);
        for (t, value) in raw.targets.into_iter().enumerate() {
            let durable = storage.value == Storage::Disk;
            let target = self.target(
                &base,
                &context,
                name,
                t,
                value,
                defaults,
                (max_body, durable),
            );
            if let Some(target) = target {
                targets.push((t, target));
            }
        }
        self.check_unique_targets(&base, &context, &targets);
        let targets: Vec<Target> = targets.into_iter().map(|(_, target)| target).collect();
        let spec = leak(RouteSpec {
            name,
            path: leak_str(raw.path),
            max_body,
            mode: mode.value,
            storage: storage.value,
            disk: DiskPolicy {
                budget: disk_buffer.value,
                fsync: fsync.value,
            },
            idempotency_window: idempotency_window.value.unwrap_or(match storage.value {
                Storage::Disk => Duration::from_secs(24 * 3600),
                Storage::Memory => Duration::from_secs(600),
            }),
            auth,
            rate_limit,
            match_headers: &[],
            balance: BalancePolicy::DEFAULT,
            targets: leak_slice(targets.iter().map(|target| target.spec).collect()),
        });
        Some(Route {
            spec,
            ident: ident::snake(name),
            variant: ident::camel(name),
            targets,
        })
    }

    /// Checks one target. Like [`Checker::route`], returns it whenever it could be read.
    #[allow(clippy::too_many_arguments)] // the route's place, name and limits, and the target's node
    fn target(
        &mut self,
        route_base: &str,
        route_context: &str,
        route: &'static str,
        index: usize,
        value: Value,
        defaults: &Layered,
        (max_body, durable): (u64, bool),
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
        let sign = raw
            .sign
            .as_ref()
            .map(|sign| self.sign(sign, &headers, &base, &context));
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
        if durable {
            // A durable lane is a cursor over its route's log: bounded by `disk_buffer`,
            // never dropping. Set in `defaults:`, these fields serve the memory routes.
            for (field, set) in [
                ("buffer", raw.buffer.is_some()),
                ("buffer_bytes", raw.buffer_bytes.is_some()),
                ("overflow", raw.overflow.is_some()),
            ] {
                if set {
                    let message = "applies to memory routes only: a durable route (storage: disk) is bounded by its disk_buffer and never drops".into();
                    self.report_field(&base, &context, field, message);
                }
            }
        }
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
        let name = leak_str(raw.name);
        let endpoint = Endpoint::Http(HttpEndpoint {
            url: leak_str(raw.url),
            headers: leak_slice(
                headers
                    .into_iter()
                    .map(|(name, value)| (leak_str(name), leak_str(value)))
                    .collect(),
            ),
            ca_file: raw.ca_file.map(leak_str),
            http2: policy.http2.value,
            sign,
        });
        Some(Target {
            ident: ident::snake(name),
            spec: leak(TargetSpec {
                route,
                name,
                endpoint,
                weight: 1,
                lane: policy.lane(),
                delivery: policy.delivery(),
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

/// Whether `name` is an HTTP field name (a token, RFC 9110 5.1).
pub(super) fn is_header_name(name: &str) -> bool {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    !name.is_empty() && name.bytes().all(token)
}

fn check_header(name: &str, value: &str) -> Result<(), String> {
    if !is_header_name(name) {
        return Err(format!("\"{name}\" is not a valid header name"));
    }
    if let Some(why) = crate::contract::reserved_header(name) {
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
/// (the syntax is defined once, in `crate::contract::pieces`).
pub(crate) fn check_placeholders(text: &str) -> Result<(), String> {
    for piece in crate::contract::pieces(text) {
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
