//! The accept loop and the life of a running proxy: start the delivery workers, serve
//! HTTP/1.1 (keep-alive, pipelining) and h2c on every connection, and on shutdown stop
//! accepting, let lanes drain for up to `drain_timeout`, then stop the workers and count what
//! was left as dropped with reason `shutdown`.

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::delivery;
use crate::ingest;
use crate::metrics;
use crate::proxy::Proxy;
use crate::spec::RouteTable;

/// Start-up knobs that are not part of the routes.
#[derive(Clone, Debug)]
pub struct Options {
    /// Time a client has to send a request's headers, and the longest an idle keep-alive
    /// connection is kept open.
    pub header_read_timeout: Duration,
    /// On shutdown, how long lanes may keep delivering what they hold.
    pub drain_timeout: Duration,
    /// Period of the per-lane summary log line; zero disables it.
    pub metrics_log_interval: Duration,
}

/// How often a drain checks whether every lane is empty.
const DRAIN_POLL: Duration = Duration::from_millis(10);

/// Serves `listener` until `shutdown` completes, then drains and returns.
pub async fn run<T: RouteTable>(
    listener: TcpListener,
    proxy: Arc<Proxy<T>>,
    options: Options,
    shutdown: impl Future<Output = ()>,
) {
    let mut workers = start_workers(&proxy);
    let reporter = (!options.metrics_log_interval.is_zero()).then(|| {
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(options.metrics_log_interval);
            tick.tick().await;
            loop {
                tick.tick().await;
                metrics::log_lanes(proxy.lanes_with_accepted());
            }
        })
    });

    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .keep_alive(true);
    http.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(options.header_read_timeout)
        .keep_alive_timeout(options.header_read_timeout);
    let http = Arc::new(http);
    let connections = GracefulShutdown::new();

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let proxy = proxy.clone();
                    let service = service_fn(move |request| ingest::handle(proxy.clone(), request));
                    let connection = http.serve_connection(TokioIo::new(stream), service).into_owned();
                    let connection = connections.watch(connection);
                    tokio::spawn(async move {
                        if let Err(error) = connection.await {
                            tracing::debug!(%error, "connection ended with an error");
                        }
                    });
                }
                Err(error) => {
                    // Out of file descriptors, most likely: back off, keep serving.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            () = &mut shutdown => break,
        }
    }

    let deadline = Instant::now() + options.drain_timeout;
    drop(listener);
    proxy.shutting_down.store(true, Ordering::Relaxed);
    if tokio::time::timeout_at(deadline, connections.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open at the drain deadline");
    }
    wait_for_empty_lanes(&proxy, deadline).await;
    workers.shutdown().await;
    if let Some(reporter) = reporter {
        reporter.abort();
    }
    report_leftovers(&proxy);
}

/// Spawns `concurrency` delivery workers per lane.
fn start_workers<T: RouteTable>(proxy: &Arc<Proxy<T>>) -> JoinSet<()> {
    let mut workers = JoinSet::new();
    for (index, lane) in proxy.table.lanes().into_iter().enumerate() {
        for _ in 0..lane.spec.concurrency {
            let proxy = proxy.clone();
            workers.spawn(async move {
                let lane = proxy.table.lanes()[index];
                delivery::work(lane, &proxy.targets[index]).await;
            });
        }
    }
    workers
}

async fn wait_for_empty_lanes<T: RouteTable>(proxy: &Proxy<T>, deadline: Instant) {
    let busy = || {
        proxy
            .table
            .lanes()
            .iter()
            .any(|lane| lane.depth() > 0 || lane.metrics.inflight.get() > 0)
    };
    while busy() && Instant::now() < deadline {
        tokio::time::sleep(DRAIN_POLL).await;
    }
}

/// Counts what the drain did not deliver as dropped (reason `shutdown`) and logs it per lane.
/// Events held by a worker were counted when the worker stopped.
fn report_leftovers<T: RouteTable>(proxy: &Proxy<T>) {
    for lane in proxy.table.lanes() {
        let waiting = lane.clear() as u64;
        lane.metrics.dropped_shutdown.inc_by(waiting);
        let undelivered = lane.metrics.dropped_shutdown.get();
        if undelivered > 0 {
            tracing::warn!(
                route = lane.spec.route,
                target = lane.spec.name,
                undelivered,
                "lane stopped with undelivered events"
            );
        } else {
            tracing::info!(
                route = lane.spec.route,
                target = lane.spec.name,
                undelivered,
                "lane drained"
            );
        }
    }
}
