//! A durable route's log over several segment files (1 MiB each: `disk_buffer` 8MiB / 8), read
//! by two lanes at different speeds: segments roll, the fast lane's progress deletes nothing
//! the slow lane still needs, every segment both lanes have passed is deleted (all but the
//! last), and every event reaches both targets with nothing lost at a segment's edges. Then a
//! record damaged in a segment that is not the last: after a SIGKILL and a restart that one
//! record is skipped (counted once, logged as an ERROR with its position) and every other
//! record before and after it is delivered; `fanout log verify` reports it and exits 1.

mod common;
#[path = "durable/faults_support.rs"]
mod support;

use common::segments;
use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};
use support::{verify, Setup, DELIVERY};

/// About 100 events fill a segment.
const EVENT: usize = 10_000;
/// Events enough for three full segments and part of a fourth.
const EVENTS: usize = 330;

/// The event id (a UUID, hyphenated as fanout answers it) of the record at `offset`.
fn record_id(bytes: &[u8], offset: usize) -> String {
    let hex: String = bytes[offset + 8..offset + 24]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// Polls until `route` has exactly `n` segment files; panics with what it has after the wait.
fn wait_segments(dir: &Path, route: &str, n: usize) {
    let deadline = Instant::now() + DELIVERY;
    while segments::files(dir, route).len() != n {
        let now = segments::files(dir, route);
        assert!(
            Instant::now() < deadline,
            "{} segments, not {n}: {now:?}",
            now.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn segments_roll_and_are_deleted_once_both_lanes_have_passed_them() {
    let started = Instant::now();
    let mut s = Setup::start_down("segments-lanes");
    s.a.up();
    s.post_accepted("segments", EVENTS, EVENT);
    let written = s.segments("segments");
    assert_eq!(written.len(), 4, "{written:?}");
    // The fast lane has everything; the slow lane (its target down) has nothing.
    let deadline = Instant::now() + DELIVERY;
    while s.missing(&s.a) > 0 {
        assert!(Instant::now() < deadline, "a misses {}", s.missing(&s.a));
        std::thread::sleep(Duration::from_millis(20));
    }
    // Several housekeeping turns (every 100ms) with the fast lane past three segments.
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            s.segments("segments"),
            written,
            "deleted what b still needs"
        );
    }
    // The slow lane catches up while events keep coming.
    s.b.up();
    s.post_accepted("segments", 110, EVENT);
    s.wait_delivered();
    wait_segments(&s.dir, "segments", 1);
    let last = s.segments("segments")[0].0;
    assert!(last > written[3].0, "the last segment is a new one: {last}");
    let ids: HashSet<String> = s.accepted.iter().map(|e| e.id.clone()).collect();
    for (name, target) in [("a", &s.a), ("b", &s.b)] {
        let got: HashSet<String> = target.received().into_iter().map(|d| d.id).collect();
        assert_eq!(
            got, ids,
            "{name}: the ids received are not the ids accepted"
        );
    }
    println!(
        "{} events over 5 segments in {:?}",
        ids.len(),
        started.elapsed()
    );
}

#[test]
fn a_damaged_record_in_a_middle_segment_is_skipped_and_every_other_one_delivered() {
    let mut s = Setup::start_down("segments-damage");
    s.post_accepted("segments", EVENTS, EVENT);
    s.fanout.kill_hard();
    let files = s.segments("segments");
    assert_eq!(files.len(), 4, "{files:?}");
    let (base, path) = files[1].clone();
    let mut bytes = std::fs::read(&path).expect("read the segment");
    let within = common::segments::records(&bytes);
    assert!(within.len() > 90, "{} records in the segment", within.len());
    let (offset, size) = within[50];
    let damaged = record_id(&bytes, offset);
    assert!(
        s.accepted.iter().any(|e| e.id == damaged),
        "{damaged} is no event"
    );
    bytes[offset + size - 2] ^= 0x01;
    std::fs::write(&path, &bytes).expect("damage the segment");
    let position = base + offset as u64;

    let (code, out) = verify(&s.dir);
    assert_eq!(code, Some(1), "log verify: {out}");
    let found = format!("corrupt: segment {base} from offset {offset} (position {position}): ");
    assert!(out.contains(&found), "{out}");
    assert!(out.contains("4 segments,"), "{out}");
    let pending = format!("pending={} ", EVENTS - 1);
    assert!(out.contains(&format!("target a: {pending}")), "{out}");
    assert!(out.contains(&format!("target b: {pending}")), "{out}");

    s.a.up();
    s.b.up();
    s.kill_and_restart();
    let message =
        "log: corrupt records skipped (they are not delivered; the records after them are)";
    let lines = s.lines(message, &[("route", "segments")]);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["level"], "ERROR");
    assert_eq!(lines[0]["fields"]["position"], position, "{lines:?}");
    assert_eq!(lines[0]["fields"]["bytes"], size as u64, "{lines:?}");
    let corrupt = [("route", "segments")];
    assert_eq!(s.metric("fanout_log_corrupt_records_total", &corrupt), 1.0);
    // Every other event, then one after the restart; the damaged one cannot come.
    let lost = s
        .accepted
        .iter()
        .position(|e| e.id == damaged)
        .expect("posted");
    let gone = s.accepted.remove(lost);
    s.post_accepted("segments", 1, EVENT);
    s.wait_delivered();
    assert_eq!(s.a.count_id(&gone.id) + s.b.count_id(&gone.id), 0);
    assert!(s.a.received().iter().all(|d| d.body != gone.body));
    assert_eq!(s.metric("fanout_log_corrupt_records_total", &corrupt), 1.0);
    // The lanes are past the damaged segment: it is deleted, with the others before the last.
    wait_segments(&s.dir, "segments", 1);
    assert!(s.fanout.terminate().success());
    let (code, out) = verify(&s.dir);
    assert_eq!(
        code,
        Some(0),
        "log verify after the lanes passed the damage: {out}"
    );
}
