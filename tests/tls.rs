//! https targets: a local TLS target with a certificate made for the test, trusted through
//! `ca_file`, and refused without it.

mod common;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::Response;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

mod table {
    fanout::routes!("tests/routes/tls.yaml");
}

/// An https target for `localhost` with a fresh self-signed certificate; returns its address,
/// the certificate's PEM, and the bodies it receives.
async fn tls_target() -> (SocketAddr, String, mpsc::UnboundedReceiver<(String, Bytes)>) {
    let (acceptor, pem) = common::tls::localhost(&[]);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (received, receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let received = received.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let received = received.clone();
                    async move {
                        let id = request.headers()["fanout-event-id"]
                            .to_str()
                            .unwrap()
                            .to_owned();
                        let body = request.into_body().collect().await?.to_bytes();
                        let _ = received.send((id, body));
                        Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::new())))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, pem, receiver)
}

#[tokio::test]
async fn https_targets_are_reached_with_a_private_ca_and_refused_without_it() {
    let (addr, ca_pem, mut received) = tls_target().await;
    let ca_file =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("ca-{}.pem", addr.port()));
    std::fs::write(&ca_file, ca_pem).unwrap();
    let env = [
        ("TLS_PORT", addr.port().to_string()),
        ("TLS_CA", ca_file.display().to_string()),
    ];
    let shared = common::start_proxy::<table::Table>(&env, None).await;

    let id = shared.post("/secure", "{\"secret\":true}").await.id();
    let (got_id, body) = tokio::time::timeout(common::PATIENCE, received.recv())
        .await
        .expect("the event arrives over TLS")
        .unwrap();
    assert_eq!(got_id, id);
    assert_eq!(body, "{\"secret\":true}");

    shared.post("/untrusted", "{}").await.id();
    let labels = [("route", "untrusted"), ("target", "public_roots_only")];
    shared
        .wait_metric("fanout_lane_failed_total", &labels, 1.0)
        .await;
    assert!(
        received.try_recv().is_err(),
        "an untrusted certificate gets no event"
    );
}
