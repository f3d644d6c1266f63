//! The hot path: match the path against the compiled routes, read the body within the
//! route's limit, give the event an id, hand it to every lane of the route, answer 202.
//! Also the proxy's own endpoints, `/healthz` and `/metrics`, and every error answer, each a
//! short JSON `{"error": "..."}`.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{
    HeaderName, HeaderValue, ALLOW, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER,
    WWW_AUTHENTICATE,
};
use hyper::{Method, Request, Response, StatusCode};
use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use fanout_model::contract::{HEALTHZ_PATH, METRICS_PATH};

use crate::event::{self, Event};
use crate::gate::Gate;
use crate::idempotency::{self, Claim, IdempotencyKeys};
use crate::lane::{Admission, Rejected};
use crate::metrics::{RejectReason, RouteMetrics};
use crate::proxy::Proxy;
use crate::spec::RouteSpec;
use crate::table::RouteTable;

const JSON: HeaderValue = HeaderValue::from_static("application/json");
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

pub async fn handle<T: RouteTable>(
    proxy: Arc<Proxy<T>>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path();
    let response = match T::route(path) {
        Some(route) if request.method() == Method::POST => ingest(&proxy, route, request).await,
        Some(_) => method_not_allowed("POST"),
        // With `admin_listen`, `/metrics` and `/healthz` are served there, not here.
        None if proxy.admin_apart => not_found(),
        None => own_endpoint(&proxy, path, request.method()),
    };
    // Handing over to a successor: every client is to reconnect, and reach the new process.
    if proxy.handing_over.load(Ordering::Relaxed) {
        return Ok(closing(response));
    }
    Ok(response)
}

/// `/healthz`, `/metrics`, or 404: what the proxy answers itself (on the ingest listener, or
/// on `admin_listen`).
pub fn own_endpoint<T: RouteTable>(
    proxy: &Proxy<T>,
    path: &str,
    method: &Method,
) -> Response<Full<Bytes>> {
    match (path, method) {
        (HEALTHZ_PATH, &Method::GET | &Method::HEAD) => {
            json(StatusCode::OK, Bytes::from_static(b"{\"status\":\"ok\"}"))
        }
        (METRICS_PATH, &Method::GET) => {
            let text = proxy.metrics.render(&proxy.table);
            let mut response = Response::new(Full::new(Bytes::from(text)));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        (HEALTHZ_PATH, _) => method_not_allowed("GET, HEAD"),
        (METRICS_PATH, _) => method_not_allowed("GET"),
        _ => not_found(),
    }
}

fn not_found() -> Response<Full<Bytes>> {
    error(StatusCode::NOT_FOUND, "no route for this path")
}

async fn ingest<T: RouteTable>(
    proxy: &Proxy<T>,
    route: T::Route,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let spec = T::spec(route);
    let metrics = proxy.table.metrics(route);
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // Refusals that need no body come before reading it, so a client that sent
    // `Expect: 100-continue` is told without uploading first.
    if proxy.shutting_down.load(Ordering::Relaxed) {
        metrics.rejected(RejectReason::ShuttingDown).inc();
        return shutting_down();
    }
    let gate = proxy.table.gate(route);
    if gate.check_head(request.headers()).is_err() {
        metrics.rejected(RejectReason::Unauthorized).inc();
        return unauthorized(gate);
    }
    if let Err(wait) = gate.take() {
        metrics.rejected(RejectReason::RateLimited).inc();
        return rate_limited(wait);
    }
    if declared.is_some_and(|length| length > spec.max_body) {
        metrics.rejected(RejectReason::BodyTooLarge).inc();
        return too_large(spec.max_body);
    }
    let budget = T::SERVER.memory_budget;
    if event::held_bytes() + declared.unwrap_or(0) as usize > budget {
        metrics.rejected(RejectReason::MemoryBudget).inc();
        return over_budget();
    }
    let (head, body) = request.into_parts();
    let reading = Limited::new(body, spec.max_body as usize).collect();
    tokio::pin!(reading);
    // Most bodies are whole by now: only one still arriving pays for a timer.
    let body = match poll_fn(|cx| Poll::Ready(reading.as_mut().poll(cx))).await {
        Poll::Ready(read) => Ok(read),
        Poll::Pending => tokio::time::timeout(T::SERVER.body_read_timeout, reading).await,
    };
    let body = match body {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            metrics.rejected(RejectReason::BodyTooLarge).inc();
            return too_large(spec.max_body);
        }
        Ok(Err(_)) => {
            metrics.rejected(RejectReason::BodyUnreadable).inc();
            return error(
                StatusCode::BAD_REQUEST,
                "the request body could not be read",
            );
        }
        Err(_) => {
            metrics.rejected(RejectReason::BodyTimeout).inc();
            let message = format!(
                "the body did not arrive within {}",
                humantime::format_duration(T::SERVER.body_read_timeout)
            );
            return closing(error(StatusCode::REQUEST_TIMEOUT, &message));
        }
    };
    if proxy.shutting_down.load(Ordering::Relaxed) {
        metrics.rejected(RejectReason::ShuttingDown).inc();
        return shutting_down();
    }
    let Ok(webhook_id) = gate.check_body(&head.headers, &body) else {
        metrics.rejected(RejectReason::Unauthorized).inc();
        return unauthorized(gate);
    };
    if event::held_bytes() + body.len() > budget {
        metrics.rejected(RejectReason::MemoryBudget).inc();
        return over_budget();
    }
    let event = Event::new(&body, head.headers.get(CONTENT_TYPE));
    let mut claims = Claims::new(spec.name, event.id_bytes());
    if let Some(webhook_id) = webhook_id {
        if let Some(answer) = claims.claim(&gate.replays, webhook_id, metrics, "webhook-id") {
            return answer;
        }
    }
    let keys = proxy.table.keys(route);
    if let Some(key) = head.headers.get(IDEMPOTENCY_KEY).filter(|_| keys.enabled()) {
        if !idempotency::valid(key.as_bytes()) {
            return error(
                StatusCode::BAD_REQUEST,
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
            );
        }
        if let Some(answer) = claims.claim(keys, key.as_bytes(), metrics, "Idempotency-Key") {
            return answer;
        }
    }
    let receipt = event.receipt();
    let admitted = match admit(proxy, route, event).await {
        Ok(Admission::Queued) => {
            claims.settle(true);
            Ok(())
        }
        Ok(Admission::Logged(commit)) if claims.is_empty() => {
            commit.written().await.map_err(Rejected::from)
        }
        // From here the record is written or refused whether or not this request is still
        // there to see it (a client gone, a connection closed): the claims are settled by a
        // task of their own, as the outcome says, so a retry is never taken in twice.
        Ok(Admission::Logged(commit)) => tokio::spawn(async move {
            let written = commit.written().await.map_err(Rejected::from);
            claims.settle(written.is_ok());
            written
        })
        .await
        .unwrap_or(Err(Rejected::DiskError)),
        Err(rejected) => Err(rejected),
    };
    match admitted {
        Ok(()) => {
            metrics.accepted.inc();
            json(StatusCode::ACCEPTED, receipt)
        }
        Err(rejected) => refused(proxy, metrics, spec, rejected),
    }
}

