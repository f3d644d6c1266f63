//! Every accepted event is accounted for: per lane, at any quiet moment and after shutdown,
//! `accepted = delivered + failed + dropped (every reason) + depth + inflight`. Checked for
//! every overflow policy under concurrent clients, for batches being gathered when the drain
//! begins and when it ends, across a shutdown with events in flight to a target that never
//! answers, and with a target that flaps.

mod common;

use common::{start_proxy, Metrics, Reply, Running, Target};
use std::time::Duration;
use tokio::time::Instant;

mod table {
    fanout::routes!("tests/routes/accounting.yaml");
}
use table::Table;

fn addr(target: &Target) -> String {
    target.addr.to_string()
}

/// One lane's books as `/metrics` shows them.
#[derive(Debug, PartialEq)]
struct Books {
    accepted: f64,
    delivered: f64,
    failed: f64,
    dropped: f64,
    depth: f64,
    inflight: f64,
}

impl Books {
    fn read(metrics: &Metrics, route: &str, target: &str) -> Books {
        let lane = [("route", route), ("target", target)];
        Books {
            accepted: metrics.value("fanout_events_accepted_total", &[("route", route)]),
            delivered: metrics.value("fanout_lane_delivered_total", &lane),
            failed: metrics.value("fanout_lane_failed_total", &lane),
            dropped: metrics.value("fanout_lane_dropped_total", &lane),
            depth: metrics.value("fanout_lane_depth", &lane),
            inflight: metrics.value("fanout_lane_inflight", &lane),
        }
    }

    fn balanced(&self) -> bool {
        self.accepted == self.delivered + self.failed + self.dropped + self.depth + self.inflight
    }

    fn quiet(&self) -> bool {
        self.depth == 0.0 && self.inflight == 0.0
    }
}

/// Waits until the lane has nothing waiting or held, then checks that its books balance.
async fn settled_books(shared: &Running<Table>, route: &str, target: &str) -> Books {
    let deadline = Instant::now() + common::PATIENCE;
    loop {
        let books = Books::read(&shared.metrics().await, route, target);
        if books.quiet() {
            assert!(
                books.balanced(),
                "{route}/{target} does not balance: {books:?}"
            );
            return books;
        }
        assert!(
            Instant::now() < deadline,
            "{route}/{target} never settled: {books:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_overflow_policy_balances_under_concurrent_clients() {
    let slow = Target::start(Reply::Slow(Duration::from_millis(20))).await;
    let fast = Target::start(Reply::Status(200)).await;
    let failing = Target::start(Reply::Status(500)).await;
    let env = [
        ("SLOW", addr(&slow)),
        ("FAST", addr(&fast)),
        ("FAILING", addr(&failing)),
    ];
    let shared = start_proxy::<Table>(&env, None).await;
    let clients: Vec<_> = (0..8)
        .map(|client| {
            let addr = shared.addr;
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for n in 0..40 {
                    let body = format!("{{\"client\":{client},\"n\":{n}}}");
                    let answer = common::post(addr, "/policies", &body, "application/json").await;
                    statuses.push(answer.status);
                }
                statuses
            })
        })
        .collect();
    let mut accepted = 0;
    for client in clients {
        for status in client.await.expect("a client task does not panic") {
            assert!(status == 202 || status == 503, "unexpected status {status}");
            accepted += usize::from(status == 202);
        }
    }
    assert!(accepted > 0);

    let oldest = settled_books(&shared, "policies", "oldest").await;
    let newest = settled_books(&shared, "policies", "newest").await;
    let strict = settled_books(&shared, "policies", "strict").await;
    let failing_books = settled_books(&shared, "policies", "failing").await;
    assert_eq!(oldest.accepted, accepted as f64);
    assert!(
        oldest.dropped > 0.0,
        "a slow lane of 5 overflowed: {oldest:?}"
    );
    assert!(
        newest.dropped > 0.0,
        "a slow lane of 5 overflowed: {newest:?}"
    );
    assert_eq!(strict.dropped, 0.0, "a reject lane never drops: {strict:?}");
    assert_eq!(strict.delivered, accepted as f64);
    assert_eq!(failing_books.failed, accepted as f64);

    // Retries are counted when sent: every event went out three times.
    let metrics = shared.metrics().await;
    let retries = metrics.value(
        "fanout_lane_retries_total",
        &[("route", "policies"), ("target", "failing")],
    );
    assert_eq!(retries, 2.0 * accepted as f64);
    assert_eq!(failing.count(), 3 * accepted);
    assert_eq!(slow.count() as f64, oldest.delivered + newest.delivered);
}

