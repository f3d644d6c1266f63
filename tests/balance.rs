//! Balance routes against real backends (Python's HTTP server; curl as the client where what
//! a client sees matters): spread by strategy and weight, failover, ejection and health
//! checks, replay rules, fanout's own answers, forwarding headers, the gate.

mod common;
#[path = "balance/support.rs"]
mod support;

use std::collections::HashMap;
use std::net::SocketAddr;

use common::blocking::{http_once, metric_blocking, wait_metric};
use common::{ReservedPort, PATIENCE};
use support::{curl, Backend};

/// Three workers and fanout pointed at them (`DEAD` at a reserved port nothing answers on).
struct Setup {
    workers: Vec<Backend>,
    fanout: common::process::Fanout,
    _dead: ReservedPort,
}

fn setup() -> Setup {
    setup_with(&[])
}

/// [`setup`] with extra flags for fanout.
fn setup_with(args: &[&str]) -> Setup {
    let workers: Vec<Backend> = ["w1", "w2", "w3"]
        .into_iter()
        .map(Backend::worker)
        .collect();
    let dead = ReservedPort::new();
    let addrs: Vec<String> = workers.iter().map(Backend::addr).collect();
    let dead_addr = dead.addr.to_string();
    let fanout = support::fanout_with_args(
        args,
        &[
            ("W1", &addrs[0]),
            ("W2", &addrs[1]),
            ("W3", &addrs[2]),
            ("DEAD", &dead_addr),
            ("P1", &dead_addr),
            ("P2", &dead_addr),
        ],
    );
    Setup {
        workers,
        fanout,
        _dead: dead,
    }
}

/// GETs `path` `n` times one after the other; how many answers each worker gave.
fn spread(addr: SocketAddr, path: &str, n: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        let answer = http_once(addr, "GET", path, &[], b"").expect("GET through fanout");
        assert_eq!(answer.status, 200, "{}", answer.body);
        let body: serde_json::Value = serde_json::from_str(&answer.body).expect("JSON");
        let worker = body["worker"].as_str().expect("the worker names itself");
        *counts.entry(worker.to_owned()).or_insert(0) += 1;
    }
    counts
}

fn count(counts: &HashMap<String, usize>, worker: &str) -> usize {
    counts.get(worker).copied().unwrap_or(0)
}

#[test]
fn round_robin_takes_each_backend_in_turn() {
    if !support::stack("http.server") {
        return;
    }
    let s = setup();
    let counts = spread(s.fanout.addr, "/rr/x", 30);
    assert_eq!(
        (
            count(&counts, "w1"),
            count(&counts, "w2"),
            count(&counts, "w3")
        ),
        (10, 10, 10),
        "{counts:?}"
    );
}

#[test]
fn least_inflight_spreads_requests_one_at_a_time_by_weight() {
    if !support::stack("http.server") {
        return;
    }
    let s = setup();
    // w1 has weight 2, w2 weight 1: with nothing in flight every pick is a tie, which goes
    // round by weight.
    let counts = spread(s.fanout.addr, "/items/t1/count", 60);
    let w1 = count(&counts, "w1");
    assert!((36..=44).contains(&w1), "w1 should get 2/3: {counts:?}");
    assert_eq!(w1 + count(&counts, "w2"), 60, "{counts:?}");
}

#[test]
fn random_honours_weights() {
    if !support::stack("http.server") {
        return;
    }
    let s = setup();
    let counts = spread(s.fanout.addr, "/random/x", 400);
    // w1 has weight 3 of 4: 300 expected, the bounds are 5 standard deviations.
    let w1 = count(&counts, "w1");
    assert!((257..=343).contains(&w1), "{counts:?}");
}

