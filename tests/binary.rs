//! The `fanout` binary as users run it, with the default routes.yaml compiled in: flags,
//! the HTTP contract of errors, HTTP/1.1 pipelining, h2c, timeouts, and SIGTERM.

mod common;

use bytes::Bytes;
use http_body_util::Full;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::process::{raw_exchange, Fanout, FANOUT};

#[test]
fn routes_flag_prints_the_compiled_table() {
    let output = Command::new(FANOUT)
        .arg("--routes")
        .output()
        .expect("run fanout --routes");
    assert!(output.status.success());
    let table = String::from_utf8(output.stdout).unwrap();
    assert!(table.contains("route demo  POST /demo"), "{table}");
    assert!(
        table.contains("target receiver_a  http://${RECEIVER_A:-127.0.0.1:8001}/event-inbound"),
        "{table}"
    );
    assert!(
        table.contains("buffer=100 buffer_bytes=67108864 overflow=reject"),
        "{table}"
    );
    assert!(table.contains("on=[408,429,500,502-599]"), "{table}");
    assert!(
        table.contains("route items  GET,POST /items/*  mode=balance"),
        "{table}"
    );
    assert!(
        table.contains("backend w1  http://${W1:-127.0.0.1:5001}  weight=2"),
        "{table}"
    );
}

#[test]
fn help_documents_every_flag() {
    let output = Command::new(FANOUT)
        .arg("--help")
        .output()
        .expect("run fanout --help");
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for flag in [
        "--listen",
        "--routes",
        "--log-format",
        "--header-read-timeout",
        "--drain-timeout",
        "--workers",
        "demo",
    ] {
        assert!(
            help.contains(flag),
            "--help does not mention {flag}:\n{help}"
        );
    }
}

#[tokio::test]
async fn bad_requests_get_clear_json_errors_and_the_server_keeps_serving() {
    let fanout = Fanout::start(&[]);
    let addr = fanout.addr;

    let unknown = common::post(addr, "/nope", "{}", "application/json").await;
    assert_eq!(unknown.status, 404);
    assert!(unknown.body.starts_with("{\"error\":"), "{}", unknown.body);

    let wrong_method = common::get(addr, "/demo").await;
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.header("allow"), Some("POST"));
    assert_eq!(
        wrong_method.header("content-type"),
        Some("application/json")
    );

    let too_big = "x".repeat(64 * 1024 + 1); // the demo route's max_body is 64KiB
    let refused = common::post(addr, "/demo", &too_big, "application/json").await;
    assert_eq!(refused.status, 413);
    assert!(refused.body.contains("65536"), "{}", refused.body);

    let chunked = raw_exchange(
        addr,
        format!("POST /demo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{}\r\n0\r\n\r\n", too_big.len(), too_big).as_bytes(),
    );
    assert!(
        chunked.starts_with("HTTP/1.1 413"),
        "a body without Content-Length is cut off too: {chunked}"
    );

    let garbage = raw_exchange(addr, b"THIS IS NOT HTTP\r\n\r\n");
    assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage}");

    let health = common::get(addr, "/healthz").await;
    assert_eq!(health.status, 200);
    let accepted = common::post(addr, "/demo", "{\"still\":\"serving\"}", "application/json").await;
    accepted.id();
    let metrics = common::Metrics(common::get(addr, "/metrics").await.body);
    assert_eq!(
        metrics.value(
            "fanout_events_rejected_total",
            &[("route", "demo"), ("reason", "body_too_large")]
        ),
        2.0
    );
}

#[test]
fn http1_pipelining_answers_every_request_in_order() {
    let fanout = Fanout::start(&[]);
    let post = "POST /demo HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
    let health = "GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n";
    let unknown = "POST /nope HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n";
    let answer = raw_exchange(
        fanout.addr,
        format!("{post}{health}{unknown}{post}").as_bytes(),
    );
    let statuses: Vec<&str> = answer
        .match_indices("HTTP/1.1 ")
        .map(|(at, _)| &answer[at + 9..at + 12])
        .collect();
    assert_eq!(statuses, ["202", "200", "404", "202"], "{answer}");
}

