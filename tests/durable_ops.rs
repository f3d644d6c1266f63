//! The durable route `orders` operated through the shipped `fanout` binary, with targets on
//! Python's http.server (tests/durable/receiver.py):
//!
//! - events a target refuses become dead letters with the contract's fields, which
//!   `fanout dead-letters list` shows and `fanout dead-letters replay` sends again, to the
//!   target with their original ids or through a running fanout (`--via`);
//! - a full disk (a small tmpfs as the data directory) answers 503 with Retry-After on the
//!   durable route only, leaves no half-written record after a SIGKILL, and every event
//!   answered 202 is delivered after a restart;
//! - a second fanout on the same port and data directory takes over from the first (SIGTERM)
//!   while clients post to both routes without a single failed request, and every event
//!   answered 202 by either process reaches its targets.

mod common;
#[path = "durable/ops_support.rs"]
mod support;

use common::blocking::{http_once, metric_blocking, wait_metric, FanoutAt, HttpAnswer};
use common::process::FANOUT;
use common::{scratch_dir, ReservedPort};
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{
    delivered, env_of, fill, fresh_client, keep_alive_client, Receiver, Tally, Tmpfs, DELIVERY,
};

const DEAD: &str = "fanout_lane_dead_letters_total";

fn post(addr: SocketAddr, path: &str, content_type: &str, body: &str) -> HttpAnswer {
    let headers = [("content-type", content_type)];
    http_once(addr, "POST", path, &headers, body.as_bytes()).expect("fanout answers")
}

fn post_all(addr: SocketAddr, events: &[(&str, &str)]) -> Vec<String> {
    events
        .iter()
        .map(|(body, ct)| post(addr, "/orders", ct, body).id())
        .collect()
}

