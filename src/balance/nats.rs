//! Balance routes whose backends are NATS subjects: each HTTP request becomes one NATS
//! request, answered by whichever worker of the subject's queue group takes it, and its reply
//! becomes the HTTP answer.
//!
//! The request: the body as the payload (read whole: a NATS message is one piece, bounded by
//! the route's `max_body` and the server's `max_payload`), and as NATS headers
//! `Fanout-Method`, `Fanout-Path` (the path as the client sent it), `Fanout-Query` (when there
//! is one), `Fanout-Route`, and every header of the client's request as it is relayed to an
//! HTTP backend (hop-by-hop ones out, `X-Forwarded-*`, `Forwarded` and `X-Request-Id` in).
//! The reply: its `Fanout-Status` header is the answer's status (200 without one), its other
//! headers (but `Nats-*` ones) are the answer's headers, its payload the body.
//!
//! fanout's own answers: `503` when no worker listens (NATS "no responders") or the client is
//! not connected, `504` when no reply comes within the target's `timeout`, `502` for a reply
//! whose `Fanout-Status` is not a status, or another failure. A request is never sent twice:
//! a worker may have acted on one whose reply was lost. Several NATS targets of one route
//! take turns by weight; within one subject, NATS spreads requests over its queue group.

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::header::{HeaderName, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Response, StatusCode};
use std::time::{Duration, Instant};

use super::forward::{self, X_REQUEST_ID};
use super::metrics::{BackendMetrics, Outcome, OwnAnswer};
use super::relay::Reply;
use super::Pool;
use crate::ingress::answer::{error, retry_later, too_large, Answer};
use crate::ingress::connection::Peer;
use crate::ingress::request_body::{read_whole, unreadable};
use crate::metrics::{RejectReason, RouteMetrics};
use crate::ops::startup::StartupError;
use crate::sink::{nats, Resolver};
use crate::spec::{self, TargetSpec};

/// The reply header that carries the HTTP status.
const STATUS: &str = "Fanout-Status";

/// A NATS backend of a balance route: its subject's client and counters.
pub struct Requester {
    pub spec: &'static TargetSpec,
    pub endpoint: nats::Endpoint,
    pub metrics: BackendMetrics,
}

impl Requester {
    pub fn new(
        spec: &'static TargetSpec,
        resolver: &mut Resolver<'_>,
    ) -> Result<Requester, StartupError> {
        let spec::Endpoint::Nats(endpoint) = &spec.endpoint else {
            unreachable!("a requester is made for a NATS target");
        };
        Ok(Requester {
            spec,
            endpoint: nats::Endpoint::resolve(spec, endpoint, resolver.env())?,
            metrics: BackendMetrics::new(spec),
        })
    }
}

/// A request's body as the route's checks left it: read whole, or still to read.
pub(super) enum Payload {
    Kept(Bytes),
    Unread(hyper::body::Incoming),
}

/// Sends one request to one of `pool`'s NATS backends and relays its reply.
pub(super) async fn relay(
    pool: &Pool,
    metrics: &RouteMetrics,
    mut head: Parts,
    payload: Payload,
    peer: &Peer,
    patience: Duration,
) -> Result<Response<Reply>, Answer> {
    let route = pool.route;
    let requester = pool.next_requester();
    let name = requester.spec.name;
    let Some(max_payload) = requester.endpoint.max_payload() else {
        return Err(own(
            pool,
            OwnAnswer::NoBackend,
            retry_later(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!(
                    "backend \"{name}\" of route \"{}\" is not connected to NATS; retry later",
                    route.name
                ),
            ),
        ));
    };
    let request_id = forward::prepare(&mut head.headers, &head.uri, peer);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Fanout-Method", head.method.as_str());
    headers.insert("Fanout-Path", head.uri.path());
    if let Some(query) = head.uri.query() {
        headers.insert("Fanout-Query", query);
    }
    headers.insert("Fanout-Route", route.name);
    for (name, value) in &head.headers {
        // A client's own `fanout-*` or `nats-*` headers would pass for fanout's or NATS's.
        let name = name.as_str();
        if name.starts_with("fanout-") || name.starts_with("nats-") {
            continue;
        }
        if let Ok(value) = value.to_str() {
            headers.append(name, value);
        }
    }
    // The server counts the headers in its `max_payload`, and drops a connection that sends
    // more: every request on it would fail.
    let room = max_payload.saturating_sub(nats::headers_size(&headers));
    let limit = usize::try_from(route.max_body)
        .unwrap_or(usize::MAX)
        .min(room);
    let body = match payload {
        Payload::Kept(body) => body,
        Payload::Unread(body) => read_whole(body, limit, patience)
            .await
            .map_err(|unread| unreadable(metrics, route, unread, patience))?,
    };
    if body.len() > limit {
        metrics.rejected(RejectReason::BodyTooLarge).inc();
        return Err(too_large(limit as u64));
    }
    let in_flight = InFlight::begin(&requester.metrics.in_flight);
    let started = Instant::now();
    let timeout = requester.spec.delivery.timeout;
    let request = requester.endpoint.request(headers, body, timeout);
    let replied = tokio::time::timeout(timeout, request).await;
    drop(in_flight);
    let message = match replied {
        Ok(Ok(message)) => message,
        Ok(Err(failure)) => {
            let (outcome, kind, answer) = failed(pool, name, failure);
            requester.metrics.outcome(outcome).inc();
            return Err(own(pool, kind, answer));
        }
        Err(_) => {
            requester.metrics.outcome(Outcome::Timeout).inc();
            let message = format!(
                "backend \"{name}\" of route \"{}\" did not reply in time",
                route.name
            );
            let answer = error(StatusCode::GATEWAY_TIMEOUT, &message);
            return Err(own(pool, OwnAnswer::Timeout, answer));
        }
    };
    requester
        .metrics
        .latency
        .observe(started.elapsed().as_secs_f64());
    match answer_of(message, request_id) {
        Ok(answer) => {
            requester
                .metrics
                .outcome(Outcome::Status(answer.status().as_u16()))
                .inc();
            Ok(answer)
        }
        Err(why) => {
            requester.metrics.outcome(Outcome::Error).inc();
            let message = format!(
                "backend \"{name}\" of route \"{}\" replied {why}",
                route.name
            );
            Err(own(
                pool,
                OwnAnswer::BadGateway,
                error(StatusCode::BAD_GATEWAY, &message),
            ))
        }
    }
}

