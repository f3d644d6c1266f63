//! The interop matrix: fanout delivers to echo servers written with other HTTP stacks (Node's
//! `http` and `http2`, Python's `http.server`, nginx, Go's `net/http`) over HTTP/1.1, and over
//! h2c where the stack speaks it; each test asserts what the stack's application saw: method,
//! path and query, Host, the fanout-* headers, content type and body byte for byte, for single
//! events (through the `fanout` binary and through a compiled table) and for NDJSON batches.
//!
//! A stack that is not installed is skipped with a message on stderr, unless `CI` is `true`:
//! there a missing stack fails its tests (`.ci/run` installs nginx and Go).

mod common;
#[path = "interop/stacks.rs"]
mod stacks;

use common::process::{Fanout, FANOUT};
use stacks::{Echo, Seen, Stack};

mod table {
    fanout::routes!("tests/routes/interop.yaml");
}

/// Bodies with non-ASCII UTF-8, quotes, a backslash and line breaks, and their content types.
const EVENTS: [(&str, &str); 3] = [
    (
        r#"{"greeting":"grüße, 世界 — \"quoted\" 🎉","path":"C:\\temp","n":1}"#,
        "application/json",
    ),
    (
        "plain \"text\" with ünïcödé\r\nand a second line\n",
        "text/plain; charset=utf-8",
    ),
    (
        "{\n  \"n\": 3,\r\n  \"crab\": \"🦀\"\n}",
        "application/vnd.example+json; charset=utf-8",
    ),
];

/// The stack's echo server, or `None` (after saying why) when the stack is not installed.
fn echo(stack: Stack) -> Option<Echo> {
    match Echo::start(stack) {
        Ok(echo) => Some(echo),
        Err(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI=true and the {} stack is missing: {why}", stack.name())
        }
        Err(why) => {
            // Straight to stderr, past the test harness's capture, so the skip shows.
            let skip = format!("skipping the {} interop test: {why}\n", stack.name());
            let _ = std::io::Write::write_all(&mut std::io::stderr(), skip.as_bytes());
            None
        }
    }
}

/// An echo server's port and the request target a route's url gives it.
struct Listener {
    stack: Stack,
    port: u16,
    target: String,
    h2: bool,
}

/// The listeners of `echo` targeted by a route: its h1 port, and its h2c port if it has one.
fn listeners(echo: &Echo, h1_target: String, h2_target: String) -> Vec<Listener> {
    let h1 = Listener {
        stack: echo.stack,
        port: echo.h1,
        target: h1_target,
        h2: false,
    };
    let h2 = echo.h2.map(|port| Listener {
        stack: echo.stack,
        port,
        target: h2_target,
        h2: true,
    });
    std::iter::once(h1).chain(h2).collect()
}

async fn start_proxy(echo: &Echo) -> common::Running<table::Table> {
    let [h1, h2] = echo.stack.vars();
    let mut env = vec![(h1, format!("127.0.0.1:{}", echo.h1))];
    env.extend(echo.h2.map(|port| (h2, format!("127.0.0.1:{port}"))));
    common::start_proxy::<table::Table>(&env, None).await
}

/// What every delivery shares: the request line, Host, route, first attempt, protocol and a
/// body whose length is the Content-Length the application saw.
fn assert_delivery(seen: &Seen, listener: &Listener, route: &str) {
    // nginx logs the status it answered; the other stacks always answer 200 and log none.
    let logged = (listener.stack == Stack::Nginx).then_some("200");
    assert_eq!(seen.status.as_deref(), logged, "{seen:?}");
    assert_eq!(seen.method, "POST", "{seen:?}");
    assert_eq!(seen.target, listener.target, "path and query: {seen:?}");
    let host = format!("127.0.0.1:{}", listener.port);
    assert_eq!(seen.host(), Some(host.as_str()), "Host: {seen:?}");
    assert_eq!(seen.header("fanout-route"), Some(route), "{seen:?}");
    assert_eq!(seen.header("fanout-attempt"), Some("1"), "{seen:?}");
    let version = if listener.h2 { "HTTP/2" } else { "HTTP/1.1" };
    assert!(seen.version.starts_with(version), "{version}: {seen:?}");
    let length = seen.body.len().to_string();
    match seen.header("content-length") {
        Some(declared) => assert_eq!(declared, length, "Content-Length: {seen:?}"),
        None => assert!(
            listener.h2,
            "an HTTP/1.1 body without Content-Length: {seen:?}"
        ),
    }
    assert_eq!(seen.header("transfer-encoding"), None, "{seen:?}");
}

