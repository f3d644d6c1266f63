//! Fan-out delivery end to end: a proxy on a real socket, real HTTP targets on 127.0.0.1, and
//! assertions on what the targets received and what `/metrics` says.

mod common;

use common::{start_proxy, Reply, Target};
use std::time::Duration;

mod table {
    fanout::routes!("tests/routes/proxy.yaml");
}
use table::Table;

fn addr(target: &Target) -> String {
    target.addr.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_target_receives_every_event_with_its_id_body_and_headers() {
    let a = Target::start(Reply::Status(200)).await;
    let b = Target::start(Reply::Status(204)).await;
    let env = [
        ("PAIR_A", addr(&a)),
        ("PAIR_B", addr(&b)),
        ("PAIR_TOKEN", "s3cret".to_owned()),
    ];
    let shared = start_proxy::<Table>(&env, None).await;

    let mut sent = Vec::new();
    for n in 0..20 {
        let (body, content_type) = if n % 2 == 0 {
            (format!("{{\"n\":{n}}}"), "application/json")
        } else {
            (format!("line {n}"), "text/plain; charset=utf-8")
        };
        let answer = common::post(shared.addr, "/pair", &body, content_type).await;
        assert_eq!(answer.status, 202, "{answer:?}");
        assert_eq!(answer.header("content-type"), Some("application/json"));
        let id = answer.id();
        assert_eq!(id.len(), 36, "a hyphenated UUID: {id}");
        assert_eq!(&id[14..15], "7", "a time-ordered v7 UUID: {id}");
        sent.push((id, body, content_type));
    }

    for target in [&a, &b] {
        let received = target.wait_for(20).await;
        assert_eq!(received.len(), 20);
        for (id, body, content_type) in &sent {
            let got = received
                .iter()
                .find(|r| r.header("fanout-event-id") == id)
                .unwrap_or_else(|| panic!("event {id} did not arrive"));
            assert_eq!(got.body_text(), body);
            assert_eq!(got.header("content-type"), *content_type);
            assert_eq!(got.header("fanout-route"), "pair");
            assert_eq!(got.header("fanout-attempt"), "1");
            assert_eq!(got.path, "/in");
        }
    }
    assert!(a
        .received()
        .iter()
        .all(|r| r.header("x-token") == "Bearer s3cret"));
    assert!(b
        .received()
        .iter()
        .all(|r| r.headers.get("x-token").is_none()));

    let labels = [("route", "pair"), ("target", "a")];
    shared
        .wait_metric("fanout_lane_delivered_total", &labels, 20.0)
        .await;
    let metrics = shared.metrics().await;
    assert_eq!(
        metrics.value("fanout_events_accepted_total", &[("route", "pair")]),
        20.0
    );
    assert_eq!(metrics.value("fanout_lane_retries_total", &labels), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_answering_503_gets_the_event_again_until_it_takes_it() {
    let target = Target::with(|n| {
        if n < 2 {
            Reply::Status(503)
        } else {
            Reply::Status(200)
        }
    })
    .await;
    let shared = start_proxy::<Table>(&[("RETRY", addr(&target))], None).await;

    let id = shared.post("/retry", "{\"order\":1}").await.id();
    let received = target.wait_for(3).await;
    let attempts: Vec<&str> = received
        .iter()
        .map(|r| r.header("fanout-attempt"))
        .collect();
    assert_eq!(attempts, ["1", "2", "3"]);
    assert!(received.iter().all(|r| r.header("fanout-event-id") == id));
    assert!(received.iter().all(|r| r.body_text() == "{\"order\":1}"));

    let labels = [("route", "retry"), ("target", "flaky")];
    shared
        .wait_metric("fanout_lane_delivered_total", &labels, 1.0)
        .await;
    let metrics = shared.metrics().await;
    assert_eq!(metrics.value("fanout_lane_retries_total", &labels), 2.0);
    assert_eq!(metrics.value("fanout_lane_failed_total", &labels), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_from_the_target_is_honoured() {
    let target = Target::with(|n| {
        if n == 0 {
            Reply::StatusRetryAfter(429, 1)
        } else {
            Reply::Status(200)
        }
    })
    .await;
    let shared = start_proxy::<Table>(&[("RETRY", addr(&target))], None).await;
    shared.post("/retry", "{}").await.id();
    let received = target.wait_for(2).await;
    // max_backoff (50ms) caps what the target may ask for (1s), and the random backoff
    // (up to 10ms) is not used instead.
    let waited = received[1].at - received[0].at;
    assert!(
        waited >= Duration::from_millis(45) && waited < Duration::from_millis(900),
        "retried after {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_comes_up_late_still_gets_the_event() {
    let late = common::ReservedPort::new();
    let shared = start_proxy::<Table>(&[("LATE", late.addr.to_string())], None).await;
    let id = shared.post("/late", "{\"early\":true}").await.id();

    let labels = [("route", "late"), ("target", "sleepy")];
    shared
        .wait_metric_at_least("fanout_lane_retries_total", &labels, 2.0)
        .await;
    let target = Target::start_on(late, Reply::Status(200));
    let received = target.wait_for(1).await;
    assert_eq!(received[0].header("fanout-event-id"), id);
    assert_ne!(received[0].header("fanout-attempt"), "1");
    shared
        .wait_metric("fanout_lane_delivered_total", &labels, 1.0)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_is_not_retried_and_counts_as_failed() {
    let target = Target::start(Reply::Status(400)).await;
    let shared = start_proxy::<Table>(&[("RETRY", addr(&target))], None).await;
    shared.post("/retry", "{}").await.id();

    let labels = [("route", "retry"), ("target", "flaky")];
    shared
        .wait_metric("fanout_lane_failed_total", &labels, 1.0)
        .await;
    assert_eq!(target.count(), 1);
    let metrics = shared.metrics().await;
    assert_eq!(metrics.value("fanout_lane_retries_total", &labels), 0.0);
    assert_eq!(metrics.value("fanout_lane_delivered_total", &labels), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_on_a_dead_target_stops_sending_and_closes_when_it_returns() {
    let target = Target::start(Reply::HangUp).await;
    let shared = start_proxy::<Table>(&[("BREAKER", addr(&target))], None).await;
    for n in 0..10 {
        shared
            .post("/breaker", &format!("{{\"n\":{n}}}"))
            .await
            .id();
    }
    let labels = [("route", "breaker"), ("target", "flappy")];
    shared
        .wait_metric("fanout_lane_circuit_open", &labels, 1.0)
        .await;
    let opened_at = target.wait_for(3).await[2].at;
    let metrics = shared.metrics().await;
    assert_eq!(metrics.value("fanout_lane_failed_total", &labels), 3.0);
    assert!(
        metrics.value("fanout_lane_depth", &labels)
            + metrics.value("fanout_lane_inflight", &labels)
            >= 6.0
    );

    target.set_reply(Reply::Status(200));
    shared
        .wait_metric("fanout_lane_circuit_open", &labels, 0.0)
        .await;
    shared
        .wait_metric("fanout_lane_delivered_total", &labels, 7.0)
        .await;
    let received = target.received();
    assert_eq!(received.len(), 10, "3 failures, then 7 deliveries");
    let probe = received[3].at - opened_at;
    assert!(
        probe >= Duration::from_millis(950),
        "an open circuit sends nothing for its cool-down (1s): the probe came after {probe:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_oldest_evicts_the_oldest_waiting_events_and_counts_them() {
    let target = Target::start(Reply::Gated).await;
    let shared = start_proxy::<Table>(&[("OLDEST", addr(&target))], None).await;
    let first = shared.post("/oldest", "0").await.id();
    target.wait_for(1).await; // the lane's one worker now holds event 0
    let mut ids = vec![first];
    for n in 1..10 {
        ids.push(shared.post("/oldest", &n.to_string()).await.id());
    }
    target.open_gate(10);
    let received = target.wait_for(3).await;

    let labels = [("route", "oldest"), ("target", "gated")];
    shared
        .wait_metric("fanout_lane_delivered_total", &labels, 3.0)
        .await;
    let bodies: Vec<&str> = received.iter().map(|r| r.body_text()).collect();
    assert_eq!(
        bodies,
        ["0", "8", "9"],
        "the two newest waiting events survive"
    );
    let metrics = shared.metrics().await;
    assert_eq!(
        metrics.value(
            "fanout_lane_dropped_total",
            &[("route", "oldest"), ("reason", "overflow")]
        ),
        7.0
    );
    assert_eq!(
        metrics.value("fanout_events_accepted_total", &[("route", "oldest")]),
        10.0
    );
    assert_eq!(target.count(), 3, "dropped events are never sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_newest_keeps_what_the_lane_holds_and_counts_the_rest() {
    let target = Target::start(Reply::Gated).await;
    let shared = start_proxy::<Table>(&[("NEWEST", addr(&target))], None).await;
    shared.post("/newest", "0").await.id();
    target.wait_for(1).await;
    for n in 1..10 {
        assert_eq!(shared.post("/newest", &n.to_string()).await.status, 202);
    }
    target.open_gate(10);
    let labels = [("route", "newest"), ("target", "gated")];
    shared
        .wait_metric("fanout_lane_delivered_total", &labels, 3.0)
        .await;
    let bodies: Vec<String> = target
        .received()
        .iter()
        .map(|r| r.body_text().to_owned())
        .collect();
    assert_eq!(bodies, ["0", "1", "2"]);
    let metrics = shared.metrics().await;
    assert_eq!(
        metrics.value(
            "fanout_lane_dropped_total",
            &[("route", "newest"), ("reason", "overflow")]
        ),
        7.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_reject_lane_refuses_the_whole_event_with_503() {
    let roomy = Target::start(Reply::Status(200)).await;
    let gated = Target::start(Reply::Gated).await;
    let env = [
        ("STRICT_ROOMY", addr(&roomy)),
        ("STRICT_GATED", addr(&gated)),
    ];
    let shared = start_proxy::<Table>(&env, None).await;

    let first = shared.post("/strict", "first").await.id();
    gated.wait_for(1).await; // its worker holds the first event; the lane is empty
    let second = shared.post("/strict", "second").await.id(); // fills the gated lane
    let refused = shared.post("/strict", "third").await;
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(refused.header("content-type"), Some("application/json"));
    let reason: serde_json::Value = serde_json::from_str(&refused.body).expect("JSON error body");
    assert!(
        reason["error"].as_str().unwrap().contains("gated"),
        "{}",
        refused.body
    );

    gated.open_gate(10);
    gated.wait_for(2).await;
    roomy.wait_for(2).await;
    shared
        .wait_metric(
            "fanout_lane_delivered_total",
            &[("route", "strict"), ("target", "gated")],
            2.0,
        )
        .await;
    for target in [&roomy, &gated] {
        let ids = target.event_ids();
        assert_eq!(
            ids,
            [first.clone(), second.clone()],
            "the refused event reached no lane"
        );
    }
    let metrics = shared.metrics().await;
    assert_eq!(
        metrics.value("fanout_events_accepted_total", &[("route", "strict")]),
        2.0
    );
    assert_eq!(
        metrics.value(
            "fanout_events_rejected_total",
            &[("route", "strict"), ("reason", "lane_full")]
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_target_does_not_slow_a_fast_one_on_the_same_route() {
    let slow = Target::start(Reply::Slow(Duration::from_secs(2))).await;
    let fast = Target::start(Reply::Status(200)).await;
    let env = [("MIXED_SLOW", addr(&slow)), ("MIXED_FAST", addr(&fast))];
    let shared = start_proxy::<Table>(&env, None).await;
    for n in 0..50 {
        shared.post("/mixed", &n.to_string()).await.id();
    }
    fast.wait_for(50).await;
    assert!(
        slow.count() <= 2,
        "the slow target took {} while the fast one took 50",
        slow.count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_delivers_what_the_lanes_hold_before_stopping() {
    let slow = Target::start(Reply::Slow(Duration::from_millis(20))).await;
    let fast = Target::start(Reply::Status(200)).await;
    let env = [("MIXED_SLOW", addr(&slow)), ("MIXED_FAST", addr(&fast))];
    let shared = start_proxy::<Table>(&env, None).await;
    for n in 0..30 {
        shared.post("/mixed", &n.to_string()).await.id();
    }
    let lanes = shared.shared.clone();
    shared.shutdown().await;
    assert_eq!(
        slow.count(),
        30,
        "every held event was delivered before the proxy stopped"
    );
    assert_eq!(fast.count(), 30);
    fanout::table::RouteTable::lanes(&lanes.table, &mut |lane| {
        assert_eq!(lane.metrics.dropped_shutdown.get(), 0);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_left_at_the_drain_deadline_are_counted_as_dropped_at_shutdown() {
    let target = Target::start(Reply::Gated).await;
    let shared = start_proxy::<Table>(
        &[("OLDEST", addr(&target))],
        Some(Duration::from_millis(300)),
    )
    .await;
    for n in 0..3 {
        shared.post("/oldest", &n.to_string()).await.id();
    }
    target.wait_for(1).await;
    let state = shared.shared.clone();
    shared.shutdown().await;
    let lane = &state.table.oldest.lanes.gated;
    assert_eq!(
        lane.metrics.dropped_shutdown.get(),
        3,
        "one in flight, two waiting"
    );
    assert_eq!(lane.metrics.delivered.get() + lane.metrics.failed.get(), 0);
    assert_eq!(lane.depth(), 0);
    assert_eq!(lane.metrics.inflight.get(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn for_every_idle_lane_accepted_equals_delivered_plus_failed_plus_dropped() {
    let a = Target::with(|n| {
        if n % 3 == 0 {
            Reply::Status(500)
        } else {
            Reply::Status(200)
        }
    })
    .await;
    let b = Target::with(|n| {
        if n % 5 == 0 {
            Reply::Status(404)
        } else {
            Reply::Status(200)
        }
    })
    .await;
    let env = [
        ("PAIR_A", addr(&a)),
        ("PAIR_B", addr(&b)),
        ("PAIR_TOKEN", "t".to_owned()),
    ];
    let shared = start_proxy::<Table>(&env, None).await;
    for n in 0..40 {
        shared.post("/pair", &n.to_string()).await.id();
    }
    for target in ["a", "b"] {
        let labels = [("route", "pair"), ("target", target)];
        let deadline = tokio::time::Instant::now() + common::PATIENCE;
        loop {
            let m = shared.metrics().await;
            let settled = m.value("fanout_lane_delivered_total", &labels)
                + m.value("fanout_lane_failed_total", &labels)
                + m.value("fanout_lane_dropped_total", &labels);
            let idle = m.value("fanout_lane_depth", &labels)
                + m.value("fanout_lane_inflight", &labels)
                == 0.0;
            if idle && settled == m.value("fanout_events_accepted_total", &[("route", "pair")]) {
                assert_eq!(settled, 40.0);
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "lane {target} never settled:\n{}",
                m.0
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let m = shared.metrics().await;
    assert!(
        m.value("fanout_lane_failed_total", &[("target", "b")]) >= 8.0,
        "404s are permanent failures"
    );
    assert!(m.value("fanout_lane_retries_total", &[("target", "a")]) >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batching_lane_sends_many_events_per_request_as_ndjson() {
    let target = Target::start(Reply::Status(200)).await;
    let shared = start_proxy::<Table>(&[("BATCHED", addr(&target))], None).await;
    let mut sent = Vec::new();
    for n in 0..25 {
        let body = format!("{{\"n\":{n}}}");
        sent.push((shared.post("/batched", &body).await.id(), body));
    }
    let labels = [("route", "batched"), ("target", "lines")];
    shared
        .wait_metric("fanout_lane_delivered_total", &labels, 25.0)
        .await;

    let mut lines = Vec::new();
    for request in target.received() {
        assert_eq!(request.header("content-type"), "application/x-ndjson");
        let ids: Vec<&str> = request.header("fanout-event-ids").split(',').collect();
        let bodies: Vec<&str> = request.body_text().lines().collect();
        assert!(request.body_text().ends_with('\n'));
        assert_eq!(ids.len(), bodies.len(), "one id per line");
        assert!(bodies.len() <= 10, "max_events caps a batch");
        lines.extend(
            ids.into_iter()
                .map(str::to_owned)
                .zip(bodies.into_iter().map(str::to_owned)),
        );
    }
    assert_eq!(lines, sent, "every event once, in order, with its own id");
    assert!(
        target.count() < 25,
        "events share requests: {} requests",
        target.count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_batch_goes_at_once_without_waiting_out_max_wait() {
    let target = Target::start(Reply::Status(200)).await;
    let shared = start_proxy::<Table>(&[("PATIENT", addr(&target))], None).await;
    for n in 0..5 {
        shared.post("/patient", &n.to_string()).await.id();
    }
    // max_wait is 60s, far beyond the test's patience: only a full batch can arrive.
    let received = target.wait_for(1).await;
    assert_eq!(received[0].body_text(), "0\n1\n2\n3\n4\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_is_retried_whole() {
    let target = Target::with(|n| {
        if n == 0 {
            Reply::Status(503)
        } else {
            Reply::Status(200)
        }
    })
    .await;
    let shared = start_proxy::<Table>(&[("BATCHED", addr(&target))], None).await;
    for n in 0..3 {
        shared.post("/batched", &n.to_string()).await.id();
    }
    shared
        .wait_metric("fanout_lane_delivered_total", &[("route", "batched")], 3.0)
        .await;
    let received = target.received();
    let first = &received[0];
    let again = received
        .iter()
        .find(|r| r.header("fanout-attempt") == "2")
        .expect("the batch was retried");
    assert_eq!(
        again.header("fanout-event-ids"),
        first.header("fanout-event-ids")
    );
    assert_eq!(again.body, first.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_target_gets_concurrent_deliveries_multiplexed_on_one_connection() {
    let target = Target::start(Reply::Gated).await;
    let shared = start_proxy::<Table>(&[("H2", addr(&target))], None).await;
    let id = shared.post("/multiplexed", "{\"over\":\"h2\"}").await.id();
    // A body over 64 KiB (the initial flow-control window) must still arrive whole.
    let big = format!("\"{}\"", "x".repeat(70 * 1024));
    let answer = common::post(shared.addr, "/multiplexed", &big, "application/json").await;
    assert_eq!(answer.status, 202, "{answer:?}");
    for n in 0..4 {
        shared.post("/multiplexed", &n.to_string()).await.id();
    }
    // Six requests held open by the target at once, all on one connection.
    let received = target.wait_for(6).await;
    assert_eq!(
        target.connections(),
        1,
        "deliveries share one HTTP/2 connection"
    );
    target.open_gate(6);
    assert!(received.iter().all(|r| r.version == hyper::Version::HTTP_2));
    let first = received
        .iter()
        .find(|r| r.header("fanout-event-id") == id)
        .expect("the first event arrived");
    assert_eq!(first.body_text(), "{\"over\":\"h2\"}");
    assert!(received.iter().any(|r| r.body_text() == big));
}

/// A target that answers every request `200` with `Connection: close` and closes, as a server
/// with keep-alive off does (and nginx on the last request of a connection); returns the
/// request heads it read.
async fn closing_target() -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (heads, received) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let heads = heads.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                let _ = heads.send(String::from_utf8_lossy(&request).into_owned());
                let answer = b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
                let _ = stream.write_all(answer).await;
            });
        }
    });
    (addr, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_closes_after_each_answer_gets_each_event_once() {
    let (addr, mut heads) = closing_target().await;
    let shared = start_proxy::<Table>(&[("RETRY", addr.to_string())], None).await;
    for n in 0..3 {
        shared.post("/retry", &n.to_string()).await.id();
    }
    let labels = [("route", "retry"), ("target", "flaky")];
    shared
        .wait_metric("fanout_lane_delivered_total", &labels, 3.0)
        .await;
    let metrics = shared.metrics().await;
    assert_eq!(metrics.value("fanout_lane_retries_total", &labels), 0.0);
    assert_eq!(metrics.value("fanout_lane_failed_total", &labels), 0.0);
    let mut seen = 0;
    while let Ok(head) = heads.try_recv() {
        assert!(head.contains("fanout-attempt: 1\r\n"), "{head}");
        seen += 1;
    }
    assert_eq!(seen, 3, "each event arrived once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_event_is_sent_with_content_length_zero() {
    let (addr, mut heads) = closing_target().await;
    let shared = start_proxy::<Table>(&[("RETRY", addr.to_string())], None).await;
    shared.post("/retry", "").await.id();
    let head = tokio::time::timeout(common::PATIENCE, heads.recv())
        .await
        .expect("the event arrives")
        .expect("the target records it");
    assert!(
        head.to_ascii_lowercase().contains("content-length: 0\r\n"),
        "{head}"
    );
}
