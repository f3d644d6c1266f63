//! The fan-out hot path: pass the route's gate, read the body within the route's limit, give
//! the event an id, claim its keys, hand it to every lane of the route, answer 202 (or one of
//! `answer`'s refusals).

use hyper::body::Incoming;
use hyper::header::{HeaderName, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Request, StatusCode};
use prometheus::IntCounter;
use std::sync::atomic::Ordering;

use crate::event::{self, Event};
use crate::fan_out::idempotency::{self, Claims, Duplicate};
use crate::fan_out::lane::{Admission, Rejected};
use crate::ingress::answer::{
    error, json, over_budget, rate_limited, retry_later, shutting_down, too_large, unauthorized,
    Answer,
};
use crate::ingress::request_body::{read_whole, unreadable};
use crate::metrics::{RejectReason, RouteMetrics};
use crate::shared::{Settling, Shared};
use crate::spec::{RouteSpec, Storage};
use crate::storage::Commit;
use crate::table::RouteTable;

const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Takes `request` in as an event of fan-out route `route`: 202 with its id, or a refusal.
pub async fn ingest<T: RouteTable>(
    shared: &Shared<T>,
    route: T::Route,
    request: Request<Incoming>,
) -> Answer {
    let spec = T::spec(route);
    let metrics = shared.table.metrics(route);
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // Refusals that need no body come before reading it, so a client that sent
    // `Expect: 100-continue` is told without uploading first.
    if shared.shutting_down.load(Ordering::Relaxed) {
        metrics.rejected(RejectReason::ShuttingDown).inc();
        return shutting_down();
    }
    let gate = shared.table.gate(route);
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
    let read = read_whole(body, spec.max_body as usize, T::SERVER.body_read_timeout).await;
    let body = match read {
        Ok(body) => body,
        Err(unread) => return unreadable(metrics, spec, unread, T::SERVER.body_read_timeout),
    };
    if shared.shutting_down.load(Ordering::Relaxed) {
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
    // A durable route's remembered keys are loaded before its log opens: claim none before.
    if spec.storage == Storage::Disk && !log_open(shared, route).await {
        return refused(shared, metrics, spec, Rejected::NotOpen);
    }
    let event = Event::new(&body, head.headers.get(CONTENT_TYPE));
    let mut claims = Claims::new(spec.name, event.id_bytes());
    if let Some(webhook_id) = webhook_id {
        if let Err(duplicate) = claims.claim(&gate.replays, webhook_id) {
            return duplicate_answer(duplicate, metrics, "webhook-id");
        }
    }
    let keys = shared.table.keys(route);
    if let Some(key) = head.headers.get(IDEMPOTENCY_KEY).filter(|_| keys.enabled()) {
        if !idempotency::valid(key.as_bytes()) {
            metrics.rejected(RejectReason::BadIdempotencyKey).inc();
            return error(
                StatusCode::BAD_REQUEST,
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
            );
        }
        if let Err(duplicate) = claims.claim(keys, key.as_bytes()) {
            return duplicate_answer(duplicate, metrics, "Idempotency-Key");
        }
    }
    let receipt = event.receipt();
    let admitted = match admit(shared, route, event).await {
        Ok(Admission::Queued) => {
            claims.settle(true);
            metrics.accepted.inc();
            Ok(())
        }
        // From here the record is written or refused whether or not this request is still
        // there to see it: `Settle` settles the keys and the count as the outcome says.
        Ok(Admission::Committing(commit)) => {
            let settle = Settle {
                commit: Some(commit),
                claims: Some(claims),
                accepted: &metrics.accepted,
                settling: &shared.settling,
            };
            settle.written().await
        }
        Err(rejected) => Err(rejected),
    };
    match admitted {
        Ok(()) => json(StatusCode::ACCEPTED, receipt),
        Err(rejected) => refused(shared, metrics, spec, rejected),
    }
}

/// A durable request's commit and what its outcome settles (the claimed keys, the accepted
/// count): awaited by the request, or, if the request is dropped first (a client gone, a
/// connection closed), by a task of its own, so a retry is never taken in twice and every
/// event in the log is counted.
struct Settle<'a> {
    commit: Option<Commit>,
    claims: Option<Claims>,
    accepted: &'a IntCounter,
    settling: &'a Settling,
}

