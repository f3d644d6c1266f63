//! Delivery: the workers of a lane take events and POST them to the target, one per request
//! or many per request ([`crate::sink::parcel`]), with per-attempt timeouts, retries with
//! exponential backoff and full jitter, `Retry-After`, and the lane's circuit breaker. An event
//! older than the target's `max_age` is given up right before an attempt, never sent late.
//! Every event taken ends counted exactly once ([`Held`]): delivered, failed (once its dead
//! letter is written), or (when the worker is stopped at the end of a drain) dropped with
//! reason `shutdown`.

use futures_util::FutureExt;
use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;
use tokio::time::Instant;

use crate::event::Event;
use crate::fan_out::lane::{Held, Lane, Settled};
use crate::sink::breaker::{Change, Permit};
use crate::sink::parcel::Parcel;
use crate::sink::{Outcome, Sink};
use crate::spec::{BatchPolicy, RetryPolicy};
use crate::storage::dead_letter::{LastAttempt, Reason};

/// Runs one delivery worker of `lane` forever, restarting it if it panics, so a bug that
/// panics on some input never silently shrinks the lane. Each restart is counted
/// (`fanout_lane_worker_restarts_total`) and logged; the events the worker held count as
/// dropped with reason `panic`.
pub async fn supervise(lane: &Lane) {
    restarting(lane, || work(lane)).await
}

/// Runs the worker that `start` makes, and a new one each time it panics.
async fn restarting<W: Future<Output = Infallible>>(lane: &Lane, mut start: impl FnMut() -> W) {
    loop {
        let panic = match AssertUnwindSafe(start()).catch_unwind().await {
            Ok(never) => match never {},
            Err(panic) => panic,
        };
        lane.metrics.worker_restarts.inc();
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::error!(
            route = lane.target.spec.route,
            target = lane.target.spec.name,
            panic = %message,
            "delivery worker panicked; restarting it"
        );
    }
}

/// Takes events from `lane` and delivers them to its target, forever; the caller aborts it.
async fn work(lane: &Lane) -> Infallible {
    lane.target.endpoint.start().await;
    let mut sink = lane.target.endpoint.connect();
    match &lane.target.spec.delivery.batch {
        None => {
            let mut events = Vec::with_capacity(1);
            loop {
                let (event, held) = lane.take().await;
                events.push(event);
                deliver(lane, &mut sink, &mut events, held).await;
                events.clear();
            }
        }
        Some(policy) => {
            let mut events = Vec::with_capacity(policy.max_events);
            loop {
                let held = gather(lane, policy, &mut events).await;
                deliver(lane, &mut sink, &mut events, held).await;
                events.clear();
            }
        }
    }
}

/// What is sent for `events`: the event alone, or (a batch lane) an NDJSON batch.
fn parcel(lane: &Lane, events: &[Event]) -> Parcel {
    match (&lane.target.spec.delivery.batch, events) {
        (None, [event]) => Parcel::single(event),
        _ => Parcel::batch(events),
    }
}

/// Whether an event of `events` is older than the target's `max_age`.
fn any_expired(lane: &Lane, events: &[Event]) -> bool {
    lane.target
        .spec
        .delivery
        .max_age
        .is_some_and(|max_age| events.iter().any(|event| event.age() >= max_age))
}

/// Gives up on the events of `events` older than the target's `max_age`: they leave `events`,
/// are dead-lettered with reason `expired` (held until written) and counted as failed.
async fn expire(lane: &Lane, events: &mut Vec<Event>, held: &mut Held<'_>, attempts: u32) {
    let Some(max_age) = lane.target.spec.delivery.max_age else {
        return;
    };
    let expired: Vec<usize> = (0..events.len())
        .filter(|&index| events[index].age() >= max_age)
        .collect();
    let mut gone: Vec<Event> = expired.iter().rev().map(|&i| events.remove(i)).collect();
    gone.reverse();
    let ids: Vec<String> = gone
        .iter()
        .map(|event| event.id_text(&mut [0; 36]).to_owned())
        .collect();
    tracing::warn!(
        route = lane.target.spec.route,
        target = lane.target.spec.name,
        ?ids,
        "delivery given up: older than max_age"
    );
    let last = LastAttempt {
        reason: Reason::Expired,
        why: None,
        attempts,
    };
    lane.dead_letter(&gone, &last).await;
    // From the last: settling one shifts the held events after it.
    for &index in expired.iter().rev() {
        held.settle_one(index, Settled::Failed).await;
    }
}

