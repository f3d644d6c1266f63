//! Hostile clients and targets on real sockets: every limit of the `server:` section acts as
//! documented (slow and idle clients are closed and counted, connections and h2c streams are
//! capped, oversized heads and trickled bodies are refused) while well-behaved clients keep
//! being served; and misbehaving targets (an endless 200, no answer at all) or lanes bounded in
//! bytes neither stall delivery nor lose count of an event.

mod common;
#[path = "hostile/raw.rs"]
mod raw;
#[path = "hostile/targets.rs"]
mod targets;

use bytes::Bytes;
use common::{start_proxy, Metrics, Reply, Target, PATIENCE};
use fanout::table::RouteTable;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;

mod table {
    fanout::routes!("tests/routes/hostile.yaml");
}
mod crowd {
    fanout::routes!("tests/routes/hostile_crowd.yaml");
}
use table::Table;

const MB: u64 = 1 << 20;

/// Held by every test of this file for its whole run: two of them bound the growth of this
/// process's RSS, which holds the proxy under test, and another test running beside them would
/// count in it.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn addr(target: &Target) -> String {
    target.addr.to_string()
}

/// The metric's value, after checking that `/metrics` shows it at all.
fn shown(metrics: &Metrics, name: &str, labels: &[(&str, &str)]) -> f64 {
    assert!(metrics.0.contains(name), "no {name} in:\n{}", metrics.0);
    metrics.value(name, labels)
}

