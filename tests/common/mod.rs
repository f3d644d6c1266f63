//! What the integration tests share: real HTTP targets on 127.0.0.1 that record what they
//! receive, a proxy served on a real socket, an HTTP client, and a reader for `/metrics`.
#![allow(dead_code)] // each test file uses its own part of this module

pub mod blocking;
pub mod built;
pub mod clock;
pub mod nats;
pub mod process;
pub mod raw;
pub mod segments;
pub mod strace;
pub mod tls;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Notify, Semaphore};
use tokio::task::JoinHandle;

use fanout::ingress::server::{self, Options};
use fanout::shared::Shared;
use fanout::table::RouteTable;

/// How long a test waits for something that should happen well before.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// What a test target answers to its n-th request (0-based).
#[derive(Clone, Copy, Debug)]
pub enum Reply {
    Status(u16),
    /// A status with a `Retry-After` of this many seconds.
    StatusRetryAfter(u16, u64),
    /// 200 after this delay.
    Slow(Duration),
    /// 200 once the test opens the target's gate (one permit per request).
    Gated,
    /// Close the connection without answering.
    HangUp,
}

/// One request a target received.
#[derive(Clone, Debug)]
pub struct Received {
    /// When the target had read the request, by the target's own clock.
    pub at: tokio::time::Instant,
    pub version: hyper::Version,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("test headers are ASCII"))
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
    }

    pub fn body_text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("test bodies are UTF-8")
    }
}

type Behaviour = dyn Fn(usize) -> Reply + Send + Sync;

struct TargetState {
    received: Mutex<Vec<Received>>,
    /// Requests whose body could not be read, and why.
    unreadable: Mutex<Vec<String>>,
    /// Connections accepted so far.
    connections: std::sync::atomic::AtomicUsize,
    changed: Notify,
    behaviour: Mutex<Arc<Behaviour>>,
    gate: Semaphore,
}

/// A real HTTP target on 127.0.0.1 (HTTP/1.1, or h2c with prior knowledge) that records
/// every request it gets.
pub struct Target {
    pub addr: SocketAddr,
    shared: Arc<TargetState>,
    server: JoinHandle<()>,
}

impl Target {
    /// A target that answers every request with `reply`.
    pub async fn start(reply: Reply) -> Target {
        Target::with(move |_| reply).await
    }

    /// A target whose answer depends on the request's number.
    pub async fn with(behaviour: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Target {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a test target");
        Target::serve(listener, Arc::new(behaviour))
    }

    /// A target on the port `reserved` holds (for targets that come up late).
    pub fn start_on(reserved: ReservedPort, reply: Reply) -> Target {
        reserved
            .socket
            .listen(1024)
            .expect("listen on a reserved port");
        reserved
            .socket
            .set_nonblocking(true)
            .expect("a non-blocking socket");
        let listener = TcpListener::from_std(reserved.socket.into())
            .expect("a listener in the test's runtime");
        Target::serve(listener, Arc::new(move |_| reply))
    }

    fn serve(listener: TcpListener, behaviour: Arc<Behaviour>) -> Target {
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let shared = Arc::new(TargetState {
            received: Mutex::new(Vec::new()),
            unreadable: Mutex::new(Vec::new()),
            connections: std::sync::atomic::AtomicUsize::new(0),
            changed: Notify::new(),
            behaviour: Mutex::new(behaviour),
            gate: Semaphore::new(0),
        });
        let state = shared.clone();
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                state
                    .connections
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let state = state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| answer(state.clone(), request));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Target {
            addr,
            shared,
            server,
        }
    }

    /// Changes what the target answers from now on.
    pub fn set_reply(&self, reply: Reply) {
        *self.shared.behaviour.lock().unwrap() = Arc::new(move |_| reply);
    }

    /// Lets `n` gated requests be answered.
    pub fn open_gate(&self, n: usize) {
        self.shared.gate.add_permits(n);
    }

    /// What the target received; panics if a request's body could not be read.
    pub fn received(&self) -> Vec<Received> {
        self.assert_readable();
        self.shared.received.lock().unwrap().clone()
    }

    /// The `fanout-event-id` of every request received, in arrival order.
    pub fn event_ids(&self) -> Vec<String> {
        let received = self.received();
        received
            .iter()
            .map(|r| r.header("fanout-event-id").to_owned())
            .collect()
    }