/// Fills `events` with a batch: waits for a first event, then takes what the lane holds and,
/// unless that fills the batch, waits until the lane holds the rest or `max_wait` has passed,
/// whichever comes first. One worker of the lane gathers at a time (the others wait for their
/// turn, or are sending), so batches fill up instead of being spread thin over idle workers,
/// and a gathering worker wakes once per batch, not once per event. The events are held (in flight) from the moment they leave the queue, so a drain
/// waits for a batch being gathered.
async fn gather<'a>(lane: &'a Lane, policy: &BatchPolicy, events: &mut Vec<Event>) -> Held<'a> {
    let _turn = lane.gathering.lock().await;
    let (first, mut held) = lane.take().await;
    let mut bytes = first.body_len() + 1;
    events.push(first);
    let deadline = Instant::now() + policy.max_wait;
    let limits = (policy.max_events, policy.max_bytes);
    let waits = !policy.max_wait.is_zero();
    loop {
        let waiting = waits && Instant::now() < deadline;
        let full;
        (bytes, full) = lane.take_more(&mut held, events, bytes, limits, waiting);
        if full || !waiting {
            break;
        }
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {
                lane.take_more(&mut held, events, bytes, limits, false);
                break;
            }
            () = lane.queue.batch_full() => {}
        }
    }
    held
}

/// Sends `events` until they are delivered, refused for good or out of attempts; settles
/// `held` accordingly and dead-letters what was given up. Right before each attempt, once the
/// breaker lets it send, the events older than the target's `max_age` are given up (a batch
/// goes on with the others), so no wait on the breaker or a backoff sends one late.
async fn deliver(lane: &Lane, sink: &mut Sink<'_>, events: &mut Vec<Event>, mut held: Held<'_>) {
    let retry = &lane.target.spec.delivery.retry;
    let mut parcel = parcel(lane, events);
    let mut attempt = 1;
    loop {
        let attempt_permit = lane.target.breaker.attempt(permit(lane).await);
        if any_expired(lane, events) {
            // Unused: a probe goes back to the breaker now, not after the dead-letter write.
            drop(attempt_permit);
            expire(lane, events, &mut held, attempt - 1).await;
            if events.is_empty() {
                return held.settle(Settled::Failed).await;
            }
            parcel = self::parcel(lane, events);
            continue;
        }
        if attempt > 1 {
            lane.metrics.retries.inc();
        }
        let started = Instant::now();
        let outcome = sink.send(&parcel, attempt).await;
        lane.metrics
            .duration
            .observe(started.elapsed().as_secs_f64());
        let alive = !matches!(outcome, Outcome::Retryable { .. });
        note(lane, attempt_permit.record(alive));
        let count = held.count();
        let (reason, why) = match outcome {
            Outcome::Delivered => return held.settle(Settled::Delivered).await,
            Outcome::Permanent(why) => {
                tracing::warn!(route = lane.target.spec.route, target = lane.target.spec.name, ids = ?parcel.ids.1, events = count, %why, "delivery failed: not retried");
                (Reason::Refused, why)
            }
            Outcome::Retryable { why, .. } if attempt >= retry.attempts => {
                tracing::warn!(route = lane.target.spec.route, target = lane.target.spec.name, ids = ?parcel.ids.1, events = count, attempts = attempt, last_error = %why, "delivery failed: attempts exhausted");
                (Reason::Exhausted, why)
            }
            Outcome::Retryable { why, retry_after } => {
                tracing::debug!(route = lane.target.spec.route, target = lane.target.spec.name, attempt, %why, "retrying");
                tokio::time::sleep(backoff(retry, attempt, retry_after)).await;
                attempt += 1;
                continue;
            }
        };
        let last = LastAttempt {
            reason,
            why: Some(&why),
            attempts: attempt,
        };
        lane.dead_letter(events, &last).await;
        return held.settle(Settled::Failed).await;
    }
}

