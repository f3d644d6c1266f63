//! Each target of a route: its url, headers and CA file, what its route's mode makes of it,
//! and the policy it layers over the defaults. Also the checks of header names and `${NAME}`
//! placeholders that other sections share.

use serde_yaml::Value;

use super::nats;
use super::policy::Layered;
use super::routes::RouteOfTarget;
use super::{with_field, Checker};
use crate::contract::PlaceholderError;
use crate::ident;
use crate::model::{leak, leak_slice, leak_str, Target};
use crate::raw;
use crate::spec::{Endpoint, HttpEndpoint, Mode, Signing, Storage, TargetSpec};

impl Checker<'_> {
    /// Checks one target. Like [`Checker::route`], returns it whenever it could be read.
    pub(super) fn target(
        &mut self,
        route: &RouteOfTarget,
        index: usize,
        value: Value,
        defaults: &Layered,
    ) -> Option<Target> {
        let base = format!("{}.targets[{index}]", route.base);
        let context = match value.get("name").and_then(Value::as_str) {
            Some(name) => format!("{}, target \"{name}\"", route.context),
            None => format!("{}, target #{}", route.context, index + 1),
        };
        let raw: raw::Target = self.deserialize(&base, &context, value)?;
        self.check_name(&base, &context, &raw.name);
        let nats = nats::is_nats(&raw.url);
        if !nats {
            self.check_url(&base, &context, &raw.url, route.mode);
            self.check_http_target_fields(&raw, &base, &context);
        }
        let headers = self.headers(&base, &context, &raw.headers);
        // A balance target signs nothing: its `sign:` is reported as a fan-out field (and a
        // NATS target's as an HTTP one).
        let sign = match route.mode {
            Mode::Fanout if !nats => raw
                .sign
                .as_ref()
                .map(|sign| self.sign(sign, &headers, &base, &context)),
            Mode::Fanout | Mode::Balance => None,
        };
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
            } else if !raw.url.starts_with("https://") && !nats {
                self.report_field(
                    &base,
                    &context,
                    "ca_file",
                    "only https:// targets use a CA file".into(),
                );
            }
        }
        let weight = match route.mode {
            Mode::Balance => self.weight(raw.weight, &base, &context),
            Mode::Fanout => 1,
        };
        let own = self.target_policy_of_mode(&raw, route.mode, &base, &context);
        let policy = defaults.over(&own, &base);
        self.check_policy(&policy, &base, &context);
        if route.storage == Storage::Disk {
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
        let max_body = route.max_body;
        let lane_bytes = policy.buffer_bytes.value;
        if route.mode == Mode::Fanout && lane_bytes < max_body && lane_bytes > 0 {
            let message = format!(
                "{lane_bytes} is less than the route's max_body ({max_body} bytes): an event that large could never wait in this lane"
            );
            let path = match &policy.buffer_bytes.path {
                Some(path) if path.starts_with(&base) => path.clone(),
                _ => base.clone(),
            };
            self.report(&path, &with_field(&context, "buffer_bytes"), message);
        }
        let mut delivery = policy.delivery();
        let endpoint = if nats {
            // A batch inherited from `defaults:` is unused: events are published one by one.
            delivery.batch = None;
            Endpoint::Nats(self.nats_endpoint(&raw, (route.name, route.mode), &base, &context))
        } else {
            Endpoint::Http(self.http_endpoint(&raw, headers, &policy, sign))
        };
        let name = leak_str(raw.name);
        Some(Target {
            ident: ident::snake(name),
            spec: leak(TargetSpec {
                route: route.name,
                name,
                endpoint,
                weight,
                lane: policy.lane(),
                delivery,
            }),
        })
    }

    /// The endpoint of an HTTP target, its fields checked by the caller.
    fn http_endpoint(
        &mut self,
        raw: &raw::Target,
        headers: Vec<(String, String)>,
        policy: &Layered,
        sign: Option<Signing>,
    ) -> HttpEndpoint {
        HttpEndpoint {
            url: leak_str(raw.url.clone()),
            headers: leak_slice(
                headers
                    .into_iter()
                    .map(|(name, value)| (leak_str(name), leak_str(value)))
                    .collect(),
            ),
            ca_file: raw.ca_file.clone().map(leak_str),
            http2: policy.http2.value,
            sign,
        }
    }

    fn check_url(&mut self, base: &str, context: &str, url: &str, mode: Mode) {
        let checked = check_url(url).and_then(|()| match mode {
            Mode::Balance if url.contains(['?', '#']) => Err(format!(
                "\"{url}\" has a query or fragment: a balance target's url may end in a path, \
                 but each request brings its own query"
            )),
            _ => Ok(()),
        });
        if let Err(message) = checked {
            self.report_field(base, context, "url", message);
        }
    }

    /// A target's `headers:`, checked.
    fn headers(
        &mut self,
        base: &str,
        context: &str,
        headers: &serde_yaml::Mapping,
    ) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (name, value) in self.header_pairs(base, context, "headers", headers) {
            if let Err(message) = check_header(&name, &value) {
                self.report_field(base, context, &format!("headers.{name}"), message);
                continue;
            }
            out.push((name, value));
        }
        out
    }

    /// The entries of a mapping of headers at `field` as text (a number or boolean as
    /// written), reporting those that are not a name and a scalar.
    pub(super) fn header_pairs(
        &mut self,
        base: &str,
        context: &str,
        field: &str,
        headers: &serde_yaml::Mapping,
    ) -> Vec<(String, String)> {
        let mut pairs = Vec::new();
        for (name, value) in headers {
            let Some(name) = name.as_str() else {
                let message = "header names must be strings".into();
                self.report_field(base, context, field, message);
                continue;
            };
            let value = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => {
                    let message = format!("expected a string, found {}", raw::describe(other));
                    self.report_field(base, context, &format!("{field}.{name}"), message);
                    continue;
                }
            };
            pairs.push((name.to_owned(), value));
        }
        pairs
    }
}

/// An `http://` or `https://` url with a host; `${NAME}` placeholders are allowed anywhere
/// after the scheme.
fn check_url(url: &str) -> Result<(), String> {
    check_placeholders(url)?;
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("\"{url}\" must start with http://, https://, nats:// or tls://"))?;
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
    check_host_port(host_port).map_err(|why| format!("\"{url}\" {why}"))
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`, with a host and a valid port if any.
pub(super) fn check_host_port(host_port: &str) -> Result<(), String> {
    let (host, port) = match host_port.strip_prefix('[') {
        Some(bracketed) => match bracketed.split_once(']') {
            Some((host, after)) => (host, after.strip_prefix(':')),
            None => return Err("has an unclosed \"[\"".into()),
        },
        None => match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        },
    };
    if host.is_empty() {
        return Err("has no host".into());
    }
    if let Some(port) = port {
        if port.parse::<u16>().is_err() {
            return Err(format!("has an invalid port \"{port}\""));
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
        assert!(check_url("http://[::1]/x").is_ok());
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
