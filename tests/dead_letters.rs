//! Dead letters through the shipped `fanout` binary and its durable route `orders`, with
//! targets on Python's http.server (tests/durable/receiver.py):
//!
//! - a dead letter that cannot be written (a file stands where the route's dead-letter
//!   directory goes, which stops root too) keeps its event: the write is retried and counted,
//!   the event is not counted failed and stays in the log across a SIGKILL, and once the
//!   obstacle is gone the letters are written and every event is accounted for; a memory
//!   lane (in process) holds such events the same way, and counts them dropped at shutdown;
//! - `fanout dead-letters list` and `purge` read a lane's rolled files and its current one,
//!   oldest first; purge removes what is older than a time or a duration, removes an emptied
//!   rolled file, and keeps unreadable lines; `replay` sends them all, oldest first, and what
//!   it delivers leaves its file.

mod common;
#[allow(dead_code)] // this file uses the receiver, not the hand-over clients
#[path = "durable/ops_support.rs"]
mod support;

use common::blocking::{http_once, metric_blocking, FanoutAt};
use common::process::FANOUT;
use common::{scratch_dir, start_proxy, Reply, Target};
use fanout::ops::data_dir;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};
use support::{env_of, Receiver, DELIVERY};

mod table {
    fanout::routes!("tests/routes/dead_letters.yaml");
}

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
    common::blocking::wait_metric(addr, (name, labels), done, DELIVERY)
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

/// A dead letter of `orders/warehouse` with this id, written `ago` before now.
fn letter(id: &str, ago: Duration) -> String {
    let time = humantime::format_rfc3339_millis(SystemTime::now() - ago);
    format!(
        "{{\"id\":\"{id}\",\"route\":\"orders\",\"target\":\"warehouse\",\"time\":\"{time}\",\
         \"accepted\":\"{time}\",\"reason\":\"refused\",\"status\":400,\"error\":\"status 400\",\
         \"attempts\":1,\"content_type\":\"application/json\",\"body\":\"{{}}\"}}\n"
    )
}

#[test]
fn list_and_purge_read_every_file_of_a_lane_oldest_first() {
    let dir = scratch_dir("dead-letter-files");
    let lanes = dir.join("dead-letters/orders");
    std::fs::create_dir_all(&lanes).unwrap();
    let hours = |n: u64| Duration::from_secs(n * 3600);
    let write = |name: &str, text: String| std::fs::write(lanes.join(name), text).unwrap();
    write(
        "warehouse.1.ndjson",
        letter("a", hours(48)) + &letter("b", hours(36)),
    );
    write(
        "warehouse.2.ndjson",
        letter("c", hours(30)) + "not a letter\n",
    );
    write("warehouse.ndjson", letter("d", hours(1)));
    write("billing.ndjson", letter("e", hours(48)));

    let (output, text) = fanout_cli(&dir, &["dead-letters", "list", "--target", "warehouse"]);
    assert!(output.status.success(), "{output:?}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    for (line, id) in lines.iter().zip(["a", "b", "c"]) {
        assert!(
            line.contains(&format!(" orders/warehouse {id} reason=refused")),
            "{text}"
        );
    }
    assert_eq!(lines[3], "orders/warehouse: unreadable line: not a letter");
    assert!(lines[4].contains(" orders/warehouse d "), "{text}");
    assert_eq!(lines[5], "orders/warehouse: 5");

    let purge = |before: &str| {
        let args = [
            "dead-letters",
            "purge",
            "--route",
            "orders",
            "--target",
            "warehouse",
        ];
        let (output, text) = fanout_cli(&dir, &[&args[..], &["--before", before]].concat());
        assert!(output.status.success(), "{output:?}");
        text
    };
    let forty_hours_ago = humantime::format_rfc3339_seconds(SystemTime::now() - hours(40));
    let text = purge(&forty_hours_ago.to_string());
    assert!(
        text.starts_with("orders/warehouse: 1 removed (written before "),
        "{text}"
    );
    assert!(text.trim_end().ends_with(", 4 left"), "{text}");
    let text = purge("24h");
    assert!(
        text.trim_end().ends_with(", 2 left") && text.contains(": 2 removed"),
        "{text}"
    );
    let mut names: Vec<String> = std::fs::read_dir(&lanes)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["billing.ndjson", "warehouse.2.ndjson", "warehouse.ndjson"]
    );
    assert_eq!(
        std::fs::read_to_string(lanes.join("warehouse.2.ndjson")).unwrap(),
        "not a letter\n",
        "an unreadable line is never purged"
    );
    let billing = std::fs::read_to_string(lanes.join("billing.ndjson")).unwrap();
    assert!(
        billing.starts_with("{\"id\":\"e\"") && billing.lines().count() == 1,
        "another lane's letters stay: {billing}"
    );

    let (output, text) = fanout_cli(&dir, &["log", "verify"]);
    assert!(output.status.success(), "{output:?}");
    assert!(
        text.contains("dead letters orders/warehouse: 2 in 2 files\n"),
        "{text}"
    );
    assert!(text.contains("dead letters orders/billing: 1\n"), "{text}");

    let (output, _) = fanout_cli(
        &dir,
        &[
            "dead-letters",
            "purge",
            "--route",
            "orders",
            "--before",
            "1h",
        ],
    );
    assert_eq!(
        output.status.code(),
        Some(2),
        "--target is required: {output:?}"
    );
    let (output, _) = fanout_cli(
        &dir,
        &[
            "dead-letters",
            "purge",
            "--route",
            "orders",
            "--target",
            "warehouse",
            "--before",
            "yesterday",
        ],
    );
    assert_eq!(output.status.code(), Some(2), "not a time: {output:?}");
}