#[test]
fn a_killed_backend_is_ejected_and_idempotent_requests_fail_over_until_it_rejoins() {
    if !support::stack("http.server") {
        return;
    }
    let mut s = setup();
    let addr = s.fanout.addr;
    let port = s.workers[1].port;
    s.workers[1].kill();
    // Every GET succeeds: a refused connection goes on to w1 at once.
    let started = std::time::Instant::now();
    let counts = spread(addr, "/items/a", 30);
    let elapsed = started.elapsed();
    assert_eq!(count(&counts, "w1"), 30, "{counts:?}");
    let labels = [("route", "items"), ("target", "w2")];
    assert!(metric_blocking(addr, "fanout_backend_ejections_total", &labels) >= 1.0);
    let refused = [
        ("route", "items"),
        ("target", "w2"),
        ("outcome", "connect_error"),
    ];
    // Ejected after 2 failures, then tried once per cool-down (300ms, 600ms, then 1s each):
    // a try per cool-down that ended while the requests ran, not one per request (w2 would
    // have been picked first for about 10 of them).
    let mut probes = 0.0;
    let mut ended = std::time::Duration::ZERO;
    for cooldown in [300, 600].into_iter().chain(std::iter::repeat(1000)) {
        ended += std::time::Duration::from_millis(cooldown);
        if ended > elapsed {
            break;
        }
        probes += 1.0;
    }
    let tries = metric_blocking(addr, "fanout_backend_requests_total", &refused);
    assert!(
        (2.0..=2.0 + probes + 1.0).contains(&tries),
        "{tries} tries on the dead w2 in {elapsed:?}"
    );

    // Back on its port, w2 gets requests again after its cool-down.
    let _back = Backend::worker_on("w2", port);
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let counts = spread(addr, "/items/a", 3);
        if count(&counts, "w2") > 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "w2 never rejoined");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn health_checks_take_a_sick_backend_out_and_bring_it_back() {
    if !support::stack("http.server") {
        return;
    }
    let s = setup();
    let addr = s.fanout.addr;
    let sick = curl(&[
        "-XPOST",
        &format!("http://{}/control/sick", s.workers[1].addr()),
    ]);
    assert_eq!(sick.status, 200);
    let labels = [("route", "rr"), ("target", "b")];
    wait_metric(
        addr,
        ("fanout_backend_healthy", &labels),
        |v| v == 0.0,
        PATIENCE,
    );
    let counts = spread(addr, "/rr/x", 20);
    assert_eq!(count(&counts, "w2"), 0, "{counts:?}");
    assert_eq!(
        count(&counts, "w1") + count(&counts, "w3"),
        20,
        "{counts:?}"
    );
    let well = curl(&[
        "-XPOST",
        &format!("http://{}/control/well", s.workers[1].addr()),
    ]);
    assert_eq!(well.status, 200);
    wait_metric(
        addr,
        ("fanout_backend_healthy", &labels),
        |v| v == 1.0,
        PATIENCE,
    );
    let counts = spread(addr, "/rr/x", 9);
    assert_eq!(count(&counts, "w2"), 3, "{counts:?}");
}

/// Tries of route `route` that got a 5xx, over its two backends.
fn failed_tries(addr: SocketAddr, route: &str) -> f64 {
    ["w1", "w2"]
        .iter()
        .map(|target| {
            let labels = [("route", route), ("target", target), ("outcome", "5xx")];
            metric_blocking(addr, "fanout_backend_requests_total", &labels)
        })
        .sum()
}

#[test]
fn a_failed_post_is_relayed_not_replayed_unless_allowed() {
    if !support::stack("http.server") {
        return;
    }
    let s = setup();
    let addr = s.fanout.addr;
    let body = [
        "-H",
        "content-type: application/json",
        "--data",
        "{\"n\":1}",
    ];
    // /posts/503 reaches the worker as /status/503: a 503 from the backend.
    let post = curl(&[&body[..], &[&format!("http://{addr}/posts/503")]].concat());
    assert_eq!(post.status, 503, "the backend's own answer is relayed");
    assert!(post.json()["worker"].is_string(), "{}", post.body);
    assert_eq!(failed_tries(addr, "posts"), 1.0, "a POST is tried once");
    let get = curl(&[&format!("http://{addr}/posts/503")]);
    assert_eq!(get.status, 503);
    assert_eq!(
        failed_tries(addr, "posts"),
        3.0,
        "a GET is tried on the other backend too"
    );
    let again = curl(&[&body[..], &[&format!("http://{addr}/posts_again/503")]].concat());
    assert_eq!(again.status, 503);
    assert_eq!(
        failed_tries(addr, "posts_again"),
        2.0,
        "retry_non_idempotent: both"
    );
    assert_eq!(
        metric_blocking(addr, "fanout_balance_retries_total", &[("route", "posts")]),
        1.0
    );
}

#[test]
fn fanout_answers_502_503_and_504_itself_in_json() {
    if !support::stack("http.server") {
        return;
    }
    let s = setup();
    let addr = s.fanout.addr;
    let refused = curl(&[&format!("http://{addr}/dead/x")]);
    assert_eq!(refused.status, 502, "{}", refused.body);
    let error = refused.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        error.contains("gone") && error.contains("refused"),
        "{error}"
    );
    // One failure ejects `gone` for 10s: now no backend is available.
    let none = curl(&[&format!("http://{addr}/dead/x")]);
    assert_eq!(none.status, 503, "{}", none.body);
    assert_eq!(none.header("retry-after"), Some("1"));
    assert!(none.json()["error"]
        .as_str()
        .unwrap_or_default()
        .contains("no healthy backend"));
    // The worker sleeps 1s; the target's timeout is 300ms.
    let slow = curl(&[&format!("http://{addr}/slow/1000")]);
    assert_eq!(slow.status, 504, "{}", slow.body);
    assert!(slow.json()["error"]
        .as_str()
        .unwrap_or_default()
        .contains("in time"));
    for (status, expected) in [("502", 1.0), ("503", 1.0), ("504", 1.0)] {
        let labels = [
            ("route", if status == "504" { "slow" } else { "dead" }),
            ("status", status),
        ];
        assert_eq!(
            metric_blocking(addr, "fanout_balance_errors_total", &labels),
            expected
        );
    }
}