/// Runs `fanout --data-dir DIR ARGS` to its end.
fn fanout_cli(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (Output, String) {
    let output = Command::new(FANOUT)
        .envs(env.iter().copied())
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("run fanout");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (output, stdout)
}

fn letters(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("the dead-letter file");
    text.lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object a line"))
        .collect()
}

const KEYS: [&str; 11] = [
    "id",
    "route",
    "target",
    "time",
    "accepted",
    "reason",
    "status",
    "error",
    "attempts",
    "content_type",
    "body",
];

#[test]
fn dead_letters_are_written_listed_and_replayed() {
    let warehouse = Receiver::start(400);
    let billing = Receiver::start(200);
    let env = env_of(&warehouse, &billing);
    let dir = scratch_dir("dead-letters");
    let mut fanout = FanoutAt::start("127.0.0.1:0", &dir, &env);
    let events = [
        (
            r#"{"order":1,"item":"grüße 🎉","note":"a \"quoted\" word"}"#,
            "application/json",
        ),
        (r#"{"order":2,"lines":[1,2,3]}"#, "application/json"),
        ("order 3, as plain text\n", "text/plain"),
    ];
    let ids = post_all(fanout.addr, &events);
    let refused = [
        ("route", "orders"),
        ("target", "warehouse"),
        ("reason", "refused"),
    ];
    wait_metric(fanout.addr, (DEAD, &refused), |n| n == 3.0, DELIVERY);
    billing.wait_for_ids("/orders", &ids);

    let path = dir.join("dead-letters/orders/warehouse.ndjson");
    let written = letters(&path);
    assert_eq!(written.len(), 3, "{written:#?}");
    for ((body, content_type), id) in events.iter().zip(&ids) {
        let letter = written
            .iter()
            .find(|l| l["id"] == id.as_str())
            .expect("a letter per id");
        let keys: BTreeSet<&str> = letter
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, BTreeSet::from(KEYS), "{letter}");
        assert_eq!(letter["route"], "orders");
        assert_eq!(letter["target"], "warehouse");
        assert_eq!(letter["reason"], "refused");
        assert_eq!(letter["status"], 400);
        assert!(
            letter["error"].as_str().is_some_and(|e| e.contains("400")),
            "{letter}"
        );
        assert_eq!(letter["attempts"], 1);
        assert_eq!(letter["content_type"], *content_type);
        assert_eq!(letter["body"], *body);
        let time = |key: &str| humantime::parse_rfc3339(letter[key].as_str().unwrap()).unwrap();
        assert!(time("accepted") <= time("time"), "{letter}");
    }

    let (listed, text) = fanout_cli(&dir, &["dead-letters", "list"], &[]);
    assert!(listed.status.success(), "{listed:?}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    for id in &ids {
        let expected =
            format!(" orders/warehouse {id} reason=refused status=400 attempts=1 error=");
        let line = lines
            .iter()
            .find(|l| l.contains(&expected))
            .unwrap_or_else(|| panic!("{expected} in {text}"));
        let time = line.split(' ').next().unwrap();
        humantime::parse_rfc3339(time).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
    assert_eq!(lines[3], "orders/warehouse: 3");

    // Replayed straight to the target, which now takes them: the original ids, nothing left.
    warehouse.set_status(200);
    assert!(fanout.signal_and_wait(libc::SIGTERM).success());
    let args = [
        "dead-letters",
        "replay",
        "--route",
        "orders",
        "--target",
        "warehouse",
    ];
    let (replayed, text) = fanout_cli(&dir, &args, &env);
    assert!(replayed.status.success(), "{replayed:?}");
    assert_eq!(
        text.trim(),
        format!("orders/warehouse: 3 replayed, 0 left in {}", path.display())
    );
    let seen = warehouse.wait_for("the replayed letters", |seen| {
        delivered(seen, "/orders").len() == 3
    });
    for ((body, content_type), id) in events.iter().zip(&ids) {
        let got = seen
            .iter()
            .find(|r| r["id"] == id.as_str() && r["status"] == 200)
            .unwrap();
        assert_eq!(
            (&got["body"], &got["content_type"]),
            (&(*body).into(), &(*content_type).into())
        );
    }
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        0,
        "replayed letters leave the file"
    );

    // Replayed through a running fanout: new events of the route, for every target.
    warehouse.set_status(400);
    let mut fanout = FanoutAt::start("127.0.0.1:0", &dir, &env);
    let more = [
        (r#"{"order":4}"#, "application/json"),
        ("order 5\n", "text/plain"),
    ];
    let first_ids = post_all(fanout.addr, &more);
    wait_metric(fanout.addr, (DEAD, &refused), |n| n == 2.0, DELIVERY);
    warehouse.set_status(200);
    let via = format!("http://{}", fanout.addr);
    let (replayed, text) = fanout_cli(&dir, &[&args[..], &["--via", &via]].concat(), &[]);
    assert!(replayed.status.success(), "{replayed:?}");
    assert_eq!(
        text.trim(),
        format!("orders/warehouse: 2 replayed, 0 left in {}", path.display())
    );
    for (body, content_type) in more {
        let fresh = |r: &&Value| {
            r["body"] == body
                && r["content_type"] == content_type
                && r["status"] == 200
                && !first_ids.iter().any(|id| r["id"] == id.as_str())
        };
        warehouse.wait_for(&format!("{body:?} again at the warehouse"), |s| {
            s.iter().any(|r| fresh(&r))
        });
        billing.wait_for(&format!("{body:?} again at billing"), |s| {
            s.iter().any(|r| fresh(&r))
        });
    }
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    assert!(fanout.signal_and_wait(libc::SIGTERM).success());
}

#[test]
fn a_full_disk_answers_503_on_its_route_only() {
    let Some(disk) = Tmpfs::mount("2m") else {
        return;
    };
    let dead = ReservedPort::new();
    let down = dead.addr.to_string();
    let env = [("RECEIVER_A", down.as_str()), ("RECEIVER_B", down.as_str())];
    let mut fanout = FanoutAt::start("127.0.0.1:0", &disk.dir, &env);
    let addr = fanout.addr;
    // About 1 KiB each, numbered.
    let order = |n: usize| {
        let body = format!(r#"{{"order":{n},"pad":"{}"}}"#, "p".repeat(1000));
        post(addr, "/orders", "application/json", &body)
    };
    let filler = disk.dir.join("filler");
    fill(&filler, 48 * 1024);
    let mut ids = Vec::new();
    let full = loop {
        let answer = order(ids.len());
        match answer.status {
            202 => ids.push(answer.id()),
            503 => break answer,
            _ => panic!("{answer:?}"),
        }
        assert!(
            ids.len() < 1000,
            "no 503 after {} events on a full disk",
            ids.len()
        );
    };
    let retry_after = full.header("retry-after");
    assert!(
        retry_after.is_some_and(|s| s.parse::<u64>().is_ok()),
        "{full:?}"
    );
    let error: Value = serde_json::from_str(&full.body).expect("a JSON body");
    assert!(error["error"].is_string(), "{full:?}");
    let disk_error = [("route", "orders"), ("reason", "disk_error")];
    assert!(metric_blocking(addr, "fanout_events_rejected_total", &disk_error) > 0.0);
    assert!(fanout.logged("cannot write the route's log: its requests get 503 until it can"));
    assert_eq!(post(addr, "/demo", "application/json", "{}").status, 202);

    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let again = loop {
        let answer = order(ids.len());
        if answer.status == 202 || Instant::now() > deadline {
            break answer;
        }
        assert_eq!(answer.status, 503, "{answer:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    ids.push(again.id());
    for _ in 0..5 {
        ids.push(order(ids.len()).id());
    }
    fanout.signal_and_wait(libc::SIGKILL);

    let (verified, text) = fanout_cli(&disk.dir, &["log", "verify"], &[]);
    assert!(
        verified.status.success() && !text.contains("corrupt"),
        "{verified:?}\n{text}"
    );
    assert!(
        text.contains(&format!("{} records", ids.len())),
        "{} accepted:\n{text}",
        ids.len()
    );

    let warehouse = Receiver::start(200);
    let billing = Receiver::start(200);
    let mut fanout = FanoutAt::start("127.0.0.1:0", &disk.dir, &env_of(&warehouse, &billing));
    warehouse.wait_for_ids("/orders", &ids);
    billing.wait_for_ids("/orders", &ids);
    assert!(fanout.signal_and_wait(libc::SIGTERM).success());
}

/// A restart on the same address and data directory: the old process sees its successor
/// waiting, serves every request already on its connections (each answer closing its
/// connection) and hands the data directory over; no client request fails, nothing is lost.
#[test]
fn restart_hands_over_without_a_failed_request() {
    // Connections queued on the closing listener move to the other one (best effort).
    let _ = std::fs::write("/proc/sys/net/ipv4/tcp_migrate_req", "1");
    let receiver_a = Receiver::start(200);
    let receiver_b = Receiver::start(200);
    let env = env_of(&receiver_a, &receiver_b);
    let dir = scratch_dir("hand-over");
    let listen = {
        let reserved = ReservedPort::new();
        reserved.addr.to_string()
    };
    let mut first = FanoutAt::start(&listen, &dir, &env);
    let addr = first.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::new()));
    let mut clients = Vec::new();
    for client in 0..3 {
        let (stop, tally) = (stop.clone(), tally.clone());
        clients.push(std::thread::spawn(move || match client {
            2 => keep_alive_client(addr, &stop, &tally),
            _ => fresh_client(addr, client, &stop, &tally),
        }));
    }
    let accepted = || tally.lock().unwrap().accepted.len();
    let deadline = Instant::now() + Duration::from_secs(10);
    while accepted() < 200 {
        assert!(Instant::now() < deadline, "only {} accepted", accepted());
        std::thread::sleep(Duration::from_millis(10));
    }

    let mut second = FanoutAt::start(&listen, &dir, &env);
    let before = accepted();
    let terminated = tally.lock().unwrap().ms();
    first.signal(libc::SIGTERM);
    assert!(first.wait_exit().success());
    let handed_over = accepted();
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().expect("a client thread");
    }
    let tally = std::mem::replace(&mut *tally.lock().unwrap(), Tally::new());
    eprintln!(
        "{} accepted ({before} before the second started, {handed_over} when the first exited; \
         SIGTERM at {terminated} ms), {} reconnects",
        tally.accepted.len(),
        tally.reconnects
    );
    assert!(
        tally.failures.is_empty(),
        "{} failed requests: {:#?}",
        tally.failures.len(),
        tally.failures
    );
    assert!(
        tally.accepted.len() > handed_over,
        "the second fanout served"
    );
    assert!(
        first.logged("data directory released"),
        "{:#?}",
        first.log_messages()
    );
    let waited = "another fanout owns the data directory: serving, and waiting for it to hand over";
    assert!(second.logged(waited), "{:#?}", second.log_messages());

    let ids = |path: &str| -> Vec<String> {
        tally
            .accepted
            .iter()
            .filter(|(p, _)| *p == path)
            .map(|(_, id)| id.clone())
            .collect()
    };
    let (orders, demo) = (ids("/orders"), ids("/demo"));
    receiver_a.wait_for_ids("/orders", &orders);
    receiver_b.wait_for_ids("/orders", &orders);
    receiver_a.wait_for_ids("/event-inbound", &demo);
    receiver_b.wait_for_ids("/event-inbound", &demo);
    assert!(second.signal_and_wait(libc::SIGTERM).success());
}
