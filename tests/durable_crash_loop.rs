//! A durable route under a crash loop, with real processes: fanout SIGKILLed 20 times (or
//! `FANOUT_SOAK_KILLS`: `benches/soak.sh`) at random moments (50 ms to 1 s apart) while 8 keep-alive clients post, one python target steady and
//! one flapping, and segments small enough to roll and be deleted inside the loop. Every event
//! answered 202 reaches every target with its body byte for byte, `fanout log verify` is clean
//! after every kill, and what a crash delivers again is bounded as the README promises: what
//! was in flight at the lane's last saved position, and what was delivered since that save
//! (saved every 100 ms). And one event that keeps failing does not make a crash deliver again
//! everything after it.

mod common;

use common::blocking::{log_verify, read_answer, wait_metric, write_request};
use common::process::{Delivered, Fanout, PyTarget, StopOnDrop};
use common::{scratch_dir, segments, Reply, Target, PATIENCE};
use std::collections::HashMap;
use std::io::BufReader;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Deliveries a lane has in flight at most: its `concurrency`.
const CONCURRENCY: usize = 16;

const ROUTES: &str = r#"# Written by tests/durable_crash_loop.rs, then built.
server:
  metrics_log_interval: 0s
defaults:
  concurrency: 16
  retry: { attempts: 1000, backoff: 10ms, max_backoff: 200ms }
  breaker: { failures: 5, cooldown: 50ms, max_cooldown: 400ms }
routes:
  - name: orders
    path: /orders
    storage: disk
    fsync: always
    max_body: 16KiB
    disk_buffer: 8MiB          # 1 MiB segments: several roll and are deleted in the loop
    targets:
      - { name: steady, url: "http://${LOOP_STEADY}/orders" }
      - { name: flaky, url: "http://${LOOP_FLAKY}/orders", timeout: 60s }
"#;

fn binary() -> &'static Path {
    static BUILT: OnceLock<Result<(PathBuf, PathBuf), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| common::built::fanout_with("crash-loop", ROUTES, &[]));
    &built.as_ref().unwrap_or_else(|e| panic!("{e}")).0
}

fn start(dir: &Path, steady: SocketAddr, flaky: SocketAddr) -> Fanout {
    let binary = binary().to_str().expect("a UTF-8 path");
    let dir = dir.display().to_string();
    let (steady, flaky) = (steady.to_string(), flaky.to_string());
    let env = [
        ("LOOP_STEADY", steady.as_str()),
        ("LOOP_FLAKY", flaky.as_str()),
    ];
    Fanout::start_with(binary, &["--data-dir", &dir], &env)
}

/// What the clients share: where fanout is now, the next event's number, and the body of
/// every event answered 202, by id.
#[derive(Default)]
struct Clients {
    current: Mutex<Option<SocketAddr>>,
    next: AtomicU64,
    accepted: Mutex<HashMap<String, String>>,
    refused: AtomicU64,
}

/// Posts distinct events on one keep-alive connection (a new one after each failure) until
/// stopped.
fn client(shared: &Clients, stop: &AtomicBool) {
    let mut connection: Option<(SocketAddr, TcpStream, BufReader<TcpStream>)> = None;
    let mut rng = fastrand::Rng::new();
    while !stop.load(Ordering::Relaxed) {
        let addr = shared.current.lock().unwrap().expect("an address");
        if connection.as_ref().is_some_and(|(at, _, _)| *at != addr) {
            connection = None;
        }
        let (_, stream, reader) = match &mut connection {
            Some(open) => open,
            None => match TcpStream::connect(addr) {
                Ok(stream) => {
                    let patience = Some(common::PATIENCE);
                    stream.set_read_timeout(patience).expect("a read timeout");
                    let reader = BufReader::new(stream.try_clone().expect("clone a socket"));
                    connection.insert((addr, stream, reader))
                }
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
            },
        };
        let n = shared.next.fetch_add(1, Ordering::Relaxed);
        let pad = "x".repeat(rng.usize(200..3000));
        let body = format!("{{\"order\":{n},\"pad\":\"{pad}\"}}");
        let headers = [("content-type", "application/json")];
        let answer = write_request(stream, "POST", "/orders", &headers, body.as_bytes())
            .and_then(|()| read_answer(reader));
        match answer {
            Ok(answer) if answer.status == 202 => {
                shared.accepted.lock().unwrap().insert(answer.id(), body);
            }
            Ok(answer) => {
                assert_eq!(answer.status, 503, "a durable route refuses only with 503");
                shared.refused.fetch_add(1, Ordering::Relaxed);
                // The disk budget is full while the flaky target is down: back off a little.
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => connection = None,
        }
    }
}

/// Takes `target` down and up again at random moments until stopped; it ends up.
fn flap(target: &PyTarget, stop: &AtomicBool) {
    let mut rng = fastrand::Rng::new();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(rng.u64(200..600)));
        target.down();
        std::thread::sleep(Duration::from_millis(rng.u64(200..600)));
        target.up();
    }
}

