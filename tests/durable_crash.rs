//! The durable route `/orders` of the shipped `fanout` binary survives its process dying, with
//! real processes (the crash loop is `durable_crash_loop.rs`): SIGTERM leaves what was not delivered on disk for the next start;
//! a torn tail of the last segment is cut (and logged) and every record before it delivered, a
//! damaged record is skipped (logged, counted) and every other one delivered, `fanout log
//! verify` telling the two apart; an
//! `Idempotency-Key` is remembered across a SIGKILL; and a target that flaps every second, next
//! to one that never answers, still gets every event while fanout's memory stays bounded and
//! the memory route `/demo` keeps serving. The targets are python3 `http.server` processes,
//! killed and restarted on the same port. A process that handed its data directory over writes
//! no dead letter there for what its successor delivered.

mod common;

use common::blocking::{log_verify, metric_blocking};
use common::process::{
    accepted_id, http_post, Delivered, Fanout, Hanging, PyTarget, StopOnDrop, FANOUT,
};
use common::{scratch_dir, segments, Reply, Target};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const SECONDS_20: Duration = Duration::from_secs(20);

/// fanout on `dir`, its `warehouse` target at `a`, `billing` at `b`.
fn start(dir: &Path, a: SocketAddr, b: SocketAddr, extra: &[&str]) -> Fanout {
    let dir = dir.display().to_string();
    let args = [&["--data-dir", dir.as_str()], extra].concat();
    let (a, b) = (a.to_string(), b.to_string());
    Fanout::start_with(FANOUT, &args, &[("RECEIVER_A", &a), ("RECEIVER_B", &b)])
}

/// POSTs `body` to `/orders`; the id if the answer was 202.
fn order(addr: SocketAddr, body: &str, headers: &[(&str, &str)]) -> Option<String> {
    accepted_id(&http_post(addr, "/orders", body, headers))
}

/// POSTs `{"n": 0}` ... to `/orders`, each answered 202; their ids.
fn orders(fanout: &Fanout, n: usize) -> Vec<String> {
    let post = |n| order(fanout.addr, &format!("{{\"n\":{n}}}"), &[]).expect("202");
    (0..n).map(post).collect()
}

/// Ids (of `/orders` deliveries) a target received, with how often.
fn counts(received: &[Delivered]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for d in received.iter().filter(|d| d.path == "/orders") {
        *counts.entry(d.id.clone()).or_insert(0) += 1;
    }
    counts
}

/// How many of `ids` `target` has not received.
fn missing(target: &PyTarget, ids: &[String]) -> usize {
    let got = counts(&target.received());
    ids.iter().filter(|id| !got.contains_key(*id)).count()
}

