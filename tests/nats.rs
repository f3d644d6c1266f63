//! NATS targets against a real nats-server (JetStream on), looked at with the official client:
//! what a stream holds, what a core subscriber gets, and what fanout does when the server is
//! killed, missing, or refuses its credentials.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;

use common::nats::{available, NatsServer};
use common::{get, start_proxy, PATIENCE};

mod table {
    fanout::routes!("tests/routes/nats.yaml");
}
use table::Table;

const EVENT: &str = r#"{"order":1}"#;

/// Makes the stream `EVENTS` over `events.>` on `server`.
async fn events_stream(server: &NatsServer) -> stream::Stream {
    let context = jetstream::new(server.client().await);
    context
        .create_stream(stream::Config {
            name: "EVENTS".into(),
            subjects: vec!["events.>".into()],
            ..Default::default()
        })
        .await
        .expect("the test stream is made")
}

/// Every message `stream` holds, read by an ephemeral consumer, in order.
async fn stored(stream: &stream::Stream, expected: usize) -> Vec<jetstream::Message> {
    let consumer: consumer::PullConsumer = stream
        .create_consumer(consumer::pull::Config::default())
        .await
        .expect("a consumer over the test stream");
    let mut messages = consumer
        .fetch()
        .max_messages(expected + 10)
        .expires(Duration::from_secs(1))
        .messages()
        .await
        .expect("the stream can be read");
    let mut out = Vec::new();
    while let Some(message) = messages.next().await {
        out.push(message.expect("a stored message"));
    }
    out
}

/// The value of header `name` (any case) of `message`.
fn header(message: &async_nats::Message, name: &str) -> String {
    try_header(message, name).unwrap_or_else(|| panic!("header {name} in {:?}", message.headers))
}

