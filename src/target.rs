//! A target as delivery sees it: the compiled [`TargetSpec`] with `${NAME}` placeholders
//! resolved from the environment once at start-up, the request headers built once, and the
//! client that reaches it.
//!
//! Requests follow RFC 9112: owned HTTP/1.1 connections send the origin form (`POST /path?query
//! HTTP/1.1`) with `Host` as written in the url (the pooled client does the same itself).
//! Credentials in a url (`http://user:pass@host/`) never reach the request line: they become an
//! `Authorization: Basic` header, percent-decoded as curl does.

use base64::Engine;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use hyper::http::uri::{Authority, PathAndQuery, Scheme};
use hyper::Uri;

use crate::client::{Clients, HttpClient};
use crate::spec::TargetSpec;
use crate::startup::StartupError;

/// Header carrying the event id to targets.
pub const EVENT_ID: HeaderName = HeaderName::from_static(fanout_contract::EVENT_ID);
/// Header carrying the ids of a batch's events, comma-separated, in line order.
pub const EVENT_IDS: HeaderName = HeaderName::from_static(fanout_contract::EVENT_IDS);
/// Header carrying the route name to targets.
pub const ROUTE: HeaderName = HeaderName::from_static(fanout_contract::ROUTE);
/// Header carrying the attempt number (1 for the first) to targets.
pub const ATTEMPT: HeaderName = HeaderName::from_static(fanout_contract::ATTEMPT);

pub struct Target {
    pub spec: &'static TargetSpec,
    /// The url in absolute form without credentials, for the pooled client.
    pub uri: Uri,
    /// The url's path and query (origin form), for the request line of owned connections.
    pub origin: Uri,
    /// `host[:port]` as written in the url, for `Host` on owned connections.
    pub host: HeaderValue,
    /// The configured headers plus `fanout-route` (and `Authorization` from the url's
    /// credentials), copied into every request.
    pub headers: HeaderMap,
    pub client: HttpClient,
    /// Held by the one delivery worker gathering a batch (batch lanes only).
    pub gathering: tokio::sync::Mutex<()>,
}

impl Target {
    /// Resolves `spec` with `env` (the process environment, or a test's own). Error messages
    /// show the url as written, `${NAME}` and all, never a substituted secret.
    pub fn resolve(
        spec: &'static TargetSpec,
        env: &dyn Fn(&str) -> Option<String>,
        clients: &mut Clients,
    ) -> Result<Target, StartupError> {
        let place = format!("route \"{}\", target \"{}\"", spec.route, spec.name);
        let written = spec.url;
        let url = substitute(written, env)
            .map_err(|e| StartupError(format!("{place}, url \"{written}\": {e}")))?;
        let invalid = |why: &str| StartupError(format!("{place}: url \"{written}\" {why}"));
        let parsed: Uri = url
            .parse()
            .map_err(|_| invalid("is not a valid url once its variables are substituted"))?;
        let scheme = match parsed.scheme_str() {
            Some("http") => Scheme::HTTP,
            Some("https") => Scheme::HTTPS,
            _ => return Err(invalid("must be http:// or https://")),
        };
        let authority = parsed
            .authority()
            .ok_or_else(|| invalid("has no host"))?
            .as_str();
        let (userinfo, host_port) = match authority.rsplit_once('@') {
            Some((userinfo, host_port)) => (Some(userinfo), host_port),
            None => (None, authority),
        };
        let host_port: Authority = host_port.parse().map_err(|_| invalid("has no host"))?;
        if host_port.host().is_empty() {
            return Err(invalid("has no host"));
        }
        let origin = parsed
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let uri = Uri::builder()
            .scheme(scheme)
            .authority(host_port.clone())
            .path_and_query(origin.clone())
            .build()
            .map_err(|_| invalid("is not a valid url"))?;
        let host = HeaderValue::from_str(host_port.as_str())
            .map_err(|_| invalid("has a host that is not a valid Host header"))?;

        let mut headers = HeaderMap::with_capacity(spec.headers.len() + 2);
        for (name, value) in spec.headers {
            let bad = |e: String| StartupError(format!("{place}, header {name}: {e}"));
            let value = substitute(value, env).map_err(bad)?;
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| bad(e.to_string()))?;
            let value = HeaderValue::from_str(&value)
                .map_err(|_| bad("the value is not a valid header value".into()))?;
            headers.append(name, value);
        }
        if let Some(userinfo) = userinfo {
            if headers.contains_key(AUTHORIZATION) {
                return Err(invalid(
                    "holds credentials and `headers` sets Authorization too: keep one of the two",
                ));
            }
            headers.insert(AUTHORIZATION, basic_authorization(userinfo));
        }
        headers.insert(ROUTE, HeaderValue::from_static(spec.route));
        let ca_file = spec
            .ca_file
            .map(|path| substitute(path, env))
            .transpose()
            .map_err(|e| StartupError(format!("{place}, ca_file: {e}")))?;
        let client = clients
            .get(ca_file.as_deref(), spec.http2)
            .map_err(|e| StartupError(format!("{place}: {e}")))?;
        Ok(Target {
            spec,
            uri,
            origin: Uri::from(origin),
            host,
            headers,
            client,
            gathering: tokio::sync::Mutex::new(()),
        })
    }
}

/// `Basic base64(user:password)` from a url's `user:password`, percent-decoded.
fn basic_authorization(userinfo: &str) -> HeaderValue {
    let credentials = percent_decode(userinfo);
    let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
    HeaderValue::from_str(&format!("Basic {encoded}")).expect("base64 is a valid header value")
}

fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied(),
            bytes.get(i + 2).copied(),
        ) {
            (b'%', Some(h), Some(l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    out
}

/// Replaces each `${NAME}` in `text` with the variable's value; `${NAME:-default}` takes
/// `default` when the variable is unset or empty.
fn substitute(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    for piece in fanout_contract::pieces(text) {
        match piece {
            Ok(fanout_contract::Piece::Literal(literal)) => out.push_str(literal),
            Ok(fanout_contract::Piece::Variable { name, default }) => {
                match (env(name).filter(|v| !v.is_empty()), default) {
                    (Some(value), _) => out.push_str(&value),
                    (None, Some(default)) => out.push_str(default),
                    (None, None) => {
                        return Err(format!(
                            "environment variable {name} is not set (needed for ${{{name}}})"
                        ))
                    }
                }
            }
            Err(_) => return Err(format!("malformed placeholder in \"{text}\"")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_replaced_and_missing_ones_named() {
        let env = |name: &str| (name == "TOKEN").then(|| "s3cret".to_owned());
        assert_eq!(
            substitute("Bearer ${TOKEN}", &env).unwrap(),
            "Bearer s3cret"
        );
        assert_eq!(substitute("plain $5", &env).unwrap(), "plain $5");
        assert_eq!(
            substitute("http://${HOST:-127.0.0.1:8001}/x", &env).unwrap(),
            "http://127.0.0.1:8001/x"
        );
        assert_eq!(substitute("${TOKEN:-other}", &env).unwrap(), "s3cret");
        let error = substitute("${MISSING}/x", &env).unwrap_err();
        assert!(error.contains("MISSING is not set"), "{error}");
    }

    #[test]
    fn credentials_become_basic_authorization_percent_decoded() {
        assert_eq!(
            basic_authorization("alice:p%40ss"),
            "Basic YWxpY2U6cEBzcw==" // alice:p@ss
        );
        assert_eq!(percent_decode("a%2"), b"a%2");
    }
}
