//! Dead letters through the shipped `fanout` binary and its durable route `orders`, with
//! targets on Python's http.server (tests/durable/receiver.py):
//!
//! - a dead letter that cannot be written (a file stands where the route's dead-letter
//!   directory goes, which stops root too) keeps its event: the write is retried and counted,
//!   the event is not counted failed and stays in the log across a SIGKILL, and once the
//!   obstacle is gone the letters are written and every event is accounted for.

mod common;
#[allow(dead_code)] // this file uses the receiver, not the hand-over clients
#[path = "durable/ops_support.rs"]
mod support;

use common::blocking::{http_once, metric_blocking, FanoutAt};
use common::process::FANOUT;
use common::scratch_dir;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use support::{env_of, Receiver, DELIVERY};

const WAREHOUSE: [(&str, &str); 2] = [("route", "orders"), ("target", "warehouse")];
const ERRORS: &str = "fanout_lane_dead_letter_errors_total";

/// Runs `fanout --data-dir DIR ARGS` to its end; its output and stdout.
fn fanout_cli(dir: &Path, args: &[&str]) -> (Output, String) {
    let output = Command::new(FANOUT)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("run fanout");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (output, stdout)
}

/// Waits until `done` holds for the metric; its value then.
fn wait_metric(
    addr: SocketAddr,
    name: &str,
    labels: &[(&str, &str)],
    done: impl Fn(f64) -> bool,
) -> f64 {
    let deadline = Instant::now() + DELIVERY;
    loop {
        let now = metric_blocking(addr, name, labels);
        if done(now) {
            return now;
        }
        assert!(Instant::now() < deadline, "{name}{labels:?} is {now}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn post_orders(addr: SocketAddr, n: usize) -> Vec<String> {
    (0..n)
        .map(|n| {
            let body = format!("{{\"order\":{n}}}");
            let headers = [("content-type", "application/json")];
            let answer = http_once(addr, "POST", "/orders", &headers, body.as_bytes());
            answer.expect("fanout answers").id()
        })
        .collect()
}

/// The line of `fanout log verify` about `target` of `orders`.
fn verified(dir: &Path, target: &str) -> String {
    let (output, text) = fanout_cli(dir, &["log", "verify"]);
    assert!(output.status.success(), "{output:?}");
    let prefix = format!("  target {target}: ");
    text.lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("{prefix} in {text}"))
        .to_owned()
}

#[test]
fn a_dead_letter_that_cannot_be_written_keeps_its_event_until_it_is_written() {
    let warehouse = Receiver::start(400);
    let billing = Receiver::start(200);
    let env = env_of(&warehouse, &billing);
    let dir = scratch_dir("unwritable-dead-letters");
    let obstacle = dir.join("dead-letters/orders");
    std::fs::create_dir_all(dir.join("dead-letters")).unwrap();
    std::fs::write(&obstacle, "a file where the route's directory goes\n").unwrap();

    let mut fanout = FanoutAt::start("127.0.0.1:0", &dir, &env);
    let ids = post_orders(fanout.addr, 3);
    billing.wait_for_ids("/orders", &ids);
    let failing = wait_metric(fanout.addr, ERRORS, &WAREHOUSE, |errors| errors >= 3.0);
    wait_metric(fanout.addr, ERRORS, &WAREHOUSE, |errors| errors > failing);
    let metric = |name: &str| metric_blocking(fanout.addr, name, &WAREHOUSE);
    assert_eq!(metric("fanout_lane_failed_total"), 0.0);
    assert_eq!(metric("fanout_lane_dead_letters_total"), 0.0);
    assert_eq!(
        metric("fanout_lane_inflight"),
        3.0,
        "held while the write is retried"
    );
    assert!(
        fanout.logged("cannot write dead letters: their events stay held until they are written")
    );
    fanout.signal_and_wait(libc::SIGKILL);
    let line = verified(&dir, "warehouse");
    assert!(line.contains("pending=3 "), "still in the log: {line}");

    // Started again with the obstacle still there: the events are taken, refused, held again;
    // once it is gone the retried write goes through.
    let mut fanout = FanoutAt::start("127.0.0.1:0", &dir, &env);
    let again = metric_blocking(fanout.addr, ERRORS, &WAREHOUSE);
    wait_metric(fanout.addr, ERRORS, &WAREHOUSE, |errors| errors > again);
    std::fs::remove_file(&obstacle).unwrap();
    let refused = [WAREHOUSE[0], WAREHOUSE[1], ("reason", "refused")];
    wait_metric(
        fanout.addr,
        "fanout_lane_dead_letters_total",
        &refused,
        |n| n == 3.0,
    );
    let metric = |name: &str| metric_blocking(fanout.addr, name, &WAREHOUSE);
    assert_eq!(metric("fanout_lane_failed_total"), 3.0);
    assert_eq!(metric("fanout_lane_inflight"), 0.0);
    let text = std::fs::read_to_string(dir.join("dead-letters/orders/warehouse.ndjson"))
        .expect("the dead letters are written");
    let letters: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object a line"))
        .collect();
    assert!(
        letters
            .iter()
            .all(|l| l["reason"] == "refused" && l["status"] == 400),
        "{text}"
    );
    let written: BTreeSet<&str> = letters.iter().filter_map(|l| l["id"].as_str()).collect();
    let expected: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(written, expected);
    assert!(fanout.signal_and_wait(libc::SIGTERM).success());
    for target in ["warehouse", "billing"] {
        let line = verified(&dir, target);
        assert!(
            line.contains("pending=0 "),
            "every event accounted for: {line}"
        );
    }
}
