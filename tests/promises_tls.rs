//! An https target with `http2: true` gets its events over HTTP/2, negotiated by ALPN, every
//! delivery multiplexed on one connection.

mod common;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::Response;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

mod table {
    fanout::routes!("tests/routes/promises_tls.yaml");
}

/// What the target saw of one request.
#[derive(Debug)]
struct Seen {
    alpn: Option<Vec<u8>>,
    version: hyper::Version,
    id: String,
    body: Bytes,
}

/// An HTTP/2-only https target for `localhost` offering ALPN `h2`; returns its address, its
/// certificate's PEM, the connections it accepted so far, and what it receives.
async fn h2_tls_target() -> (
    SocketAddr,
    String,
    Arc<AtomicUsize>,
    mpsc::UnboundedReceiver<Seen>,
) {
    let (acceptor, pem) = common::tls::localhost(&[b"h2"]);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let accepted = connections.clone();
    let (received, receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            accepted.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            let received = received.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let received = received.clone();
                    let alpn = alpn.clone();
                    async move {
                        let version = request.version();
                        let id = request
                            .headers()
                            .get("fanout-event-id")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        let body = request.into_body().collect().await?.to_bytes();
                        let _ = received.send(Seen {
                            alpn,
                            version,
                            id,
                            body,
                        });
                        Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::new())))
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, pem, connections, receiver)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_http2_target_gets_its_events_over_h2_on_one_connection() {
    let (addr, ca_pem, connections, mut received) = h2_tls_target().await;
    let ca_file = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("promises-h2-ca-{}.pem", addr.port()));
    std::fs::write(&ca_file, ca_pem).unwrap();
    let env = [
        ("TLS_PORT", addr.port().to_string()),
        ("TLS_CA", ca_file.display().to_string()),
    ];
    let shared = common::start_proxy::<table::Table>(&env, None).await;

    let mut sent = vec![(
        shared.post("/secure", "{\"n\":0}").await.id(),
        "{\"n\":0}".to_owned(),
    )];
    let mut seen = Vec::new();
    let first = tokio::time::timeout(common::PATIENCE, received.recv())
        .await
        .expect("the event arrives over TLS")
        .expect("the target runs");
    seen.push(first);
    // The connection is up: what follows shares it.
    for n in 1..10 {
        let body = format!("{{\"n\":{n}}}");
        sent.push((shared.post("/secure", &body).await.id(), body));
    }
    while seen.len() < sent.len() {
        let next = tokio::time::timeout(common::PATIENCE, received.recv())
            .await
            .unwrap_or_else(|_| panic!("{} of {} events arrived", seen.len(), sent.len()))
            .expect("the target runs");
        seen.push(next);
    }
    let _ = std::fs::remove_file(&ca_file);

    for s in &seen {
        assert_eq!(s.alpn.as_deref(), Some(&b"h2"[..]), "ALPN chose h2: {s:?}");
        assert_eq!(s.version, hyper::Version::HTTP_2, "{s:?}");
    }
    let mut got: Vec<(String, String)> = seen
        .iter()
        .map(|s| (s.id.clone(), String::from_utf8_lossy(&s.body).into_owned()))
        .collect();
    got.sort();
    sent.sort();
    assert_eq!(got, sent, "every event, with its id and body");
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "deliveries are multiplexed on one connection"
    );
    shared
        .wait_metric(
            "fanout_lane_delivered_total",
            &[("route", "secure"), ("target", "multiplexed")],
            10.0,
        )
        .await;
}
