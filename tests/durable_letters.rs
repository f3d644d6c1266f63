//! Dead letters of durable routes through the `fanout` binary (built with
//! `tests/durable/policies.rs`): an event whose attempts are used up against a target answering
//! 503 is written with reason `exhausted` and every field of the README's line; an event
//! accepted before a SIGKILL, with its target down, is found past its `max_age` by the next
//! process, which writes it as `expired` and never delivers it.

mod common;
#[path = "durable/policies.rs"]
mod policies;

use common::blocking::{http_once, metric_blocking, wait_metric};
use common::process::{Fanout, PyTarget};
use common::{scratch_dir, Reply, Target, PATIENCE};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

fn start(dir: &Path, target: SocketAddr) -> Fanout {
    let binary = policies::binary().display().to_string();
    let dir = dir.display().to_string();
    let target = target.to_string();
    Fanout::start_with(&binary, &["--data-dir", &dir], &[("TARGET", &target)])
}

fn post(addr: SocketAddr, path: &str, body: &str) -> String {
    let headers = [("content-type", "application/json")];
    let answer = http_once(addr, "POST", path, &headers, body.as_bytes());
    answer.expect("fanout answers").id()
}

/// The dead letters of a lane: each line parsed (a line that is not JSON fails the test).
fn letters(dir: &Path, route: &str, target: &str) -> Vec<serde_json::Value> {
    let path = dir.join(format!("dead-letters/{route}/{target}.ndjson"));
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// An RFC 3339 time of a dead letter, as a `SystemTime`.
fn time(letter: &serde_json::Value, field: &str) -> SystemTime {
    let text = letter[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field}: {letter}"));
    humantime::parse_rfc3339(text).unwrap_or_else(|e| panic!("{field} {text}: {e}"))
}

#[test]
fn attempts_used_up_against_503_make_an_exhausted_dead_letter() {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime for the target");
    let busy = runtime.block_on(Target::start(Reply::Status(503)));
    let dir = scratch_dir("exhausted");
    let before = SystemTime::now();
    let fanout = start(&dir, busy.addr);
    let id = post(fanout.addr, "/always", r#"{"order":"lost"}"#);
    let labels = [
        ("route", "always"),
        ("target", "sink"),
        ("reason", "exhausted"),
    ];
    wait_metric(
        fanout.addr,
        ("fanout_lane_dead_letters_total", &labels),
        |n| n == 1.0,
        PATIENCE,
    );
    let lane = [("route", "always"), ("target", "sink")];
    assert_eq!(
        metric_blocking(fanout.addr, "fanout_lane_failed_total", &lane),
        1.0
    );
    assert_eq!(
        metric_blocking(fanout.addr, "fanout_lane_delivered_total", &lane),
        0.0
    );
    let attempts: Vec<String> = busy
        .received()
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r.header("fanout-event-id"),
                r.header("fanout-attempt")
            )
        })
        .collect();
    let expected: Vec<String> = (1..=3).map(|n| format!("{id} {n}")).collect();
    assert_eq!(
        attempts, expected,
        "three attempts, as `retry.attempts` says"
    );
    let letters = letters(&dir, "always", "sink");
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter["id"], id.as_str());
    assert_eq!(letter["route"], "always");
    assert_eq!(letter["target"], "sink");
    assert_eq!(letter["reason"], "exhausted");
    assert_eq!(letter["status"], 503);
    assert_eq!(letter["error"], "status 503");
    assert_eq!(letter["attempts"], 3);
    assert_eq!(letter["content_type"], "application/json");
    assert_eq!(letter["body"], r#"{"order":"lost"}"#);
    let (accepted, written) = (time(letter, "accepted"), time(letter, "time"));
    // The file's times have millisecond precision.
    let before = before - Duration::from_millis(1);
    assert!(before <= accepted && accepted <= written, "{letter}");
    assert!(written <= SystemTime::now(), "{letter}");
}

#[test]
fn an_event_past_max_age_when_fanout_restarts_is_an_expired_dead_letter_never_delivered() {
    let dir = scratch_dir("expired");
    let target = PyTarget::new(); // down: its port refuses connections
    let mut first = start(&dir, target.addr());
    let accepted_at = Instant::now();
    let id = post(first.addr, "/aging", r#"{"stale":true}"#);
    first.kill_hard();
    let lane = [("route", "aging"), ("target", "late")];
    assert!(
        accepted_at.elapsed() < Duration::from_secs(2),
        "killed within max_age (2s), so the first process could not expire it"
    );
    // The restart comes after max_age: time passing is what is tested.
    std::thread::sleep(Duration::from_millis(2200).saturating_sub(accepted_at.elapsed()));
    target.up();
    let restarted = SystemTime::now();
    let second = start(&dir, target.addr());
    let labels = [lane[0], lane[1], ("reason", "expired")];
    wait_metric(
        second.addr,
        ("fanout_lane_dead_letters_total", &labels),
        |n| n == 1.0,
        PATIENCE,
    );
    assert_eq!(
        metric_blocking(second.addr, "fanout_lane_failed_total", &lane),
        1.0
    );
    // An event posted now is delivered; by then the expired one would have been too.
    let fresh = post(second.addr, "/aging", r#"{"fresh":true}"#);
    let deadline = Instant::now() + PATIENCE;
    while target.count_id(&fresh) == 0 {
        assert!(
            Instant::now() < deadline,
            "the fresh event is not delivered"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        target.count_id(&id),
        0,
        "an expired event is never delivered"
    );
    let letters = letters(&dir, "aging", "late");
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter["id"], id.as_str());
    assert_eq!(letter["reason"], "expired");
    assert_eq!(letter["body"], r#"{"stale":true}"#);
    assert!(
        time(letter, "accepted") < restarted,
        "it keeps its acceptance time across the restart: {letter}"
    );
}