/// The keys a request has claimed for its event (its `webhook-id`, its `Idempotency-Key`):
/// taken once the event is in (and written to a durable route's file), given back if the
/// request ends otherwise. Owned, so that a durable route's commit can settle them after the
/// request is gone.
struct Claims {
    route: &'static str,
    id: [u8; 16],
    /// At most two (a `webhook-id` and an `Idempotency-Key`).
    held: [Option<(IdempotencyKeys, Box<[u8]>)>; 2],
}

impl Claims {
    fn new(route: &'static str, id: [u8; 16]) -> Claims {
        Claims {
            route,
            id,
            held: [None, None],
        }
    }

    fn is_empty(&self) -> bool {
        self.held.iter().all(Option::is_none)
    }

    /// Claims `key` for the event; a key already taken answers the request (202 with the
    /// first id, or 409 while the first is under way), counted as a duplicate: that answer.
    fn claim(
        &mut self,
        keys: &IdempotencyKeys,
        key: &[u8],
        metrics: &RouteMetrics,
        what: &str,
    ) -> Option<Response<Full<Bytes>>> {
        match keys.claim(key, self.id) {
            Claim::New => {
                let free = self.held.iter_mut().find(|slot| slot.is_none());
                *free.expect("a request claims at most two keys") =
                    Some((keys.clone(), key.into()));
                None
            }
            Claim::Seen(first) => {
                metrics.duplicates.inc();
                Some(json(StatusCode::ACCEPTED, event::receipt_of(first)))
            }
            Claim::InProgress => {
                metrics.duplicates.inc();
                let message =
                    format!("a request with this {what} is under way; retry to get its answer");
                Some(retry_later(StatusCode::CONFLICT, &message))
            }
        }
    }

    /// The event is in (`taken`): a retry now gets its id; else the keys are given back.
    fn settle(&mut self, taken: bool) {
        for (keys, key) in self.held.iter_mut().filter_map(Option::take) {
            if !taken {
                keys.release(&key);
                continue;
            }
            keys.taken(&key);
            if let Err(e) = keys.persist(&key, self.id) {
                tracing::warn!(route = self.route, error = %e, "cannot write a remembered key");
            }
        }
    }
}

impl Drop for Claims {
    /// A request that ends before its event is in gives its keys back.
    fn drop(&mut self) {
        self.settle(false);
    }
}

