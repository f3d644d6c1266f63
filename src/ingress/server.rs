//! The accept loop and the life of a running proxy: start the delivery workers, serve
//! HTTP/1.1 (keep-alive, pipelining) and h2c on every connection, and on shutdown stop
//! accepting, let lanes drain for up to `drain_timeout`, then stop the workers and count what
//! was left as dropped with reason `shutdown`.
//!
//! Every resource a client can make the server spend is bounded ([`Options`]): connections
//! (`max_connections`, beyond which new ones are closed at once), the wait for a first byte and
//! for the protocol preface, headers (time and size), bodies (time, in `ingest`), h2c streams,
//! and idle connections of both protocols.

use http_body_util::Either;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::fan_out::workers;
use crate::ingress::connection::{self, Activity, Builders};
use crate::ingress::tls::Certificates;
use crate::report;
use crate::shared::Shared;
use crate::spec::ServerSpec;
use crate::table::RouteTable;

/// Start-up knobs: the compiled `server:` section, with the command line's overrides.
#[derive(Clone, Debug)]
pub struct Options {
    /// A new connection must send its first byte (for h2c, its whole preface) within this.
    pub first_byte_timeout: Duration,
    /// Time a client has to send a request's headers; for HTTP/1.1 also how long a
    /// connection may wait for its next request.
    pub header_read_timeout: Duration,
    /// A connection with no request under way for this long is closed.
    pub idle_timeout: Duration,
    /// Open client connections at most.
    pub max_connections: usize,
    /// TCP keepalive idle time on accepted connections; zero disables it.
    pub tcp_keepalive: Duration,
    /// Concurrent streams one h2c connection may have open.
    pub http2_max_streams: u32,
    /// Largest request head accepted, in bytes.
    pub max_header_bytes: usize,
    /// On shutdown, how long lanes may keep delivering what they hold.
    pub drain_timeout: Duration,
    /// Period of the per-lane summary log line; zero disables it.
    pub metrics_log_interval: Duration,
    /// Serve TLS with these certificates (ALPN picks HTTP/2 or HTTP/1.1), else cleartext.
    pub tls: Option<Arc<Certificates>>,
}

impl Options {
    /// The options as compiled in.
    pub fn from_spec(spec: &ServerSpec) -> Options {
        Options {
            first_byte_timeout: spec.first_byte_timeout,
            header_read_timeout: spec.header_read_timeout,
            idle_timeout: spec.idle_timeout,
            max_connections: spec.max_connections,
            tcp_keepalive: spec.tcp_keepalive,
            http2_max_streams: spec.http2_max_streams,
            max_header_bytes: spec.max_header_bytes,
            drain_timeout: spec.drain_timeout,
            metrics_log_interval: spec.metrics_log_interval,
            tls: None,
        }
    }
}

/// How long, at shutdown, durable lanes may finish the deliveries under way before their logs
/// are handed over: what is still held then stays in the log and is sent again by the next
/// process (a duplicate at worst), so a process taking over does not wait out the retries of a
/// dead target.
const DURABLE_GRACE: Duration = Duration::from_secs(1);

/// How long, in a hand-over, open connections keep being served (each answer closing its
/// connection) before they are closed.
const HANDOVER_GRACE: Duration = Duration::from_secs(1);