/// Single events through the `fanout` binary with the default routes.yaml: both targets of
/// `/demo` point at the stack; receiver_a's url carries credentials (`p%40ss` is `p@ss`).
async fn binary(stack: Stack) {
    let Some(echo) = echo(stack) else { return };
    let receiver_a = format!("user:p%40ss@127.0.0.1:{}", echo.h1);
    let receiver_b = format!("127.0.0.1:{}", echo.h1);
    let env = [("RECEIVER_A", &*receiver_a), ("RECEIVER_B", &*receiver_b)];
    let fanout = Fanout::start_with(FANOUT, &[], &env);
    let mut sent = Vec::new();
    for (body, content_type) in EVENTS {
        let answer = common::post(fanout.addr, "/demo", body, content_type).await;
        sent.push((answer.id(), body, content_type));
    }
    let seen = echo
        .wait_for("two requests per event", |seen| {
            seen.len() >= 2 * sent.len()
        })
        .await;
    assert_eq!(seen.len(), 2 * sent.len(), "{seen:#?}");
    let listener = Listener {
        stack,
        port: echo.h1,
        target: "/event-inbound".into(),
        h2: false,
    };
    for (id, body, content_type) in &sent {
        let got: Vec<&Seen> = seen
            .iter()
            .filter(|s| s.header("fanout-event-id") == Some(id.as_str()))
            .collect();
        assert_eq!(got.len(), 2, "event {id} once per target: {seen:#?}");
        for seen in &got {
            assert_delivery(seen, &listener, "demo");
            assert_eq!(seen.header("content-type"), Some(*content_type), "{seen:?}");
            assert_eq!(seen.body, body.as_bytes(), "body of {id}: {seen:?}");
            assert_eq!(seen.header("fanout-event-ids"), None, "{seen:?}");
        }
        let a = got.iter().find(|s| s.header("authorization").is_some());
        let a = a.unwrap_or_else(|| panic!("receiver_a got no Authorization: {got:#?}"));
        assert_eq!(a.header("authorization"), Some("Basic dXNlcjpwQHNz"));
        assert_eq!(a.header("x-demo-token"), None, "{a:?}");
        let b = got.iter().find(|s| s.header("x-demo-token").is_some());
        let b = b.unwrap_or_else(|| panic!("receiver_b got no X-Demo-Token: {got:#?}"));
        assert_eq!(b.header("x-demo-token"), Some("demo-secret"));
        assert_eq!(b.header("authorization"), None, "{b:?}");
    }
}

/// Single events through a compiled table, to the stack's h1 port and its h2c port.
async fn single_events(stack: Stack) {
    let Some(echo) = echo(stack) else { return };
    let shared = start_proxy(&echo).await;
    let route = stack.name();
    let mut sent = Vec::new();
    for (body, content_type) in EVENTS {
        let answer = common::post(shared.addr, &format!("/{route}"), body, content_type).await;
        sent.push((answer.id(), body, content_type));
    }
    let listeners = listeners(
        &echo,
        format!("/in/{route}?src=fanout&n=1&q=a%2Fb"),
        format!("/in/{route}-h2?src=fanout&n=2"),
    );
    let expected = sent.len() * listeners.len();
    let seen = echo
        .wait_for("every event on every listener", |seen| {
            seen.len() >= expected
        })
        .await;
    assert_eq!(seen.len(), expected, "{seen:#?}");
    for listener in &listeners {
        for (id, body, content_type) in &sent {
            let got = seen
                .iter()
                .find(|s| s.port == listener.port && s.header("fanout-event-id") == Some(id))
                .unwrap_or_else(|| panic!("{id} did not reach port {}", listener.port));
            assert_delivery(got, listener, route);
            assert_eq!(got.header("content-type"), Some(*content_type), "{got:?}");
            assert_eq!(got.body, body.as_bytes(), "body of {id}: {got:?}");
            assert_eq!(got.header("fanout-event-ids"), None, "{got:?}");
        }
    }
}

