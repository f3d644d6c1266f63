//! Batches as README.md describes them: `max_bytes` caps a batch's body, a single event larger
//! than `max_bytes` still goes (alone), a CR or LF in a body becomes a space so every event is
//! one line, and an empty body makes an empty line.

mod common;

use common::{start_proxy, Received, Reply, Target};

mod table {
    fanout::routes!("tests/routes/promises_batches.yaml");
}
use table::Table;

/// The (id, line) pairs of one batch request, after checking its shape.
fn lines_of(request: &Received) -> Vec<(String, String)> {
    assert_eq!(request.header("content-type"), "application/x-ndjson");
    assert!(
        request.headers.get("fanout-event-id").is_none(),
        "a batch carries fanout-event-ids instead"
    );
    let body = request.body_text();
    assert!(body.ends_with('\n'), "every line ends with \\n: {body:?}");
    let lines: Vec<&str> = body[..body.len() - 1].split('\n').collect();
    let ids: Vec<&str> = request.header("fanout-event-ids").split(',').collect();
    assert_eq!(ids.len(), lines.len(), "one id per line: {body:?}");
    ids.into_iter()
        .map(str::to_owned)
        .zip(lines.into_iter().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn max_bytes_caps_a_batch_and_a_larger_event_goes_alone() {
    // The first request is held until the test opens the gate, so the events behind it wait in
    // the lane and are batched as the limits allow.
    let target = Target::with(|n| {
        if n == 0 {
            Reply::Gated
        } else {
            Reply::Status(200)
        }
    })
    .await;
    let shared = start_proxy::<Table>(&[("CAPPED", target.addr.to_string())], None).await;

    // 29-byte bodies: 30 bytes a line, so 3 lines fit in max_bytes (100), 4 do not.
    let small = |n: usize| format!("{{\"n\":{n},\"pad\":\"{}\"}}", "x".repeat(13));
    assert_eq!(small(0).len(), 29);
    let big = format!("{{\"big\":\"{}\"}}", "y".repeat(140));
    assert!(big.len() + 1 > 100);

    let mut sent = vec![(shared.post("/capped", &small(0)).await.id(), small(0))];
    target.wait_for(1).await;
    for n in 1..=6 {
        sent.push((shared.post("/capped", &small(n)).await.id(), small(n)));
    }
    sent.push((shared.post("/capped", &big).await.id(), big.clone()));
    for n in 7..=8 {
        sent.push((shared.post("/capped", &small(n)).await.id(), small(n)));
    }
    target.open_gate(1);
    shared
        .wait_metric(
            "fanout_lane_delivered_total",
            &[("route", "capped")],
            sent.len() as f64,
        )
        .await;

    let requests = target.received();
    let batches: Vec<Vec<(String, String)>> = requests.iter().map(lines_of).collect();
    let all: Vec<(String, String)> = batches.iter().flatten().cloned().collect();
    assert_eq!(all, sent, "every event once, in order, with its own id");
    for (request, lines) in requests.iter().zip(&batches) {
        if lines.iter().any(|(_, line)| *line == big) {
            assert_eq!(lines.len(), 1, "the larger event goes alone");
            assert_eq!(request.body.len(), big.len() + 1);
        } else {
            assert!(
                request.body.len() <= 100,
                "a batch of {} bytes is over max_bytes: {:?}",
                request.body.len(),
                request.body_text()
            );
        }
    }
    let longest = batches.iter().map(Vec::len).max().unwrap_or(0);
    assert_eq!(
        longest, 3,
        "batches fill up to max_bytes, and no further: {batches:?}"
    );
}

#[tokio::test]
async fn line_breaks_become_spaces_and_an_empty_body_an_empty_line() {
    let target = Target::start(Reply::Status(200)).await;
    let shared = start_proxy::<Table>(&[("LINES", target.addr.to_string())], None).await;
    let events = [
        ("{\n  \"a\": 1\r\n}", "application/json", "{   \"a\": 1  }"),
        ("", "application/json", ""),
        (
            "line one\r\nline two\n",
            "text/plain",
            "line one  line two ",
        ),
        ("\r\n", "text/plain", "  "),
        ("{\"last\":true}", "application/json", "{\"last\":true}"),
    ];
    let mut expected = Vec::new();
    for (body, content_type, line) in events {
        let answer = common::post(shared.addr, "/lines", body, content_type).await;
        expected.push((answer.id(), line.to_owned()));
    }
    shared
        .wait_metric(
            "fanout_lane_delivered_total",
            &[("route", "lines")],
            events.len() as f64,
        )
        .await;
    let lines: Vec<(String, String)> = target.received().iter().flat_map(lines_of).collect();
    assert_eq!(lines, expected);
}