#[test]
fn replay_sends_every_file_oldest_first_and_removes_what_it_empties() {
    let warehouse = Receiver::start(400);
    let billing = Receiver::start(200);
    let env = env_of(&warehouse, &billing);
    let dir = scratch_dir("dead-letter-replay");
    let lanes = dir.join("dead-letters/orders");
    std::fs::create_dir_all(&lanes).unwrap();
    let ids: Vec<String> = (1..=3)
        .map(|n| format!("01900000-0000-7000-8000-00000000000{n}"))
        .collect();
    let ago = Duration::from_secs(60);
    let rolled = letter(&ids[0], ago) + &letter(&ids[1], ago);
    std::fs::write(lanes.join("warehouse.1.ndjson"), &rolled).unwrap();
    std::fs::write(lanes.join("warehouse.ndjson"), letter(&ids[2], ago)).unwrap();
    let current = lanes.join("warehouse.ndjson");
    let replay = || {
        let output = Command::new(FANOUT)
            .envs(env.iter().copied())
            .arg("--data-dir")
            .arg(&dir)
            .args([
                "dead-letters",
                "replay",
                "--route",
                "orders",
                "--target",
                "warehouse",
            ])
            .output()
            .expect("run fanout");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        (output.status.code(), stdout)
    };

    let (code, text) = replay();
    assert_eq!(code, Some(1), "refused again: {text}");
    let left = format!(
        ": 0 replayed, 3 left in {} and 1 older files",
        current.display()
    );
    assert!(text.contains(&left), "{text}");
    assert_eq!(
        std::fs::read_to_string(lanes.join("warehouse.1.ndjson")).unwrap(),
        rolled
    );

    warehouse.set_status(200);
    let (code, text) = replay();
    assert_eq!(code, Some(0), "{text}");
    let left = format!(": 3 replayed, 0 left in {}\n", current.display());
    assert!(text.ends_with(&left), "{text}");
    let seen = warehouse.wait_for("the replayed letters", |seen| {
        support::delivered(seen, "/orders").len() == 3
    });
    let order: Vec<&str> = seen
        .iter()
        .filter(|r| r["status"] == 200)
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(order, ids, "oldest first");
    assert!(
        !lanes.join("warehouse.1.ndjson").exists(),
        "an emptied rolled file is removed"
    );
    assert_eq!(
        std::fs::read_to_string(&current).unwrap(),
        "",
        "the current file stays"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_lane_holds_what_it_cannot_dead_letter_and_drops_it_only_at_shutdown() {
    let target = Target::start(Reply::Status(400)).await;
    let env = [("REFUSING", target.addr.to_string())];
    let shared = start_proxy::<table::Table>(&env, Some(Duration::from_millis(300))).await;
    let dir = scratch_dir("memory-dead-letters");
    let obstacle = dir.join("dead-letters/kept");
    std::fs::create_dir_all(dir.join("dead-letters")).unwrap();
    std::fs::write(&obstacle, "a file where the route's directory goes\n").unwrap();
    let locked = data_dir::try_lock(&dir)
        .unwrap()
        .expect("a fresh directory is free");
    shared.shared.own(locked).expect("the data directory opens");
    let lane = [("route", "kept"), ("target", "refusing")];

    for n in 0..2 {
        assert_eq!(
            shared.post("/kept", &format!("{{\"n\":{n}}}")).await.status,
            202
        );
    }
    shared.wait_metric_at_least(ERRORS, &lane, 2.0).await;
    let metrics = shared.metrics().await;
    assert_eq!(metrics.value("fanout_lane_failed_total", &lane), 0.0);
    assert_eq!(metrics.value("fanout_lane_inflight", &lane), 2.0);
    std::fs::remove_file(&obstacle).unwrap();
    let refused = [lane[0], lane[1], ("reason", "refused")];
    shared
        .wait_metric("fanout_lane_dead_letters_total", &refused, 2.0)
        .await;
    shared
        .wait_metric("fanout_lane_failed_total", &lane, 2.0)
        .await;

    // The current file replaced by a directory: the next letter cannot be written until
    // shutdown, which drops its event after the drain.
    let current = obstacle.join("refusing.ndjson");
    let written = std::fs::read_to_string(&current).expect("the letters");
    assert_eq!(written.lines().count(), 2, "{written}");
    std::fs::remove_file(&current).unwrap();
    std::fs::create_dir(&current).unwrap();
    let errors = shared.metrics().await.value(ERRORS, &lane);
    assert_eq!(shared.post("/kept", "{\"n\":2}").await.status, 202);
    shared
        .wait_metric_at_least(ERRORS, &lane, errors + 1.0)
        .await;
    let state = shared.shared.clone();
    shared.shutdown().await;
    let metrics = &state.table.kept.lanes.refusing.metrics;
    assert_eq!(metrics.dropped_shutdown.get(), 1);
    assert_eq!(metrics.failed.get(), 2);
    assert_eq!(metrics.inflight.get(), 0);
}
