//! What tests/durable_faults.rs, tests/durable_fsync.rs and tests/durable_segments.rs share:
//! a `fanout` built with the `failpoints` feature from tests/routes/faults.yaml, run on a data
//! directory that outlives it, with two python targets (`a` and `b` of every route); posting
//! that keeps the id and body of every event answered 202 and the body of every other one;
//! and checks on what the targets received, polled with a deadline.
#![allow(dead_code)] // each test file uses its own part of this module

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::blocking::{http_once, metric_blocking, HttpAnswer};
use crate::common::process::{Delivered, Fanout, PyTarget};
use crate::common::{built, scratch_dir};

const ROUTES: &str = include_str!("../routes/faults.yaml");

/// How long a test waits for deliveries.
pub const DELIVERY: Duration = Duration::from_secs(30);

/// Bytes a record takes besides its body: length, checksum, id, content type length and the
/// content type `application/json`.
pub const RECORD_OVERHEAD: u64 = 4 + 4 + 16 + 2 + 16;

/// The size at which a route of faults.yaml starts a new segment: `disk_buffer` 8MiB / 8.
pub const SEGMENT_SIZE: u64 = 1 << 20;

/// The binary built with faults.yaml and the `failpoints` feature, once for the test file.
pub fn binary() -> &'static str {
    static BUILT: OnceLock<Result<String, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let built = built::fanout_with("durable-faults-build", ROUTES, &["failpoints"]);
            built.map(|(binary, _)| binary.display().to_string())
        })
        .as_ref()
        .unwrap_or_else(|error| panic!("{error}"))
}

/// An event posted and answered 202.
#[derive(Clone, Debug)]
pub struct Accepted {
    pub id: String,
    pub route: String,
    pub body: String,
}

/// A data directory, the two targets and the `fanout` running on them, and every event posted.
pub struct Setup {
    pub dir: PathBuf,
    pub a: PyTarget,
    pub b: PyTarget,
    pub fanout: Fanout,
    pub accepted: Vec<Accepted>,
    /// Bodies of the events answered anything but 202.
    pub refused: Vec<String>,
    next: u64,
}

impl Setup {
    /// Targets up, `fanout` started with `env` added to its environment.
    pub fn start(what: &str, env: &[(&str, &str)]) -> Setup {
        let (a, b) = (PyTarget::started(), PyTarget::started());
        Setup::start_with(what, a, b, env)
    }

    /// The same with targets that are down until the test brings them up.
    pub fn start_down(what: &str) -> Setup {
        Setup::start_with(what, PyTarget::new(), PyTarget::new(), &[])
    }

    fn start_with(what: &str, a: PyTarget, b: PyTarget, env: &[(&str, &str)]) -> Setup {
        let dir = scratch_dir(what);
        let fanout = launch(&dir, &a, &b, env);
        Setup {
            dir,
            a,
            b,
            fanout,
            accepted: Vec::new(),
            refused: Vec::new(),
            next: 0,
        }
    }

    /// SIGKILL, then a new process on the same data directory (no `FAILPOINTS`).
    pub fn kill_and_restart(&mut self) {
        self.fanout.kill_hard();
        self.fanout = launch(&self.dir, &self.a, &self.b, &[]);
    }

    /// POSTs a new event of exactly `size` bytes to `/{route}`, noting its answer.
    pub fn post(&mut self, route: &str, size: usize) -> HttpAnswer {
        let body = self.body(route, size);
        let answer = post(self.fanout.addr, route, &body);
        self.note(route, body, &answer);
        answer
    }

    /// POSTs `n` new events of `size` bytes to `/{route}` at once, one thread and connection
    /// each, noting their answers.
    pub fn post_together(&mut self, route: &str, n: usize, size: usize) -> Vec<HttpAnswer> {
        let bodies: Vec<String> = (0..n).map(|_| self.body(route, size)).collect();
        let (addr, start) = (self.fanout.addr, std::sync::Barrier::new(n));
        let answers: Vec<HttpAnswer> = std::thread::scope(|scope| {
            let posts: Vec<_> = (bodies.iter())
                .map(|body| {
                    let start = &start;
                    scope.spawn(move || {
                        start.wait();
                        post(addr, route, body)
                    })
                })
                .collect();
            posts
                .into_iter()
                .map(|p| p.join().expect("a client"))
                .collect()
        });
        for (body, answer) in bodies.into_iter().zip(&answers) {
            self.note(route, body, answer);
        }
        answers
    }

    /// A new body of exactly `size` bytes, for `route`.
    fn body(&mut self, route: &str, size: usize) -> String {
        self.next += 1;
        let mut body = format!("{{\"route\":\"{route}\",\"n\":{},\"pad\":\"", self.next);
        assert!(
            body.len() + 2 <= size,
            "a body of {size} bytes is too short"
        );
        body.extend(std::iter::repeat('x').take(size - body.len() - 2));
        body.push_str("\"}");
        body
    }

    /// Keeps an event answered 202 with its id, any other's body.
    fn note(&mut self, route: &str, body: String, answer: &HttpAnswer) {
        if answer.status == 202 {
            let id = answer.id();
            let route = route.to_owned();
            self.accepted.push(Accepted { id, route, body });
        } else {
            self.refused.push(body);
        }
    }

    /// POSTs `n` events of `size` bytes to `/{route}`, each answered 202.
    pub fn post_accepted(&mut self, route: &str, n: usize, size: usize) {
        for _ in 0..n {
            let answer = self.post(route, size);
            assert_eq!(answer.status, 202, "/{route}: {answer:?}");
        }
    }

