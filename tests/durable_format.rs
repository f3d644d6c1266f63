//! What the shipped `fanout` binary does with a data directory it did not write, or no longer
//! has a route for: a log segment of a format version it does not know stops start-up (exit 2,
//! naming the file and the version) and `log verify` alike, changing nothing on disk; the
//! directory of a route that no longer exists is reported at start-up and by `log verify`, and
//! kept.

mod common;

use common::process::{accepted_id, http_post, Fanout, PyTarget, FANOUT};
use common::{scratch_dir, ReservedPort};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Every file under `dir` with its bytes, but `LOCK` (which holds the pid of the last process
/// that opened the directory).
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut found = BTreeMap::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).expect("read a directory") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                todo.push(path);
            } else if path.file_name().is_some_and(|n| n != "LOCK") {
                let bytes = std::fs::read(&path).expect("read a file");
                found.insert(path, bytes);
            }
        }
    }
    found
}

/// Runs the binary on `dir` with `args` until it exits: its code, stdout and stderr.
fn run(dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    // Held while fanout runs: the targets' port refuses connections.
    let dead = ReservedPort::new();
    let dead = dead.addr.to_string();
    let output = Command::new(FANOUT)
        .arg("--data-dir")
        .arg(dir)
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env("RECEIVER_A", &dead)
        .env("RECEIVER_B", &dead)
        .output()
        .expect("run fanout");
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (
        output.status.code(),
        text(&output.stdout),
        text(&output.stderr),
    )
}

/// A data directory whose `orders` log holds 3 events, written by the binary under test.
fn written_log() -> PathBuf {
    let dir = scratch_dir("format");
    let mut fanout = Fanout::start(&["--data-dir", dir.to_str().expect("UTF-8")]);
    for n in 0..3 {
        let answer = http_post(fanout.addr, "/orders", &format!("{{\"n\":{n}}}"), &[]);
        accepted_id(&answer).expect("202");
    }
    fanout.kill_hard();
    dir
}

#[test]
fn a_segment_of_an_unknown_format_version_stops_start_up_and_changes_nothing() {
    let dir = written_log();
    let segment = dir.join("routes/orders/00000000000000000000.seg");
    let mut bytes = std::fs::read(&segment).expect("the first segment");
    assert_eq!(&bytes[..8], b"FANOUTLG", "a segment starts with its magic");
    assert_eq!(
        bytes[8..12],
        1u32.to_le_bytes(),
        "then its format version, 1"
    );
    bytes[8..12].copy_from_slice(&7u32.to_le_bytes());
    std::fs::write(&segment, &bytes).expect("write a version 7 header");
    let before = files(&dir);

    let (code, _, stderr) = run(&dir, &[]);
    assert_eq!(code, Some(2), "start-up stops: {stderr}");
    assert!(stderr.contains("00000000000000000000.seg"), "{stderr}");
    assert!(stderr.contains("log format version 7"), "{stderr}");
    assert!(stderr.contains("reads version 1"), "{stderr}");
    assert_eq!(files(&dir), before, "start-up changed nothing on disk");

    let (code, _, stderr) = run(&dir, &["log", "verify"]);
    assert_eq!(code, Some(2), "log verify stops too: {stderr}");
    assert!(stderr.contains("log format version 7"), "{stderr}");
    assert_eq!(files(&dir), before, "log verify changed nothing");
}

#[test]
fn a_file_that_is_not_a_segment_stops_start_up() {
    let dir = written_log();
    let segment = dir.join("routes/orders/00000000000000000000.seg");
    let mut bytes = std::fs::read(&segment).expect("the first segment");
    bytes[..8].copy_from_slice(b"NOTALOG!");
    std::fs::write(&segment, &bytes).expect("overwrite the magic");
    let before = files(&dir);
    let (code, _, stderr) = run(&dir, &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("is not a fanout log segment"), "{stderr}");
    assert_eq!(files(&dir), before);
}

#[test]
fn the_directory_of_a_route_that_no_longer_exists_is_reported_and_kept() {
    let dir = written_log();
    let old = dir.join("routes/invoices");
    std::fs::create_dir_all(old.join("cursors")).expect("an old route's directory");
    std::fs::write(old.join("00000000000000000000.seg"), b"kept as it is").expect("a file");

    let (code, out, _) = run(&dir, &["log", "verify"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("route orders: format version 1, 1 segments"),
        "{out}"
    );
    let reported = format!("route directory {}: no durable route", old.display());
    assert!(out.contains(&reported), "{out}");

    let (a, b) = (PyTarget::started(), PyTarget::started());
    let (a_addr, b_addr) = (a.addr().to_string(), b.addr().to_string());
    let env = [
        ("RECEIVER_A", a_addr.as_str()),
        ("RECEIVER_B", b_addr.as_str()),
    ];
    let mut fanout = Fanout::start_with(FANOUT, &["--data-dir", dir.to_str().unwrap()], &env);
    let warned: Vec<serde_json::Value> = fanout
        .log_messages()
        .into_iter()
        .filter(|e| e["fields"]["dir"] == old.display().to_string())
        .collect();
    assert_eq!(warned.len(), 1, "one WARN names the directory");
    assert_eq!(warned[0]["level"], "WARN");
    // The orders log is read as usual: its 3 events arrive.
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.received().len() < 3 || b.received().len() < 3 {
        assert!(
            Instant::now() < deadline,
            "the 3 logged events are delivered"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(fanout.terminate().success());
    let kept = std::fs::read(old.join("00000000000000000000.seg")).expect("still there");
    assert_eq!(kept, b"kept as it is");
}
