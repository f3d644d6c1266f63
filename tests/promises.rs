//! The HTTP contract of README.md not covered elsewhere: 400 for a body the client cut off,
//! `Connection: close` on 413, `HEAD /healthz`, 405 on the proxy's own paths, and admission on
//! a route that mixes a `reject` lane with drop lanes. Shutdown is in `promises_shutdown.rs`.

mod common;

use common::raw::{connect, raw_header, read_to_close};

use common::{start_proxy, Reply, Running, Target, PATIENCE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod table {
    fanout::routes!("tests/routes/promises.yaml");
}
use table::Table;

fn addr(target: &Target) -> String {
    target.addr.to_string()
}

/// Reads from `stream` into `seen` until the text holds `needle`; panics after [`PATIENCE`]
/// or if the server closes first.
async fn read_until(stream: &mut TcpStream, seen: &mut Vec<u8>, needle: &str) -> String {
    let reading = async {
        let mut buffer = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(seen).into_owned();
            if text.contains(needle) {
                return text;
            }
            let n = stream.read(&mut buffer).await.expect("read from the proxy");
            assert!(
                n > 0,
                "the proxy closed before sending {needle:?}: {text:?}"
            );
            seen.extend_from_slice(&buffer[..n]);
        }
    };
    tokio::time::timeout(PATIENCE, reading)
        .await
        .unwrap_or_else(|_| panic!("no {needle:?} from the proxy within {PATIENCE:?}"))
}

