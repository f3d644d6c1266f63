//! One request to a balance route: the route's checks (method, shutdown, gate, size), then
//! tries on backends until one answers or the tries run out (or, for a route whose backends
//! are NATS subjects, one NATS request: `super::nats`).
//!
//! Failover: a backend that cannot be connected to is left at once for another (nothing was
//! sent, so even a streamed POST goes on). After a request was sent, a timeout, a failed
//! connection or a status of `retry.on` goes on to another backend only for an idempotent
//! method (GET, HEAD, OPTIONS, TRACE, PUT, DELETE) or with `retry_non_idempotent`, and only if
//! the body was kept: bodies up to [`REPLAY_LIMIT`] (by `Content-Length`) are read whole first
//! and sent again as often as needed; larger or chunked bodies stream through, once. When no
//! other backend is left, the last answer a backend gave is relayed as it is; with no answer
//! at all, fanout answers 502 (the last error), 504 (the last try timed out) or 503 (no
//! backend available from the start). A streamed body that fails on the client's side is a
//! 400 or 413 of fanout's, not held against the backend.

use bytes::Bytes;
use http_body_util::{Either, Full, Limited};
use hyper::body::{Body as _, Incoming};
use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_LENGTH, HOST};
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode, Version};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::backend::Backend;
use super::connections::{Outgoing, SendError, Sender};
use super::forward::{self, X_REQUEST_ID};
use super::grpc;
use super::health::{self, Verdict};
use super::metrics::{Outcome, OwnAnswer};
use super::nats::{self, Payload};
use super::relay::{InFlight, Relay, Reply};
use super::Pool;
use crate::auth::gate::Gate;
use crate::ingress::answer::{
    error, method_not_allowed, rate_limited, retry_later, shutting_down, too_large, unauthorized,
    Answer,
};
use crate::ingress::connection::Peer;
use crate::ingress::request_body::{read_whole, unreadable, Unread};
use crate::metrics::{RejectReason, RouteMetrics};
use crate::spec::MethodSet;

/// Request bodies up to this size (by `Content-Length`) are read whole before the first try,
/// so that a failed try can be repeated on another backend.
pub const REPLAY_LIMIT: u64 = 64 * 1024;

/// A request's body: read whole (sent again on every try), or streamed through once.
enum Body {
    Kept(Bytes),
    Streamed(Incoming),
}

