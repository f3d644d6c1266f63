//! Delivery semantics of README.md end to end: which statuses are retried (the default
//! `retry.on` and a custom one), the doubling backoff with full jitter and its `max_backoff`
//! cap (`Retry-After` included), and the circuit breaker: one probe at a time, cool-downs that
//! double up to `max_cooldown`, `fanout_lane_circuit_open` while open.
//!
//! Timing is measured by the targets themselves: each arrival is stamped when the request
//! reaches the target, not when the test task gets round to looking.

mod common;

use common::clock::{by_event, Answer, Arrival, Clocked};
use common::{start_proxy, Reply, Target, PATIENCE};
use std::time::{Duration, Instant};

mod table {
    fanout::routes!("tests/routes/promises_delivery.yaml");
}
use table::Table;

/// How much later than its bound a delay may end on a busy machine: the attempt itself,
/// timers and scheduling.
const SLACK: Duration = Duration::from_millis(100);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Posts one event to `path` of a fresh proxy whose target always answers `status`, waits until
/// the lane gives it up, and returns how many attempts the target saw.
async fn attempts_for(path: &str, variable: &str, status: u16) -> usize {
    let target = Target::start(Reply::Status(status)).await;
    let shared = start_proxy::<Table>(&[(variable, target.addr.to_string())], None).await;
    shared.post(path, "{}").await.id();
    let route = &path[1..];
    shared
        .wait_metric("fanout_lane_failed_total", &[("route", route)], 1.0)
        .await;
    let metrics = shared.metrics().await;
    assert!(
        metrics.0.contains("fanout_lane_retries_total"),
        "{}",
        metrics.0
    );
    let retries = metrics.value("fanout_lane_retries_total", &[("route", route)]);
    assert_eq!(retries as usize + 1, target.count(), "status {status}");
    target.count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_retry_on_takes_408_429_500_and_502_to_599() {
    // The lane makes 2 attempts at most.
    for status in [408, 429, 500, 502, 503, 504, 599] {
        assert_eq!(
            attempts_for("/statuses", "STATUSES", status).await,
            2,
            "{status} is retried by default"
        );
    }
    for status in [501, 404, 400, 409] {
        assert_eq!(
            attempts_for("/statuses", "STATUSES", status).await,
            1,
            "{status} is permanent by default"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_retry_on_replaces_the_default_statuses() {
    // `retry: { on: [418] }`, the rest of `retry` from the defaults.
    assert_eq!(
        attempts_for("/teapot", "TEAPOT", 418).await,
        2,
        "418 is retried"
    );
    for status in [503, 500, 429] {
        assert_eq!(
            attempts_for("/teapot", "TEAPOT", status).await,
            1,
            "{status} is no longer retried"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_delays_stay_below_a_cap_that_doubles_up_to_max_backoff() {
    // 5 attempts, backoff 100ms, max_backoff 300ms: the delays before attempts 2, 3, 4 and 5
    // are at most 100, 200, 300 and 300ms.
    let target = Clocked::start(|_| Answer::status(503)).await;
    let shared = start_proxy::<Table>(&[("BACKOFF", target.addr.to_string())], None).await;
    const EVENTS: usize = 4;
    for n in 0..EVENTS {
        shared.post("/backoff", &n.to_string()).await.id();
    }
    let arrivals = target
        .wait_until("every attempt of every event", |a| a.len() >= EVENTS * 5)
        .await;
    shared
        .wait_metric(
            "fanout_lane_failed_total",
            &[("route", "backoff")],
            EVENTS as f64,
        )
        .await;
    assert_eq!(target.arrivals().len(), EVENTS * 5, "no sixth attempt");

    let caps = [ms(100), ms(200), ms(300), ms(300)];
    let mut after_the_first_cap = 0;
    for (id, attempts) in by_event(&arrivals) {
        let numbers: Vec<u32> = attempts.iter().map(|a| a.attempt).collect();
        assert_eq!(numbers, [1, 2, 3, 4, 5], "event {id}");
        for (n, pair) in attempts.windows(2).enumerate() {
            let gap = pair[1].at - pair[0].at;
            assert!(
                gap <= caps[n] + SLACK,
                "event {id}: attempt {} came {gap:?} after attempt {}, over the cap {:?}",
                n + 2,
                n + 1,
                caps[n]
            );
            if n > 0 && gap > caps[0] {
                after_the_first_cap += 1;
            }
        }
    }
    // With full jitter any one delay may be short; that all twelve later ones stay under the
    // first cap is a chance below 1 in 10000 unless the cap does not grow.
    assert!(
        after_the_first_cap > 0,
        "no retry waited longer than the first backoff: the cap does not double"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_above_max_backoff_waits_max_backoff() {
    // Both answers ask for 5s; max_backoff is 300ms.
    let target = Clocked::start(|n| match n {
        0 => Answer {
            status: 503,
            retry_after: Some(5),
            hold: Duration::ZERO,
        },
        1 => Answer {
            status: 429,
            retry_after: Some(5),
            hold: Duration::ZERO,
        },
        _ => Answer::status(200),
    })
    .await;
    let shared = start_proxy::<Table>(&[("BACKOFF", target.addr.to_string())], None).await;
    shared.post("/backoff", "{}").await.id();
    let arrivals = target.wait_until("three attempts", |a| a.len() >= 3).await;
    shared
        .wait_metric("fanout_lane_delivered_total", &[("route", "backoff")], 1.0)
        .await;
    for pair in arrivals.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= ms(290) && gap <= ms(300) + SLACK,
            "Retry-After: 5 waits max_backoff (300ms), not a random delay nor 5s: {gap:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_circuit_sends_one_probe_at_a_time_after_doubling_cooldowns() {
    // failures 2, cooldown 200ms, max_cooldown 800ms, 4 workers, one attempt per event. The
    // target holds each request 20ms, so two requests at once would overlap there.
    let target = Clocked::start(|_| Answer {
        status: 503,
        retry_after: None,
        hold: ms(20),
    })
    .await;
    let shared = start_proxy::<Table>(&[("BREAKER", target.addr.to_string())], None).await;
    const EVENTS: usize = 16;
    for n in 0..EVENTS {
        shared.post("/breaker", &n.to_string()).await.id();
    }
    let labels = [("route", "breaker"), ("target", "dead")];

    // The circuit opens when the second failure comes back.
    let arrivals = target
        .wait_until("two answered failures", |a| {
            a.iter().filter(|a| a.left.is_some()).count() >= 2
        })
        .await;
    let mut answered: Vec<Instant> = arrivals.iter().filter_map(|a| a.left).collect();
    answered.sort();
    let opened = answered[1];
    // Attempts begun before the circuit opened arrive at once; anything later is a probe.
    let probes = |arrivals: &[Arrival]| -> Vec<Arrival> {
        arrivals
            .iter()
            .filter(|a| a.at > opened + ms(50))
            .cloned()
            .collect()
    };
    target
        .wait_until("a first probe", |a| !probes(a).is_empty())
        .await;
    shared
        .wait_metric("fanout_lane_circuit_open", &labels, 1.0)
        .await;
    let arrivals = target
        .wait_until("four probes answered", |a| {
            probes(a).iter().filter(|p| p.left.is_some()).count() >= 4
        })
        .await;
    let metrics = shared.metrics().await;
    assert!(
        metrics.0.contains("fanout_lane_circuit_open"),
        "{}",
        metrics.0
    );
    assert_eq!(metrics.value("fanout_lane_circuit_open", &labels), 1.0);
    target.heal();

    let probes = probes(&arrivals);
    assert_eq!(probes.len(), 4, "one probe per cool-down: {probes:?}");
    for pair in probes.windows(2) {
        let left = pair[0].left.expect("answered");
        assert!(
            pair[1].at >= left,
            "two probes at once: {:?} arrived while {:?} was held",
            pair[1],
            pair[0]
        );
    }
    assert!(probes.iter().all(|p| p.concurrent == 1), "{probes:?}");
    // Each cool-down starts when the failed attempt before it comes back.
    let mut previous = opened;
    for (n, (probe, cooldown)) in probes.iter().zip([200, 400, 800, 800]).enumerate() {
        let waited = probe.at - previous;
        assert!(
            waited >= ms(cooldown) - ms(10),
            "probe {} came {waited:?} after the circuit opened again, before the {cooldown}ms cool-down",
            n + 1
        );
        // The breaker's other workers look again every 50ms and CI runs tests side by side,
        // hence more slack than for a retry delay: half a cool-down, still short of the doubled
        // one (without the cap the last pause would be 1600ms, not at most 1200ms).
        let slack = (2 * SLACK).max(ms(cooldown) / 2);
        assert!(
            waited <= ms(cooldown) + slack,
            "probe {} came {waited:?} after the circuit opened again: the cool-down is {cooldown}ms",
            n + 1
        );
        previous = probe.left.expect("answered");
    }

    // The next probe succeeds: the circuit closes and the lane delivers what it holds.
    shared
        .wait_metric("fanout_lane_circuit_open", &labels, 0.0)
        .await;
    let settled = async {
        loop {
            let m = shared.metrics().await;
            let delivered = m.value("fanout_lane_delivered_total", &labels);
            let failed = m.value("fanout_lane_failed_total", &labels);
            if delivered + failed == EVENTS as f64 {
                return (delivered, failed);
            }
            tokio::time::sleep(ms(10)).await;
        }
    };
    let (delivered, failed) = tokio::time::timeout(PATIENCE, settled)
        .await
        .expect("every event is delivered or failed");
    assert!(
        delivered >= 1.0,
        "delivered {delivered}, failed {failed} after recovery"
    );
    assert_eq!(
        failed as usize,
        target.arrivals().iter().filter(|a| a.left.is_some()).count() - delivered as usize,
        "waiting on the open circuit used no attempts: every failed event was refused by the target"
    );
}