/// Posts `events` to `route` and checks that every listener got them as NDJSON batches: each
/// line the event's body with CR and LF as spaces, the ids in `fanout-event-ids` in line order,
/// every event once, in the order sent. Returns the batches each listener saw.
async fn batches(echo: &Echo, route: &str, events: &[(String, &str)], path: &str) -> Vec<usize> {
    let shared = start_proxy(echo).await;
    let mut sent = Vec::new();
    for (body, content_type) in events {
        let answer = common::post(shared.addr, &format!("/{route}"), body, content_type).await;
        sent.push((answer.id(), body.replace(['\r', '\n'], " ")));
    }
    let stack = echo.stack.name();
    let listeners = listeners(
        echo,
        format!("/{path}/{stack}?src=fanout"),
        format!("/{path}/{stack}-h2?src=fanout"),
    );
    let lines_on = |seen: &[Seen], port: u16| -> usize {
        let on_port = seen.iter().filter(|s| s.port == port);
        on_port
            .map(|s| {
                s.header("fanout-event-ids")
                    .map_or(0, |ids| ids.split(',').count())
            })
            .sum()
    };
    let seen = echo
        .wait_for("every event on every listener", |seen| {
            listeners
                .iter()
                .all(|l| lines_on(seen, l.port) >= sent.len())
        })
        .await;
    let mut requests = Vec::new();
    for listener in &listeners {
        let mut got: Vec<Vec<(String, String)>> = Vec::new();
        for seen in seen.iter().filter(|s| s.port == listener.port) {
            assert_delivery(seen, listener, route);
            assert_eq!(seen.header("content-type"), Some("application/x-ndjson"));
            assert_eq!(seen.header("fanout-event-id"), None, "{seen:?}");
            let ids = seen.header("fanout-event-ids").expect("fanout-event-ids");
            let body = std::str::from_utf8(&seen.body).expect("a UTF-8 batch");
            let lines = body.strip_suffix('\n').expect("a batch ends with \\n");
            let ids: Vec<String> = ids.split(',').map(str::to_owned).collect();
            let lines: Vec<String> = lines.split('\n').map(str::to_owned).collect();
            assert_eq!(ids.len(), lines.len(), "one id per line: {seen:?}");
            got.push(ids.into_iter().zip(lines).collect());
        }
        // Batches may be sent concurrently: put them in lane order before comparing.
        let position = |id: &String| sent.iter().position(|(sent, _)| sent == id);
        got.sort_by_key(|batch| position(&batch[0].0));
        requests.push(got.len());
        assert_eq!(got.concat(), sent, "port {}", listener.port);
    }
    requests
}

async fn batch(stack: Stack) {
    let Some(echo) = echo(stack) else { return };
    let mut events: Vec<(String, &str)> = EVENTS
        .iter()
        .map(|&(body, content_type)| (body.to_owned(), content_type))
        .collect();
    events.push((String::new(), "application/json"));
    batches(&echo, &format!("{}-batch", stack.name()), &events, "batch").await;
}

/// 200 events, the most a batch holds: one request whose `fanout-event-ids` is 7,399 bytes.
async fn batch_of_200_events(stack: Stack) {
    let Some(echo) = echo(stack) else { return };
    let events: Vec<(String, &str)> = (0..200)
        .map(|n| {
            let body = format!(r#"{{"n":{n},"text":"grüße \"{n}\" 🎉"}}"#);
            (body, "application/json")
        })
        .collect();
    let route = format!("{}-bulk", stack.name());
    let requests = batches(&echo, &route, &events, "bulk").await;
    assert!(
        requests.iter().all(|&n| n == 1),
        "one request each: {requests:?}"
    );
}

macro_rules! matrix {
    ($($module:ident: $stack:expr;)*) => {$(
        mod $module {
            use super::*;

            #[tokio::test]
            async fn binary_delivers_single_events_with_basic_auth() {
                binary($stack).await;
            }

            #[tokio::test]
            async fn single_events_over_h1_and_h2c() {
                single_events($stack).await;
            }

            #[tokio::test]
            async fn batches_over_h1_and_h2c() {
                batch($stack).await;
            }

            #[tokio::test]
            async fn a_batch_of_200_events_is_accepted() {
                batch_of_200_events($stack).await;
            }
        }
    )*};
}

matrix! {
    node: Stack::Node;
    python: Stack::Python;
    nginx: Stack::Nginx;
    go: Stack::Go;
}
