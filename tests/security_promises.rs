//! Promises of the security section through the `fanout` binary built with
//! `tests/security/support.rs`'s routes: a 401 on a bearer route, and on a signature route whose
//! headers are missing or out of date, comes before the body is read (a head announcing a large
//! body that never comes is answered at once); a signed batch and a signed single event keep
//! their `webhook-id` across retries (the receiver answers 503 first), and the official
//! Standard Webhooks library verifies every attempt.

mod common;
#[path = "security/support.rs"]
mod support;

use std::io::{Read, Write};
use std::time::{Duration, Instant};
use support::*;

/// Sends a request head announcing `length` bytes of body, sends none, and returns what
/// fanout answered and how long it took. A server that waited for the body would answer only
/// after `body_read_timeout` (30s): the read gives up after 5s.
fn head_only(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (String, Duration) {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("a timeout");
    let mut head = format!("POST {path} HTTP/1.1\r\nhost: fanout\r\ncontent-length: 1000000\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let started = Instant::now();
    stream.write_all(head.as_bytes()).expect("send the head");
    let mut answer = Vec::new();
    let mut buffer = [0u8; 1024];
    // The whole answer: its head and its body, `{"error":"unauthorized"}`.
    while !String::from_utf8_lossy(&answer).ends_with(UNAUTHORIZED) {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
            Err(error) => panic!("no answer to the head alone on {path}: {error}"),
        }
    }
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

#[test]
fn a_401_on_bearer_and_signature_routes_comes_before_the_body() {
    let setup = start();
    let addr = setup.fanout.addr;
    let stale = (now() - 600).to_string();
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>);
    let cases: [Case; 5] = [
        ("bearer, no token", "/orders", vec![]),
        (
            "bearer, a wrong token",
            "/orders",
            vec![("authorization", "Bearer token-three")],
        ),
        (
            "webhooks, no signature",
            "/hooks/svix",
            vec![("webhook-id", "msg_1"), ("webhook-timestamp", "1")],
        ),
        (
            "webhooks, a stale timestamp",
            "/hooks/svix",
            vec![
                ("webhook-id", "msg_1"),
                ("webhook-timestamp", &stale),
                ("webhook-signature", "v1,AAAA"),
            ],
        ),
        ("github, no signature", "/hooks/github", vec![]),
    ];
    for (case, path, headers) in &cases {
        let (answer, took) = head_only(addr, path, headers);
        assert!(answer.starts_with("HTTP/1.1 401 "), "{case}: {answer}");
        assert!(
            took < Duration::from_secs(2),
            "{case}: answered after {took:?}"
        );
    }
    assert_eq!(rejected(setup.admin, "orders", "unauthorized"), 2.0);
    assert_eq!(rejected(setup.admin, "from-svix", "unauthorized"), 2.0);
    assert_eq!(rejected(setup.admin, "from-github", "unauthorized"), 1.0);
}

#[test]
fn a_signed_batch_and_a_signed_event_keep_their_webhook_id_across_retries() {
    let setup = start();
    let addr = setup.fanout.addr;
    let ids: Vec<String> = (0..3)
        .map(|n| post(addr, "/signed-retries", &[], &format!(r#"{{"n":{n}}}"#)).id())
        .collect();
    // The batches: every attempt of every batch, until each id reached the receiver in a
    // batch it answered 200.
    let deadline = Instant::now() + common::PATIENCE;
    let batches = loop {
        let got = setup.receiver.wait_for("/flaky-batch", 2);
        let delivered: Vec<&str> = got
            .iter()
            .filter(|g| g.status == 200)
            .flat_map(|g| g.header("fanout-event-ids").expect("batch ids").split(','))
            .collect();
        if ids.iter().all(|id| delivered.contains(&id.as_str())) {
            break got;
        }
        assert!(
            Instant::now() < deadline,
            "batched ids delivered: {delivered:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(batches[0].status, 503, "{batches:?}");
    let first = &batches[0];
    let retry = batches
        .iter()
        .find(|g| {
            g.header("fanout-event-ids") == first.header("fanout-event-ids") && g.status == 200
        })
        .unwrap_or_else(|| panic!("the first batch was not sent again: {batches:?}"));
    let batch_id = first.header("webhook-id").expect("a webhook-id");
    assert!(batch_id.starts_with("batch_"), "{first:?}");
    assert_eq!(
        retry.header("webhook-id"),
        Some(batch_id),
        "the retry: {retry:?}"
    );
    assert_eq!(
        (
            first.header("fanout-attempt"),
            retry.header("fanout-attempt")
        ),
        (Some("1"), Some("2"))
    );
    assert_eq!(retry.body, first.body, "the same batch");
    for attempt in &batches {
        assert!(
            attempt.verified,
            "the library refused an attempt: {attempt:?}"
        );
    }
    // The single events: the first request got 503; every attempt of an event carries its id
    // as webhook-id, and verifies.
    let singles = setup.receiver.wait_for("/flaky-single", ids.len() + 1);
    assert_eq!(singles[0].status, 503, "{singles:?}");
    for id in &ids {
        let attempts: Vec<_> = singles
            .iter()
            .filter(|g| g.header("fanout-event-id") == Some(id.as_str()))
            .collect();
        assert!(
            attempts.iter().any(|g| g.status == 200),
            "{id}: {attempts:?}"
        );
        for attempt in &attempts {
            assert_eq!(
                attempt.header("webhook-id"),
                Some(id.as_str()),
                "{attempt:?}"
            );
            assert!(
                attempt.verified,
                "the library refused an attempt: {attempt:?}"
            );
        }
    }
    // The event whose first attempt got the 503 (events are sent concurrently: any of them).
    let refused = singles[0].header("fanout-event-id").expect("an event id");
    let attempts = singles
        .iter()
        .filter(|g| g.header("fanout-event-id") == Some(refused));
    let attempts: Vec<Option<&str>> = attempts.map(|g| g.header("fanout-attempt")).collect();
    assert_eq!(
        attempts,
        [Some("1"), Some("2")],
        "{refused}: a 503, then a 200"
    );
}
