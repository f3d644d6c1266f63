//! HTTP(S) targets. [`Endpoint`]: the compiled url and headers with `${NAME}` placeholders
//! resolved from the environment once at start-up, the request headers built once, and the
//! client that reaches it. [`Sink`]: one worker's link to it, which sends a parcel as a POST
//! and reads the answer's status as an [`Outcome`].
//!
//! Requests follow RFC 9112: owned HTTP/1.1 connections send the origin form (`POST /path?query
//! HTTP/1.1`) with `Host` as written in the url (the pooled client does the same itself).
//! Credentials in a url (`http://user:pass@host/`) never reach the request line: they become an
//! `Authorization: Basic` header, percent-decoded as curl does.

mod client;
mod link;
mod sign;

pub use client::{roots_with, Clients, Connector};

use base64::Engine;
use http_body_util::Full;
use hyper::header::{
    HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE,
};
use hyper::http::uri::{Authority, PathAndQuery, Scheme};
use hyper::{Method, Request, Uri};
use tokio::time::Instant;

use super::{substitute, Outcome, Why};
use crate::ops::startup::StartupError;
use crate::sink::parcel::{Parcel, ATTEMPT, ROUTE};
use crate::spec::{HttpEndpoint, TargetSpec};
use client::HttpClient;
use link::{Answer, Failure, Link};
use sign::Signer;

pub struct Endpoint {
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
    /// What opens connections to the target, for those who keep their own (balance backends).
    pub connector: Connector,
    /// The endpoint as compiled in (`http2`, the url as written).
    pub http: &'static HttpEndpoint,
    /// Signs every delivery, if the target has `sign:`.
    signer: Option<Signer>,
}

impl Endpoint {
    /// Resolves `spec` with `env` (the process environment, or a test's own). Error messages
    /// show the url as written, `${NAME}` and all, never a substituted secret.
    pub fn resolve(
        spec: &'static TargetSpec,
        http: &'static HttpEndpoint,
        env: &dyn Fn(&str) -> Option<String>,
        clients: &mut Clients,
    ) -> Result<Endpoint, StartupError> {
        let place = format!("route \"{}\", target \"{}\"", spec.route, spec.name);
        let written = http.url;
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

        let mut headers = HeaderMap::with_capacity(http.headers.len() + 2);
        for (name, value) in http.headers {
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
        let ca_file = http
            .ca_file
            .map(|path| substitute(path, env))
            .transpose()
            .map_err(|e| StartupError(format!("{place}, ca_file: {e}")))?;
        let (client, connector) = clients
            .get(ca_file.as_deref(), http.http2)
            .map_err(|e| StartupError(format!("{place}: {e}")))?;
        let signer = http
            .sign
            .as_ref()
            .map(|sign| Signer::resolve(sign, &place, env))
            .transpose()?;
        Ok(Endpoint {
            spec,
            uri,
            origin: Uri::from(origin),
            host,
            headers,
            client,
            connector,
            http,
            signer,
        })
    }

    /// A worker's link to the target: a connection of its own for plain HTTP/1.1, the shared
    /// pool otherwise.
    pub fn connect(&self) -> Sink<'_> {
        Sink {
            endpoint: self,
            link: Link::to(self),
        }
    }
}

/// One delivery worker's way to an HTTP target.
pub struct Sink<'a> {
    endpoint: &'a Endpoint,
    link: Link,
}

impl Sink<'_> {
    /// POSTs `parcel`; any 2xx delivers it; `retry.on` statuses, errors and timeouts may be
    /// retried; other statuses are permanent. `Retry-After` counts on 429 and 503 only.
    pub async fn send(&mut self, parcel: &Parcel, attempt: u32) -> Outcome {
        let endpoint = self.endpoint;
        let mut request = Request::new(Full::new(parcel.body.clone()));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = endpoint.uri.clone();
        let headers = request.headers_mut();
        headers.clone_from(&endpoint.headers);
        headers.insert(parcel.ids.0.clone(), parcel.ids.1.clone());
        headers.insert(ATTEMPT, attempt_header(attempt));
        // hyper writes it for a body, and leaves it out for an empty one; RFC 9110 wants it
        // on every POST, and some servers answer 411 without it.
        if parcel.body.is_empty() {
            headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        }
        if let Some(content_type) = &parcel.content_type {
            headers.insert(CONTENT_TYPE, content_type.clone());
        }
        if let Some(signer) = &endpoint.signer {
            signer.sign(parcel, headers);
        }
        let delivery = &endpoint.spec.delivery;
        let deadline = Instant::now() + delivery.timeout;
        match self.link.send(request, deadline).await {
            Err(Failure::Timeout) => Outcome::Retryable {
                why: Why::Error(format!("no answer within {:?}", delivery.timeout)),
                retry_after: None,
            },
            Err(Failure::Io(error)) => Outcome::Retryable {
                why: Why::Error(error_chain(error.as_ref())),
                retry_after: None,
            },
            Ok(Answer { status, .. }) if status.is_success() => Outcome::Delivered,
            Ok(Answer {
                status,
                retry_after,
            }) if delivery.retry.on.contains(status.as_u16()) => {
                let honoured = matches!(status.as_u16(), 429 | 503);
                Outcome::Retryable {
                    why: Why::Status(status.as_u16()),
                    retry_after: retry_after.filter(|_| honoured),
                }
            }
            Ok(Answer { status, .. }) => Outcome::Permanent(Why::Status(status.as_u16())),
        }
    }
}

fn attempt_header(attempt: u32) -> HeaderValue {
    const SMALL: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    match SMALL.get(attempt as usize) {
        Some(text) => HeaderValue::from_static(text),
        None => HeaderValue::from(attempt),
    }
}

/// An error with its causes, each said once: `tcp connect error: Connection refused (os
/// error 111)`.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// `Basic base64(user:password)` from a url's `user:password`, percent-decoded.
fn basic_authorization(userinfo: &str) -> HeaderValue {
    let mut credentials = percent_decode(userinfo);
    // `user` alone means an empty password: RFC 7617 wants the colon (curl sends `user:`).
    if !userinfo.contains(':') {
        credentials.push(b':');
    }
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
        assert_eq!(basic_authorization("bob"), "Basic Ym9iOg=="); // bob:
    }
}