/// Posts five events to the batch lane (`max_wait` 1s), shuts the proxy down with `drain`
/// while a worker gathers them, and returns the target and the stopped proxy's state.
async fn shut_down_while_gathering(
    drain: Option<Duration>,
) -> (Target, std::sync::Arc<fanout::shared::Shared<Table>>) {
    let target = Target::start(Reply::Status(200)).await;
    let shared = start_proxy::<Table>(&[("BATCH", addr(&target))], drain).await;
    for n in 0..5 {
        shared.post("/batched", &n.to_string()).await.id();
    }
    // A worker holds the batch's first event while max_wait (1s) runs; the rest wait.
    let labels = [("route", "batched"), ("target", "lines")];
    shared
        .wait_metric("fanout_lane_inflight", &labels, 1.0)
        .await;
    let state = shared.shared.clone();
    shared.shutdown().await;
    (target, state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_waits_for_a_batch_being_gathered() {
    let (target, state) = shut_down_while_gathering(None).await;
    let lane = &state.table.batched.lanes.lines;
    assert_eq!(
        lane.metrics.delivered.get(),
        5,
        "the drain waited for the batch"
    );
    assert_eq!(lane.metrics.dropped(), 0);
    assert_eq!(target.count(), 1, "one batch");
    assert_eq!(target.received()[0].body_text(), "0\n1\n2\n3\n4\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_still_gathering_at_the_drain_deadline_is_counted_as_dropped() {
    let (target, state) = shut_down_while_gathering(Some(Duration::from_millis(200))).await;
    let lane = &state.table.batched.lanes.lines;
    assert_eq!(
        lane.metrics.dropped_shutdown.get(),
        5,
        "one held, four waiting"
    );
    assert_eq!(lane.metrics.delivered.get(), 0);
    assert_eq!(lane.metrics.inflight.get(), 0);
    assert_eq!(lane.depth(), 0);
    assert_eq!(target.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_with_events_held_by_a_target_that_never_answers_balances() {
    let silent = Target::start(Reply::Gated).await; // accepts, reads, never answers
    let fast = Target::start(Reply::Status(200)).await;
    let env = [("SILENT", addr(&silent)), ("FAST", addr(&fast))];
    let shared = start_proxy::<Table>(&env, Some(Duration::from_millis(300))).await;
    for n in 0..30 {
        shared.post("/hanging", &n.to_string()).await.id();
    }
    let labels = [("route", "hanging"), ("target", "silent")];
    shared
        .wait_metric_at_least("fanout_lane_inflight", &labels, 1.0)
        .await;
    // Attempts time out (200ms) and are retried while the other lane delivers everything.
    shared
        .wait_metric(
            "fanout_lane_delivered_total",
            &[("route", "hanging"), ("target", "healthy")],
            30.0,
        )
        .await;
    shared
        .wait_metric_at_least("fanout_lane_retries_total", &labels, 1.0)
        .await;
    let state = shared.shared.clone();
    shared.shutdown().await;

    let lane = &state.table.hanging.lanes.silent;
    let m = &lane.metrics;
    assert_eq!(lane.depth(), 0);
    assert_eq!(m.inflight.get(), 0);
    assert_eq!(m.delivered.get(), 0);
    assert_eq!(
        m.delivered.get() + m.failed.get() + m.dropped(),
        30,
        "every event counted once"
    );
    assert!(
        m.dropped_shutdown.get() > 0,
        "the drain deadline cut some off"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_target_loses_nothing_uncounted() {
    let flappy = Target::start(Reply::Status(200)).await;
    let shared = start_proxy::<Table>(&[("FLAPPY", addr(&flappy))], None).await;
    let mut ids = Vec::new();
    let started = Instant::now();
    let mut up = true;
    let mut flipped = started;
    for n in 0..120 {
        if flipped.elapsed() >= Duration::from_millis(300) {
            up = !up;
            flappy.set_reply(if up {
                Reply::Status(200)
            } else {
                Reply::HangUp
            });
            flipped = Instant::now();
        }
        ids.push(shared.post("/flapping", &n.to_string()).await.id());
        tokio::time::sleep(Duration::from_millis(10)).await; // paces the client over ~1.5s
    }
    flappy.set_reply(Reply::Status(200));

    let books = settled_books(&shared, "flapping", "flappy").await;
    assert_eq!(books.accepted, 120.0);
    assert_eq!(
        books.delivered, 120.0,
        "30 attempts outlast the flapping: {books:?}"
    );
    let received = flappy.received();
    for id in &ids {
        assert!(
            received.iter().any(|r| r.header("fanout-event-id") == id),
            "event {id} never arrived"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soak_of_concurrent_clients_then_a_drain_loses_nothing_uncounted() {
    // Every third request to the flaky target fails with 503; the slow one holds each for
    // 5ms; nothing listens behind the dead one.
    let flaky = Target::with(|n| Reply::Status(if n % 3 == 0 { 503 } else { 200 })).await;
    let slow = Target::start(Reply::Slow(Duration::from_millis(5))).await;
    let dead = common::ReservedPort::new();
    let env = [
        ("SOAK_FLAKY", addr(&flaky)),
        ("SOAK_SLOW", addr(&slow)),
        ("SOAK_DEAD", dead.addr.to_string()),
    ];
    let shared = start_proxy::<Table>(&env, Some(Duration::from_secs(5))).await;
    let clients: Vec<_> = (0..8)
        .map(|client| {
            let addr = shared.addr;
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for n in 0..60 {
                    let body = format!("{{\"client\":{client},\"n\":{n}}}");
                    let answer = common::post(addr, "/soak", &body, "application/json").await;
                    match answer.status {
                        202 => ids.push(answer.id()),
                        503 => {}
                        other => panic!("unexpected status {other}: {answer:?}"),
                    }
                }
                ids
            })
        })
        .collect();
    let mut accepted = Vec::new();
    for client in clients {
        accepted.extend(client.await.expect("a client task does not panic"));
    }
    assert!(!accepted.is_empty());
    let state = shared.shared.clone();
    shared.shutdown().await;

    let route = &state.table.soak.metrics;
    assert_eq!(route.accepted.get(), accepted.len() as u64);
    let soak = &state.table.soak.lanes;
    for lane in [&soak.strict, &soak.loose, &soak.dead] {
        let m = &lane.metrics;
        assert_eq!(
            (lane.depth(), m.inflight.get()),
            (0, 0),
            "{}",
            lane.target.spec.name
        );
        assert_eq!(
            m.delivered.get() + m.failed.get() + m.dropped(),
            accepted.len() as u64,
            "lane {} balances",
            lane.target.spec.name
        );
    }
    // The reject lane dropped nothing: every accepted id reached the flaky target at least
    // once and at most `attempts` (3) times.
    assert_eq!(soak.strict.metrics.dropped(), 0);
    let received = flaky.received();
    for id in &accepted {
        let arrivals = received
            .iter()
            .filter(|r| r.header("fanout-event-id") == id)
            .count();
        assert!((1..=3).contains(&arrivals), "{id} arrived {arrivals} times");
    }
}
