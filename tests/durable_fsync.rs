//! What each `fsync` policy of a durable route promises, seen in the syscalls of the `fanout`
//! binary (built with `tests/durable/policies.rs`) run under `strace`: with `always` every 202
//! is written to its client only after an `fdatasync` of the segment that returned after the
//! write of that event's record (alone or in a group commit); with a period of 200ms the log
//! is synced about every 200ms while events arrive, 202s do not wait for it, and once they stop
//! one last sync covers the last write and no other follows; with `never` a running fanout
//! never syncs a segment. Every acknowledged event is delivered. Skipped without strace unless
//! `CI` is `true`.

mod common;
#[path = "durable/policies.rs"]
mod policies;

use common::blocking::http_once;
use common::process::PyTarget;
use common::strace::{answer_with, available, Call, Traced};
use common::{scratch_dir, PATIENCE};
use std::time::{Duration, Instant};

/// fanout under strace, its routes' targets at `target`.
fn traced(target: &PyTarget) -> Traced {
    let dir = scratch_dir("fsync").display().to_string();
    let target = target.addr().to_string();
    let env = [("TARGET", target.as_str())];
    Traced::start(policies::binary(), &["--data-dir", &dir], &env, &[])
}

/// POSTs `marker` (text/plain) to `path`; its id.
fn post(traced: &Traced, path: &str, marker: &str) -> String {
    let headers = [("content-type", "text/plain")];
    let answer = http_once(traced.addr, "POST", path, &headers, marker.as_bytes());
    answer.expect("fanout answers").id()
}

/// A body no other event's body contains, so its record can be found in a segment write.
fn marker(client: usize, n: usize) -> String {
    format!("[event.{client:02}.{n:04}]")
}

/// The write of the record whose body is `marker` to a segment of `route`.
fn record_write<'a>(calls: &'a [Call], route: &str, marker: &str) -> &'a Call {
    calls
        .iter()
        .find(|c| c.is_write() && c.on_segment_of(route) && c.args.contains(marker))
        .unwrap_or_else(|| panic!("no write of {marker} to a segment of {route}"))
}

/// Waits until the trace shows the 202 of every id in `sent`; the calls then.
fn calls_with_answers(traced: &Traced, sent: &[(String, String)]) -> Vec<Call> {
    let all_answered = |calls: &[Call]| {
        sent.iter()
            .all(|(_, id)| answer_with(calls, traced.addr, id).is_some())
    };
    traced.wait_for("every 202", PATIENCE, all_answered);
    traced.calls()
}

