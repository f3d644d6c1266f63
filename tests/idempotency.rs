//! `Idempotency-Key` through the `fanout` binary: a repeated key gets 202 with the first id and
//! the event is delivered once; a key that is not 1-255 visible ASCII characters gets 400; a
//! memory route remembers keys for its window (10m by default: shown by `--routes`; a built
//! route of 1s forgets them after it) and not across a restart; a retry while the first request
//! is still being written gets 409 with `Retry-After: 1` (the first request's `fdatasync` made
//! slow by strace, so the moment is held open, not raced for).

mod common;
#[path = "durable/policies.rs"]
mod policies;

use common::blocking::{http_once, metric_blocking, HttpAnswer};
use common::process::{Fanout, PyTarget, FANOUT};
use common::strace::{available, Traced};
use common::{scratch_dir, PATIENCE};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn post(addr: SocketAddr, path: &str, key: &str, body: &str) -> HttpAnswer {
    let headers = [
        ("content-type", "application/json"),
        ("idempotency-key", key),
    ];
    http_once(addr, "POST", path, &headers, body.as_bytes()).expect("fanout answers")
}

/// Waits until `target` has `id` from `expected` requests, then until a later event `follower`
/// (posted by `post_follower`) arrived too, so a second copy of `id` would have had its chance.
fn delivered_once(
    target: &PyTarget,
    id: &str,
    expected: usize,
    post_follower: impl Fn() -> String,
) {
    let follower = post_follower();
    let deadline = Instant::now() + PATIENCE;
    while target.count_id(id) < expected || target.count_id(&follower) < expected {
        assert!(
            Instant::now() < deadline,
            "{id} and {follower} not delivered"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        target.count_id(id),
        expected,
        "{id} delivered once per target"
    );
}

#[test]
fn a_memory_route_answers_a_repeated_key_with_the_first_id_and_forgets_it_at_a_restart() {
    let target = PyTarget::started();
    let addr = target.addr().to_string();
    let env = [("RECEIVER_A", addr.as_str()), ("RECEIVER_B", addr.as_str())];
    let dir = scratch_dir("idempotency-memory").display().to_string();
    let args = ["--data-dir", dir.as_str()];
    let mut fanout = Fanout::start_with(FANOUT, &args, &env);
    let first = post(fanout.addr, "/demo", "order-7", r#"{"n":1}"#).id();
    let again = post(fanout.addr, "/demo", "order-7", r#"{"n":2}"#);
    assert_eq!(again.id(), first, "{again:?}");
    for bad in ["", "a key", "ключ", &"k".repeat(256)] {
        let answer = post(fanout.addr, "/demo", bad, "{}");
        assert_eq!(answer.status, 400, "key {bad:?}: {answer:?}");
    }
    let route = [("route", "demo")];
    let metric = |name, labels: &[(&str, &str)]| metric_blocking(fanout.addr, name, labels);
    assert_eq!(metric("fanout_events_accepted_total", &route), 1.0);
    assert_eq!(metric("fanout_events_duplicate_total", &route), 1.0);
    let bad = [("route", "demo"), ("reason", "bad_idempotency_key")];
    assert_eq!(metric("fanout_events_rejected_total", &bad), 4.0);
    // Both targets of /demo are the one python target: two deliveries of the event.
    let follower = || post(fanout.addr, "/demo", "follower", "{}").id();
    delivered_once(&target, &first, 2, follower);
    let received = target.received();
    let bodies: Vec<&str> = received
        .iter()
        .filter(|d| d.id == first)
        .map(|d| d.body.as_str())
        .collect();
    assert_eq!(bodies, [r#"{"n":1}"#; 2], "the first request's body");

    let listing = std::process::Command::new(FANOUT)
        .arg("--routes")
        .output()
        .expect("--routes");
    let listing = String::from_utf8_lossy(&listing.stdout);
    let demo = listing.split("route orders").next().expect("a listing");
    assert!(
        demo.contains("route demo") && demo.contains("idempotency_window=10m"),
        "{listing}"
    );

    assert!(fanout.terminate().success());
    let fanout = Fanout::start_with(FANOUT, &args, &env);
    let after = post(fanout.addr, "/demo", "order-7", r#"{"n":3}"#).id();
    assert_ne!(
        after, first,
        "a memory route does not keep its keys across a restart"
    );
}

#[test]
fn a_memory_route_forgets_a_key_once_its_window_has_passed() {
    let target = PyTarget::started();
    let addr = target.addr().to_string();
    let fanout = Fanout::start_with(
        &policies::binary().display().to_string(),
        &[],
        &[("TARGET", &addr)],
    );
    let first = post(fanout.addr, "/brief", "k", "{}").id();
    let within = post(fanout.addr, "/brief", "k", "{}");
    assert_eq!(within.id(), first, "within the window of 1s");
    // Time passing is what is tested here: nothing to await but the end of the window.
    std::thread::sleep(Duration::from_millis(1100));
    let after = post(fanout.addr, "/brief", "k", "{}").id();
    assert_ne!(after, first, "the window of 1s has passed");
}

#[test]
fn a_retry_while_the_first_request_is_being_written_gets_409() {
    if !available() {
        return;
    }
    let target = PyTarget::started();
    let dir = scratch_dir("idempotency-409").display().to_string();
    let addr = target.addr().to_string();
    // Every fdatasync of fanout takes 1.5 s more: the first request waits for one.
    let slow = ["-e", "inject=fdatasync:delay_enter=1500000"];
    let fanout = Traced::start(
        policies::binary(),
        &["--data-dir", &dir],
        &[("TARGET", &addr)],
        &slow,
    );
    let key = "payment-42";
    std::thread::scope(|s| {
        let first = s.spawn(|| post(fanout.addr, "/always", key, r#"{"first":true}"#));
        let written = |calls: &[common::strace::Call]| {
            calls
                .iter()
                .any(|c| c.is_write() && c.on_segment_of("always") && c.args.contains("first"))
        };
        fanout.wait_for("the first request's record written", PATIENCE, written);
        let retry = post(fanout.addr, "/always", key, r#"{"first":false}"#);
        assert_eq!(retry.status, 409, "{retry:?}");
        assert_eq!(retry.header("retry-after"), Some("1"), "{retry:?}");
        let first = first.join().expect("the first client").id();
        let later = post(fanout.addr, "/always", key, r#"{"first":false}"#);
        assert_eq!(
            later.id(),
            first,
            "once written, the key answers with the first id"
        );
        let follower = || post(fanout.addr, "/always", "follower", "{}").id();
        delivered_once(&target, &first, 1, follower);
    });
    let route = [("route", "always")];
    assert_eq!(
        metric_blocking(fanout.addr, "fanout_events_duplicate_total", &route),
        2.0
    );
    assert_eq!(
        metric_blocking(fanout.addr, "fanout_events_accepted_total", &route),
        2.0
    );
}
