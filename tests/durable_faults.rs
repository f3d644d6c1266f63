//! Durable routes when the disk fails, with faults injected into a `fanout` built with the
//! `failpoints` feature (`PUT /failpoints`, `FAILPOINTS`): while `log::write`, `log::sync` or
//! `log::roll` fails with EIO or ENOSPC every post is answered 503 with `Retry-After`, counted
//! as `disk_error` and as a failed operation of the log, and logged; none of those events is
//! ever delivered, neither once the fault clears and later events have arrived nor after a
//! SIGKILL and a restart; every event answered 202 reaches both targets byte for byte; the
//! route takes events again as soon as the fault clears, without a restart; a failed sync seals
//! the segment and writing goes on in a new one. With `fsync: 20ms` a failed sync refuses
//! nothing (what a period promises is the write) but is counted and seals the segment. A lane
//! whose position cannot be saved keeps delivering, and after a SIGKILL delivers again.
//!
//! tests/failpoints_in_ci.rs fails in CI when these tests are compiled out.
#![cfg(feature = "failpoints")]

mod common;
#[path = "durable/faults_support.rs"]
mod support;

use support::{Setup, RECORD_OVERHEAD, SEGMENT_SIZE};

/// The message of a failed group of a route's log.
const CANNOT_WRITE: &str = "cannot write the route's log: its requests get 503 until it can";

/// A small event.
const SMALL: usize = 100;

/// Posts `n` events of `size` bytes to each of `routes` while the fault on `op` is on: each is
/// answered 503 with `Retry-After`, counted once as `disk_error` and once as a failed `op`, and
/// logged as an ERROR naming the route and `op`.
fn refused_while_failing(s: &mut Setup, routes: &[&str], op: &str, n: usize, size: usize) {
    for route in routes {
        let (rejected, errors) = (s.disk_errors(route), s.errors(route, op));
        let logged = s.lines(CANNOT_WRITE, &[("route", route), ("operation", op)]);
        for _ in 0..n {
            let answer = s.post(route, size);
            assert_eq!(answer.status, 503, "/{route} with {op} failing: {answer:?}");
            assert!(answer.header("retry-after").is_some(), "{answer:?}");
        }
        assert_eq!(s.disk_errors(route) - rejected, n as f64, "/{route}");
        assert_eq!(s.errors(route, op) - errors, n as f64, "/{route}");
        let fields = [("route", *route), ("operation", op)];
        let lines = s.wait_lines(CANNOT_WRITE, &fields, logged.len() + n);
        assert!(
            lines.iter().all(|line| line["level"] == "ERROR"),
            "{lines:?}"
        );
    }
}

/// Once the fault is off: each route takes events again at once, every event answered 202
/// reaches both targets and none of the refused ones does; the same after a SIGKILL and a
/// restart on the same data directory, once a later event has arrived.
fn recovers_and_delivers_only_what_was_accepted(s: &mut Setup, routes: &[&str], size: usize) {
    for route in routes {
        s.post_accepted(route, 3, size);
    }
    s.wait_delivered();
    s.kill_and_restart();
    for route in routes {
        s.post_accepted(route, 1, SMALL);
    }
    s.wait_delivered();
}

/// A failing `write` on every route: the `always` route's writer thread, and the requests that
/// write their own group on the `20ms` and `never` routes.
fn failed_writes(errno: &str) {
    let routes = ["always", "period", "never"];
    let mut s = Setup::start("faults-write", &[]);
    for route in routes {
        s.post_accepted(route, 3, SMALL);
    }
    s.fail(&format!("log::write=return({errno})"));
    refused_while_failing(&mut s, &routes, "write", 4, SMALL);
    s.fail("log::write=off");
    recovers_and_delivers_only_what_was_accepted(&mut s, &routes, SMALL);
}

#[test]
fn failed_writes_with_eio_are_refused_never_delivered_and_the_routes_recover() {
    failed_writes("EIO");
}

#[test]
fn failed_writes_with_enospc_are_refused_never_delivered_and_the_routes_recover() {
    failed_writes("ENOSPC");
}

/// A failing `fdatasync` with `fsync: always`: refused, and the segment sealed; the events
/// after the fault go to a new segment.
fn failed_syncs(errno: &str) {
    let mut s = Setup::start("faults-sync", &[]);
    s.post_accepted("always", 3, SMALL);
    let first = s.last_segment("always");
    s.fail(&format!("log::sync=return({errno})"));
    refused_while_failing(&mut s, &["always"], "sync", 4, SMALL);
    s.fail("log::sync=off");
    s.post_accepted("always", 1, SMALL);
    let now = s.last_segment("always");
    assert!(
        now > first,
        "no new segment after a failed sync: still {first}"
    );
    recovers_and_delivers_only_what_was_accepted(&mut s, &["always"], SMALL);
}