/// Waits until `target` got every id of `sent`.
fn wait_delivered(target: &PyTarget, sent: &[(String, String)]) {
    let deadline = Instant::now() + PATIENCE;
    while let Some((_, id)) = sent.iter().find(|(_, id)| target.count_id(id) == 0) {
        assert!(
            Instant::now() < deadline,
            "{id} was acknowledged and not delivered"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn with_fsync_always_every_202_follows_an_fdatasync_of_its_write() {
    if !available() {
        return;
    }
    let target = PyTarget::started();
    let fanout = traced(&target);
    // One at a time, then four clients at once (their records may share a write and a sync).
    let mut sent: Vec<(String, String)> = (0..8)
        .map(|n| (marker(0, n), post(&fanout, "/always", &marker(0, n))))
        .collect();
    std::thread::scope(|s| {
        let clients: Vec<_> = (1..=4)
            .map(|c| {
                let fanout = &fanout;
                s.spawn(move || {
                    let post = |n| (marker(c, n), post(fanout, "/always", &marker(c, n)));
                    (0..6).map(post).collect::<Vec<_>>()
                })
            })
            .collect();
        for client in clients {
            sent.extend(client.join().expect("a client thread"));
        }
    });
    let calls = calls_with_answers(&fanout, &sent);
    for (marker, id) in &sent {
        let answer = answer_with(&calls, fanout.addr, id).expect("its 202");
        let write = record_write(&calls, "always", marker);
        assert!(
            write.done < answer.start,
            "{marker}: the 202 before the write"
        );
        let sync = calls
            .iter()
            .find(|c| c.name == "fdatasync" && c.fd() == write.fd() && c.start > write.done);
        let sync = sync.unwrap_or_else(|| panic!("{marker}: no fdatasync after its write"));
        assert!(
            sync.done < answer.start,
            "{marker} ({id}): its 202 was sent before the fdatasync after its write returned: \
             write {write:?}, sync {sync:?}, 202 {answer:?}"
        );
    }
    let writes = calls
        .iter()
        .filter(|c| c.is_write() && c.on_segment_of("always"));
    let syncs = calls
        .iter()
        .filter(|c| c.is_sync() && c.on_segment_of("always"));
    println!(
        "{} events, {} writes, {} syncs",
        sent.len(),
        writes.count(),
        syncs.count()
    );
    wait_delivered(&target, &sent);
}

#[test]
fn with_a_period_the_log_is_synced_every_period_while_events_arrive_and_not_when_idle() {
    if !available() {
        return;
    }
    let target = PyTarget::started();
    let fanout = traced(&target);
    let posting = Instant::now();
    let mut sent = Vec::new();
    while posting.elapsed() < Duration::from_millis(2500) {
        let body = marker(0, sent.len());
        sent.push((body.clone(), post(&fanout, "/periodic", &body)));
    }
    let calls = calls_with_answers(&fanout, &sent);
    let writes: Vec<&Call> = calls
        .iter()
        .filter(|c| c.is_write() && c.on_segment_of("periodic"))
        .collect();
    let (first, last) = (writes[0], writes[writes.len() - 1]);
    // Idle: one sync covers the last write within the period, and no other comes.
    let last_done = last.done;
    let synced_after_last = |calls: &[Call]| {
        calls
            .iter()
            .any(|c| c.is_sync() && c.on_segment_of("periodic") && c.start > last_done)
    };
    fanout.wait_for("a sync after the last write", PATIENCE, synced_after_last);
    std::thread::sleep(Duration::from_millis(1200)); // the idle time observed
    let calls = fanout.calls();
    let syncs: Vec<&Call> = calls
        .iter()
        .filter(|c| c.is_sync() && c.on_segment_of("periodic"))
        .collect();
    let after: Vec<&&Call> = syncs.iter().filter(|c| c.start > last.done).collect();
    assert_eq!(
        after.len(),
        1,
        "idle, the log is synced once, then never: {after:?}"
    );
    let late = after[0].at - last.at;
    assert!(
        late <= policies::PERIOD + 0.3,
        "the last write synced {late:.3}s later"
    );
    // While posting: about one sync per period, never two within less than a period.
    let window = last.at - first.at;
    let during = syncs
        .iter()
        .filter(|c| c.at >= first.at && c.at <= last.at)
        .count();
    let expected = window / policies::PERIOD;
    println!(
        "{} events in {window:.2}s: {during} syncs (a period is {}s)",
        sent.len(),
        policies::PERIOD
    );
    assert!(
        during as f64 >= expected * 0.7 && during as f64 <= expected + 1.0,
        "{during} syncs in {window:.2}s of writes, {expected:.1} periods"
    );
    for pair in syncs.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= policies::PERIOD * 0.9, "two syncs {gap:.3}s apart");
    }
    // The 202 follows the write, not the sync: most are sent before the next sync.
    let early = sent
        .iter()
        .filter(|(marker, id)| {
            let write = record_write(&calls, "periodic", marker);
            let answer = answer_with(&calls, fanout.addr, id).expect("its 202");
            !syncs
                .iter()
                .any(|s| s.start > write.done && s.done < answer.start)
        })
        .count();
    assert!(
        early * 2 > sent.len(),
        "{early} of {} 202s before a sync",
        sent.len()
    );
    wait_delivered(&target, &sent);
}

#[test]
fn with_fsync_never_a_running_fanout_never_syncs_a_segment() {
    if !available() {
        return;
    }
    let target = PyTarget::started();
    let fanout = traced(&target);
    let sent: Vec<(String, String)> = (0..20)
        .map(|n| (marker(0, n), post(&fanout, "/never", &marker(0, n))))
        .collect();
    wait_delivered(&target, &sent);
    // The same trace shows the syncs of a route that makes them.
    let always = vec![(marker(1, 0), post(&fanout, "/always", &marker(1, 0)))];
    wait_delivered(&target, &always);
    std::thread::sleep(Duration::from_millis(500)); // idle time in which no sync may come
    let calls = fanout.calls();
    for (marker, _) in &sent {
        record_write(&calls, "never", marker);
    }
    let synced: Vec<&Call> = calls
        .iter()
        .filter(|c| c.is_sync() && c.on_segment_of("never"))
        .collect();
    assert!(synced.is_empty(), "fsync: never synced: {synced:?}");
    let write = record_write(&calls, "always", &always[0].0);
    assert!(
        calls
            .iter()
            .any(|c| c.name == "fdatasync" && c.fd() == write.fd() && c.start > write.done),
        "the trace shows route always's sync"
    );
}
