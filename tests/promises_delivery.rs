//! Delivery semantics of README.md end to end: which statuses are retried (the default
//! `retry.on` and a custom one), the doubling backoff with full jitter and its `max_backoff`
//! cap (`Retry-After` included), and the circuit breaker: one probe at a time, cool-downs that
//! double up to `max_cooldown`, `fanout_lane_circuit_open` while open.
//!
//! Timing is measured by the targets themselves: each arrival is stamped when the request
//! reaches the target, not when the test task gets round to looking.

mod common;

use bytes::Bytes;
use common::{start_proxy, Reply, Target, PATIENCE};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

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

/// What a [`Clocked`] target answers.
#[derive(Clone, Copy)]
struct Answer {
    status: u16,
    retry_after: Option<u64>,
    /// How long the target holds the request before answering.
    hold: Duration,
}

impl Answer {
    fn status(status: u16) -> Answer {
        Answer {
            status,
            retry_after: None,
            hold: Duration::ZERO,
        }
    }
}

/// One request as the target saw it.
#[derive(Clone, Debug)]
struct Arrival {
    at: Instant,
    /// When the answer was sent.
    left: Option<Instant>,
    id: String,
    attempt: u32,
    /// Requests being held by the target when this one arrived, itself included.
    concurrent: usize,
}

struct Clock {
    arrivals: Mutex<Vec<Arrival>>,
    inflight: AtomicUsize,
    healthy: AtomicBool,
    changed: Notify,
    answer: Box<dyn Fn(usize) -> Answer + Send + Sync>,
}

/// An HTTP target that stamps every arrival with its own clock.
struct Clocked {
    addr: std::net::SocketAddr,
    clock: Arc<Clock>,
    server: JoinHandle<()>,
}

impl Clocked {
    /// A target answering its n-th request (0-based) with `answer(n)`, or 200 once made healthy.
    async fn start(answer: impl Fn(usize) -> Answer + Send + Sync + 'static) -> Clocked {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let clock = Arc::new(Clock {
            arrivals: Mutex::new(Vec::new()),
            inflight: AtomicUsize::new(0),
            healthy: AtomicBool::new(false),
            changed: Notify::new(),
            answer: Box::new(answer),
        });
        let shared = clock.clone();
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let clock = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let clock = clock.clone();
                        async move { Ok::<_, std::io::Error>(clock.answer_to(request).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Clocked {
            addr,
            clock,
            server,
        }
    }

    fn arrivals(&self) -> Vec<Arrival> {
        self.clock.arrivals.lock().unwrap().clone()
    }

    /// Waits until `done` holds for the arrivals so far; panics after [`PATIENCE`].
    async fn wait_until(&self, what: &str, done: impl Fn(&[Arrival]) -> bool) -> Vec<Arrival> {
        let waiting = async {
            loop {
                let changed = self.clock.changed.notified();
                let arrivals = self.arrivals();
                if done(&arrivals) {
                    return arrivals;
                }
                changed.await;
            }
        };
        tokio::time::timeout(PATIENCE, waiting)
            .await
            .unwrap_or_else(|_| panic!("{what}: not after {PATIENCE:?}: {:?}", self.arrivals()))
    }

    fn heal(&self) {
        self.clock.healthy.store(true, Ordering::SeqCst);
    }
}

impl Drop for Clocked {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Clock {
    async fn answer_to(
        &self,
        request: hyper::Request<hyper::body::Incoming>,
    ) -> hyper::Response<Full<Bytes>> {
        let at = Instant::now();
        let concurrent = self.inflight.fetch_add(1, Ordering::SeqCst) + 1;
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let index = {
            let mut arrivals = self.arrivals.lock().unwrap();
            arrivals.push(Arrival {
                at,
                left: None,
                id: header("fanout-event-id"),
                attempt: header("fanout-attempt").parse().unwrap_or(0),
                concurrent,
            });
            arrivals.len() - 1
        };
        let answer = if self.healthy.load(Ordering::SeqCst) {
            Answer::status(200)
        } else {
            (self.answer)(index)
        };
        tokio::time::sleep(answer.hold).await;
        let mut response = hyper::Response::new(Full::new(Bytes::from_static(b"{}")));
        *response.status_mut() = hyper::StatusCode::from_u16(answer.status).unwrap();
        if let Some(seconds) = answer.retry_after {
            response.headers_mut().insert("retry-after", seconds.into());
        }
        self.inflight.fetch_sub(1, Ordering::SeqCst);
        self.arrivals.lock().unwrap()[index].left = Some(Instant::now());
        self.changed.notify_waiters();
        response
    }
}

/// Arrivals grouped by event id, each group in attempt order.
fn by_event(arrivals: &[Arrival]) -> BTreeMap<String, Vec<Arrival>> {
    let mut events: BTreeMap<String, Vec<Arrival>> = BTreeMap::new();
    for arrival in arrivals {
        events
            .entry(arrival.id.clone())
            .or_default()
            .push(arrival.clone());
    }
    for attempts in events.values_mut() {
        attempts.sort_by_key(|a| a.attempt);
    }
    events
}

/// Posts one event to `path` of a fresh proxy whose target always answers `status`, waits until
/// the lane gives it up, and returns how many attempts the target saw.
async fn attempts_for(path: &str, variable: &str, status: u16) -> usize {
    let target = Target::start(Reply::Status(status)).await;
    let proxy = start_proxy::<Table>(&[(variable, target.addr.to_string())], None).await;
    proxy.post(path, "{}").await.id();
    let route = &path[1..];
    proxy
        .wait_metric("fanout_lane_failed_total", &[("route", route)], 1.0)
        .await;
    let metrics = proxy.metrics().await;
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
    let proxy = start_proxy::<Table>(&[("BACKOFF", target.addr.to_string())], None).await;
    const EVENTS: usize = 4;
    for n in 0..EVENTS {
        proxy.post("/backoff", &n.to_string()).await.id();
    }
    let arrivals = target
        .wait_until("every attempt of every event", |a| a.len() >= EVENTS * 5)
        .await;
    proxy
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
    let proxy = start_proxy::<Table>(&[("BACKOFF", target.addr.to_string())], None).await;
    proxy.post("/backoff", "{}").await.id();
    let arrivals = target.wait_until("three attempts", |a| a.len() >= 3).await;
    proxy
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
    let proxy = start_proxy::<Table>(&[("BREAKER", target.addr.to_string())], None).await;
    const EVENTS: usize = 16;
    for n in 0..EVENTS {
        proxy.post("/breaker", &n.to_string()).await.id();
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
    proxy
        .wait_metric("fanout_lane_circuit_open", &labels, 1.0)
        .await;
    let arrivals = target
        .wait_until("four probes answered", |a| {
            probes(a).iter().filter(|p| p.left.is_some()).count() >= 4
        })
        .await;
    let metrics = proxy.metrics().await;
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
        assert!(
            // The breaker's other workers look again every 50ms, hence more slack than for a
            // retry delay; without the cap the last pause would be 1600ms.
            waited <= ms(cooldown) + 2 * SLACK,
            "probe {} came {waited:?} after the circuit opened again: the cool-down is {cooldown}ms",
            n + 1
        );
        previous = probe.left.expect("answered");
    }

    // The next probe succeeds: the circuit closes and the lane delivers what it holds.
    proxy
        .wait_metric("fanout_lane_circuit_open", &labels, 0.0)
        .await;
    let settled = async {
        loop {
            let m = proxy.metrics().await;
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