/// Logs a change of the lane's circuit and sets its gauge.
fn note(lane: &Lane, change: Change) {
    match change {
        Change::Opened(cooldown) => {
            lane.metrics.circuit_open.set(1);
            tracing::warn!(
                route = lane.target.spec.route,
                target = lane.target.spec.name,
                ?cooldown,
                "circuit open: pausing deliveries"
            );
        }
        Change::Closed => {
            lane.metrics.circuit_open.set(0);
            tracing::info!(
                route = lane.target.spec.route,
                target = lane.target.spec.name,
                "circuit closed: target answers again"
            );
        }
        Change::None => {}
    }
}

/// Waits until the breaker lets this worker send.
async fn permit(lane: &Lane) -> Permit {
    loop {
        match lane.target.breaker.permit() {
            Permit::WaitUntil(until) => tokio::time::sleep_until(until).await,
            permit => return permit,
        }
    }
}

/// The delay before retry number `attempt` (1 after the first attempt): uniformly random up to
/// `backoff * 2^(attempt-1)` ("full jitter"), or what the target asked for in `Retry-After`;
/// never more than `max_backoff`.
fn backoff(retry: &RetryPolicy, attempt: u32, retry_after: Option<Duration>) -> Duration {
    let cap = retry
        .backoff
        .saturating_mul(1u32 << (attempt - 1).min(20))
        .min(retry.max_backoff);
    let jittered = cap.mul_f64(fastrand::f64());
    retry_after.map_or(jittered, |asked| asked.min(retry.max_backoff))
}

#[cfg(test)]
mod tests {
    use super::*;

    static RETRY: RetryPolicy = RetryPolicy {
        attempts: 5,
        backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(1),
        on: crate::spec::StatusSet(&[(503, 503)]),
    };

    #[test]
    fn backoff_is_jittered_below_a_doubling_cap() {
        for _ in 0..100 {
            assert!(backoff(&RETRY, 1, None) <= Duration::from_millis(100));
            assert!(backoff(&RETRY, 3, None) <= Duration::from_millis(400));
            assert!(backoff(&RETRY, 30, None) <= Duration::from_secs(1));
        }
    }

    use crate::sink::Resolver;
    use crate::table::RouteTable;

    mod table {
        fanout_macros::routes!("tests/routes/accounting.yaml");
    }

    #[tokio::test]
    async fn a_worker_that_panics_is_restarted_and_what_it_held_counted() {
        let env = |_: &str| Some("127.0.0.1:9".to_owned());
        let table = <table::Table as RouteTable>::new(&mut Resolver::new(&env)).unwrap();
        let lane = &table.flapping.lanes.flappy;
        for n in 0..3 {
            lane.push_drop_oldest(Event::new(n.to_string().as_bytes(), None));
        }
        let mut started = 0;
        let restarting = restarting(lane, || {
            started += 1;
            let panics = started <= 2;
            async move {
                let (_event, _held) = lane.take().await;
                if panics {
                    panic!("a bug in delivery");
                }
                std::future::pending::<Infallible>().await
            }
        });
        let _ = tokio::time::timeout(Duration::from_millis(100), restarting).await;
        let metrics = &lane.metrics;
        assert_eq!(metrics.worker_restarts.get(), 2);
        assert_eq!(
            metrics.dropped_panic.get(),
            2,
            "what the panicking workers held"
        );
        assert_eq!(
            metrics.dropped_shutdown.get(),
            1,
            "what the last one held when stopped"
        );
        assert_eq!(metrics.inflight.get(), 0);
    }

    #[test]
    fn retry_after_is_honoured_up_to_max_backoff() {
        assert_eq!(
            backoff(&RETRY, 1, Some(Duration::from_millis(700))),
            Duration::from_millis(700)
        );
        assert_eq!(
            backoff(&RETRY, 1, Some(Duration::from_secs(60))),
            Duration::from_secs(1)
        );
    }
}
