//! What each `fsync` setting of a durable route does, read from `fanout_log_syncs_total` of a
//! running binary: `always` syncs for every 202 of a client posting one request at a time
//! (sequential requests cannot share a group); `20ms` syncs about once per period while events
//! come, and not at all while none do; `never` does not sync.

mod common;
#[path = "durable/faults_support.rs"]
mod support;

use std::time::{Duration, Instant};
use support::Setup;

const SMALL: usize = 100;

#[test]
fn fsync_always_syncs_once_for_every_sequential_request() {
    let mut s = Setup::start("fsync-always", &[]);
    let before = s.syncs("always");
    for n in 1..=20 {
        s.post_accepted("always", 1, SMALL);
        let syncs = s.syncs("always") - before;
        assert!(
            syncs >= n as f64,
            "{syncs} syncs for {n} events answered 202"
        );
    }
    s.wait_delivered();
}

#[test]
fn fsync_with_a_period_syncs_once_per_period_while_busy_and_never_while_idle() {
    let mut s = Setup::start("fsync-period", &[]);
    let before = s.syncs("period");
    let started = Instant::now();
    let mut posted = 0;
    while started.elapsed() < Duration::from_secs(1) {
        s.post_accepted("period", 1, SMALL);
        posted += 1;
    }
    let elapsed = started.elapsed();
    // The last write is synced within the period.
    std::thread::sleep(Duration::from_millis(100));
    let busy = s.syncs("period") - before;
    println!("{posted} events in {elapsed:?}: {busy} syncs (one per 20ms would be 50)");
    assert!(posted >= 100, "too few events to tell a period: {posted}");
    assert!((10.0..=80.0).contains(&busy), "{busy} syncs in {elapsed:?}");
    let idle = s.syncs("period");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s.syncs("period"), idle, "syncs while nothing was written");
    s.wait_delivered();
    assert_eq!(
        s.syncs("period"),
        idle,
        "deliveries and saved positions are no log syncs"
    );
}

#[test]
fn fsync_never_does_not_sync() {
    let mut s = Setup::start("fsync-never", &[]);
    s.post_accepted("never", 50, SMALL);
    s.wait_delivered();
    assert_eq!(s.syncs("never"), 0.0);
    assert_eq!(s.syncs("always"), 0.0, "another route's syncs are its own");
}