/// Per id, how many times `received` holds it.
fn counts(received: &[Delivered]) -> HashMap<&str, usize> {
    let mut counts = HashMap::new();
    for delivery in received {
        *counts.entry(delivery.id.as_str()).or_insert(0) += 1;
    }
    counts
}

/// How long before a kill the deliveries count toward what it may repeat: the 100 ms between
/// two saves of a lane's position, and the time a save takes, with room to spare.
const SAVE_WINDOW: Duration = Duration::from_millis(300);

#[test]
fn crash_loop_delivers_every_acknowledged_event_and_repeats_little() {
    let started = Instant::now();
    let dir = scratch_dir("crash-loop");
    let (steady, flaky) = (PyTarget::started(), PyTarget::started());
    let mut fanout = start(&dir, steady.addr(), flaky.addr());
    let shared = Clients::default();
    *shared.current.lock().unwrap() = Some(fanout.addr);
    let stop = AtomicBool::new(false);
    let seed = fastrand::u64(..);
    let mut rng = fastrand::Rng::with_seed(seed);
    // Per target, what the kills may repeat: in flight, plus delivered since the last save.
    let mut budget = [0usize; 2];
    let mut highest_base = 0;
    // 20 in CI; `benches/soak.sh` runs the same loop longer.
    let kills: u32 = match std::env::var("FANOUT_SOAK_KILLS") {
        Ok(kills) => kills
            .parse()
            .expect("FANOUT_SOAK_KILLS is a number of kills"),
        Err(_) => 20,
    };
    std::thread::scope(|s| {
        // A failed assertion in here stops the clients too, so the scope's join ends.
        let _stop = StopOnDrop(&stop);
        let clients: Vec<_> = (0..8).map(|_| s.spawn(|| client(&shared, &stop))).collect();
        let flapping = s.spawn(|| flap(&flaky, &stop));
        let mut restarted = [steady.received().len(), flaky.received().len()];
        for kill in 1..=kills {
            let interval = Duration::from_millis(rng.u64(50..=1000));
            let before = if interval > SAVE_WINDOW {
                std::thread::sleep(interval - SAVE_WINDOW);
                [steady.received().len(), flaky.received().len()]
            } else {
                restarted
            };
            std::thread::sleep(interval.min(SAVE_WINDOW));
            fanout.kill_hard();
            let after = [steady.received().len(), flaky.received().len()];
            for lane in 0..2 {
                budget[lane] += CONCURRENCY + after[lane] - before[lane];
            }
            let (code, out) = log_verify(binary(), &dir);
            assert_eq!(
                code,
                Some(0),
                "log verify after kill {kill} (seed {seed}): {out}"
            );
            assert!(!out.contains("corrupt"), "kill {kill}: {out}");
            highest_base = highest_base.max(
                segments::files(&dir, "orders")
                    .last()
                    .map_or(0, |(base, _)| *base),
            );
            fanout = start(&dir, steady.addr(), flaky.addr());
            *shared.current.lock().unwrap() = Some(fanout.addr);
            restarted = [steady.received().len(), flaky.received().len()];
        }
        stop.store(true, Ordering::Relaxed);
        for client in clients {
            client.join().expect("a client thread");
        }
        flapping.join().expect("the flapping thread");
    });
    let accepted = shared.accepted.lock().unwrap().clone();
    let n = accepted.len();
    assert!(n > 1000, "the clients got few events in: {n}");
    assert!(highest_base > 0, "segments rolled");
    let deadline = Instant::now() + Duration::from_secs(60) + Duration::from_secs(kills.into());
    for (name, target) in [("steady", &steady), ("flaky", &flaky)] {
        loop {
            let received = target.received();
            let got = counts(&received);
            let missing = accepted.keys().filter(|id| !got.contains_key(id.as_str()));
            let missing = missing.count();
            if missing == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "{name} misses {missing} of {n}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert!(fanout.terminate().success());
    let remaining: Vec<u64> = segments::files(&dir, "orders")
        .iter()
        .map(|(b, _)| *b)
        .collect();
    assert!(
        remaining.iter().min().is_some_and(|&first| first > 0),
        "finished segments were deleted: {remaining:?}"
    );
    for (lane, (name, target)) in [("steady", &steady), ("flaky", &flaky)].iter().enumerate() {
        let received = target.received();
        for delivery in received.iter().filter(|d| accepted.contains_key(&d.id)) {
            assert_eq!(
                delivery.body, accepted[&delivery.id],
                "{name}: {}",
                delivery.id
            );
        }
        let got = counts(&received);
        let duplicates: usize = got.values().map(|n| n - 1).sum();
        println!(
            "{name}: {} deliveries of {} ids ({n} answered 202), {duplicates} delivered again \
             (at most {} by the promise)",
            received.len(),
            got.len(),
            budget[lane]
        );
        assert!(
            duplicates <= budget[lane],
            "{name}: {duplicates} repeats, more than the {} promised (seed {seed})",
            budget[lane]
        );
    }
    println!(
        "{kills} SIGKILLs, {n} events answered 202, {} refused with 503, in {:?} (seed {seed})",
        shared.refused.load(Ordering::Relaxed),
        started.elapsed()
    );
}

/// One event a target keeps failing (held unanswered), the 40 after it delivered: a crash
/// then delivers that one again, not the 40.
#[test]
fn a_crash_repeats_what_was_unfinished_not_what_came_after() {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime for the gated target");
    // The first request waits at the gate, which never opens; the others are answered.
    let stuck = runtime.block_on(Target::with(|n| {
        if n == 0 {
            Reply::Gated
        } else {
            Reply::Status(200)
        }
    }));
    let steady = PyTarget::started();
    let dir = scratch_dir("repeat");
    let mut fanout = start(&dir, steady.addr(), stuck.addr);
    let post = |fanout: &Fanout, n: usize| {
        let answer =
            common::process::http_post(fanout.addr, "/orders", &format!("{{\"n\":{n}}}"), &[]);
        common::process::accepted_id(&answer).expect("202")
    };
    let first = post(&fanout, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while stuck.count() < 1 {
        assert!(
            Instant::now() < deadline,
            "the first event reaches the gated target"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let after: Vec<String> = (1..=40).map(|n| post(&fanout, n)).collect();
    while stuck.count() < 41 || steady.received().len() < 41 {
        assert!(Instant::now() < deadline, "the 40 are delivered");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The lane's saved position holds the one unfinished event and nothing else.
    loop {
        let (code, out) = log_verify(binary(), &dir);
        assert_eq!(code, Some(0), "{out}");
        let saved = out.contains("target flaky: pending=1 ") && out.contains(" again=1");
        if saved && out.contains("target steady: pending=0 ") {
            break;
        }
        assert!(Instant::now() < deadline, "the position is saved: {out}");
        std::thread::sleep(Duration::from_millis(20));
    }
    fanout.kill_hard();
    let answering = runtime.block_on(Target::start(Reply::Status(200)));
    let fanout = start(&dir, steady.addr(), answering.addr);
    let got = runtime.block_on(answering.wait_for(1));
    assert_eq!(
        got[0].header("fanout-event-id"),
        first,
        "the unfinished one again"
    );
    // A later event: once it has arrived, a repeat of the 40 would have had its chance.
    let later = post(&fanout, 41);
    let got = runtime.block_on(answering.wait_for(2));
    assert_eq!(got[1].header("fanout-event-id"), later);
    // A repeat of the 40 would have been taken before `later` (log order); with 16 workers it
    // could still arrive just after it: once the lane holds nothing, it would have.
    let lane = [("route", "orders"), ("target", "flaky")];
    for gauge in ["fanout_lane_depth", "fanout_lane_inflight"] {
        wait_metric(fanout.addr, (gauge, &lane), |v| v == 0.0, PATIENCE);
    }
    let ids = answering.event_ids();
    assert_eq!(
        ids,
        [first.clone(), later],
        "none of the 40 delivered again"
    );
    for id in &after {
        assert_eq!(steady.count_id(id), 1, "the steady target got {id} once");
    }
}
