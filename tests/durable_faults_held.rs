//! Faults after the 202, in a binary built with the `failpoints` feature: a dead letter that
//! cannot be written (EIO, ENOSPC) keeps its event in the log, unsettled, while the lane
//! retries the write, and is written once the fault clears, also after a SIGKILL; a remembered
//! `Idempotency-Key` that cannot be written leaves the event accepted (it is durable) and the
//! key remembered in memory, and a restart then forgets it: a retry is taken in again, a
//! duplicate and never a loss. A lane that cannot read the log keeps its place until it can.
#![cfg(feature = "failpoints")]

mod common;
#[path = "durable/faults_support.rs"]
mod support;

use common::blocking::http_once;
use support::Setup;

const LETTERS: &str = "fanout_lane_dead_letters_total";
const LETTER_ERRORS: &str = "fanout_lane_dead_letter_errors_total";

/// Posts `body` to `/expiring`; its id (answered 202).
fn post_expiring(s: &Setup, n: usize) -> String {
    let body = format!("{{\"expiring\":{n}}}");
    let answer = http_once(s.fanout.addr, "POST", "/expiring", &[], body.as_bytes());
    answer.expect("POST /expiring").id()
}

fn unwritable_dead_letters_stay_in_the_log(errno: &str) {
    // Targets down: every attempt fails until the event is past its 1 ms max_age.
    let mut s = Setup::start_down(&format!("faults-letters-{errno}"));
    s.fail(&format!("dead_letter::write=return({errno})"));
    let ids: Vec<String> = (0..3).map(|n| post_expiring(&s, n)).collect();
    let lane = [("route", "expiring"), ("target", "a")];
    s.wait_metric(LETTER_ERRORS, &lane, |n| n >= 3.0);
    assert_eq!(
        s.metric("fanout_lane_failed_total", &lane),
        0.0,
        "not settled"
    );
    assert_eq!(s.metric(LETTERS, &lane), 0.0);
    assert_eq!(
        s.metric("fanout_lane_inflight", &lane),
        3.0,
        "held while retrying"
    );
    let (_, out) = support::verify(&s.dir);
    assert!(
        out.contains("target a: pending=3 "),
        "still in the log: {out}"
    );
    // Killed while the write still fails: the events are in the log for the next start.
    s.kill_and_restart();
    s.wait_metric(LETTERS, &lane, |n| n == 3.0);
    assert_eq!(s.metric("fanout_lane_failed_total", &lane), 3.0);
    let file = s.dir.join("dead-letters/expiring/a.ndjson");
    let text = std::fs::read_to_string(&file).expect("the dead letters are written");
    let letters: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    let mut written: Vec<&str> = letters.iter().map(|l| l["id"].as_str().unwrap()).collect();
    written.sort_unstable();
    assert_eq!(written, ids, "each event once (ids sort by acceptance)");
    assert!(letters.iter().all(|l| l["reason"] == "expired"));
}

#[test]
fn an_unwritable_dead_letter_with_eio_keeps_its_event_until_it_is_written() {
    unwritable_dead_letters_stay_in_the_log("EIO");
}

#[test]
fn an_unwritable_dead_letter_with_enospc_keeps_its_event_until_it_is_written() {
    unwritable_dead_letters_stay_in_the_log("ENOSPC");
}

#[test]
fn a_dead_letter_written_once_the_fault_clears_without_a_restart() {
    let s = Setup::start_down("faults-letters-clear");
    s.fail("dead_letter::write=return(EIO)");
    let id = post_expiring(&s, 0);
    let lane = [("route", "expiring"), ("target", "a")];
    s.wait_metric(LETTER_ERRORS, &lane, |n| n >= 2.0);
    s.fail("dead_letter::write=off");
    s.wait_metric(LETTERS, &lane, |n| n == 1.0);
    let text = std::fs::read_to_string(s.dir.join("dead-letters/expiring/a.ndjson"))
        .expect("the dead letter is written");
    assert_eq!(text.lines().count(), 1);
    assert!(text.contains(&id), "{text}");
    assert_eq!(s.metric("fanout_lane_inflight", &lane), 0.0);
}

fn unwritable_keys(errno: &str) {
    let mut s = Setup::start(&format!("faults-keys-{errno}"), &[]);
    s.fail(&format!("keys::write=return({errno})"));
    let key = [("idempotency-key", "order-1")];
    let post = |s: &Setup| {
        let answer = http_once(s.fanout.addr, "POST", "/always", &key, b"{\"k\":1}");
        answer.expect("POST /always").id()
    };
    let first = post(&s);
    assert_eq!(post(&s), first, "remembered in memory");
    let warned = s.wait_lines("cannot write a remembered key", &[("route", "always")], 1);
    assert_eq!(warned[0]["level"], "WARN");
    s.fail("keys::write=off");
    s.kill_and_restart();
    let again = post(&s);
    assert_ne!(
        again, first,
        "the key was not written: a restart forgets it"
    );
    // Both events were accepted and both are delivered: a duplicate, not a loss.
    for (name, target) in [("a", &s.a), ("b", &s.b)] {
        for id in [&first, &again] {
            let deadline = std::time::Instant::now() + support::DELIVERY;
            while target.count_id(id) == 0 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{name} never got {id}"
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}

#[test]
fn an_unwritable_key_with_eio_leaves_the_event_accepted_and_the_key_in_memory() {
    unwritable_keys("EIO");
}

#[test]
fn an_unwritable_key_with_enospc_leaves_the_event_accepted_and_the_key_in_memory() {
    unwritable_keys("ENOSPC");
}

/// A lane that cannot read the log (EIO) keeps its place and tries again, counted; once the
/// disk reads again, every event arrives, none skipped.
#[test]
fn a_lane_that_cannot_read_the_log_keeps_its_place_until_it_can() {
    let mut s = Setup::start("faults-read", &[]);
    s.fail("log::read=return(EIO)");
    s.post_accepted("always", 5, 100);
    let labels = [("route", "always"), ("op", "read")];
    s.wait_metric("fanout_log_errors_total", &labels, |n| n >= 2.0);
    assert!(
        s.a.received().is_empty() && s.b.received().is_empty(),
        "nothing read yet"
    );
    s.fail("log::read=off");
    s.wait_delivered();
    s.check_deliveries();
}