/// What a request that got no reply is answered.
fn failed(
    pool: &Pool,
    name: &str,
    failure: async_nats::RequestError,
) -> (Outcome, OwnAnswer, Answer) {
    let route = pool.route.name;
    match failure.kind() {
        async_nats::RequestErrorKind::NoResponders => (
            Outcome::ConnectError,
            OwnAnswer::NoBackend,
            retry_later(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("no worker listens on the subject of backend \"{name}\" of route \"{route}\"; retry later"),
            ),
        ),
        async_nats::RequestErrorKind::TimedOut => (
            Outcome::Timeout,
            OwnAnswer::Timeout,
            error(
                StatusCode::GATEWAY_TIMEOUT,
                &format!("backend \"{name}\" of route \"{route}\" did not reply in time"),
            ),
        ),
        _ => (
            Outcome::Error,
            OwnAnswer::BadGateway,
            error(
                StatusCode::BAD_GATEWAY,
                &format!("the request to backend \"{name}\" of route \"{route}\" failed: {failure}"),
            ),
        ),
    }
}

/// The HTTP answer of a reply: its `Fanout-Status` (200 without one), its other headers but
/// NATS's own, its payload; or why it cannot be one.
fn answer_of(
    message: async_nats::Message,
    request_id: HeaderValue,
) -> Result<Response<Reply>, String> {
    let mut status = StatusCode::OK;
    let mut answer = Response::new(Either::Left(Full::new(message.payload)));
    if let Some(headers) = &message.headers {
        for (name, values) in headers.iter() {
            let name: &str = name.as_ref();
            if name.eq_ignore_ascii_case(STATUS) {
                let written = values.first().map(|v| v.as_str()).unwrap_or_default();
                status = written
                    .trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|code| (200..600).contains(code))
                    .and_then(|code| StatusCode::from_u16(code).ok())
                    .ok_or_else(|| format!("with {STATUS} \"{written}\", which is not a status"))?;
                continue;
            }
            if name.len() >= 5 && name[..5].eq_ignore_ascii_case("nats-") {
                continue;
            }
            let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
                continue;
            };
            for value in values {
                if let Ok(value) = HeaderValue::from_str(value.as_str()) {
                    answer.headers_mut().append(name.clone(), value);
                }
            }
        }
    }
    forward::strip(answer.headers_mut());
    answer.headers_mut().remove(hyper::header::CONTENT_LENGTH);
    answer.headers_mut().insert(X_REQUEST_ID, request_id);
    *answer.status_mut() = status;
    Ok(answer)
}

fn own(pool: &Pool, kind: OwnAnswer, answer: Answer) -> Answer {
    pool.metrics.error(kind).inc();
    answer
}

/// A request counted in its backend's `fanout_backend_in_flight` while it lives, whether it
/// ends or is dropped (the client gone).
struct InFlight<'a>(&'a prometheus::IntGauge);

impl<'a> InFlight<'a> {
    fn begin(gauge: &'a prometheus::IntGauge) -> InFlight<'a> {
        gauge.inc();
        InFlight(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}
