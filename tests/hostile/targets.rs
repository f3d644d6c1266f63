//! Hostile targets and lanes bounded in bytes: a 200 whose body never ends, a target that
//! accepts and never answers, and lanes that fill up in bytes before they do in events.

use crate::common::{self, start_proxy, Metrics, Reply, Running, Target};
use crate::raw::{Misbehaviour, RawTarget};
use crate::{addr, eventually, shown, Table};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_whose_200_never_ends_still_gets_every_event() {
    let gush = RawTarget::start(Misbehaviour::Gush).await;
    let trickle = RawTarget::start(Misbehaviour::Trickle).await;
    let env = [
        ("GUSH", gush.addr.to_string()),
        ("TRICKLE", trickle.addr.to_string()),
    ];
    let shared = start_proxy::<Table>(&env, None).await;
    let mut sent = Vec::new();
    for n in 0..5 {
        sent.push(
            shared
                .post("/endless", &format!("{{\"n\":{n}}}"))
                .await
                .id(),
        );
    }
    sent.sort();
    for (target, name) in [(&gush, "gush"), (&trickle, "trickle")] {
        let labels = [("route", "endless"), ("target", name)];
        shared
            .wait_metric("fanout_lane_delivered_total", &labels, 5.0)
            .await;
        let metrics = shared.metrics().await;
        assert_eq!(metrics.value("fanout_lane_failed_total", &labels), 0.0);
        assert_eq!(metrics.value("fanout_lane_retries_total", &labels), 0.0);
        let mut got = target.ids();
        got.sort();
        assert_eq!(got, sent, "{name}: every event once, on its own connection");
        // fanout hung up on every endless answer and opened a new connection for the next.
        eventually("fanout closes each answer", || target.abandoned() == 5).await;
        assert_eq!(target.connections(), 5, "{name}");
    }
    // The 64 KiB cap, not the attempt's 300ms timeout, ends a body that comes fast.
    let metrics = shared.metrics().await;
    let spent = |name| {
        let labels = [("route", "endless"), ("target", name)];
        metrics.value("fanout_delivery_duration_seconds_sum", &labels)
    };
    assert!(
        spent("gush") < 0.5,
        "gush attempts took {}s in all",
        spent("gush")
    );
    assert!(
        spent("trickle") >= 1.4,
        "trickle attempts took {}s in all",
        spent("trickle")
    );
}

