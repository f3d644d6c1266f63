//! Balance routes whose backends are NATS subjects, against a real nats-server: workers of
//! the official client (async-nats) in a queue group answer requests, and fanout relays their
//! replies; fanout's own answers when no one listens or no one replies.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::Full;
use hyper::{Method, Request};

use common::nats::{available, NatsServer};
use common::{request, start_proxy, Running};

mod table {
    fanout::routes!("tests/routes/nats.yaml");
}
use table::Table;

/// A worker in the queue group `workers` of `api.users`: answers each request with status
/// 201 (or a status that is none for two paths), its name in `X-Worker`, and a body naming what it got (method, path, query, a
/// header, the payload).
async fn worker(server: &NatsServer, name: &'static str) -> tokio::task::JoinHandle<()> {
    let client = server.client().await;
    let mut requests = client
        .queue_subscribe("api.users", "workers".into())
        .await
        .expect("the worker subscribes");
    client
        .flush()
        .await
        .expect("the subscription is on the server");
    tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            let headers = request.headers.clone().unwrap_or_default();
            let get = |key: &str| {
                headers
                    .get(key)
                    .map(|v| v.as_str().to_owned())
                    .unwrap_or_default()
            };
            let body = format!(
                "{} {} {} tenant={} route={} forwarded={} payload={}",
                get("Fanout-Method"),
                get("Fanout-Path"),
                get("Fanout-Query"),
                get("x-tenant"),
                get("Fanout-Route"),
                !get("x-forwarded-for").is_empty(),
                String::from_utf8_lossy(&request.payload),
            );
            let mut reply = async_nats::HeaderMap::new();
            let status = match get("Fanout-Path").as_str() {
                "/users/bad-status" => "2O1",
                "/users/informational" => "103",
                _ => "201",
            };
            reply.insert("Fanout-Status", status);
            reply.insert("X-Worker", name);
            let to = request.reply.expect("a request has a reply subject");
            client
                .publish_with_headers(to, reply, Bytes::from(body))
                .await
                .expect("the worker replies");
        }
    })
}

async fn call(proxy: &Running<Table>, method: Method, path: &str, body: &str) -> common::Answer {
    let outgoing = Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", proxy.addr))
        .header("x-tenant", "t1")
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("a valid request");
    request(outgoing).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_in_a_queue_group_share_requests_and_their_replies_are_relayed() {
    if !available() {
        return;
    }
    let server = NatsServer::start(&[]);
    let workers = [worker(&server, "w1").await, worker(&server, "w2").await];
    let proxy = start_proxy::<Table>(&[("USERS_NATS", server.addr())], None).await;
    let labels = [("route", "users"), ("target", "workers")];
    proxy
        .wait_metric("fanout_nats_connected", &labels, 1.0)
        .await;
    let mut served = BTreeMap::new();
    for n in 0..40 {
        let answer = if n % 2 == 0 {
            call(&proxy, Method::GET, &format!("/users/{n}/count?full=1"), "").await
        } else {
            call(&proxy, Method::POST, "/users", &format!("{{\"n\":{n}}}")).await
        };
        assert_eq!(answer.status, 201, "{answer:?}");
        let expected = if n % 2 == 0 {
            format!("GET /users/{n}/count full=1 tenant=t1 route=users forwarded=true payload=")
        } else {
            format!("POST /users  tenant=t1 route=users forwarded=true payload={{\"n\":{n}}}")
        };
        assert_eq!(answer.body, expected);
        assert!(answer.header("x-request-id").is_some(), "{answer:?}");
        let worker = answer
            .header("x-worker")
            .expect("the worker's header")
            .to_owned();
        *served.entry(worker).or_insert(0) += 1;
    }
    assert_eq!(
        served.len(),
        2,
        "both workers of the queue group served: {served:?}"
    );
    for path in ["/users/bad-status", "/users/informational"] {
        let answer = call(&proxy, Method::GET, path, "").await;
        assert_eq!(answer.status, 502, "{answer:?}");
        assert!(answer.body.contains("Fanout-Status"), "{answer:?}");
    }
    let metrics = proxy.metrics().await;
    let outcome = [
        ("route", "users"),
        ("target", "workers"),
        ("outcome", "2xx"),
    ];
    assert_eq!(
        metrics.value("fanout_backend_requests_total", &outcome),
        40.0
    );
    for worker in workers {
        worker.abort();
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_worker_is_503_and_a_silent_one_504() {
    if !available() {
        return;
    }
    let server = NatsServer::start(&[]);
    let proxy = start_proxy::<Table>(&[("USERS_NATS", server.addr())], None).await;
    let labels = [("route", "users"), ("target", "workers")];
    proxy
        .wait_metric("fanout_nats_connected", &labels, 1.0)
        .await;
    let answer = call(&proxy, Method::GET, "/users/1", "").await;
    assert_eq!(answer.status, 503, "{answer:?}");
    assert!(answer.body.contains("no worker listens"), "{answer:?}");
    assert!(answer.header("retry-after").is_some(), "{answer:?}");

    // A worker that takes requests and never answers.
    let client = server.client().await;
    let _silent = client
        .queue_subscribe("api.users", "workers".into())
        .await
        .expect("the silent worker subscribes");
    client
        .flush()
        .await
        .expect("the subscription is on the server");
    let started = std::time::Instant::now();
    let answer = call(&proxy, Method::GET, "/users/1", "").await;
    assert_eq!(answer.status, 504, "{answer:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "504 only once the target's timeout passed"
    );
    let metrics = proxy.metrics().await;
    for status in ["503", "504"] {
        let labels = [("route", "users"), ("status", status)];
        assert_eq!(
            metrics.value("fanout_balance_errors_total", &labels),
            1.0,
            "{status}"
        );
    }
    proxy.shutdown().await;
}