#[tokio::test]
async fn a_body_cut_off_by_the_client_gets_400_and_is_counted() {
    let target = Target::start(Reply::Status(200)).await;
    let shared = start_proxy::<Table>(&[("PLAIN", addr(&target))], None).await;

    let mut stream = connect(shared.addr).await;
    stream
        .write_all(
            b"POST /plain HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
              content-length: 100\r\n\r\n{\"cut\":",
        )
        .await
        .unwrap();
    stream.shutdown().await.expect("close the write side");
    let answer = read_to_close(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    assert!(answer.contains("{\"error\":"), "{answer:?}");

    let metrics = shared.metrics().await;
    let unreadable = [("route", "plain"), ("reason", "body_unreadable")];
    assert!(
        metrics.0.contains("reason=\"body_unreadable\""),
        "{}",
        metrics.0
    );
    assert_eq!(
        metrics.value("fanout_events_rejected_total", &unreadable),
        1.0
    );
    assert_eq!(
        metrics.value("fanout_events_accepted_total", &[("route", "plain")]),
        0.0
    );
    assert_eq!(target.count(), 0);
}

#[tokio::test]
async fn a_413_closes_the_connection() {
    let target = Target::start(Reply::Status(200)).await;
    let shared = start_proxy::<Table>(&[("PLAIN", addr(&target))], None).await;

    // Refused from Content-Length (max_body is 1KiB), before the body is sent.
    let mut declared = connect(shared.addr).await;
    declared
        .write_all(b"POST /plain HTTP/1.1\r\nhost: x\r\ncontent-length: 2000\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut declared).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:?}");
    assert_eq!(
        raw_header(&answer, "connection"),
        Some("close"),
        "{answer:?}"
    );

    // Without Content-Length: reading stops once the limit is crossed.
    let mut chunked = connect(shared.addr).await;
    let body = "x".repeat(2000);
    let request = format!(
        "POST /plain HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    chunked.write_all(request.as_bytes()).await.unwrap();
    let answer = read_to_close(&mut chunked).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:?}");
    assert_eq!(
        raw_header(&answer, "connection"),
        Some("close"),
        "{answer:?}"
    );
    assert_eq!(
        answer.matches("HTTP/1.1").count(),
        1,
        "the rest of the body is not taken for another request: {answer:?}"
    );
    assert_eq!(target.count(), 0);
}

#[tokio::test]
async fn head_healthz_answers_200_without_a_body() {
    let shared = start_proxy::<Table>(&[], None).await;
    let mut stream = connect(shared.addr).await;
    // Pipelined: if HEAD sent a body, it would sit between the two heads.
    stream
        .write_all(
            b"HEAD /healthz HTTP/1.1\r\nhost: x\r\n\r\nGET /healthz HTTP/1.1\r\nhost: x\r\n\r\n",
        )
        .await
        .unwrap();
    let mut seen = Vec::new();
    let text = read_until(&mut stream, &mut seen, "{\"status\":\"ok\"}").await;
    let (head, rest) = text.split_once("\r\n\r\n").expect("a whole head");
    assert!(head.starts_with("HTTP/1.1 200"), "{text:?}");
    assert!(
        rest.starts_with("HTTP/1.1 200"),
        "the HEAD answer has no body, the GET answer follows it at once: {text:?}"
    );
    assert_eq!(text.matches("{\"status\":\"ok\"}").count(), 1, "{text:?}");
}

#[tokio::test]
async fn other_methods_on_healthz_and_metrics_get_405_with_allow() {
    let shared = start_proxy::<Table>(&[], None).await;
    for path in ["/healthz", "/metrics"] {
        let answer = common::post(shared.addr, path, "{}", "application/json").await;
        assert_eq!(answer.status, 405, "POST {path}: {answer:?}");
        let allow = answer
            .header("allow")
            .unwrap_or_else(|| panic!("POST {path}: 405 without Allow: {answer:?}"));
        assert!(
            allow.split(',').any(|method| method.trim() == "GET"),
            "POST {path}: Allow: {allow}"
        );
        assert!(!allow.contains("POST"), "POST {path}: Allow: {allow}");
        assert!(answer.body.starts_with("{\"error\":"), "{answer:?}");
    }
    let healthz = common::post(shared.addr, "/healthz", "", "application/json").await;
    let allow = healthz.header("allow").expect("an Allow header");
    assert!(
        allow.split(',').any(|method| method.trim() == "HEAD"),
        "/healthz answers HEAD too: Allow: {allow}"
    );
}

/// The bodies a target received, in order.
fn bodies(target: &Target) -> Vec<String> {
    target
        .received()
        .iter()
        .map(|r| r.body_text().to_owned())
        .collect()
}

/// The `/mixed` route (a reject lane `strict`, a `drop_oldest` and a `drop_newest` lane, each of
/// one event) with `strict` answering `strict_reply` and both drop lanes `drop_reply`.
async fn mixed(strict_reply: Reply, drop_reply: Reply) -> (Target, Target, Target, Running<Table>) {
    let strict = Target::start(strict_reply).await;
    let oldest = Target::start(drop_reply).await;
    let newest = Target::start(drop_reply).await;
    let env = [
        ("MIXED_STRICT", addr(&strict)),
        ("MIXED_OLDEST", addr(&oldest)),
        ("MIXED_NEWEST", addr(&newest)),
    ];
    let shared = start_proxy::<Table>(&env, None).await;
    (strict, oldest, newest, shared)
}

#[tokio::test]
async fn a_full_reject_lane_keeps_the_event_from_the_drop_lanes_too() {
    let (strict, oldest, newest, shared) = mixed(Reply::Gated, Reply::Status(200)).await;

    shared.post("/mixed", "first").await.id();
    strict.wait_for(1).await; // its one worker holds the first event; the lane is empty
    shared.post("/mixed", "second").await.id(); // fills the reject lane (buffer 1)
    let refused = shared.post("/mixed", "third").await;
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(refused.body.contains("strict"), "{}", refused.body);

    oldest.wait_for(2).await;
    newest.wait_for(2).await;
    strict.open_gate(10);
    strict.wait_for(2).await;
    for lane in ["strict", "oldest", "newest"] {
        shared
            .wait_metric(
                "fanout_lane_delivered_total",
                &[("route", "mixed"), ("target", lane)],
                2.0,
            )
            .await;
    }
    for (name, target) in [
        ("strict", &strict),
        ("oldest", &oldest),
        ("newest", &newest),
    ] {
        assert_eq!(
            bodies(target),
            ["first", "second"],
            "{name}: the refused event is in no lane"
        );
    }
    let metrics = shared.metrics().await;
    assert!(
        metrics.0.contains("fanout_lane_dropped_total"),
        "{}",
        metrics.0
    );
    for lane in ["oldest", "newest"] {
        let labels = [("route", "mixed"), ("target", lane), ("reason", "overflow")];
        assert_eq!(
            metrics.value("fanout_lane_dropped_total", &labels),
            0.0,
            "{lane} never saw the refused event, so dropped nothing"
        );
    }
    assert_eq!(
        metrics.value("fanout_events_accepted_total", &[("route", "mixed")]),
        2.0
    );
    assert_eq!(
        metrics.value(
            "fanout_events_rejected_total",
            &[("route", "mixed"), ("reason", "lane_full")]
        ),
        1.0
    );
}

#[tokio::test]
async fn a_full_drop_lane_does_not_refuse_the_event() {
    let (strict, oldest, newest, shared) = mixed(Reply::Status(200), Reply::Gated).await;

    shared.post("/mixed", "first").await.id();
    oldest.wait_for(1).await; // each drop lane's one worker holds the first event
    newest.wait_for(1).await;
    shared.post("/mixed", "second").await.id(); // fills both drop lanes (buffer 1)
    let third = shared.post("/mixed", "third").await;
    assert_eq!(
        third.status, 202,
        "full drop lanes do not refuse the event: {third:?}"
    );

    strict.wait_for(3).await;
    oldest.open_gate(10);
    newest.open_gate(10);
    for lane in ["oldest", "newest"] {
        shared
            .wait_metric(
                "fanout_lane_delivered_total",
                &[("route", "mixed"), ("target", lane)],
                2.0,
            )
            .await;
    }
    assert_eq!(bodies(&strict), ["first", "second", "third"]);
    assert_eq!(bodies(&oldest), ["first", "third"], "drop_oldest evicted");
    assert_eq!(bodies(&newest), ["first", "second"], "drop_newest kept");
    let metrics = shared.metrics().await;
    assert!(
        metrics.0.contains("fanout_lane_dropped_total"),
        "{}",
        metrics.0
    );
    for lane in ["oldest", "newest"] {
        let labels = [("route", "mixed"), ("target", lane), ("reason", "overflow")];
        assert_eq!(metrics.value("fanout_lane_dropped_total", &labels), 1.0);
    }
    assert_eq!(
        metrics.value("fanout_events_accepted_total", &[("route", "mixed")]),
        3.0
    );
    assert_eq!(
        metrics.value(
            "fanout_events_rejected_total",
            &[("route", "mixed"), ("reason", "lane_full")]
        ),
        0.0
    );
}
