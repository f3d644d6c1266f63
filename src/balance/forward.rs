//! The headers of a relayed request and of its answer (RFC 9110 7.6.1): hop-by-hop fields
//! removed both ways (those `Connection` names too; `TE: trailers` kept, which gRPC needs);
//! `X-Forwarded-For` (appended to), `X-Forwarded-Proto`, `X-Forwarded-Host`, `Forwarded`
//! (RFC 7239 `for` and `proto`, appended to; the host is in `X-Forwarded-Host`) and
//! `X-Request-Id` (the client's if it sent a sane one, else a new one, also put on the
//! answer) set on the request.

use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, EXPECT, FORWARDED, HOST, TE};
use hyper::Uri;

use crate::ingress::connection::Peer;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Fields that concern one connection only, never relayed (`te` apart: see [`strip`]).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "transfer-encoding",
    "upgrade",
    "trailer",
];

/// Removes the hop-by-hop fields of `headers`, and those its `Connection` names. `TE` goes too
/// unless it is `trailers`, the one value a proxy may pass on (and gRPC requires).
pub fn strip(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    // `Connection: TE` comes with `TE: trailers` from an HTTP/1.1 client: the check below
    // decides for TE.
    for name in named.into_iter().filter(|name| name != TE) {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    let trailers_only = headers
        .get_all(TE)
        .iter()
        .all(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    if !trailers_only {
        headers.remove(TE);
    }
}

/// Prepares a client's request headers for relaying: hop-by-hop fields out, `Host` out (each
/// backend gets its own), forwarding fields and the request id in. Returns the request id.
pub fn prepare(headers: &mut HeaderMap, uri: &Uri, peer: &Peer) -> HeaderValue {
    strip(headers);
    // fanout answered `Expect: 100-continue` itself (hyper does, once the body is read).
    headers.remove(EXPECT);
    let host = headers.remove(HOST).or_else(|| {
        uri.authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let appended = |earlier: Option<&HeaderValue>, ours: &HeaderValue| match earlier {
        None => Some(ours.clone()),
        Some(earlier) => {
            let mut list = earlier.as_bytes().to_vec();
            list.extend_from_slice(b", ");
            list.extend_from_slice(ours.as_bytes());
            HeaderValue::from_bytes(&list).ok()
        }
    };
    if let Some(value) = appended(headers.get(&X_FORWARDED_FOR), &peer.forwarded_for) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    if let Some(value) = appended(headers.get(FORWARDED), &peer.forwarded) {
        headers.insert(FORWARDED, value);
    }
    let proto = if peer.tls { "https" } else { "http" };
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    if let Some(host) = host {
        headers.insert(X_FORWARDED_HOST, host);
    }
    let request_id = headers
        .get(&X_REQUEST_ID)
        .filter(|id| {
            (1..=200).contains(&id.len()) && id.as_bytes().iter().all(u8::is_ascii_graphic)
        })
        .cloned()
        .unwrap_or_else(new_request_id);
    headers.insert(X_REQUEST_ID, request_id.clone());
    request_id
}

fn new_request_id() -> HeaderValue {
    let mut text = [0u8; 36];
    let id = uuid::Uuid::now_v7();
    let text = id.as_hyphenated().encode_lower(&mut text);
    HeaderValue::from_str(text).expect("a uuid is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> Peer {
        Peer::new("10.0.0.7:5555".parse().unwrap(), false)
    }

    #[test]
    fn hop_by_hop_fields_go_and_forwarding_fields_come() {
        let mut headers = HeaderMap::new();
        headers.insert("connection", "keep-alive, x-secret".parse().unwrap());
        headers.insert("x-secret", "1".parse().unwrap());
        headers.insert("keep-alive", "timeout=5".parse().unwrap());
        headers.insert("te", "trailers".parse().unwrap());
        headers.insert("host", "api.example:8000".parse().unwrap());
        headers.insert("x-forwarded-for", "192.0.2.1".parse().unwrap());
        headers.insert("x-kept", "yes".parse().unwrap());
        let id = prepare(&mut headers, &"/x".parse().unwrap(), &peer());
        assert!(headers.get("connection").is_none() && headers.get("x-secret").is_none());
        assert!(headers.get("keep-alive").is_none() && headers.get("host").is_none());
        assert_eq!(headers["te"], "trailers");
        assert_eq!(headers["x-kept"], "yes");
        assert_eq!(headers["x-forwarded-for"], "192.0.2.1, 10.0.0.7");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["x-forwarded-host"], "api.example:8000");
        assert_eq!(headers["forwarded"], "for=10.0.0.7;proto=http");
        assert_eq!(headers["x-request-id"], id);
        assert_eq!(id.len(), 36);
    }

    #[test]
    fn a_sane_request_id_is_kept_and_te_other_than_trailers_goes() {
        let mut headers = HeaderMap::new();
        headers.insert("x-request-id", "abc-123".parse().unwrap());
        headers.insert("te", "gzip".parse().unwrap());
        let id = prepare(&mut headers, &"/x".parse().unwrap(), &peer());
        assert_eq!(id, "abc-123");
        assert!(headers.get("te").is_none());
        let mut headers = HeaderMap::new();
        headers.insert("connection", "TE".parse().unwrap());
        headers.insert("te", "trailers".parse().unwrap());
        prepare(&mut headers, &"/x".parse().unwrap(), &peer());
        assert_eq!(
            headers["te"], "trailers",
            "an HTTP/1.1 client's TE: trailers stays"
        );
    }
}
