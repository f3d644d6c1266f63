//! A target that stamps every arrival with its own clock and counts the requests it holds at
//! once, for tests of timing: backoff, `Retry-After`, the breaker's cool-downs and probes.

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::PATIENCE;

/// What a [`Clocked`] target answers.
#[derive(Clone, Copy)]
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<u64>,
    /// How long the target holds the request before answering.
    pub hold: Duration,
}

impl Answer {
    pub fn status(status: u16) -> Answer {
        Answer {
            status,
            retry_after: None,
            hold: Duration::ZERO,
        }
    }
}

/// One request as the target saw it.
#[derive(Clone, Debug)]
pub struct Arrival {
    pub at: Instant,
    /// When the answer was sent.
    pub left: Option<Instant>,
    pub id: String,
    pub attempt: u32,
    /// Requests being held by the target when this one arrived, itself included.
    pub concurrent: usize,
}

pub struct Clock {
    pub arrivals: Mutex<Vec<Arrival>>,
    pub inflight: AtomicUsize,
    pub healthy: AtomicBool,
    pub changed: Notify,
    pub answer: Box<dyn Fn(usize) -> Answer + Send + Sync>,
}

/// An HTTP target that stamps every arrival with its own clock.
pub struct Clocked {
    pub addr: std::net::SocketAddr,
    pub clock: Arc<Clock>,
    pub server: JoinHandle<()>,
}

impl Clocked {
    /// A target answering its n-th request (0-based) with `answer(n)`, or 200 once made healthy.
    pub async fn start(answer: impl Fn(usize) -> Answer + Send + Sync + 'static) -> Clocked {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let clock = Arc::new(Clock {
            arrivals: Mutex::new(Vec::new()),
            inflight: AtomicUsize::new(0),
            healthy: AtomicBool::new(false),
            changed: Notify::new(),
            answer: Box::new(answer),
        });
        let shared = clock.clone();
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let clock = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let clock = clock.clone();
                        async move { Ok::<_, std::io::Error>(clock.answer_to(request).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Clocked {
            addr,
            clock,
            server,
        }
    }

    pub fn arrivals(&self) -> Vec<Arrival> {
        self.clock.arrivals.lock().unwrap().clone()
    }

    /// Waits until `done` holds for the arrivals so far; panics after [`PATIENCE`].
    pub async fn wait_until(&self, what: &str, done: impl Fn(&[Arrival]) -> bool) -> Vec<Arrival> {
        let waiting = async {
            loop {
                let changed = self.clock.changed.notified();
                let arrivals = self.arrivals();
                if done(&arrivals) {
                    return arrivals;
                }
                changed.await;
            }
        };
        tokio::time::timeout(PATIENCE, waiting)
            .await
            .unwrap_or_else(|_| panic!("{what}: not after {PATIENCE:?}: {:?}", self.arrivals()))
    }

    pub fn heal(&self) {
        self.clock.healthy.store(true, Ordering::SeqCst);
    }
}

impl Drop for Clocked {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Clock {
    pub async fn answer_to(
        &self,
        request: hyper::Request<hyper::body::Incoming>,
    ) -> hyper::Response<Full<Bytes>> {
        let at = Instant::now();
        let concurrent = self.inflight.fetch_add(1, Ordering::SeqCst) + 1;
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let index = {
            let mut arrivals = self.arrivals.lock().unwrap();
            arrivals.push(Arrival {
                at,
                left: None,
                id: header("fanout-event-id"),
                attempt: header("fanout-attempt").parse().unwrap_or(0),
                concurrent,
            });
            arrivals.len() - 1
        };
        let answer = if self.healthy.load(Ordering::SeqCst) {
            Answer::status(200)
        } else {
            (self.answer)(index)
        };
        tokio::time::sleep(answer.hold).await;
        let mut response = hyper::Response::new(Full::new(Bytes::from_static(b"{}")));
        *response.status_mut() = hyper::StatusCode::from_u16(answer.status).unwrap();
        if let Some(seconds) = answer.retry_after {
            response.headers_mut().insert("retry-after", seconds.into());
        }
        self.inflight.fetch_sub(1, Ordering::SeqCst);
        self.arrivals.lock().unwrap()[index].left = Some(Instant::now());
        self.changed.notify_waiters();
        response
    }
}

/// Arrivals grouped by event id, each group in attempt order.
pub fn by_event(arrivals: &[Arrival]) -> BTreeMap<String, Vec<Arrival>> {
    let mut events: BTreeMap<String, Vec<Arrival>> = BTreeMap::new();
    for arrival in arrivals {
        events
            .entry(arrival.id.clone())
            .or_default()
            .push(arrival.clone());
    }
    for attempts in events.values_mut() {
        attempts.sort_by_key(|a| a.attempt);
    }
    events
}