#[test]
fn http1_0_clients_are_answered_and_closed() {
    let fanout = Fanout::start(&[]);
    let answer = raw_exchange(
        fanout.addr,
        b"POST /demo HTTP/1.0\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
    );
    assert!(answer.starts_with("HTTP/1.0 202"), "{answer}");
    assert!(answer.contains("{\"id\":\""), "{answer}");
}

#[test]
fn curl_with_expect_100_continue_uploads_only_when_the_body_is_wanted() {
    let fanout = Fanout::start(&[]);
    let dir = std::env::temp_dir().join(format!("fanout-expect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let curl = |size: usize| {
        let file = dir.join(format!("body-{size}"));
        std::fs::write(&file, format!("\"{}\"", "x".repeat(size - 2))).unwrap();
        let output = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code} %{size_upload}"])
            .args([
                "-H",
                "Expect: 100-continue",
                "-H",
                "content-type: application/json",
            ])
            .args(["--expect100-timeout", "5"])
            .arg("--data-binary")
            .arg(format!("@{}", file.display()))
            .arg(format!("http://{}/demo", fanout.addr))
            .output()
            .expect("curl runs");
        String::from_utf8(output.stdout).unwrap()
    };
    let accepted = curl(2048);
    assert_eq!(
        accepted, "202 2048",
        "the body is uploaded after 100 Continue"
    );
    let refused = curl(100 * 1024); // over the demo route's 64KiB
    assert_eq!(refused, "413 0", "refused before the upload");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn h2c_with_prior_knowledge_is_accepted() {
    let fanout = Fanout::start(&[]);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let request = hyper::Request::post(format!("http://{}/demo", fanout.addr))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(b"{\"over\":\"h2\"}")))
        .unwrap();
    let response = client.request(request).await.expect("an h2c answer");
    assert_eq!(response.version(), hyper::Version::HTTP_2);
    assert_eq!(response.status(), 202);
}

#[test]
fn idle_and_slow_connections_are_closed() {
    let fanout = Fanout::start(&["--header-read-timeout", "300ms"]);
    let mut stream = TcpStream::connect(fanout.addr).expect("connect");
    stream
        .write_all(b"POST /demo HTTP/1.1\r\nhost: x\r\n")
        .expect("half a request");
    stream.set_read_timeout(Some(common::PATIENCE)).unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a client that never finishes its headers is cut off"
    );

    let mut idle = TcpStream::connect(fanout.addr).expect("connect");
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .expect("a whole request");
    idle.set_read_timeout(Some(common::PATIENCE)).unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let _ = idle.read_to_end(&mut answer);
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "an idle keep-alive connection is closed"
    );
}

#[test]
fn sigterm_stops_accepting_drains_and_reports_what_was_left() {
    // The targets refuse connections: events stay undelivered.
    let mut fanout = Fanout::start(&["--drain-timeout", "1s"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        for _ in 0..5 {
            common::post(fanout.addr, "/demo", "{}", "application/json")
                .await
                .id();
        }
    });
    let started = Instant::now();
    let signalled = Command::new("kill")
        .args(["-TERM", &fanout.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(signalled.success());
    // While it drains (1s, the targets being down), the listener is closed.
    let deadline = Instant::now() + common::PATIENCE;
    while !fanout.log_messages().iter().any(|e| {
        e["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("shutting down"))
    }) {
        assert!(Instant::now() < deadline, "no shutdown log line");
        std::thread::sleep(Duration::from_millis(10));
    }
    let refused = (0..100).any(|_| {
        let closed = TcpStream::connect(fanout.addr).is_err();
        if !closed {
            std::thread::sleep(Duration::from_millis(10));
        }
        closed
    });
    assert!(refused, "still accepting connections while draining");
    assert!(
        fanout.child.try_wait().unwrap().is_none(),
        "the check ran during the drain, not after the exit"
    );
    let status = fanout.terminate();
    assert!(status.success(), "fanout exits 0 after a drain: {status:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let logs = fanout.log_messages();
    let undelivered: u64 = logs
        .iter()
        .filter(|e| e["fields"]["message"] == "lane stopped with undelivered events")
        .map(|e| e["fields"]["undelivered"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(
        undelivered, 10,
        "5 events x 2 lanes left undelivered: {logs:?}"
    );
}