fn try_header(message: &async_nats::Message, name: &str) -> Option<String> {
    let headers = message.headers.as_ref()?;
    headers.iter().find_map(|(key, values)| {
        let key: &str = key.as_ref();
        let value = values.first().filter(|_| key.eq_ignore_ascii_case(name))?;
        Some(value.as_str().to_owned())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_are_in_the_stream_once_each_with_their_headers() {
    if !available() {
        return;
    }
    let server = NatsServer::start(&[]);
    let stream = events_stream(&server).await;
    let proxy = start_proxy::<Table>(&[("ORDERS_NATS", server.addr())], None).await;
    let mut ids = BTreeSet::new();
    for _ in 0..50 {
        ids.insert(proxy.post("/orders", EVENT).await.id());
    }
    let labels = [("route", "orders"), ("target", "stream")];
    proxy
        .wait_metric("fanout_lane_delivered_total", &labels, 50.0)
        .await;
    let messages = stored(&stream, 50).await;
    assert_eq!(messages.len(), 50);
    let mut seen = BTreeSet::new();
    for message in &messages {
        assert_eq!(message.subject.as_str(), "events.orders");
        assert_eq!(message.payload.as_ref(), EVENT.as_bytes());
        assert_eq!(header(message, "fanout-route"), "orders");
        assert_eq!(header(message, "Content-Type"), "application/json");
        assert_eq!(header(message, "fanout-attempt"), "1");
        let id = header(message, "fanout-event-id");
        assert_eq!(header(message, "Nats-Msg-Id"), id);
        assert!(seen.insert(id), "each event is stored once");
    }
    assert_eq!(seen, ids);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_and_restarted_mid_load_loses_no_acknowledged_event_and_stores_each_once() {
    if !available() {
        return;
    }
    let mut server = NatsServer::start(&[]);
    events_stream(&server).await;
    let proxy = start_proxy::<Table>(&[("ORDERS_NATS", server.addr())], None).await;
    let addr = proxy.addr;
    // Clients post until told to stop, so both kills fall in the middle of the load.
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let posting = tokio::spawn(async move {
        let mut ids = BTreeSet::new();
        for n in 0.. {
            if *stopped.borrow_and_update() {
                break;
            }
            let body = format!("{{\"n\":{n}}}");
            let answer = common::post(addr, "/orders", &body, "application/json").await;
            ids.insert(answer.id());
        }
        ids
    });
    let labels = [("route", "orders"), ("target", "stream")];
    for kill in 1..=2 {
        let delivered = 50.0 * f64::from(kill);
        proxy
            .wait_metric_at_least("fanout_lane_delivered_total", &labels, delivered)
            .await;
        server.kill();
        proxy
            .wait_metric("fanout_nats_connected", &labels, 0.0)
            .await;
        server.restart();
        proxy
            .wait_metric("fanout_nats_connected", &labels, 1.0)
            .await;
    }
    let delivered = proxy
        .metrics()
        .await
        .value("fanout_lane_delivered_total", &labels);
    proxy
        .wait_metric_at_least("fanout_lane_delivered_total", &labels, delivered + 50.0)
        .await;
    stop.send_replace(true);
    let ids = posting.await.expect("the client posts every event");
    proxy
        .wait_metric("fanout_lane_delivered_total", &labels, ids.len() as f64)
        .await;
    let stream = jetstream::new(server.client().await)
        .get_stream("EVENTS")
        .await
        .expect("the stream survives its server's restarts");
    let messages = stored(&stream, ids.len()).await;
    let stored_ids: Vec<String> = messages.iter().map(|m| header(m, "Nats-Msg-Id")).collect();
    let unique: BTreeSet<String> = stored_ids.iter().cloned().collect();
    assert_eq!(stored_ids.len(), unique.len(), "no event is stored twice");
    assert_eq!(unique, ids, "every acknowledged event is stored");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_subscribers_get_each_event_with_its_headers() {
    if !available() {
        return;
    }
    let server = NatsServer::start(&[]);
    let client = server.client().await;
    let mut subscriber = client
        .subscribe("live.live.feed")
        .await
        .expect("the test subscribes");
    client
        .flush()
        .await
        .expect("the subscription is on the server");
    let proxy = start_proxy::<Table>(&[("LIVE_NATS", server.addr())], None).await;
    let mut ids = BTreeSet::new();
    for _ in 0..10 {
        ids.insert(proxy.post("/live", EVENT).await.id());
    }
    let mut got = BTreeSet::new();
    while got.len() < 10 {
        let message = tokio::time::timeout(PATIENCE, subscriber.next())
            .await
            .expect("every event arrives")
            .expect("the subscription stays open");
        assert_eq!(header(&message, "fanout-route"), "live");
        assert_eq!(
            try_header(&message, "Nats-Msg-Id"),
            None,
            "core NATS has no stream to dedupe"
        );
        got.insert(header(&message, "fanout-event-id"));
    }
    assert_eq!(got, ids);
    let labels = [("route", "live"), ("target", "feed")];
    proxy
        .wait_metric("fanout_lane_delivered_total", &labels, 10.0)
        .await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_without_a_stream_fails_its_events_for_good() {
    if !available() {
        return;
    }
    let server = NatsServer::start(&[]);
    let proxy = start_proxy::<Table>(&[("LOST_NATS", server.addr())], None).await;
    for _ in 0..3 {
        proxy.post("/lost", EVENT).await.id();
    }
    let labels = [("route", "lost"), ("target", "nowhere")];
    proxy
        .wait_metric("fanout_lane_failed_total", &labels, 3.0)
        .await;
    let metrics = proxy.metrics().await;
    assert_eq!(metrics.value("fanout_lane_delivered_total", &labels), 0.0);
    assert_eq!(
        metrics.value("fanout_lane_retries_total", &labels),
        0.0,
        "no stream is a permanent error: not retried"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_down_at_start_up_is_said_and_waited_for() {
    if !available() {
        return;
    }
    // The stream is made first, so it is there the moment the server comes back.
    let mut server = NatsServer::start(&[]);
    let stream_name = events_stream(&server)
        .await
        .cached_info()
        .config
        .name
        .clone();
    server.kill();
    let proxy = start_proxy::<Table>(&[("ORDERS_NATS", server.addr())], None).await;
    let health = get(proxy.addr, "/healthz").await;
    assert_eq!(health.status, 200, "fanout serves without NATS");
    let body: serde_json::Value = serde_json::from_str(&health.body).expect("JSON");
    assert_eq!(body["status"], "ok");
    let orders = serde_json::json!({"route": "orders", "target": "stream"});
    let disconnected = body["nats_disconnected"]
        .as_array()
        .unwrap_or_else(|| panic!("a list: {body}"));
    assert!(disconnected.contains(&orders), "{body}");
    let mut ids = BTreeSet::new();
    for _ in 0..5 {
        ids.insert(proxy.post("/orders", EVENT).await.id());
    }
    let labels = [("route", "orders"), ("target", "stream")];
    let metrics = proxy.metrics().await;
    assert_eq!(metrics.value("fanout_nats_connected", &labels), 0.0);
    assert_eq!(metrics.value("fanout_lane_delivered_total", &labels), 0.0);
    server.restart();
    proxy
        .wait_metric("fanout_lane_delivered_total", &labels, 5.0)
        .await;
    assert_eq!(
        proxy
            .metrics()
            .await
            .value("fanout_nats_connected", &labels),
        1.0
    );
    let health = get(proxy.addr, "/healthz").await;
    let body: serde_json::Value = serde_json::from_str(&health.body).expect("JSON");
    let disconnected = body["nats_disconnected"]
        .as_array()
        .unwrap_or_else(|| panic!("a list: {body}"));
    assert!(!disconnected.contains(&orders), "{body}");
    let stream = jetstream::new(server.client().await)
        .get_stream(stream_name)
        .await
        .expect("the stream is back");
    let stored: BTreeSet<String> = stored(&stream, 5)
        .await
        .iter()
        .map(|m| header(m, "fanout-event-id"))
        .collect();
    assert_eq!(stored, ids);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_deliver_nothing_and_keep_the_events() {
    if !available() {
        return;
    }
    let server = NatsServer::start(&["--auth", "right-token"]);
    let env = [
        ("GUARDED_NATS", server.addr()),
        ("GUARDED_TOKEN", "wrong-token".to_owned()),
    ];
    let proxy = start_proxy::<Table>(&env, None).await;
    proxy.post("/guarded", EVENT).await.id();
    let labels = [("route", "guarded"), ("target", "locked")];
    proxy
        .wait_metric_at_least("fanout_lane_retries_total", &labels, 2.0)
        .await;
    let metrics = proxy.metrics().await;
    assert_eq!(metrics.value("fanout_lane_delivered_total", &labels), 0.0);
    assert_eq!(metrics.value("fanout_lane_failed_total", &labels), 0.0);
    assert_eq!(metrics.value("fanout_nats_connected", &labels), 0.0);
    let unsettled = metrics.value("fanout_lane_depth", &labels)
        + metrics.value("fanout_lane_inflight", &labels);
    assert_eq!(unsettled, 1.0, "the event waits for the right credentials");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_streams_own_size_limit_fails_for_good() {
    if !available() {
        return;
    }
    let server = NatsServer::start(&[]);
    jetstream::new(server.client().await)
        .create_stream(stream::Config {
            name: "SMALL".into(),
            subjects: vec!["events.>".into()],
            max_message_size: 64,
            ..Default::default()
        })
        .await
        .expect("the test stream is made");
    let proxy = start_proxy::<Table>(&[("ORDERS_NATS", server.addr())], None).await;
    let big = format!("{{\"padding\":\"{}\"}}", "x".repeat(200));
    proxy.post("/orders", &big).await.id();
    let labels = [("route", "orders"), ("target", "stream")];
    proxy
        .wait_metric("fanout_lane_failed_total", &labels, 1.0)
        .await;
    let metrics = proxy.metrics().await;
    assert_eq!(metrics.value("fanout_lane_retries_total", &labels), 0.0);
    assert_eq!(metrics.value("fanout_lane_delivered_total", &labels), 0.0);
    proxy.shutdown().await;
}
