//! The `fanout` binary with the default routes.yaml (route `/demo`, targets `receiver_a` and
//! `receiver_b` at `${RECEIVER_A:-...}` and `${RECEIVER_B:-...}`): exit code 2 on an address in
//! use, `--workers 1`, `fanout demo`, `--log-format json`, the periodic per-lane log line, and
//! the delivery-duration histogram and oldest-age gauge of `/metrics`.

mod common;

use common::process::FANOUT;
use common::{Metrics, Reply, Target, PATIENCE};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A `fanout` process with every line of its stdout and stderr, as written. Its waits block
/// the calling thread, so the async tests run on a multi-threaded runtime: their targets go on
/// answering meanwhile.
struct Process {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

fn collect(stream: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

impl Process {
    fn spawn(args: &[&str], env: &[(&str, String)]) -> Process {
        let mut child = Command::new(FANOUT)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start fanout");
        let stdout = collect(child.stdout.take().expect("piped"));
        let stderr = collect(child.stderr.take().expect("piped"));
        Process {
            child,
            stdout,
            stderr,
        }
    }

    /// Starts fanout on a free port with JSON logs and a short drain, and waits until it
    /// serves.
    fn serving(extra_args: &[&str], env: &[(&str, String)]) -> (Process, SocketAddr) {
        let mut args = vec![
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--drain-timeout",
            "300ms",
        ];
        args.extend_from_slice(extra_args);
        let process = Process::spawn(&args, env);
        let ready = process.wait_line(&process.stderr, "`fanout ready`", PATIENCE, |line| {
            json(line).is_some_and(|entry| entry["fields"]["message"] == "fanout ready")
        });
        let listen = json(&ready).unwrap()["fields"]["listen"]
            .as_str()
            .expect("`fanout ready` has the address")
            .parse()
            .expect("the address parses");
        (process, listen)
    }

    /// Waits until `lines` holds a line that `wanted` accepts; panics after `patience`.
    fn wait_line(
        &self,
        lines: &Mutex<Vec<String>>,
        what: &str,
        patience: Duration,
        wanted: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + patience;
        loop {
            if let Some(line) = lines.lock().unwrap().iter().find(|l| wanted(l)) {
                return line.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within {patience:?}; stdout: {:?}\nstderr: {:?}",
                self.stdout.lock().unwrap(),
                self.stderr.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the process to exit by itself; panics (and kills it) after [`PATIENCE`].
    fn exit_status(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for fanout") {
                // Let the readers take in the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return status;
            }
            assert!(Instant::now() < deadline, "fanout did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn terminate(&mut self) -> ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success());
        self.exit_status()
    }

    fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn json(line: &str) -> Option<serde_json::Value> {
    serde_json::from_str::<serde_json::Value>(line)
        .ok()
        .filter(serde_json::Value::is_object)
}

/// A port on 127.0.0.1 that was free a moment ago, for the demo's receivers to bind.
fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener
        .local_addr()
        .expect("a bound listener has an address")
}

fn receivers(a: &Target, b: &Target) -> [(&'static str, String); 2] {
    [
        ("RECEIVER_A", a.addr.to_string()),
        ("RECEIVER_B", b.addr.to_string()),
    ]
}

async fn metrics(addr: SocketAddr) -> Metrics {
    Metrics(common::get(addr, "/metrics").await.body)
}

/// Polls `/metrics` until `done` holds; panics after [`PATIENCE`].
async fn wait_metrics(addr: SocketAddr, what: &str, done: impl Fn(&Metrics) -> bool) -> Metrics {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let now = metrics(addr).await;
        if done(&now) {
            return now;
        }
        assert!(Instant::now() < deadline, "{what}; metrics:\n{}", now.0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn an_address_in_use_exits_2_with_the_reason_on_stderr() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let addr = taken.local_addr().unwrap().to_string();
    let mut process = Process::spawn(&["--listen", &addr], &[]);
    let status = process.exit_status();
    assert_eq!(status.code(), Some(2), "{:?}", process.stderr());
    let stderr = process.stderr().join("\n");
    assert!(stderr.contains(&addr), "the message names {addr}: {stderr}");
    assert!(
        stderr.to_lowercase().contains("in use"),
        "the message says the address is in use: {stderr}"
    );
}

#[test]
fn json_logs_stay_json_when_start_up_fails() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let addr = taken.local_addr().unwrap().to_string();
    let mut process = Process::spawn(&["--listen", &addr, "--log-format", "json"], &[]);
    assert_eq!(process.exit_status().code(), Some(2));
    let lines = process.stderr();
    assert!(
        lines.iter().any(|line| line.contains(&addr)),
        "the reason is on stderr: {lines:?}"
    );
    for line in &lines {
        assert!(json(line).is_some(), "not a JSON object: {line:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_thread_runs_and_serves() {
    let a = Target::start(Reply::Status(200)).await;
    let b = Target::start(Reply::Status(200)).await;
    let (mut process, addr) = Process::serving(&["--workers", "1"], &receivers(&a, &b));
    assert_eq!(common::get(addr, "/healthz").await.status, 200);
    let id = common::post(addr, "/demo", "{\"one\":1}", "application/json")
        .await
        .id();
    for target in [&a, &b] {
        let received = target.wait_for(1).await;
        assert_eq!(received[0].header("fanout-event-id"), id);
        assert_eq!(received[0].body_text(), "{\"one\":1}");
    }
    assert!(process.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_starts_receivers_that_print_each_event() {
    let env = [
        ("RECEIVER_A", free_addr().to_string()),
        ("RECEIVER_B", free_addr().to_string()),
    ];
    let (mut process, addr) = Process::serving(&["demo"], &env);
    let body = "{\"hello\":\"world\"}";
    let id = common::post(addr, "/demo", body, "application/json")
        .await
        .id();
    for receiver in ["receiver_a", "receiver_b"] {
        let expected = format!(
            "demo: {receiver} got POST /event-inbound route=demo id={id} attempt=1 body={body}"
        );
        let printed = process.wait_line(&process.stdout, &expected, PATIENCE, |line| {
            line.starts_with(&expected)
        });
        assert_eq!(printed, expected);
    }
    assert!(process.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line() {
    let a = Target::start(Reply::Status(404)).await; // a failure is logged as a warning
    let b = Target::start(Reply::Status(200)).await;
    let (mut process, addr) = Process::serving(&[], &receivers(&a, &b));
    common::post(addr, "/demo", "{\"log\":1}", "application/json")
        .await
        .id();
    process.wait_line(&process.stderr, "the failure logged", PATIENCE, |line| {
        line.contains("delivery failed")
    });
    assert!(process.terminate().success());
    process.wait_line(&process.stderr, "`fanout stopped`", PATIENCE, |line| {
        line.contains("fanout stopped")
    });
    let lines = process.stderr();
    assert!(lines.len() >= 4, "{lines:?}");
    for line in &lines {
        let entry = json(line).unwrap_or_else(|| panic!("not a JSON object: {line:?}"));
        assert!(
            entry["fields"]["message"].is_string() && entry["level"].is_string(),
            "a log entry has a level and a message: {line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_periodic_lane_line_carries_every_counter() {
    // The default routes log every 5s.
    let started = Instant::now();
    let a = Target::start(Reply::Status(200)).await;
    let b = Target::start(Reply::Status(200)).await;
    let (mut process, addr) = Process::serving(&[], &receivers(&a, &b));
    common::post(addr, "/demo", "{}", "application/json")
        .await
        .id();
    a.wait_for(1).await;
    b.wait_for(1).await;
    let patience = Duration::from_secs(8).saturating_sub(started.elapsed());
    let line = process.wait_line(&process.stderr, "a lane line", patience, |line| {
        json(line).is_some_and(|e| {
            e["fields"]["message"] == "lane" && e["fields"]["target"] == "receiver_a"
        })
    });
    let fields = json(&line).unwrap()["fields"].clone();
    for field in [
        "route",
        "accepted",
        "delivered",
        "failed",
        "dropped",
        "retries",
        "depth",
        "inflight",
        "circuit_open",
    ] {
        assert!(!fields[field].is_null(), "no {field} in {line}");
    }
    assert_eq!(fields["route"], "demo");
    assert_eq!(fields["accepted"], 1, "{line}");
    assert_eq!(fields["delivered"], 1, "{line}");
    for zero in ["failed", "dropped", "retries", "depth", "inflight"] {
        assert_eq!(fields[zero], 0, "{zero} in {line}");
    }
    assert_eq!(fields["circuit_open"], false, "{line}");
    assert!(process.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delivery_duration_histogram_counts_every_attempt() {
    let a = Target::with(|n| {
        if n < 2 {
            Reply::Status(503)
        } else {
            Reply::Status(200)
        }
    })
    .await;
    let b = Target::start(Reply::Status(200)).await;
    let (mut process, addr) = Process::serving(&[], &receivers(&a, &b));
    common::post(addr, "/demo", "{}", "application/json")
        .await
        .id();
    let lane_a = [("route", "demo"), ("target", "receiver_a")];
    let lane_b = [("route", "demo"), ("target", "receiver_b")];
    let m = wait_metrics(addr, "receiver_a takes the event", |m| {
        m.value("fanout_lane_delivered_total", &lane_a) == 1.0
            && m.value("fanout_lane_delivered_total", &lane_b) == 1.0
    })
    .await;
    assert!(
        m.0.contains("# TYPE fanout_delivery_duration_seconds histogram"),
        "{}",
        m.0
    );
    for series in [
        "fanout_delivery_duration_seconds_bucket{",
        "fanout_delivery_duration_seconds_sum{",
        "fanout_delivery_duration_seconds_count{",
    ] {
        assert!(m.0.contains(series), "no {series} in\n{}", m.0);
    }
    assert_eq!(m.value("fanout_lane_retries_total", &lane_a), 2.0);
    assert_eq!(
        m.value("fanout_delivery_duration_seconds_count", &lane_a),
        3.0,
        "one observation per attempt"
    );
    assert_eq!(
        m.value("fanout_delivery_duration_seconds_count", &lane_b),
        1.0
    );
    let mut inf = lane_a.to_vec();
    inf.push(("le", "+Inf"));
    assert_eq!(
        m.value("fanout_delivery_duration_seconds_bucket", &inf),
        3.0
    );
    let sum = m.value("fanout_delivery_duration_seconds_sum", &lane_a);
    assert!(sum > 0.0 && sum < 5.0, "sum of 3 quick attempts: {sum}");
    assert!(process.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oldest_age_grows_while_a_target_is_down() {
    let b = Target::start(Reply::Status(200)).await;
    let dead = common::ReservedPort::new(); // bound, not listening: connections are refused
    let env = [
        ("RECEIVER_A", dead.addr.to_string()),
        ("RECEIVER_B", b.addr.to_string()),
    ];
    let (mut process, addr) = Process::serving(&[], &env);
    // More events than the lane's 16 workers hold: the rest wait.
    for n in 0..40 {
        common::post(addr, "/demo", &n.to_string(), "application/json")
            .await
            .id();
    }
    let lane_a = [("route", "demo"), ("target", "receiver_a")];
    let first = metrics(addr).await;
    assert!(
        first.0.contains("fanout_lane_oldest_age_seconds{"),
        "{}",
        first.0
    );
    assert!(
        first.value("fanout_lane_depth", &lane_a) > 0.0,
        "{}",
        first.0
    );
    let age = first.value("fanout_lane_oldest_age_seconds", &lane_a);
    wait_metrics(addr, "the oldest age grows", |m| {
        m.value("fanout_lane_oldest_age_seconds", &lane_a) >= age + 0.5
    })
    .await;
    let healthy = metrics(addr).await;
    assert_eq!(
        healthy.value(
            "fanout_lane_oldest_age_seconds",
            &[("route", "demo"), ("target", "receiver_b")]
        ),
        0.0,
        "a lane that keeps up has nothing waiting"
    );
    assert!(process.terminate().success());
}