/// Polls until both targets have every one of `ids`; panics after `patience`.
fn wait_delivered(ids: &[String], a: &PyTarget, b: &PyTarget, patience: Duration) {
    let deadline = Instant::now() + patience;
    while missing(a, ids) + missing(b, ids) > 0 {
        assert!(
            Instant::now() < deadline,
            "of {} ids, warehouse misses {}, billing {}",
            ids.len(),
            missing(a, ids),
            missing(b, ids)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The log lines of `fanout` with this message.
fn messages(fanout: &Fanout, message: &str) -> Vec<serde_json::Value> {
    let mut lines = fanout.log_messages();
    lines.retain(|e| e["fields"]["message"] == message);
    lines
}

#[test]
fn graceful_shutdown_keeps_undelivered_events_on_disk() {
    let dir = scratch_dir("graceful");
    let (a, b) = (PyTarget::new(), PyTarget::new());
    let mut fanout = start(&dir, a.addr(), b.addr(), &["--drain-timeout", "2s"]);
    let ids = orders(&fanout, 50);
    let status = fanout.terminate();
    assert!(status.success(), "exit on SIGTERM: {status:?}");
    let stopped = "durable lane stopped: what it holds stays in its log";
    let stopped = messages(&fanout, stopped);
    let lanes: HashSet<&str> = stopped
        .iter()
        .filter(|e| e["fields"]["route"] == "orders")
        .filter_map(|e| e["fields"]["target"].as_str())
        .collect();
    let both = HashSet::from(["warehouse", "billing"]);
    assert_eq!(lanes, both, "{stopped:?}");
    assert_eq!(messages(&fanout, "data directory released").len(), 1);
    a.up();
    b.up();
    let _fanout = start(&dir, a.addr(), b.addr(), &[]);
    wait_delivered(&ids, &a, &b, SECONDS_20);
}

/// A process that has released its data directory on SIGTERM leaves it alone: the events its
/// durable lanes were still trying belong to the successor, which delivers them.
#[test]
fn a_process_that_handed_over_writes_no_dead_letters_for_what_its_successor_delivered() {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime for the busy target");
    let busy = runtime.block_on(Target::start(Reply::StatusRetryAfter(503, 2)));
    let dir = scratch_dir("hand-over");
    let (a, b) = (PyTarget::started(), PyTarget::started());
    let mut old = start(&dir, busy.addr, busy.addr, &[]);
    let id = order(old.addr, "{\"order\":1}", &[]).expect("202");
    let deadline = Instant::now() + SECONDS_20;
    while busy.count() < 2 {
        assert!(Instant::now() < deadline, "both lanes try the busy target");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = old.child.id().to_string();
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    assert!(term.expect("run kill").success());
    let _new = start(&dir, a.addr(), b.addr(), &[]);
    wait_delivered(std::slice::from_ref(&id), &a, &b, SECONDS_20);
    while old.child.try_wait().expect("wait for fanout").is_none() {
        assert!(Instant::now() < deadline, "the old fanout exits");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(messages(&old, "data directory released").len(), 1);
    for target in ["warehouse", "billing"] {
        let path = dir.join(format!("dead-letters/orders/{target}.ndjson"));
        // No file is no dead letter; a file that cannot be read is not "none".
        let letters = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => panic!("read {}: {e}", path.display()),
        };
        assert!(
            !letters.contains(&id),
            "{target}: a delivered event dead-lettered: {letters}"
        );
    }
}

enum Damage {
    /// 37 bytes of a half record appended: a credible length (60), then junk.
    Garbage,
    /// The last record cut short by 5 bytes.
    Truncated,
    /// A byte of the 11th record's body flipped: damage, not a torn write; the records after
    /// it are found again.
    Flipped,
}

/// 20 events logged while the targets are down, SIGKILL, the segment damaged; a restart with
/// live targets cuts a torn tail (one WARN) or skips a damaged record (one ERROR, counted) and
/// delivers every other record.
fn damaged_segment(damage: Damage) {
    let dir = scratch_dir("torn");
    let (a, b) = (PyTarget::new(), PyTarget::new());
    let mut fanout = start(&dir, a.addr(), b.addr(), &[]);
    let ids = orders(&fanout, 20);
    fanout.kill_hard();
    let (_, last) = segments::files(&dir, "orders").pop().expect("a segment");
    let mut bytes = std::fs::read(&last).expect("read the segment");
    let whole = segments::records(&bytes);
    assert_eq!(whole.len(), 20, "the segment holds the 20 records");
    let (damaged_at, damaged_bytes, lost) = match damage {
        Damage::Garbage => {
            let at = bytes.len();
            bytes.extend_from_slice(&60u32.to_le_bytes());
            bytes.extend_from_slice(&[0xA5; 33]);
            (at, 37, None)
        }
        Damage::Truncated => {
            let (at, size) = whole[19];
            bytes.truncate(at + size - 5);
            (at, size - 5, Some(19))
        }
        Damage::Flipped => {
            let (at, size) = whole[10];
            bytes[at + size - 2] ^= 0x01;
            (at, size, Some(10))
        }
    };
    std::fs::write(&last, &bytes).expect("damage the segment");
    // `log verify` tells a torn write at the very end (never acknowledged) from damage.
    let torn = !matches!(damage, Damage::Flipped);
    let (code, out) = log_verify(Path::new(FANOUT), &dir);
    assert_eq!(code, Some(if torn { 0 } else { 1 }), "log verify: {out}");
    let what = if torn { "torn tail" } else { "corrupt" };
    let found = format!("{what}: segment 0 from offset {damaged_at}");
    assert!(out.contains(&found), "{out}");
    assert!(out.contains(&format!(": {damaged_bytes} bytes ")), "{out}");
    assert!(out.contains("format version 1,"), "{out}");
    a.up();
    b.up();
    let mut fanout = start(&dir, a.addr(), b.addr(), &[]);
    let message = if torn {
        "log: cut a torn tail (a write that never finished, never acknowledged)"
    } else {
        "log: corrupt records skipped (they are not delivered; the records after them are)"
    };
    let logged = messages(&fanout, message);
    assert_eq!(logged.len(), 1, "one line about the damage: {logged:?}");
    let fields = &logged[0]["fields"];
    assert_eq!(logged[0]["level"], if torn { "WARN" } else { "ERROR" });
    assert_eq!(fields["route"], "orders");
    assert_eq!(fields["offset"], damaged_at as u64, "{fields}");
    assert_eq!(fields["bytes"], damaged_bytes as u64, "{fields}");
    let kept: Vec<String> = (0..20)
        .filter(|&n| Some(n) != lost)
        .map(|n| ids[n].clone())
        .collect();
    let recovered = messages(&fanout, "log recovered");
    assert_eq!(recovered[0]["fields"]["records"], kept.len() as u64);
    let corrupt = metric_blocking(
        fanout.addr,
        "fanout_log_corrupt_records_total",
        &[("route", "orders")],
    );
    assert_eq!(corrupt, if torn { 0.0 } else { 1.0 });
    // Appending goes on after the cut.
    let after = orders(&fanout, 1);
    wait_delivered(&[&kept[..], &after].concat(), &a, &b, SECONDS_20);
    // What was damaged cannot come: it is not in the log.
    if let Some(lost) = lost {
        assert_eq!(
            missing(&a, &ids[lost..=lost]) + missing(&b, &ids[lost..=lost]),
            2
        );
    }
    assert!(fanout.terminate().success());
    let (code, out) = log_verify(Path::new(FANOUT), &dir);
    for target in ["warehouse", "billing"] {
        let delivered = format!("target {target}: pending=0 ");
        assert!(out.contains(&delivered), "{out}");
    }
    // A hole stays in its segment, reported, until every lane is past the segment.
    assert_eq!(
        code,
        Some(if torn { 0 } else { 1 }),
        "log verify after the restart: {out}"
    );
    assert_eq!(out.contains("corrupt"), !torn, "{out}");
}

#[test]
fn torn_tail_is_cut_and_everything_before_it_delivered() {
    damaged_segment(Damage::Garbage);
}

#[test]
fn truncated_last_record_is_cut_and_the_ones_before_it_delivered() {
    damaged_segment(Damage::Truncated);
}

#[test]
fn damaged_record_is_skipped_and_every_other_one_delivered() {
    damaged_segment(Damage::Flipped);
}

#[test]
fn idempotency_key_survives_a_restart() {
    let dir = scratch_dir("idempotency");
    let (a, b) = (PyTarget::new(), PyTarget::new());
    let mut fanout = start(&dir, a.addr(), b.addr(), &[]);
    let key = [("Idempotency-Key", "k1")];
    let post = |fanout: &Fanout| order(fanout.addr, "{\"order\":\"k1\"}", &key).expect("202");
    let first = post(&fanout);
    assert_eq!(post(&fanout), first, "a repeat within the process");
    fanout.kill_hard();
    a.up();
    b.up();
    let fanout = start(&dir, a.addr(), b.addr(), &[]);
    assert_eq!(post(&fanout), first, "a repeat after a restart");
    wait_delivered(std::slice::from_ref(&first), &a, &b, SECONDS_20);
    assert_eq!(post(&fanout), first, "a repeat after the delivery");
    // A later event on the same lanes: once it has arrived, a second copy of the first would
    // have had its chance too.
    let follower = order(fanout.addr, "{\"order\":\"follower\"}", &[]).expect("202");
    assert_ne!(follower, first);
    wait_delivered(&[follower], &a, &b, SECONDS_20);
    std::thread::sleep(Duration::from_millis(300));
    for (name, target) in [("warehouse", &a), ("billing", &b)] {
        assert_eq!(target.count_id(&first), 1, "{name} got it once");
    }
}

/// How long the flapping target flaps before it stays up. Not for the whole wait: the lane's
/// breaker doubles its cool-down (1s, 2s, 4s, 8s, 16s) after every failed probe, multiples of
/// the 2s flap period, so once a probe lands in a down second the later ones tend to as well
/// and a target that is up half the time can be left alone for 30s at a stretch.
const FLAPPING: Duration = Duration::from_secs(12);

/// Takes `target` down and up again every second until [`FLAPPING`] after `started`; returns
/// the flaps and when the last ended (the target stays up).
fn flap(target: &PyTarget, started: Instant, stop: &AtomicBool) -> (u32, Instant) {
    let mut flaps = 0;
    while started.elapsed() < FLAPPING && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_secs(1));
        target.down();
        std::thread::sleep(Duration::from_secs(1));
        target.up();
        flaps += 1;
    }
    (flaps, Instant::now())
}

/// When the warehouse lane's circuit opened (with its cool-down) and closed.
fn circuit(fanout: &Fanout) -> Vec<String> {
    let lines = fanout.log_messages();
    let lane = lines
        .iter()
        .filter(|e| e["fields"]["target"] == "warehouse");
    lane.filter_map(|e| match e["fields"]["message"].as_str()? {
        "circuit open: pausing deliveries" => Some(format!("open {}", e["fields"]["cooldown"])),
        "circuit closed: target answers again" => Some("closed".to_owned()),
        _ => None,
    })
    .collect()
}

#[test]
fn flapping_and_hanging_targets_lose_nothing() {
    let started = Instant::now();
    let dir = scratch_dir("flapping");
    let a = PyTarget::started();
    let b = Hanging::start();
    let fanout = start(&dir, a.addr(), b.addr, &[]);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        let flapper = s.spawn(|| flap(&a, started, &stop));
        let (mut max_rss, mut demo_posts, mut last_look) = (0, 0, Instant::now());
        // Every 700ms: fanout's VmRSS, and a POST to the memory route (under the 100 events its
        // `receiver_b` lane, stuck on the hanging target, holds before it refuses).
        let mut look = |max_rss: &mut u64| {
            if last_look.elapsed() >= Duration::from_millis(700) {
                last_look = Instant::now();
                *max_rss = (*max_rss).max(fanout.rss_kib().expect("fanout's VmRSS"));
                let demo = http_post(fanout.addr, "/demo", "{\"demo\":true}", &[]);
                let status = demo.as_ref().ok().map(|r| r.0);
                assert_eq!(status, Some(202), "/demo: {demo:?}");
                demo_posts += 1;
            }
        };
        let mut ids = Vec::new();
        for n in 0..200 {
            ids.push(order(fanout.addr, &format!("{{\"n\":{n}}}"), &[]).expect("202"));
            std::thread::sleep(Duration::from_millis(20));
            look(&mut max_rss);
        }
        let posted = started.elapsed();
        while missing(&a, &ids) > 0 {
            assert!(
                started.elapsed() < Duration::from_secs(40),
                "warehouse misses {} of 200 events after 40s; dead letters: {:?}; breaker: {:?}",
                missing(&a, &ids),
                std::fs::read_to_string(dir.join("dead-letters/orders/warehouse.ndjson")),
                circuit(&fanout)
            );
            look(&mut max_rss);
            std::thread::sleep(Duration::from_millis(50));
        }
        let all_there = Instant::now();
        stop.store(true, Ordering::Relaxed);
        let (flaps, steady) = flapper.join().expect("the flapping thread");
        let duplicates: usize = counts(&a.received()).values().map(|n| n - 1).sum();
        let (total, calm) = (
            started.elapsed(),
            all_there.saturating_duration_since(steady),
        );
        println!(
            "200 posted in {posted:?}; all at warehouse after {total:?} ({calm:?} after the last \
             of {flaps} flaps; {duplicates} duplicates); breaker: {:?}; max VmRSS {max_rss} KiB; \
             {demo_posts} /demo posts answered 202",
            circuit(&fanout)
        );
        assert!(max_rss > 0 && max_rss < 200 * 1024, "VmRSS {max_rss} KiB");
    });
}
