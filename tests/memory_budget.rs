//! `server.memory_budget` bounds the bytes of event bodies the whole process holds: an event
//! that would go over it is refused with 503 before its body is read when `Content-Length`
//! tells, and accepted again once deliveries free memory. A test binary of its own, since the
//! budget counts every event in the process.

mod common;

use common::{start_proxy, Reply, Target};

mod table {
    fanout::routes!("tests/routes/budget.yaml");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_over_the_memory_budget_are_refused_until_deliveries_free_it() {
    let gated = Target::start(Reply::Gated).await;
    let shared = start_proxy::<table::Table>(&[("GATED", gated.addr.to_string())], None).await;
    let body = format!("\"{}\"", "x".repeat(10 * 1024 - 2)); // 10 KiB
    let mut accepted = 0;
    let refused = loop {
        let answer = shared.post("/held", &body).await;
        if answer.status != 202 {
            break answer;
        }
        accepted += 1;
        assert!(accepted <= 7, "64 KiB holds at most 6 events of 10 KiB");
    };
    assert_eq!(accepted, 6, "the budget fills at 6 x 10 KiB");
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(refused.body.contains("memory budget"), "{}", refused.body);
    let metrics = shared.metrics().await;
    assert!(
        metrics.0.contains("fanout_memory_held_bytes "),
        "{}",
        metrics.0
    );
    assert_eq!(
        metrics.value("fanout_memory_held_bytes", &[]),
        6.0 * 10240.0
    );
    assert_eq!(
        metrics.value(
            "fanout_events_rejected_total",
            &[("route", "held"), ("reason", "memory_budget")]
        ),
        1.0
    );

    gated.open_gate(6);
    shared
        .wait_metric(
            "fanout_lane_delivered_total",
            &[("route", "held"), ("target", "gated")],
            6.0,
        )
        .await;
    shared
        .wait_metric("fanout_memory_held_bytes", &[], 0.0)
        .await;
    gated.open_gate(1);
    assert_eq!(shared.post("/held", &body).await.status, 202, "room again");
}
