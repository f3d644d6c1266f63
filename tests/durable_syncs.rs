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
        assert_eq!(syncs, n as f64, "syncs for {n} events answered 202");
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
    // The last write is synced within the period: then the count holds still.
    let settled = settled_syncs(&s, "period");
    let busy = settled - before;
    let periods = elapsed.as_secs_f64() / 0.020;
    println!("{posted} events in {elapsed:?}: {busy} syncs ({periods:.0} periods of 20ms)");
    assert!(posted >= 100, "too few events to tell a period: {posted}");
    // At most one per period (not one per write), and not much fewer (not a longer period).
    assert!(
        busy <= periods + 2.0 && busy >= periods * 0.4,
        "{busy} syncs in {elapsed:?}"
    );
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

/// The route's sync count once it has held still for 5 periods of 20ms; panics after 5 s.
fn settled_syncs(s: &Setup, route: &str) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = (s.syncs(route), Instant::now());
    loop {
        std::thread::sleep(Duration::from_millis(10));
        let now = s.syncs(route);
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() >= Duration::from_millis(100) {
            return now;
        }
        assert!(Instant::now() < deadline, "the sync count never held still");
    }
}

#[test]
fn fsync_never_does_not_sync() {
    let mut s = Setup::start("fsync-never", &[]);
    s.post_accepted("never", 50, SMALL);
    s.wait_delivered();
    assert_eq!(s.syncs("never"), 0.0);
    assert_eq!(s.syncs("always"), 0.0, "another route's syncs are its own");
}