/// How the last try that got no relayable answer ended.
enum Failure {
    Connect(&'static str, String),
    Failed(&'static str, String),
    TimedOut(&'static str),
}

/// What a balance request needs of its route beside the pool.
pub struct Context<'a> {
    pub gate: &'a Gate,
    pub metrics: &'a RouteMetrics,
    pub shutting_down: bool,
    pub body_read_timeout: Duration,
}

pub async fn serve(
    pool: &Pool,
    context: Context<'_>,
    request: Request<Incoming>,
    peer: std::sync::Arc<Peer>,
) -> Response<Reply> {
    let grpc = grpc::is_grpc(request.headers());
    let own = |answer: Answer| match grpc {
        true => grpc::status_of(answer).map(Either::Left),
        false => answer.map(Either::Left),
    };
    match admit(pool, &context, request).await {
        Ok((head, body)) if pool.is_nats() => {
            let payload = match body {
                Body::Kept(body) => Payload::Kept(body),
                Body::Streamed(body) => Payload::Unread(body),
            };
            let patience = context.body_read_timeout;
            let relayed = nats::relay(pool, context.metrics, head, payload, &peer, patience);
            relayed.await.unwrap_or_else(own)
        }
        Ok((head, body)) => match relay(pool, context.metrics, head, body, peer).await {
            Ok(response) => response,
            Err(answer) => own(answer),
        },
        Err(answer) => own(answer),
    }
}

/// The route's checks before any backend is tried; the request with its body kept whole if
/// small enough (or if the gate verifies a signature over it).
async fn admit(
    pool: &Pool,
    context: &Context<'_>,
    request: Request<Incoming>,
) -> Result<(Parts, Body), Answer> {
    let spec = pool.route;
    let (gate, metrics) = (context.gate, context.metrics);
    if !allowed(spec.balance.methods, request.method()) {
        return Err(method_not_allowed(pool.allow.clone()));
    }
    if context.shutting_down {
        metrics.rejected(RejectReason::ShuttingDown).inc();
        return Err(shutting_down());
    }
    if gate.check_head(request.headers()).is_err() {
        metrics.rejected(RejectReason::Unauthorized).inc();
        return Err(unauthorized(gate));
    }
    if let Err(wait) = gate.take() {
        metrics.rejected(RejectReason::RateLimited).inc();
        return Err(rate_limited(wait));
    }
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > spec.max_body) {
        metrics.rejected(RejectReason::BodyTooLarge).inc();
        return Err(too_large(spec.max_body));
    }
    let (mut head, body) = request.into_parts();
    if gate.takes_authorization() {
        head.headers.remove(AUTHORIZATION);
    }
    let small = body.is_end_stream() || declared.is_some_and(|n| n <= REPLAY_LIMIT);
    if !(small || gate.signs_body()) {
        return Ok((head, Body::Streamed(body)));
    }
    let patience = context.body_read_timeout;
    let limit = usize::try_from(spec.max_body).unwrap_or(usize::MAX);
    let body = read_whole(body, limit, patience)
        .await
        .map_err(|unread| unreadable(metrics, spec, unread, patience))?;
    if gate.check_body(&head.headers, &body).is_err() {
        metrics.rejected(RejectReason::Unauthorized).inc();
        return Err(unauthorized(gate));
    }
    Ok((head, Body::Kept(body)))
}

/// Tries backends until one answers (relayed) or none is left (fanout's own answer).
async fn relay(
    pool: &Pool,
    metrics: &RouteMetrics,
    mut head: Parts,
    body: Body,
    peer: std::sync::Arc<Peer>,
) -> Result<Response<Reply>, Answer> {
    let policy = &pool.route.balance;
    let request_id = forward::prepare(&mut head.headers, &head.uri, &peer);
    let limit = usize::try_from(pool.route.max_body).unwrap_or(usize::MAX);
    let (kept, mut streamed) = match body {
        Body::Kept(kept) => (Some(kept), None),
        Body::Streamed(body) => (None, Some(Limited::new(body, limit))),
    };
    let repeatable = kept.is_some() && (idempotent(&head.method) || policy.retry_non_idempotent);
    let (mut tried, mut tries, mut last) = (0u64, 0u32, None::<Failure>);
    // A backend's answer with a status of `retry.on`, kept while another backend is tried:
    // relayed if no later try gets an answer.
    let mut retried: Option<Response<Reply>> = None;
    let mut next = pool.pick(0);
    while let Some(index) = next.take() {
        if tries > 0 {
            pool.metrics.retries.inc();
        }
        tried |= 1 << index;
        tries += 1;
        let more = tries < policy.attempts;
        let backend = pool.backend(index);
        let name = backend.spec.name;
        let in_flight = InFlight::begin(backend);
        let started = Instant::now();
        let again = more && repeatable;
        // One deadline for connecting and the answer's head; `connected` tells which it cut.
        let connected = AtomicBool::new(false);
        let attempt = async {
            let mut sender = backend.connections.take().await?;
            connected.store(true, Ordering::Relaxed);
            let body: Outgoing = match (&kept, streamed.take()) {
                (Some(kept), _) => Either::Left(Full::new(kept.clone())),
                (None, Some(streamed)) => Either::Right(streamed),
                (None, None) => Either::Left(Full::default()),
            };
            // The headers are copied only when another try may need them.
            let headers = match again {
                true => head.headers.clone(),
                false => std::mem::take(&mut head.headers),
            };
            let outgoing = request_for(backend, pool, &head, headers, body);
            let answer = sender.send(&backend.connections, outgoing).await?;
            Ok::<_, SendError>((answer, sender))
        };
        let tried_once = tokio::time::timeout(backend.spec.delivery.timeout, attempt).await;
        let (outcome, failure) = match tried_once {
            Ok(Ok((answer, sender))) => {
                let latency = started.elapsed().as_secs_f64();
                backend.metrics.latency.observe(latency);
                let status = answer.status().as_u16();
                backend.metrics.outcome(Outcome::Status(status)).inc();
                if matches!(status, 502..=504) {
                    eject_if_due(backend);
                } else {
                    backend.health.succeeded();
                }
                let answer = relayed(answer, sender, in_flight, request_id.clone());
                if again && policy.retry_on.contains(status) {
                    if let Some(other) = pool.pick(tried) {
                        next = Some(other);
                        retried = Some(answer);
                        continue;
                    }
                }
                return Ok(answer);
            }
            Ok(Err(SendError::Client { too_large })) => {
                // The client's body failed, not the backend: nothing is counted against it.
                let unread = match too_large {
                    true => Unread::TooLarge,
                    false => Unread::Unreadable,
                };
                return Err(unreadable(metrics, pool.route, unread, Duration::ZERO));
            }
            // An idle connection had closed and no new one opened: the request comes back
            // unsent, its body and headers with it.
            Ok(Err(SendError::Unsent(why, request))) => {
                let (parts, body) = (*request).into_parts();
                head.headers = parts.headers;
                head.headers.remove(HOST);
                if let Either::Right(body) = body {
                    streamed = Some(body);
                }
                (Outcome::ConnectError, Failure::Connect(name, why))
            }
            // Nothing was sent: any request may go on to another backend.
            Ok(Err(SendError::Connect(why))) if !connected.load(Ordering::Relaxed) => {
                (Outcome::ConnectError, Failure::Connect(name, why))
            }
            Err(_) if !connected.load(Ordering::Relaxed) => (
                Outcome::ConnectError,
                Failure::Connect(name, "connecting timed out".into()),
            ),
            Ok(Err(SendError::Connect(why) | SendError::Failed(why))) => {
                (Outcome::Error, Failure::Failed(name, why))
            }
            Err(_) => (Outcome::Timeout, Failure::TimedOut(name)),
        };
        failed(backend, outcome);
        let retry = match failure {
            Failure::Connect(..) => more,
            _ => again,
        };
        last = Some(failure);
        next = retry.then(|| pool.pick(tried)).flatten();
    }
    match retried {
        Some(answer) => Ok(answer),
        None => Err(own_answer(pool, last)),
    }
}

/// The request for one try on `backend`.
fn request_for(
    backend: &Backend,
    pool: &Pool,
    head: &Parts,
    headers: HeaderMap,
    body: Outgoing,
) -> Request<Outgoing> {
    let mut request = Request::new(body);
    *request.method_mut() = head.method.clone();
    *request.uri_mut() = backend.uri_for(backend.path_for(pool.route, &head.uri));
    *request.headers_mut() = headers;
    let headers = request.headers_mut();
    for (name, value) in &backend.endpoint.headers {
        headers.insert(name, value.clone());
    }
    if backend.endpoint.http.http2 {
        *request.version_mut() = Version::HTTP_2;
    } else {
        request
            .headers_mut()
            .insert(HOST, backend.endpoint.host.clone());
    }
    request
}

/// The backend's answer for the client: hop-by-hop fields out, the request id in, the body
/// streamed.
fn relayed(
    answer: Response<Incoming>,
    sender: Sender,
    in_flight: InFlight,
    request_id: HeaderValue,
) -> Response<Reply> {
    let (mut parts, body) = answer.into_parts();
    forward::strip(&mut parts.headers);
    parts.headers.insert(X_REQUEST_ID, request_id);
    parts.version = Version::default();
    let connection = match sender {
        Sender::Http1(connection) => Some(connection),
        Sender::Http2(_) => None,
    };
    Response::from_parts(
        parts,
        Either::Right(Relay::new(body, in_flight, connection)),
    )
}

/// Counts a failed try and, when it is one too many, ejects the backend.
fn failed(backend: &Backend, outcome: Outcome) {
    backend.metrics.outcome(outcome).inc();
    eject_if_due(backend);
}

fn eject_if_due(backend: &Backend) {
    if let Verdict::Ejected(cooldown) = backend.health.failed(health::now_ms()) {
        backend.metrics.ejections.inc();
        tracing::warn!(
            route = backend.spec.route,
            target = backend.spec.name,
            cooldown = %humantime::format_duration(cooldown),
            "backend ejected after failed tries in a row"
        );
    }
}

/// fanout's answer when no backend's could be relayed, counted.
fn own_answer(pool: &Pool, last: Option<Failure>) -> Answer {
    let route = pool.route.name;
    let (kind, answer) = match last {
        None => (
            OwnAnswer::NoBackend,
            retry_later(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("route \"{route}\" has no healthy backend; retry later"),
            ),
        ),
        Some(Failure::TimedOut(target)) => (
            OwnAnswer::Timeout,
            error(
                StatusCode::GATEWAY_TIMEOUT,
                &format!("backend \"{target}\" of route \"{route}\" did not answer in time"),
            ),
        ),
        Some(Failure::Connect(target, why) | Failure::Failed(target, why)) => (
            OwnAnswer::BadGateway,
            error(
                StatusCode::BAD_GATEWAY,
                &format!("every try failed; the last, on backend \"{target}\" of route \"{route}\": {why}"),
            ),
        ),
    };
    pool.metrics.error(kind).inc();
    answer
}

/// Whether `method` is in the route's `methods` (a method outside the standard ones only if
/// the route takes every method).
fn allowed(methods: MethodSet, method: &Method) -> bool {
    // In `MethodSet::METHODS` order.
    let index = match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::DELETE => 4,
        Method::CONNECT => 5,
        Method::OPTIONS => 6,
        Method::TRACE => 7,
        Method::PATCH => 8,
        _ => return methods == MethodSet::ALL,
    };
    methods.contains_bit(1 << index)
}

/// RFC 9110 9.2.2.
fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}