    pub fn count(&self) -> usize {
        self.assert_readable();
        self.shared.received.lock().unwrap().len()
    }

    fn assert_readable(&self) {
        let unreadable = self.shared.unreadable.lock().unwrap();
        assert!(unreadable.is_empty(), "bodies not read: {unreadable:?}");
    }

    /// Connections the target has accepted.
    pub fn connections(&self) -> usize {
        self.shared
            .connections
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until the target has received at least `n` requests; panics after [`PATIENCE`].
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        let waiting = async {
            loop {
                let changed = self.shared.changed.notified();
                if self.count() >= n {
                    return self.received();
                }
                changed.await;
            }
        };
        tokio::time::timeout(PATIENCE, waiting)
            .await
            .unwrap_or_else(|_| panic!("target got {} requests, expected {n}", self.count()))
    }

    /// Stops accepting (the port is closed; open connections end with their tasks).
    pub fn stop(&self) {
        self.server.abort();
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn answer(
    state: Arc<TargetState>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let (parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            // Not a request with an empty body: [`Target::received`] fails the test.
            let what = format!("{} {}: {error}", parts.method, parts.uri);
            state.unreadable.lock().unwrap().push(what);
            state.changed.notify_waiters();
            return Err(std::io::Error::other("the request body could not be read"));
        }
    };
    let at = tokio::time::Instant::now();
    let number = {
        let mut received = state.received.lock().unwrap();
        received.push(Received {
            at,
            version: parts.version,
            path: parts.uri.path().to_owned(),
            headers: parts.headers,
            body,
        });
        received.len() - 1
    };
    state.changed.notify_waiters();
    let behaviour = state.behaviour.lock().unwrap().clone();
    let status = match behaviour(number) {
        Reply::Status(status) => status,
        Reply::StatusRetryAfter(status, seconds) => {
            let mut response = reply(status);
            response.headers_mut().insert("retry-after", seconds.into());
            return Ok(response);
        }
        Reply::Slow(delay) => {
            tokio::time::sleep(delay).await;
            200
        }
        Reply::Gated => {
            state
                .gate
                .acquire()
                .await
                .expect("the gate is never closed")
                .forget();
            200
        }
        Reply::HangUp => return Err(std::io::Error::other("hanging up on purpose")),
    };
    Ok(reply(status))
}

fn reply(status: u16) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(b"{}")));
    *response.status_mut() = StatusCode::from_u16(status).expect("tests use valid statuses");
    response
}

/// A port on 127.0.0.1 held (bound, not listening): nothing else can take it, and
/// connections to it are refused — a dead target, or one that starts late
/// ([`Target::start_on`]). Tests use it instead of a fixed port.
pub struct ReservedPort {
    socket: socket2::Socket,
    pub addr: SocketAddr,
}

impl ReservedPort {
    pub fn new() -> ReservedPort {
        ReservedPort::bind(false)
    }

    /// The same, with SO_REUSEPORT if `shared`: another socket with it may listen there too.
    pub fn bind(shared: bool) -> ReservedPort {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("a TCP socket");
        if shared {
            socket.set_reuse_port(true).expect("SO_REUSEPORT");
        }
        let any: SocketAddr = "127.0.0.1:0".parse().expect("a valid address");
        socket.bind(&any.into()).expect("bind an ephemeral port");
        let addr = socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .expect("a bound IPv4 socket has an address");
        ReservedPort { socket, addr }
    }
}

/// A proxy serving the routing table `T` on a real socket.
pub struct Running<T: RouteTable> {
    pub addr: SocketAddr,
    pub shared: Arc<Shared<T>>,
    stop: Option<oneshot::Sender<()>>,
    done: JoinHandle<()>,
    /// Where unset target variables point: held while the proxy runs.
    _dead: ReservedPort,
}