/// The answer to an event its route did not take in.
fn refused<T: RouteTable>(
    proxy: &Proxy<T>,
    metrics: &RouteMetrics,
    spec: &RouteSpec,
    rejected: Rejected,
) -> Response<Full<Bytes>> {
    let (reason, message) = match rejected {
        Rejected::LaneFull(target) => (
            RejectReason::LaneFull,
            format!(
                "target \"{target}\" of route \"{}\" is full; the event was not accepted, retry later",
                spec.name
            ),
        ),
        Rejected::DiskFull => (
            RejectReason::DiskFull,
            format!(
                "route \"{}\" holds as many events on disk as its disk_buffer allows; the event was not accepted, retry later",
                spec.name
            ),
        ),
        Rejected::NotOpen if proxy.shutting_down.load(Ordering::Relaxed) => {
            metrics.rejected(RejectReason::ShuttingDown).inc();
            return shutting_down();
        }
        Rejected::NotOpen => (
            RejectReason::DiskError,
            format!(
                "route \"{}\" cannot log events yet (its data directory is not open); the event was not accepted, retry later",
                spec.name
            ),
        ),
        Rejected::DiskError => (
            RejectReason::DiskError,
            format!(
                "route \"{}\" cannot write its log; the event was not accepted, retry later",
                spec.name
            ),
        ),
    };
    metrics.rejected(reason).inc();
    retry_later(StatusCode::SERVICE_UNAVAILABLE, &message)
}

/// How many scheduler turns a request whose reject lane is full gives the delivery workers
/// before it is refused.
const ADMISSION_TURNS: usize = 8;

/// Dispatches `event` to its route: for a durable route, the commit to await.
///
/// If a reject lane is full, yields a few scheduler turns to the delivery workers
/// (microseconds: the client is not queued) and tries again before refusing. Under a flood,
/// this gives draining priority over taking in events that would only be refused: in a
/// closed-loop load run it turned most 503s into 202s. If a durable route's log is not open
/// yet (another process is handing the data directory over), waits for it up to
/// `body_read_timeout`.
async fn admit<T: RouteTable>(
    proxy: &Proxy<T>,
    route: T::Route,
    event: Event,
) -> Result<Admission, Rejected> {
    let mut turns = 0;
    loop {
        match proxy.table.accept(route, event.clone()) {
            Ok(admission) => return Ok(admission),
            Err(Rejected::LaneFull(_)) if turns < ADMISSION_TURNS => {
                turns += 1;
                tokio::task::yield_now().await;
            }
            Err(Rejected::NotOpen) if turns == 0 => {
                turns += 1;
                let mut log = None;
                proxy.table.lanes_of(route, &mut |lane| {
                    log = log.take().or_else(|| lane.log().cloned());
                });
                let Some(log) = log.filter(|log| !log.is_open()) else {
                    return Err(Rejected::NotOpen);
                };
                let wait = T::SERVER.body_read_timeout;
                if tokio::time::timeout(wait, log.ready()).await.is_err() {
                    return Err(Rejected::NotOpen);
                }
            }
            Err(rejected) => return Err(rejected),
        }
    }
}

fn json(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, JSON);
    response
}

/// `{"error":"<message>"}`.
fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let mut body = String::with_capacity(message.len() + 12);
    body.push_str("{\"error\":\"");
    for c in message.chars() {
        match c {
            '"' => body.push_str("\\\""),
            '\\' => body.push_str("\\\\"),
            c if c.is_control() => body.push_str(&format!("\\u{:04x}", c as u32)),
            c => body.push(c),
        }
    }
    body.push_str("\"}");
    json(status, Bytes::from(body))
}

fn method_not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut response = error(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("method not allowed; use {allow}"),
    );
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}

fn too_large(limit: u64) -> Response<Full<Bytes>> {
    let response = error(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("the body is over this route's limit of {limit} bytes"),
    );
    // The rest of the body is not read, so the connection cannot carry another request.
    closing(response)
}

fn closing(mut response: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

fn retry_later(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let mut response = error(status, message);
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

fn shutting_down() -> Response<Full<Bytes>> {
    closing(retry_later(
        StatusCode::SERVICE_UNAVAILABLE,
        "shutting down; retry on another instance",
    ))
}

/// The same answer whatever was wrong: a missing or bad token, signature, id or timestamp.
fn unauthorized(gate: &Gate) -> Response<Full<Bytes>> {
    let mut response = error(StatusCode::UNAUTHORIZED, "unauthorized");
    if let Some(challenge) = gate.challenge() {
        response.headers_mut().insert(WWW_AUTHENTICATE, challenge);
    }
    response
}

fn rate_limited(wait: Duration) -> Response<Full<Bytes>> {
    let mut response = error(
        StatusCode::TOO_MANY_REQUESTS,
        "this route's rate limit is reached; retry later",
    );
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    response
}

fn over_budget() -> Response<Full<Bytes>> {
    retry_later(
        StatusCode::SERVICE_UNAVAILABLE,
        "fanout holds as many events as its memory budget allows; retry later",
    )
}
