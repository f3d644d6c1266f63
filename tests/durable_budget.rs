//! Durable routes in process, on a real socket and a real data directory: a full disk budget
//! answers 503 with Retry-After and recovers once the target drains the log; batch lanes and
//! single lanes read the same log; an event older than `max_age` becomes a dead letter with
//! reason `expired`, also when the breaker held it past its age (single or batched: nothing is
//! sent late); every fsync policy (`always`, a period, `never`) delivers every event it
//! acknowledged.

mod common;

use common::{scratch_dir, start_proxy, Reply, Running, Target};
use fanout::ops::data_dir;
use std::collections::HashSet;

mod table {
    fanout::routes!("tests/routes/durable.yaml");
}
use table::Table;

/// A proxy for the durable routes owning a fresh data directory.
async fn start(env: &[(&str, String)]) -> (Running<Table>, std::path::PathBuf) {
    let running = start_proxy::<Table>(env, None).await;
    let dir = scratch_dir("durable");
    let locked = data_dir::try_lock(&dir)
        .unwrap()
        .expect("a fresh directory is free");
    running
        .shared
        .own(locked)
        .expect("the data directory opens");
    (running, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_budget_answers_503_until_the_target_drains() {
    let target = Target::start(Reply::Status(503)).await;
    let (shared, _dir) = start(&[("GATED", target.addr.to_string())]).await;
    let body = format!("{{\"pad\":\"{}\"}}", "x".repeat(900));
    let mut accepted = Vec::new();
    let refused = loop {
        let answer = shared.post("/small", &body).await;
        if answer.status != 202 {
            break answer;
        }
        accepted.push(answer.id());
        assert!(
            accepted.len() < 200,
            "80 KiB of log holds fewer than 200 events of 1 KiB"
        );
    };
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(refused.body.contains("disk_buffer"), "{}", refused.body);
    assert!(
        accepted.len() >= 60,
        "80 KiB holds at least 60 such events: {}",
        accepted.len()
    );
    let metrics = shared.metrics().await;
    assert!(
        metrics.value(
            "fanout_events_rejected_total",
            &[("route", "small"), ("reason", "disk_full")]
        ) >= 1.0
    );

    target.set_reply(Reply::Status(200));
    shared
        .wait_metric_at_least(
            "fanout_lane_delivered_total",
            &[("route", "small")],
            accepted.len() as f64,
        )
        .await;
    let again = shared.post("/small", &body).await;
    assert_eq!(
        again.status, 202,
        "the budget is free again once delivered: {}",
        again.body
    );
    let ids: HashSet<String> = target
        .received()
        .iter()
        .filter(|r| r.body.len() > 10)
        .map(|r| r.header("fanout-event-id").to_owned())
        .collect();
    for id in &accepted {
        assert!(ids.contains(id), "{id} was accepted and not delivered");
    }
    shared.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_and_single_lanes_read_one_log() {
    let bulk = Target::start(Reply::Status(200)).await;
    let single = Target::start(Reply::Status(200)).await;
    let env = [
        ("BULK", bulk.addr.to_string()),
        ("SINGLE", single.addr.to_string()),
    ];
    let (shared, dir) = start(&env).await;
    let mut ids = Vec::new();
    for n in 0..45 {
        let answer = shared.post("/batched", &format!("{{\"n\":{n}}}")).await;
        assert_eq!(answer.status, 202);
        ids.push(answer.id());
    }
    single.wait_for(45).await;
    shared
        .wait_metric(
            "fanout_lane_delivered_total",
            &[("route", "batched"), ("target", "bulk")],
            45.0,
        )
        .await;
    let batched: Vec<String> = bulk
        .received()
        .iter()
        .flat_map(|r| {
            r.header("fanout-event-ids")
                .split(',')
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(batched, ids, "every event once, in log order");
    assert!(
        bulk.count() < 45,
        "events travel in batches: {} requests",
        bulk.count()
    );
    let singles: HashSet<String> = single.event_ids().into_iter().collect();
    assert_eq!(singles.len(), 45);
    shared.shutdown().await;
    let segments = std::fs::read_dir(dir.join("routes/batched"))
        .expect("the route's log directory")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "seg"))
        .count();
    assert!(segments >= 1, "the log stays in the data directory");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_older_than_max_age_is_a_dead_letter() {
    let down = Target::start(Reply::Status(503)).await;
    let (shared, dir) = start(&[("DOWN", down.addr.to_string())]).await;
    let answer = shared.post("/aging", "{\"stale\":true}").await;
    assert_eq!(answer.status, 202);
    let labels = [
        ("route", "aging"),
        ("target", "down"),
        ("reason", "expired"),
    ];
    shared
        .wait_metric("fanout_lane_dead_letters_total", &labels, 1.0)
        .await;
    shared
        .wait_metric(
            "fanout_lane_failed_total",
            &[("route", "aging"), ("target", "down")],
            1.0,
        )
        .await;
    let text = std::fs::read_to_string(dir.join("dead-letters/aging/down.ndjson")).unwrap();
    let letter: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(letter["id"], answer.id().as_str());
    assert_eq!(letter["reason"], "expired");
    assert_eq!(letter["body"], "{\"stale\":true}");
    assert_eq!(letter["content_type"], "application/json");
    assert!(letter["attempts"].as_u64().unwrap() >= 1);
    shared.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fsync_policy_delivers_every_event_it_acknowledged() {
    let sink = Target::start(Reply::Status(200)).await;
    let (shared, _dir) = start(&[("SINK", sink.addr.to_string())]).await;
    let mut acknowledged: Vec<(&str, String)> = Vec::new();
    for route in ["sync-always", "sync-period", "sync-never"] {
        // Four clients at once, so that writes and syncs are shared.
        let posts = (0..4).map(|client| {
            let shared = &shared;
            async move {
                let mut ids = Vec::new();
                for n in 0..10 {
                    let body = format!("{{\"client\":{client},\"n\":{n}}}");
                    ids.push(shared.post(&format!("/{route}"), &body).await.id());
                }
                ids
            }
        });
        for ids in futures_util::future::join_all(posts).await {
            acknowledged.extend(ids.into_iter().map(|id| (route, id)));
        }
    }
    let received = sink.wait_for(acknowledged.len()).await;
    for (route, id) in &acknowledged {
        let deliveries = received
            .iter()
            .filter(|r| r.header("fanout-event-id") == id.as_str())
            .map(|r| r.path.as_str())
            .collect::<Vec<_>>();
        assert_eq!(deliveries, [format!("/{route}")], "{route}: {id}");
    }
    shared.shutdown().await;
}

/// When the event `id` (a UUID v7) was accepted, in Unix milliseconds.
fn accepted_ms(id: &str) -> u128 {
    let hex: String = id.chars().filter(|c| *c != '-').take(12).collect();
    u128::from_str_radix(&hex, 16).expect("a UUID v7 starts with its time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_age_holds_after_a_breaker_pause_for_single_events_and_batches() {
    let single = Target::start(Reply::Status(503)).await;
    let batch = Target::start(Reply::Status(503)).await;
    let env = [
        ("PAUSED_SINGLE", single.addr.to_string()),
        ("PAUSED_BATCH", batch.addr.to_string()),
    ];
    let (shared, dir) = start(&env).await;
    let mut ids = HashSet::new();
    for n in 0..5 {
        let answer = shared.post("/paused", &format!("{{\"n\":{n}}}")).await;
        assert_eq!(answer.status, 202);
        ids.insert(answer.id());
    }
    let lanes = [("single", &single), ("batch", &batch)];
    for (name, _) in lanes {
        let lane = [("route", "paused"), ("target", name)];
        shared
            .wait_metric("fanout_lane_circuit_open", &lane, 1.0)
            .await;
    }
    // The breaker pauses each lane for 1 s, twice the events' max_age; the target is back
    // before the pause ends, so a worker that did not look at the age again would deliver.
    let answered_503 = lanes.map(|(_, target)| {
        target.set_reply(Reply::Status(200));
        target.count()
    });
    for (name, _) in lanes {
        let expired = [("route", "paused"), ("target", name), ("reason", "expired")];
        shared
            .wait_metric("fanout_lane_dead_letters_total", &expired, 5.0)
            .await;
        let lane = [("route", "paused"), ("target", name)];
        let metrics = shared.metrics().await;
        assert_eq!(metrics.value("fanout_lane_failed_total", &lane), 5.0);
        assert_eq!(metrics.value("fanout_lane_delivered_total", &lane), 0.0);
        let path = dir.join(format!("dead-letters/paused/{name}.ndjson"));
        let text = std::fs::read_to_string(&path).expect("the lane's dead letters");
        let letters: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).expect("one JSON object a line"))
            .collect();
        assert!(letters.iter().all(|l| l["reason"] == "expired"), "{text}");
        let written: HashSet<String> = letters
            .iter()
            .map(|l| l["id"].as_str().expect("an id").to_owned())
            .collect();
        assert_eq!(written, ids, "{name}");
    }
    for ((name, target), before) in lanes.iter().zip(answered_503) {
        assert_eq!(target.count(), before, "{name}: nothing sent after max_age");
    }

    // A fresh event goes through the probe and closes the circuit.
    let fresh = shared.post("/paused", "{\"fresh\":true}").await.id();
    for ((name, target), before) in lanes.iter().zip(answered_503) {
        let received = target.wait_for(before + 1).await;
        let late = &received[before..];
        // A batch of one names its event in `fanout-event-ids`.
        let header = match *name {
            "batch" => "fanout-event-ids",
            _ => "fanout-event-id",
        };
        let ids: Vec<&str> = late.iter().map(|r| r.header(header)).collect();
        assert_eq!(ids, [fresh.as_str()], "{name}");
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis();
        assert!(
            now_ms - accepted_ms(&fresh) < 500,
            "{name}: delivered within max_age"
        );
    }
    shared.shutdown().await;
}