    /// Turns fault points on or off: `log::write=return(EIO)`, `log::write=off`.
    pub fn fail(&self, points: &str) {
        let path = format!("/failpoints?{points}");
        let answer = http_once(self.fanout.addr, "PUT", &path, &[], b"").expect("PUT /failpoints");
        assert_eq!(answer.status, 200, "PUT {path}: {answer:?}");
    }

    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_blocking(self.fanout.addr, name, labels)
    }

    /// `fanout_log_errors_total{route, op}`.
    pub fn errors(&self, route: &str, op: &str) -> f64 {
        self.metric("fanout_log_errors_total", &[("route", route), ("op", op)])
    }

    /// `fanout_events_rejected_total{route, reason="disk_error"}`.
    pub fn disk_errors(&self, route: &str) -> f64 {
        let labels = [("route", route), ("reason", "disk_error")];
        self.metric("fanout_events_rejected_total", &labels)
    }

    /// `fanout_log_syncs_total{route}`.
    pub fn syncs(&self, route: &str) -> f64 {
        self.metric("fanout_log_syncs_total", &[("route", route)])
    }

    /// Polls until `done` holds for the metric; panics with its last value after [`DELIVERY`].
    pub fn wait_metric(&self, name: &str, labels: &[(&str, &str)], done: impl Fn(f64) -> bool) {
        crate::common::blocking::wait_metric(self.fanout.addr, (name, labels), done, DELIVERY);
    }

    /// Log lines of the running process with `message` whose fields include `fields`.
    pub fn lines(&self, message: &str, fields: &[(&str, &str)]) -> Vec<serde_json::Value> {
        let mut lines = self.fanout.log_messages();
        lines.retain(|line| {
            let f = &line["fields"];
            f["message"] == message && fields.iter().all(|(k, v)| f[*k] == *v)
        });
        lines
    }

    /// Polls until at least `n` such lines are logged; returns them.
    pub fn wait_lines(
        &self,
        message: &str,
        fields: &[(&str, &str)],
        n: usize,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + DELIVERY;
        loop {
            let lines = self.lines(message, fields);
            if lines.len() >= n {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "{} lines {message:?} {fields:?}, expected {n}",
                lines.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls until both targets have every accepted event; then checks that each delivery of
    /// a route's path is an accepted event, on its own route, with its body byte for byte, and
    /// that no refused body ever arrived.
    pub fn wait_delivered(&self) {
        let deadline = Instant::now() + DELIVERY;
        loop {
            let missing = self.missing(&self.a) + self.missing(&self.b);
            if missing == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{missing} deliveries of {} accepted events missing",
                self.accepted.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.check_deliveries();
    }

    /// Accepted events `target` has not received.
    pub fn missing(&self, target: &PyTarget) -> usize {
        let got: HashSet<String> = target.received().into_iter().map(|d| d.id).collect();
        self.accepted
            .iter()
            .filter(|e| !got.contains(&e.id))
            .count()
    }

    /// Every delivery is of an accepted event, with its route and body; no refused body came.
    pub fn check_deliveries(&self) {
        let accepted: HashMap<&str, &Accepted> =
            self.accepted.iter().map(|e| (e.id.as_str(), e)).collect();
        let refused: HashSet<&str> = self.refused.iter().map(String::as_str).collect();
        for (name, target) in [("a", &self.a), ("b", &self.b)] {
            for Delivered { path, id, body } in target.received() {
                assert!(
                    !refused.contains(body.as_str()),
                    "{name} got an event answered with a refusal: {path} {id} {body}"
                );
                let event = accepted.get(id.as_str()).unwrap_or_else(|| {
                    panic!("{name} got an event never answered 202: {path} {id} {body}")
                });
                assert_eq!(path, format!("/{}", event.route), "{name}: path of {id}");
                assert!(body == event.body, "{name}: the body of {id} differs");
            }
        }
    }

    /// The route's segment files (`*.seg` only), by base position.
    pub fn segments(&self, route: &str) -> Vec<(u64, PathBuf)> {
        crate::common::segments::files(&self.dir, route)
    }

    /// The base of the route's last segment.
    pub fn last_segment(&self, route: &str) -> u64 {
        let segments = self.segments(route);
        segments.last().expect("the route has a segment").0
    }
}

/// POSTs `body` (JSON) to `/{route}` over a new connection.
fn post(addr: SocketAddr, route: &str, body: &str) -> HttpAnswer {
    let headers = [("content-type", "application/json")];
    let path = format!("/{route}");
    http_once(addr, "POST", &path, &headers, body.as_bytes()).expect("fanout answers")
}

fn launch(dir: &Path, a: &PyTarget, b: &PyTarget, env: &[(&str, &str)]) -> Fanout {
    let (a, b) = (a.addr().to_string(), b.addr().to_string());
    let mut env = env.to_vec();
    env.extend([("TARGET_A", a.as_str()), ("TARGET_B", b.as_str())]);
    let dir = dir.display().to_string();
    Fanout::start_with(binary(), &["--data-dir", &dir], &env)
}

/// `fanout --data-dir DIR log verify`: its exit code and stdout.
pub fn verify(dir: &Path) -> (Option<i32>, String) {
    crate::common::blocking::log_verify(Path::new(binary()), dir)
}