#[test]
fn failed_syncs_with_eio_are_refused_and_writing_goes_on_in_a_new_segment() {
    failed_syncs("EIO");
}

#[test]
fn failed_syncs_with_enospc_are_refused_and_writing_goes_on_in_a_new_segment() {
    failed_syncs("ENOSPC");
}

/// After one failed sync the next group of the `always` route must start a new segment; while
/// creating it fails, the route refuses, and creates none.
#[test]
fn a_failed_roll_after_a_failed_sync_refuses_until_a_segment_can_be_created() {
    let mut s = Setup::start("faults-roll-sync", &[]);
    s.post_accepted("always", 3, SMALL);
    s.fail("log::sync=1*return(EIO)");
    refused_while_failing(&mut s, &["always"], "sync", 1, SMALL);
    let sealed = s.segments("always");
    s.fail("log::roll=return(EIO)");
    refused_while_failing(&mut s, &["always"], "roll", 4, SMALL);
    assert_eq!(
        s.segments("always"),
        sealed,
        "a segment created while rolling fails"
    );
    s.fail("log::roll=off");
    s.post_accepted("always", 1, SMALL);
    assert!(s.last_segment("always") > sealed[sealed.len() - 1].0);
    recovers_and_delivers_only_what_was_accepted(&mut s, &["always"], SMALL);
}

/// Posts events of `size` bytes to `/segments` until the next one would not fit in its
/// segment (1 MiB).
fn fill_a_segment(s: &mut Setup, size: usize) {
    let fits = |s: &Setup| {
        let (_, path) = s.segments("segments").pop().expect("a segment");
        let len = std::fs::metadata(path).expect("the segment's size").len();
        len + RECORD_OVERHEAD + size as u64 <= SEGMENT_SIZE
    };
    while fits(s) {
        s.post_accepted("segments", 1, size);
    }
}

/// A segment that is full (1 MiB) rolls on the next group; while that fails, the route refuses.
#[test]
fn a_failed_roll_of_a_full_segment_refuses_until_a_segment_can_be_created() {
    const LARGE: usize = 12_000;
    let mut s = Setup::start("faults-roll-size", &[]);
    fill_a_segment(&mut s, LARGE);
    let full = s.segments("segments");
    assert_eq!(full.len(), 1, "{full:?}");
    s.fail("log::roll=return(ENOSPC)");
    refused_while_failing(&mut s, &["segments"], "roll", 3, LARGE);
    assert_eq!(s.segments("segments"), full);
    s.fail("log::roll=off");
    s.post_accepted("segments", 1, LARGE);
    let rolled = s.segments("segments");
    assert!(rolled.len() == 2 && rolled[1].0 > full[0].0, "{rolled:?}");
    recovers_and_delivers_only_what_was_accepted(&mut s, &["segments"], LARGE);
}

/// A roll that fails once the next segment's file is in place (its directory not synced)
/// refuses its group, and nothing more goes into the full segment, even a group that would
/// fit: recovery ends that segment where the next one's file begins.
#[test]
fn a_roll_that_fails_after_its_file_appears_writes_nothing_more_to_the_full_segment() {
    const LARGE: usize = 12_000;
    // Targets down until the restart: what was written where is what recovery must find.
    let mut s = Setup::start_down("faults-roll-rename");
    fill_a_segment(&mut s, LARGE);
    s.fail("log::roll_sync_dir=1*return(EIO)");
    let refused = s.post("segments", LARGE);
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(
        s.segments("segments").len(),
        2,
        "the next segment's file is there"
    );
    // Small enough for the full segment: it must go to the next one all the same.
    s.post_accepted("segments", 3, SMALL);
    let rolled = s.segments("segments");
    assert_eq!(rolled.len(), 2, "{rolled:?}");
    let newest = std::fs::metadata(&rolled[1].1)
        .expect("the new segment")
        .len();
    assert!(
        newest > 16,
        "the small events are in the new segment: {newest} bytes"
    );
    s.kill_and_restart();
    s.a.up();
    s.b.up();
    s.wait_delivered();
    s.check_deliveries();
}