fn closed(reason: &str) -> [(&'static str, &str); 1] {
    [("reason", reason)]
}

/// Waits until `done()` holds; panics after [`PATIENCE`].
async fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_clients_are_cut_off_while_a_normal_client_is_served() {
    let _alone = ONE_AT_A_TIME.lock().await;
    raw::raise_open_files(4096);
    let sink = Target::start(Reply::Status(200)).await;
    let shared = start_proxy::<Table>(&[("OPEN", addr(&sink))], None).await;
    let rss_before = raw::rss_bytes();

    // 100 clients send one byte every 100ms and never finish: half a request head (cut off by
    // header_read_timeout), half the h2c preface (cut off by first_byte_timeout).
    let mut attackers = JoinSet::new();
    for n in 0..100 {
        let lead: &'static [u8] = match n % 2 {
            0 => b"POST /open HTTP/1.1\r\nHost: fanout\r\nX-Slow: ",
            _ => raw::PREFACE,
        };
        let pace = Duration::from_millis(100);
        attackers.spawn(raw::trickle(shared.addr, b"", lead, pace, PATIENCE));
    }
    let served = std::sync::Mutex::new(Vec::new());
    let attack = async {
        let mut ended = Vec::new();
        while let Some(trickled) = attackers.join_next().await {
            ended.push(trickled.expect("an attacker does not panic"));
        }
        ended
    };
    let normal = async {
        loop {
            let started = Instant::now();
            let answer = shared.post("/open", "{\"during\":\"attack\"}").await;
            assert_eq!(answer.status, 202, "{answer:?}");
            let took = started.elapsed();
            assert!(took < Duration::from_secs(1), "a 202 took {took:?}");
            served.lock().unwrap().push(Instant::now());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let ended = tokio::select! {
        ended = attack => ended,
        () = normal => unreachable!(),
    };

    let first_cut = ended
        .iter()
        .filter_map(|t| t.closed)
        .min()
        .expect("attackers");
    // Each limit is 500ms (a head's counted from its second byte); idle_timeout is 2s.
    for trickled in &ended {
        let lasted = trickled.lasted().expect("every slow client is closed");
        assert!(
            (Duration::from_millis(450)..Duration::from_millis(1500)).contains(&lasted),
            "a slow client was closed after {lasted:?}"
        );
    }
    let served_meanwhile = served
        .lock()
        .unwrap()
        .iter()
        .filter(|&&t| t < first_cut)
        .count();
    assert!(
        served_meanwhile >= 3,
        "{served_meanwhile} 202s during the attack"
    );
    let grown = raw::rss_bytes().saturating_sub(rss_before);
    assert!(grown < 100 * MB, "RSS grew by {} MB", grown / MB);

    let metrics = shared.metrics().await;
    let timeouts = shown(
        &metrics,
        "fanout_connections_closed_total",
        &closed("first_byte_timeout"),
    );
    assert_eq!(timeouts, 50.0, "one per partial h2c preface");
    let idle = shown(
        &metrics,
        "fanout_connections_closed_total",
        &closed("idle_timeout"),
    );
    assert_eq!(
        idle, 0.0,
        "cut off by the header and first-byte limits, not as idle"
    );
    // A post under way when the attack ended may have been accepted unseen.
    let accepted = shown(
        &metrics,
        "fanout_events_accepted_total",
        &[("route", "open")],
    );
    let served = served.lock().unwrap().len() as f64;
    assert!(
        accepted == served || accepted == served + 1.0,
        "{accepted} accepted, {served} seen"
    );
    shared
        .wait_metric("fanout_connections_open", &[], 1.0)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_connections_fill_max_connections_and_then_time_out() {
    let _alone = ONE_AT_A_TIME.lock().await;
    raw::raise_open_files(8192);
    let sink = Target::start(Reply::Status(200)).await;
    let shared = start_proxy::<crowd::Table>(&[("CROWD", addr(&sink))], None).await;
    let limit = crowd::Table::SERVER.max_connections;
    let first_byte = crowd::Table::SERVER.first_byte_timeout;
    assert_eq!(limit, 1000);
    let rss_before = raw::rss_bytes();

    // Connections that send nothing, exactly as many as allowed (the server has no other).
    let mut idle = JoinSet::new();
    for _ in 0..limit {
        let opened = Instant::now();
        let stream = TcpStream::connect(shared.addr).await.expect("connect");
        idle.spawn(async move {
            let answer = tokio::time::timeout(PATIENCE, raw::read_to_close(stream)).await;
            (
                opened,
                Instant::now(),
                answer.expect("an idle connection is closed"),
            )
        });
    }
    let open = &shared.shared.connections.open;
    eventually("every idle connection is open", || {
        open.get() == limit as i64
    })
    .await;
    let grown = raw::rss_bytes().saturating_sub(rss_before);
    assert!(
        grown < 100 * MB,
        "RSS grew by {} MB with {limit} connections",
        grown / MB
    );

    // One more is closed at once, unanswered though it asks for something.
    let request = b"GET /healthz HTTP/1.1\r\nHost: fanout\r\n\r\n";
    for _ in 0..20 {
        let started = Instant::now();
        let answer = raw::exchange(shared.addr, request, PATIENCE).await;
        assert_eq!(answer.as_deref(), Some(&b""[..]), "refused with no answer");
        let took = started.elapsed();
        assert!(took < first_byte / 3, "refused after {took:?}");
    }

    while let Some(ended) = idle.join_next().await {
        let (opened, cut, answer) = ended.expect("an idle client does not panic");
        assert_eq!(answer, b"", "nothing is written to an idle connection");
        let lasted = cut - opened;
        assert!(
            lasted >= first_byte - Duration::from_millis(50) && lasted < first_byte * 2,
            "an idle connection was closed after {lasted:?}"
        );
    }
    // The slots come back as the idle connections close: new clients are served again.
    let deadline = Instant::now() + PATIENCE;
    let mut turned_away = 0;
    loop {
        let answer = raw::exchange(
            shared.addr,
            b"GET /healthz HTTP/1.1\r\nHost: fanout\r\nConnection: close\r\n\r\n",
            PATIENCE,
        )
        .await;
        if answer
            .as_deref()
            .is_some_and(|a| a.starts_with(b"HTTP/1.1 200"))
        {
            break;
        }
        turned_away += 1;
        assert!(
            Instant::now() < deadline,
            "not served after the idle ones closed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(shared.post("/crowd", "{}").await.status, 202);
    let metrics = shared.metrics().await;
    let refused = shown(
        &metrics,
        "fanout_connections_closed_total",
        &closed("max_connections"),
    );
    assert_eq!(refused, f64::from(20 + turned_away));
    let timeouts = metrics.value(
        "fanout_connections_closed_total",
        &closed("first_byte_timeout"),
    );
    assert_eq!(timeouts, limit as f64);
    shared
        .wait_metric("fanout_connections_open", &[], 1.0)
        .await;
    let grown = raw::rss_bytes().saturating_sub(rss_before);
    assert!(grown < 100 * MB, "RSS grew by {} MB", grown / MB);
}

#[tokio::test]
async fn a_huge_body_trickled_in_gets_408_after_body_read_timeout() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let sink = Target::start(Reply::Status(200)).await;
    let shared = start_proxy::<Table>(&[("OPEN", addr(&sink))], None).await;
    let head = "POST /open HTTP/1.1\r\nHost: fanout\r\nContent-Type: application/json\r\n\
                Content-Length: 524288\r\n\r\n";
    let pace = Duration::from_millis(50);
    let trickled = raw::trickle(shared.addr, head.as_bytes(), b"", pace, PATIENCE).await;
    let answer = String::from_utf8_lossy(&trickled.received).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 408"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    let lasted = trickled.lasted().expect("the server closes the connection");
    let limit = Table::SERVER.body_read_timeout;
    assert!(
        lasted >= limit && lasted < limit * 3,
        "closed after {lasted:?}"
    );

    let metrics = shared.metrics().await;
    let labels = [("route", "open"), ("reason", "body_timeout")];
    assert_eq!(
        shown(&metrics, "fanout_events_rejected_total", &labels),
        1.0
    );
    assert_eq!(
        metrics.value("fanout_events_accepted_total", &[("route", "open")]),
        0.0
    );
    assert_eq!(sink.count(), 0);
}

#[tokio::test]
async fn an_idle_h2c_connection_is_closed_after_idle_timeout() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let sink = Target::start(Reply::Status(200)).await;
    let shared = start_proxy::<Table>(&[("OPEN", addr(&sink))], None).await;
    let stream = TcpStream::connect(shared.addr).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2c handshake");
    let connection = tokio::spawn(connection);
    let request = hyper::Request::post(format!("http://{}/open", shared.addr))
        .body(Full::new(Bytes::from_static(b"{\"over\":\"h2c\"}")))
        .expect("a valid request");
    let response = sender.send_request(request).await.expect("an answer");
    assert_eq!(response.status(), 202);
    response
        .into_body()
        .collect()
        .await
        .expect("the 202's body");
    let answered = Instant::now();

    // `sender` is kept: only the server can end the connection.
    let ended = tokio::time::timeout(PATIENCE, connection).await;
    ended
        .expect("the server closes an idle h2c connection")
        .expect("no panic")
        .ok();
    let idle = answered.elapsed();
    let limit = Table::SERVER.idle_timeout;
    assert!(
        idle >= limit - Duration::from_millis(100) && idle < limit * 3,
        "closed after {idle:?}"
    );
    assert!(sender
        .send_request(hyper::Request::default())
        .await
        .is_err());
    shared
        .wait_metric(
            "fanout_connections_closed_total",
            &closed("idle_timeout"),
            1.0,
        )
        .await;
}

#[tokio::test]
async fn an_h2c_client_gets_at_most_http2_max_streams_requests_under_way() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let sink = Target::start(Reply::Status(200)).await;
    let shared = start_proxy::<Table>(&[("OPEN", addr(&sink))], None).await;
    let max = Table::SERVER.http2_max_streams;
    let stream = TcpStream::connect(shared.addr).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let mut hello = raw::PREFACE.to_vec();
    hello.extend(raw::frame(raw::SETTINGS, 0, 0, &[]));
    writer.write_all(&hello).await.expect("send the preface");

    // Open two streams more than allowed, each a POST whose body never comes.
    let wanted: Vec<u32> = (0..max + 2).map(|n| 2 * n + 1).collect();
    let mut requests = Vec::new();
    for &id in &wanted {
        let block = raw::post_headers("/open");
        requests.extend(raw::frame(raw::HEADERS, raw::END_HEADERS, id, &block));
    }
    let (mut advertised, mut refused, mut answered) = (None, BTreeSet::new(), BTreeSet::new());
    let reading = async {
        while answered.len() + refused.len() < wanted.len() {
            let frame = raw::read_frame(&mut reader)
                .await
                .expect("the server goes on");
            match (frame.kind, frame.flags & raw::ACK) {
                (raw::SETTINGS, 0) => {
                    advertised = raw::setting(&frame.payload, raw::SETTINGS_MAX_CONCURRENT_STREAMS);
                    writer
                        .write_all(&raw::frame(raw::SETTINGS, raw::ACK, 0, &[]))
                        .await
                        .unwrap();
                    writer
                        .write_all(&requests)
                        .await
                        .expect("send the requests");
                }
                (raw::PING, 0) => {
                    let pong = raw::frame(raw::PING, raw::ACK, 0, &frame.payload);
                    writer.write_all(&pong).await.unwrap();
                }
                (raw::RST_STREAM, _) if frame.payload[..] == raw::REFUSED_STREAM.to_be_bytes() => {
                    refused.insert(frame.stream);
                }
                (raw::HEADERS, _) => {
                    answered.insert(frame.stream);
                }
                (raw::GOAWAY, _) => panic!("GOAWAY before every stream ended"),
                _ => {}
            }
        }
    };
    tokio::time::timeout(PATIENCE, reading)
        .await
        .expect("every stream ends");

    assert_eq!(advertised, Some(max), "SETTINGS_MAX_CONCURRENT_STREAMS");
    let first: BTreeSet<u32> = wanted[..max as usize].iter().copied().collect();
    assert_eq!(answered, first, "the streams within the limit are answered");
    assert_eq!(
        refused,
        wanted[max as usize..].iter().copied().collect(),
        "the rest refused"
    );
    // The admitted ones waited for their bodies until body_read_timeout.
    let labels = [("route", "open"), ("reason", "body_timeout")];
    shared
        .wait_metric("fanout_events_rejected_total", &labels, f64::from(max))
        .await;
}

#[tokio::test]
async fn a_request_head_over_max_header_bytes_gets_431() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let shared = start_proxy::<Table>(&[], None).await;
    let limit = Table::SERVER.max_header_bytes;
    let head = |padding: usize| {
        let pad = "p".repeat(padding);
        format!(
            "GET /healthz HTTP/1.1\r\nHost: fanout\r\nConnection: close\r\nX-Pad: {pad}\r\n\r\n"
        )
    };
    let fits = raw::exchange(shared.addr, head(limit - 1024).as_bytes(), PATIENCE).await;
    let fits = String::from_utf8_lossy(&fits.expect("answered and closed")).into_owned();
    assert!(fits.starts_with("HTTP/1.1 200"), "{fits}");
    let over = raw::exchange(shared.addr, head(limit + 1024).as_bytes(), PATIENCE).await;
    let over = String::from_utf8_lossy(&over.expect("answered and closed")).into_owned();
    assert!(over.starts_with("HTTP/1.1 431"), "{over}");
    assert_eq!(common::get(shared.addr, "/healthz").await.status, 200);
}