/// Serves `listener` until `shutdown` completes, then drains and returns.
pub async fn run<T: RouteTable>(
    listener: TcpListener,
    shared: Arc<Shared<T>>,
    options: Options,
    shutdown: impl Future<Output = ()>,
) {
    let (mut durable_workers, mut memory_workers) = workers::start(&shared.table);
    let mut health_checks = JoinSet::new();
    shared
        .table
        .pools(&mut |pool| pool.start_checks(&mut health_checks));
    let reporter = (!options.metrics_log_interval.is_zero()).then(|| {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(options.metrics_log_interval);
            tick.tick().await;
            loop {
                tick.tick().await;
                report::log_lanes(&shared.table);
            }
        })
    });

    let builders = Arc::new(Builders::new(
        options.header_read_timeout,
        options.max_header_bytes,
        options.http2_max_streams,
    ));
    // One permit per open connection: a new connection without one is closed at once, and
    // shutdown waits until every permit is back (every connection closed).
    let slots = Arc::new(Semaphore::new(options.max_connections));
    // Flips to true when shutdown begins: every connection finishes what it has under way and
    // closes (HTTP/1.1 after the current response, h2c with GOAWAY).
    let (closing, closing_seen) = watch::channel(false);

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        shared.connections.refused.inc();
                        tracing::debug!(limit = options.max_connections, "connection refused: max_connections open");
                        continue;
                    };
                    connection::configure(&stream, options.tcp_keepalive);
                    let shared = shared.clone();
                    let builders = builders.clone();
                    let options = options.clone();
                    let closing = closing_seen.clone();
                    tokio::spawn(async move {
                        serve(stream, shared, &builders, &options, closing).await;
                        drop(slot);
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
    let handing_over = shared.successor_waiting();
    shared.handing_over.store(handing_over, Ordering::Relaxed);
    hand_back_queue(
        &listener,
        &shared,
        &builders,
        &options,
        &slots,
        &closing_seen,
    );
    drop(listener);
    if handing_over {
        tracing::info!("a successor waits for the data directory: serving the requests on open connections, then handing over");
    } else {
        shared.shutting_down.store(true, Ordering::Relaxed);
    }
    if handing_over {
        // Every answer now says `Connection: close`, so a keep-alive client moves to the
        // successor after its next request instead of racing a close; connections still open
        // after the grace are closed as in any shutdown.
        let all_closed = slots.acquire_many(options.max_connections as u32);
        let grace = deadline.min(Instant::now() + HANDOVER_GRACE);
        if let Ok(permits) = tokio::time::timeout_at(grace, all_closed).await {
            drop(permits);
        }
    }
    let _ = closing.send(true);
    let all_closed = slots.acquire_many(options.max_connections as u32);
    if tokio::time::timeout_at(deadline, all_closed).await.is_err() {
        tracing::warn!("connections still open at the drain deadline");
    }
    // Durable lanes stop taking events, finish what they hold, and their logs are closed and
    // the data directory released, so a process taking over can start at once; memory lanes
    // drain meanwhile.
    // Their workers stop before the hand-over: what they still hold stays in the log for the
    // next process, which must be the only one to deliver or dead-letter it.
    shared.table.lanes(&mut |lane| lane.queue.stop());
    let handover = deadline.min(Instant::now() + DURABLE_GRACE);
    workers::wait_for_empty_lanes(&shared.table, handover, true).await;
    durable_workers.shutdown().await;
    shared.hand_over().await;
    workers::wait_for_empty_lanes(&shared.table, deadline, false).await;
    memory_workers.shutdown().await;
    health_checks.shutdown().await;
    if let Some(reporter) = reporter {
        reporter.abort();
    }
    workers::report_leftovers(&shared.table);
}

/// Serves one connection to its end: waits for its first bytes, picks HTTP/1.1 or h2c, and
/// closes it when it has been idle for `idle_timeout` or when shutdown begins.
async fn serve<T: RouteTable>(
    stream: TcpStream,
    shared: Arc<Shared<T>>,
    builders: &Builders,
    options: &Options,
    mut closing: watch::Receiver<bool>,
) {
    let _open = connection::Open::count(&shared.connections.open);
    let Ok(addr) = stream.peer_addr() else {
        return;
    };
    let peer = Arc::new(connection::Peer::new(addr, options.tls.is_some()));
    let protocol = {
        let first_bytes = tokio::time::timeout(
            options.first_byte_timeout,
            connection::hello(stream, options.tls.as_deref()),
        );
        tokio::pin!(first_bytes);
        let early = tokio::select! {
            protocol = &mut first_bytes => Some(protocol),
            _ = closing.wait_for(|closing| *closing) => None,
        };
        match early {
            Some(protocol) => protocol,
            // A connection that has not said which protocol it speaks has nothing under way,
            // unless a successor takes over: then its request may be on its way, and is served.
            None if shared.handing_over.load(Ordering::Relaxed) => first_bytes.await,
            None => return,
        }
    };
    match protocol {
        Ok(Ok((connection::Protocol::Http1, io))) => {
            serve_http(io, &builders.http1, shared, options, closing, peer).await
        }
        Ok(Ok((connection::Protocol::Http2, io))) => {
            serve_http(io, &builders.http2, shared, options, closing, peer).await
        }
        Ok(Err(error)) if options.tls.is_some() => {
            shared.connections.tls_failures.inc();
            tracing::debug!(%error, "TLS handshake failed");
        }
        Ok(Err(_)) => {}
        Err(_) => shared.connections.first_byte_timeouts.inc(),
    }
}

/// Serves HTTP on a connection whose protocol is known, until it ends, is idle for
/// `idle_timeout`, or shutdown begins.
async fn serve_http<T: RouteTable>(
    io: connection::Stream,
    builder: &auto::Builder<TokioExecutor>,
    shared: Arc<Shared<T>>,
    options: &Options,
    mut closing: watch::Receiver<bool>,
    peer: Arc<connection::Peer>,
) {
    let idle_closed = shared.connections.idle_closed.clone();
    let activity = Arc::new(Activity::default());
    let service = {
        let activity = activity.clone();
        service_fn(move |request| {
            let shared = shared.clone();
            let busy = activity.begin();
            let peer = peer.clone();
            async move {
                // Boxed: hyper moves the service's future into its connection state once per
                // request, and a request's whole state inline (the body read, the commit
                // awaited) would be a memmove of a few KiB each time.
                let handled = Box::pin(crate::ingress::dispatch::handle(shared, request, peer));
                let mut response = handled.await;
                // A relayed answer keeps the connection busy until its body ends.
                match response.as_mut().map(|r| r.body_mut()) {
                    Ok(Either::Right(relay)) => relay.hold(busy),
                    _ => drop(busy),
                }
                response
            }
        })
    };
    let served = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(served);
    let mut idle = tokio::time::interval(options.idle_timeout);
    idle.tick().await; // the first tick is now
    let ended = loop {
        tokio::select! {
            ended = served.as_mut() => break Some(ended),
            _ = closing.wait_for(|closing| *closing) => break None,
            _ = idle.tick() => if activity.idle_since_last_look() {
                idle_closed.inc();
                break None;
            },
        }
    };
    // Closing: HTTP/1.1 finishes the response under way, h2c sends GOAWAY and finishes its
    // streams.
    let ended = match ended {
        Some(ended) => ended,
        None => {
            served.as_mut().graceful_shutdown();
            // A client that stops reading (pipelined requests whose answers it never takes,
            // an h2c window of zero) would hold the connection and its slot for ever: it gets
            // `header_read_timeout` to finish, then the connection is dropped.
            match tokio::time::timeout(options.header_read_timeout, served.as_mut()).await {
                Ok(ended) => ended,
                Err(_) => return,
            }
        }
    };
    if let Err(error) = ended {
        tracing::debug!(%error, "connection ended with an error");
    }
}

/// At shutdown, serves the connections already in the listener's queue before it is closed:
/// with SO_REUSEPORT, the kernel may have queued them for this process while a new one
/// listens beside it, and closing would reset them. (Linux 5.14+ can move them to the other
/// listener instead: `net.ipv4.tcp_migrate_req = 1`.)
fn hand_back_queue<T: RouteTable>(
    listener: &TcpListener,
    shared: &Arc<Shared<T>>,
    builders: &Arc<Builders>,
    options: &Options,
    slots: &Arc<Semaphore>,
    closing: &watch::Receiver<bool>,
) {
    let waker = futures_util::task::noop_waker();
    let mut context = std::task::Context::from_waker(&waker);
    while let std::task::Poll::Ready(Ok((stream, _))) = listener.poll_accept(&mut context) {
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            shared.connections.refused.inc();
            continue;
        };
        connection::configure(&stream, options.tcp_keepalive);
        let (shared, builders, options) = (shared.clone(), builders.clone(), options.clone());
        let closing = closing.clone();
        tokio::spawn(async move {
            serve(stream, shared, &builders, &options, closing).await;
            drop(slot);
        });
    }
}