/// Checks `accepted = delivered + failed + dropped + depth + inflight` for one lane.
fn assert_books(metrics: &Metrics, route: &str, target: &str) {
    let lane = [("route", route), ("target", target)];
    let value = |name| shown(metrics, name, &lane);
    let dropped: f64 = ["overflow", "shutdown", "panic"]
        .iter()
        .map(|&reason| {
            let labels = [("route", route), ("target", target), ("reason", reason)];
            shown(metrics, "fanout_lane_dropped_total", &labels)
        })
        .sum();
    let accepted = shown(metrics, "fanout_events_accepted_total", &[("route", route)]);
    let settled = value("fanout_lane_delivered_total") + value("fanout_lane_failed_total");
    let held = value("fanout_lane_depth") + value("fanout_lane_inflight");
    assert_eq!(
        accepted,
        settled + dropped + held,
        "the books of {route}/{target}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_never_answers_times_out_and_the_other_lane_goes_on() {
    let mute = RawTarget::start(Misbehaviour::Mute).await;
    let fine = Target::start(Reply::Status(200)).await;
    let env = [("MUTE", mute.addr.to_string()), ("FINE", addr(&fine))];
    let shared = start_proxy::<Table>(&env, None).await;
    let muted = [("route", "stuck"), ("target", "mute")];
    for n in 0..6 {
        shared.post("/stuck", &format!("{{\"n\":{n}}}")).await.id();
    }
    shared
        .wait_metric_at_least("fanout_lane_retries_total", &muted, 4.0)
        .await;
    for n in 6..12 {
        shared.post("/stuck", &format!("{{\"n\":{n}}}")).await.id();
    }
    fine.wait_for(12).await;
    let fine_lane = [("route", "stuck"), ("target", "fine")];
    shared
        .wait_metric("fanout_lane_delivered_total", &fine_lane, 12.0)
        .await;
    let metrics = shared.metrics().await;
    let settled = metrics.value("fanout_lane_failed_total", &muted)
        + metrics.value("fanout_lane_delivered_total", &muted);
    assert!(
        settled < 12.0,
        "the fine lane did not wait for the mute one"
    );

    // Three attempts per event, each cut off by the 200ms timeout on a connection of its own.
    shared
        .wait_metric("fanout_lane_failed_total", &muted, 12.0)
        .await;
    let metrics = shared.metrics().await;
    assert_eq!(metrics.value("fanout_lane_retries_total", &muted), 24.0);
    assert_eq!(metrics.value("fanout_lane_delivered_total", &muted), 0.0);
    assert_eq!(
        metrics.value("fanout_delivery_duration_seconds_count", &muted),
        36.0
    );
    let spent = metrics.value("fanout_delivery_duration_seconds_sum", &muted);
    assert!(
        spent >= 36.0 * 0.195,
        "36 timed-out attempts took {spent}s in all"
    );
    assert_eq!(mute.connections(), 36);
    assert_books(&metrics, "stuck", "mute");
    assert_books(&metrics, "stuck", "fine");
}

/// Posts a 1 KiB event whose body starts with `n`; returns the answer's status.
async fn post_kib(shared: &Running<Table>, path: &str, n: usize) -> common::Answer {
    shared
        .post(path, &format!("{n:04}{}", "x".repeat(1020)))
        .await
}

/// Starts a proxy whose `route` lane (4 KiB of events, one in flight) is held by a gated
/// target, with event 0 taken by the worker and 1 to 7 posted behind it; returns the
/// statuses of 1 to 7.
async fn overfill(route: &str, gated: &Target) -> (Running<Table>, Vec<u16>) {
    let variable = route.to_ascii_uppercase();
    let shared = start_proxy::<Table>(&[(&variable, addr(gated))], None).await;
    assert_eq!(post_kib(&shared, &format!("/{route}"), 0).await.status, 202);
    gated.wait_for(1).await;
    let mut statuses = Vec::new();
    for n in 1..=7 {
        statuses.push(post_kib(&shared, &format!("/{route}"), n).await.status);
    }
    let metrics = shared.metrics().await;
    let lane = [("route", route), ("target", "gated")];
    assert_eq!(
        metrics.value("fanout_lane_depth", &lane),
        4.0,
        "4 KiB hold 4 events"
    );
    let held = shown(&metrics, "fanout_memory_held_bytes", &[]);
    assert!(held >= 5.0 * 1024.0, "{held} bytes held");
    (shared, statuses)
}

/// Lets the gated target answer and returns the numbers of the events it got, in order.
async fn delivered_numbers(gated: &Target, count: usize) -> Vec<usize> {
    gated.open_gate(count);
    let received = gated.wait_for(count).await;
    received
        .iter()
        .map(|r| r.body_text()[..4].parse().unwrap())
        .collect()
}

#[tokio::test]
async fn a_drop_oldest_lane_full_in_bytes_evicts_the_oldest() {
    let gated = Target::start(Reply::Gated).await;
    let (shared, statuses) = overfill("oldest", &gated).await;
    assert_eq!(statuses, [202; 7]);
    let lane = [
        ("route", "oldest"),
        ("target", "gated"),
        ("reason", "overflow"),
    ];
    let metrics = shared.metrics().await;
    assert_eq!(shown(&metrics, "fanout_lane_dropped_total", &lane), 3.0);
    assert_eq!(delivered_numbers(&gated, 5).await, [0, 4, 5, 6, 7]);
    shared
        .wait_metric("fanout_lane_delivered_total", &lane[..2], 5.0)
        .await;
    assert_books(&shared.metrics().await, "oldest", "gated");
}

#[tokio::test]
async fn a_drop_newest_lane_full_in_bytes_drops_the_new_event() {
    let gated = Target::start(Reply::Gated).await;
    let (shared, statuses) = overfill("newest", &gated).await;
    assert_eq!(statuses, [202; 7]);
    let lane = [
        ("route", "newest"),
        ("target", "gated"),
        ("reason", "overflow"),
    ];
    let metrics = shared.metrics().await;
    assert_eq!(shown(&metrics, "fanout_lane_dropped_total", &lane), 3.0);
    assert_eq!(delivered_numbers(&gated, 5).await, [0, 1, 2, 3, 4]);
    shared
        .wait_metric("fanout_lane_delivered_total", &lane[..2], 5.0)
        .await;
    assert_books(&shared.metrics().await, "newest", "gated");
}

#[tokio::test]
async fn a_reject_lane_full_in_bytes_answers_503() {
    let gated = Target::start(Reply::Gated).await;
    let (shared, statuses) = overfill("strict", &gated).await;
    assert_eq!(statuses, [202, 202, 202, 202, 503, 503, 503]);
    let refused = post_kib(&shared, "/strict", 8).await;
    assert_eq!(
        (refused.status, refused.header("retry-after")),
        (503, Some("1"))
    );
    let metrics = shared.metrics().await;
    let labels = [("route", "strict"), ("reason", "lane_full")];
    assert_eq!(
        shown(&metrics, "fanout_events_rejected_total", &labels),
        4.0
    );
    assert_eq!(delivered_numbers(&gated, 5).await, [0, 1, 2, 3, 4]);
    let lane = [("route", "strict"), ("target", "gated")];
    shared
        .wait_metric("fanout_lane_delivered_total", &lane, 5.0)
        .await;
    assert_eq!(
        post_kib(&shared, "/strict", 9).await.status,
        202,
        "room again"
    );
    assert_books(&shared.metrics().await, "strict", "gated");
}