impl Settle<'_> {
    async fn written(mut self) -> Result<(), Rejected> {
        let commit = self.commit.clone().expect("a new Settle holds its commit");
        let written = commit.written().await.map_err(Rejected::from);
        self.commit = None;
        if let Some(mut claims) = self.claims.take() {
            claims.settle(written.is_ok());
        }
        if written.is_ok() {
            self.accepted.inc();
        }
        written
    }
}

impl Drop for Settle<'_> {
    fn drop(&mut self) {
        let (Some(commit), Some(mut claims)) = (self.commit.take(), self.claims.take()) else {
            return;
        };
        let (accepted, settlement) = (self.accepted.clone(), self.settling.begin());
        tokio::spawn(async move {
            let written = commit.written().await.is_ok();
            claims.settle(written);
            if written {
                accepted.inc();
            }
            drop(settlement);
        });
    }
}

/// The answer to a request whose key (`what`) was taken already, counted as a duplicate: 202
/// with the first event's id, or 409 while the first is under way.
fn duplicate_answer(duplicate: Duplicate, metrics: &RouteMetrics, what: &str) -> Answer {
    metrics.duplicates.inc();
    match duplicate {
        Duplicate::Seen(first) => json(StatusCode::ACCEPTED, event::receipt_of(first)),
        Duplicate::InProgress => {
            let message =
                format!("a request with this {what} is under way; retry to get its answer");
            retry_later(StatusCode::CONFLICT, &message)
        }
    }
}

/// The answer to an event its route did not take in.
fn refused<T: RouteTable>(
    shared: &Shared<T>,
    metrics: &RouteMetrics,
    spec: &RouteSpec,
    rejected: Rejected,
) -> Answer {
    let (reason, message) = match rejected {
        Rejected::LaneFull(target) => (
            RejectReason::LaneFull,
            format!(
                "target \"{target}\" of route \"{}\" is full; the event was not accepted, retry later",
                spec.name
            ),
        ),
        Rejected::StorageFull => (
            RejectReason::DiskFull,
            format!(
                "route \"{}\" holds as many events on disk as its disk_buffer allows; the event was not accepted, retry later",
                spec.name
            ),
        ),
        Rejected::NotOpen if shared.shutting_down.load(Ordering::Relaxed) => {
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
        Rejected::StorageFailed => (
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

/// Whether the log of durable route `route` is open, waiting up to `body_read_timeout` if it
/// is not yet (a restart: the process handing its data directory over still has it).
async fn log_open<T: RouteTable>(shared: &Shared<T>, route: T::Route) -> bool {
    match shared.table.storage(route).log() {
        Some(log) if !log.is_open() => {
            tokio::time::timeout(T::SERVER.body_read_timeout, log.ready())
                .await
                .is_ok()
        }
        _ => true,
    }
}

/// Dispatches `event` to its route: for a durable route, the commit to await.
///
/// If a reject lane is full, yields a few scheduler turns to the delivery workers
/// (microseconds: the client is not queued) and tries again before refusing. Under a flood,
/// this gives draining priority over taking in events that would only be refused: in a
/// closed-loop load run it turned most 503s into 202s.
async fn admit<T: RouteTable>(
    shared: &Shared<T>,
    route: T::Route,
    event: Event,
) -> Result<Admission, Rejected> {
    let mut turns = 0;
    loop {
        match shared.table.accept(route, event.clone()) {
            Ok(admission) => return Ok(admission),
            Err(Rejected::LaneFull(_)) if turns < ADMISSION_TURNS => {
                turns += 1;
                tokio::task::yield_now().await;
            }
            Err(rejected) => return Err(rejected),
        }
    }
}