/// With `fsync: 20ms` the 202 follows the write: a sync that fails later refuses nothing, is
/// counted and logged, and seals the segment (the next write starts a new one).
fn failed_period_syncs(errno: &str) {
    let mut s = Setup::start("faults-period-sync", &[]);
    s.post_accepted("period", 3, SMALL);
    let first = s.last_segment("period");
    s.fail(&format!("log::sync=return({errno})"));
    for round in 1..=3 {
        // A sync failing once `before` is read seals the segment the next write goes to, or
        // one after it; a failure counted before `errors` may be of an earlier round's writes.
        let before = s.last_segment("period");
        let errors = s.errors("period", "sync");
        // Written at once, answered 202; the thread's sync within 20ms fails.
        s.post_accepted("period", 2, SMALL);
        let labels = [("route", "period"), ("op", "sync")];
        s.wait_metric("fanout_log_errors_total", &labels, |n| n > errors);
        s.post_accepted("period", 1, SMALL);
        let now = s.last_segment("period");
        assert!(now > before, "round {round}: no new segment after {before}");
    }
    let message =
        "cannot sync the route's log: its segment is sealed, writing goes on in a new one";
    let lines = s.wait_lines(message, &[("route", "period")], 3);
    assert!(
        lines.iter().all(|line| line["level"] == "ERROR"),
        "{lines:?}"
    );
    assert_eq!(s.disk_errors("period"), 0.0);
    s.fail("log::sync=off");
    assert!(s.last_segment("period") > first);
    recovers_and_delivers_only_what_was_accepted(&mut s, &["period"], SMALL);
}

#[test]
fn failed_syncs_with_a_period_refuse_nothing_and_seal_the_segment_eio() {
    failed_period_syncs("EIO");
}

#[test]
fn failed_syncs_with_a_period_refuse_nothing_and_seal_the_segment_enospc() {
    failed_period_syncs("ENOSPC");
}

/// Positions that cannot be saved (the point on from start-up, through `FAILPOINTS`): the
/// lanes deliver on, the failures are counted, and after a SIGKILL the lanes start from the
/// last position saved (none), so every event comes again and none is lost.
#[test]
fn unsaved_positions_lose_nothing_after_a_sigkill() {
    let failing = [("FAILPOINTS", "log::save_position=return(EIO)")];
    let mut s = Setup::start("faults-save", &failing);
    for route in ["always", "never"] {
        s.post_accepted(route, 10, SMALL);
    }
    s.wait_delivered();
    for route in ["always", "never"] {
        let errors = s.errors(route, "save_position");
        let labels = [("route", route), ("op", "save_position")];
        s.wait_metric("fanout_log_errors_total", &labels, |n| n > errors);
        let cursor = s.dir.join(format!("routes/{route}/cursors/a"));
        assert!(!cursor.exists(), "a position saved: {}", cursor.display());
    }
    let before: Vec<String> = s.accepted.iter().map(|e| e.id.clone()).collect();
    s.kill_and_restart();
    s.post_accepted("never", 1, SMALL);
    s.wait_delivered();
    // Every event is delivered again: wait for the second copies, then count.
    let deadline = std::time::Instant::now() + support::DELIVERY;
    for (name, target) in [("a", &s.a), ("b", &s.b)] {
        for id in &before {
            while target.count_id(id) < 2 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{name} got {id} once: it was not delivered again after the restart"
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
    assert_eq!(
        s.errors("never", "save_position"),
        0.0,
        "the fault is off now"
    );
    s.check_deliveries();
}

/// A group commit is all or nothing. 16 clients post at once; the first group's operation
/// takes 300ms (`1*sleep(300)`), so the others gather in the next group, whose operation fails
/// (`1*return(EIO)`): counted once, every request of that group refused (as many `disk_error`s
/// as 503s), none of its events delivered; the other requests get 202. (Set at start-up:
/// `PUT /failpoints` cannot take the `->` of a chain of actions.)
#[test]
fn a_failed_group_refuses_every_request_in_it_and_delivers_none_of_them() {
    for (route, point, op) in [
        ("always", "log::write", "write"),
        ("always", "log::sync", "sync"),
        ("period", "log::write", "write"),
    ] {
        let failing = format!("{point}=1*sleep(300)->1*return(EIO)");
        let mut s = Setup::start("faults-group", &[("FAILPOINTS", &failing)]);
        // If the writer took the whole wave as its first group, the failure is still armed
        // for the next wave's first group.
        let mut statuses = Vec::new();
        for _ in 0..5 {
            let answers = s.post_together(route, 16, SMALL);
            statuses.extend(answers.iter().map(|a| a.status));
            if s.errors(route, op) > 0.0 {
                break;
            }
        }
        let refused = statuses.iter().filter(|&&status| status == 503).count();
        let accepted = statuses.iter().filter(|&&status| status == 202).count();
        assert_eq!(
            refused + accepted,
            statuses.len(),
            "/{route}, {op}: {statuses:?}"
        );
        assert!(
            refused >= 1,
            "/{route}, {op}: nothing refused: {statuses:?}"
        );
        assert_eq!(s.errors(route, op), 1.0, "/{route}: {op} failed once");
        let disk_errors = s.disk_errors(route);
        assert_eq!(disk_errors, refused as f64, "/{route}, {op}: {statuses:?}");
        println!("/{route}, {op}: a group of {refused} refused, {accepted} accepted");
        recovers_and_delivers_only_what_was_accepted(&mut s, &[route], SMALL);
    }
}
