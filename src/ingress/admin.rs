//! The admin listener (`server.admin_listen` or `--admin-listen`): `/metrics` and `/healthz`
//! on an address of their own, so they need not be exposed with the ingest port (which then
//! answers 404 for them). HTTP/1.1, cleartext; at most [`MAX_CONNECTIONS`] at once, each sending
//! its request heads within [`HEADER_READ_TIMEOUT`] and closed after [`LIFETIME`], so silent
//! connections cannot keep a scraper or a probe out. It serves for the life of the process,
//! the drain included, so a drain can be watched.

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::ingress::dispatch::own_endpoint;
use crate::shared::Shared;
use crate::table::RouteTable;

/// Admin connections open at most: scrapers and probes, not clients.
pub const MAX_CONNECTIONS: usize = 64;

/// How long an admin connection may take to send a request's headers (the first one included).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an admin connection lives at most: a keep-alive scraper reconnects after it.
const LIFETIME: Duration = Duration::from_secs(60);

/// Serves `listener` for the life of the process.
pub fn spawn<T: RouteTable>(listener: TcpListener, shared: Arc<Shared<T>>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut builder = http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let builder = Arc::new(builder);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                continue;
            };
            let (shared, builder) = (shared.clone(), builder.clone());
            tokio::spawn(async move {
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let response = own_endpoint(&shared, request.uri().path(), request.method());
                    async move { Ok::<_, Infallible>(response) }
                });
                let served = builder.serve_connection(TokioIo::new(stream), service);
                tokio::pin!(served);
                if tokio::time::timeout(LIFETIME, served.as_mut())
                    .await
                    .is_err()
                {
                    // Old enough: finish the answer under way, then close.
                    served.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(HEADER_READ_TIMEOUT, served).await;
                }
                drop(slot);
            });
        }
    });
}