#[test]
fn requests_carry_forwarding_headers_and_a_request_id_and_lose_hop_by_hop_ones() {
    if !support::stack("http.server") {
        return;
    }
    let s = setup();
    let addr = s.fanout.addr;
    let answer = curl(&[
        "-H",
        "Connection: keep-alive, X-Secret",
        "-H",
        "X-Secret: hop",
        "-H",
        "X-Kept: end-to-end",
        &format!("http://{addr}/items/t1/count?x=1"),
    ]);
    assert_eq!(answer.status, 200, "{}", answer.body);
    let seen = answer.json();
    let headers = &seen["headers"];
    assert_eq!(seen["path"], "/items/t1/count?x=1");
    assert!(headers.get("x-secret").is_none(), "{headers}");
    assert_eq!(headers["x-kept"], "end-to-end");
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-host"], addr.to_string());
    assert_eq!(headers["forwarded"], "for=127.0.0.1;proto=http");
    let worker = seen["worker"].as_str().unwrap_or_default();
    let index = if worker == "w1" { 0 } else { 1 };
    assert_eq!(
        headers["host"],
        s.workers[index].addr(),
        "the backend's own host"
    );
    let id = headers["x-request-id"].as_str().expect("a request id");
    assert_eq!(
        answer.header("x-request-id"),
        Some(id),
        "the client sees it too"
    );
    // An HTTP/2 client (h2c) of an HTTP/1.1 backend: the backend's answer, whose
    // connection-specific headers HTTP/2 forbids, reaches it over HTTP/2.
    let h2 = curl(&[
        "--http2-prior-knowledge",
        &format!("http://{addr}/items/h2"),
    ]);
    assert_eq!(h2.status, 200, "{}", h2.body);
    assert_eq!(h2.json()["path"], "/items/h2");
    assert!(h2.status_line.starts_with("HTTP/2 "), "{}", h2.status_line);
    let given = curl(&[
        "-H",
        "X-Request-Id: trace-42",
        &format!("http://{addr}/items/a"),
    ]);
    assert_eq!(given.json()["headers"]["x-request-id"], "trace-42");
    assert_eq!(given.header("x-request-id"), Some("trace-42"));
}

#[test]
fn the_gate_and_the_methods_apply_to_balance_routes() {
    if !support::stack("http.server") {
        return;
    }
    let s = setup();
    let addr = s.fanout.addr;
    let url = format!("http://{addr}/guarded");
    assert_eq!(curl(&[&url]).status, 401);
    let token = ["-H", "Authorization: Bearer let-me-in"];
    let allowed = curl(&[&token[..], &[&url]].concat());
    assert_eq!(allowed.status, 200, "{}", allowed.body);
    assert_eq!(allowed.json()["path"], "/echoed");
    let seen = &allowed.json()["headers"];
    assert!(
        seen.get("authorization").is_none(),
        "fanout's token stays: {seen}"
    );
    let statuses: Vec<u16> = (0..5)
        .map(|_| curl(&[&token[..], &[&url]].concat()).status)
        .collect();
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 429],
        "a burst of 5 per minute"
    );
    let put = curl(&["-XPUT", &format!("http://{addr}/rr/x")]);
    assert_eq!(put.status, 405);
    assert_eq!(put.header("allow"), Some("GET, POST"));
    let event = curl(&["--data", "{}", &format!("http://{addr}/events")]);
    assert_eq!(
        event.status, 202,
        "a fan-out route beside them: {}",
        event.body
    );
}

#[test]
fn behind_the_tls_listener_backends_are_told_the_client_spoke_https() {
    if !support::stack("http.server") {
        return;
    }
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("make a certificate");
    let dir = common::scratch_dir("balance-tls");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).expect("write the certificate");
    std::fs::write(&key, certified.key_pair.serialize_pem()).expect("write the key");
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let s = setup_with(&["--tls-cert", &cert, "--tls-key", &key]);
    let port = s.fanout.addr.port();
    for (version, spoken) in [("--http1.1", "HTTP/1.1 "), ("--http2", "HTTP/2 ")] {
        let answer = curl(&[
            version,
            "--cacert",
            &cert,
            "--resolve",
            &format!("localhost:{port}:127.0.0.1"),
            &format!("https://localhost:{port}/items/secure"),
        ]);
        assert_eq!(answer.status, 200, "{version}: {}", answer.body);
        assert!(
            answer.status_line.starts_with(spoken),
            "{}",
            answer.status_line
        );
        let headers = &answer.json()["headers"];
        assert_eq!(headers["x-forwarded-proto"], "https", "{version}");
        assert_eq!(
            headers["forwarded"], "for=127.0.0.1;proto=https",
            "{version}"
        );
        assert_eq!(
            headers["x-forwarded-host"],
            format!("localhost:{port}"),
            "{version}"
        );
    }
}