/// Starts a proxy for `T`, resolving `${NAME}` placeholders from `env`; a name `env` does not
/// give points at a held port that refuses connections. `drain_timeout` overrides the compiled
/// one.
pub async fn start_proxy<T: RouteTable>(
    env: &[(&str, String)],
    drain_timeout: Option<Duration>,
) -> Running<T> {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let dead = ReservedPort::new();
    let shared = Arc::new(
        Shared::<T>::new(&|name| {
            Some(
                env.get(name)
                    .cloned()
                    .unwrap_or_else(|| dead.addr.to_string()),
            )
        })
        .expect("the test proxy starts"),
    );
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the proxy");
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    let mut options = Options::from_spec(T::SERVER);
    options.drain_timeout = drain_timeout.unwrap_or(T::SERVER.drain_timeout);
    options.metrics_log_interval = Duration::ZERO;
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(server::run(listener, shared.clone(), options, async {
        let _ = stopped.await;
    }));
    Running {
        addr,
        shared,
        stop: Some(stop),
        done,
        _dead: dead,
    }
}

impl<T: RouteTable> Running<T> {
    /// Shuts the proxy down as SIGTERM would and waits until it has drained and stopped.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(PATIENCE, &mut self.done)
            .await
            .expect("the proxy stops within the test's patience")
            .expect("the server task does not panic");
    }

    pub async fn post(&self, path: &str, body: &str) -> Answer {
        post(self.addr, path, body, "application/json").await
    }

    pub async fn metrics(&self) -> Metrics {
        Metrics(get(self.addr, "/metrics").await.body)
    }

    /// Waits until the metric is `value`; panics after [`PATIENCE`].
    pub async fn wait_metric(&self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.wait_metric_until(name, labels, &value.to_string(), |now| now == value)
            .await;
    }

    /// Waits until the metric is at least `value` (for counters that may move on past it
    /// between two looks); panics after [`PATIENCE`].
    pub async fn wait_metric_at_least(&self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.wait_metric_until(name, labels, &format!("at least {value}"), |now| {
            now >= value
        })
        .await;
    }

    async fn wait_metric_until(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        expected: &str,
        done: impl Fn(f64) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let now = self.metrics().await.value(name, labels);
            if done(now) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name}{labels:?} is {now}, expected {expected}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A response as a test looks at it.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The id of a 202 `{"id":"..."}`.
    pub fn id(&self) -> String {
        receipt_id(self.status, &self.body, &self)
    }
}

/// The id of a 202 `{"id":"..."}` (`answer` is shown if it is something else).
pub fn receipt_id(status: u16, body: &str, answer: &dyn std::fmt::Debug) -> String {
    assert_eq!(status, 202, "expected 202, got {answer:?}");
    let json: serde_json::Value = serde_json::from_str(body).expect("202 body is JSON");
    json["id"]
        .as_str()
        .expect("202 body has a string id")
        .to_owned()
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

pub async fn request(request: Request<Full<Bytes>>) -> Answer {
    let response = client().request(request).await.expect("the proxy answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("read the answer")
        .to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8(body.to_vec()).expect("answers are UTF-8"),
    }
}

pub async fn post(addr: SocketAddr, path: &str, body: &str, content_type: &str) -> Answer {
    request(
        Request::post(format!("http://{addr}{path}"))
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(body.to_owned())))
            .expect("a valid test request"),
    )
    .await
}

pub async fn get(addr: SocketAddr, path: &str) -> Answer {
    request(
        Request::get(format!("http://{addr}{path}"))
            .body(Full::new(Bytes::new()))
            .expect("a valid test request"),
    )
    .await
}

/// The Prometheus text of `/metrics`.
pub struct Metrics(pub String);

impl Metrics {
    /// The sum of every sample of `name` whose labels include `labels` (in any order): one
    /// sample, or several (`fanout_lane_dropped_total` of a lane, one per reason). Panics if no
    /// sample matches, so a renamed metric or label fails the test instead of reading 0.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let samples: Vec<f64> = self
            .0
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
                let all_match = metric == name
                    && labels
                        .iter()
                        .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
                all_match.then(|| value.parse().expect("sample values are numbers"))
            })
            .collect();
        assert!(
            !samples.is_empty(),
            "no sample {name}{labels:?} in /metrics:\n{}",
            self.0
        );
        samples.iter().sum()
    }
}

/// A new empty directory under the system's temporary one, named after `what`, this process
/// and a counter (left behind for a look after a failure; the OS cleans its temporary files).
pub fn scratch_dir(what: &str) -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("fanout-test-{what}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}

// Helpers of tests/durable_ops.rs: a `fanout` process on an address the test chooses, and a
// blocking HTTP/1.1 client for tests that post from plain threads.
