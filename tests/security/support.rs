//! What tests/security.rs and tests/security_delivery.rs share: a `fanout` binary built with
//! [`ROUTES`] (the contract's keys), the official Standard Webhooks library as a receiver that
//! verifies every delivery (`webhooks.py`), and requests signed by it or by Python's hmac.
#![allow(dead_code)] // each test binary uses part of it

use crate::common::blocking::{http_once, metric_blocking, HttpAnswer};
use crate::common::process::Fanout;
use crate::common::{ReservedPort, PATIENCE};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const ROUTES: &str = r#"# Written by tests/security.rs and built.
server:
  metrics_log_interval: 0s
  admin_listen: 127.0.0.1:9100
defaults:
  timeout: 2s
  retry: { attempts: 2, backoff: 10ms, max_backoff: 10ms }
routes:
  - name: orders
    path: /orders
    auth: { bearer: ["${ORDERS_TOKEN}", "${ORDERS_TOKEN_NEXT}"] }
    rate_limit: { events: 1, per: 1h, burst: 3 }
    targets:
      - name: plain
        url: http://${RECEIVER}/orders
  - name: from-svix
    path: /hooks/svix
    auth: { standard_webhooks: { secrets: ["${SVIX_SECRET}"], tolerance: 5m } }
    targets:
      - name: plain
        url: http://${RECEIVER}/svix
  - name: from-github
    path: /hooks/github
    auth: { github: { secret: "${GITHUB_SECRET}" } }
    targets:
      - name: plain
        url: http://${RECEIVER}/github
  - name: custom
    path: /hooks/custom
    auth: { hmac: { header: X-Signature, secret: "${CUSTOM_SECRET}", encoding: hex, prefix: "sha256=" } }
    rate_limit: { events: 5, per: 1s, burst: 10 }
    targets:
      - name: crm
        url: http://${RECEIVER}/crm
        sign: { secrets: ["${CRM_SIGNING_SECRET}"] }
  - name: custom64
    path: /hooks/custom64
    auth: { hmac: { header: X-Payload-Signature, secret: "${CUSTOM_SECRET}", encoding: base64 } }
    targets:
      - name: plain
        url: http://${RECEIVER}/custom64
  - name: durable-hooks
    path: /hooks/durable
    storage: disk
    auth: { standard_webhooks: { secrets: ["${SVIX_SECRET}"] } }
    targets:
      - name: plain
        url: http://${RECEIVER}/durable
  - name: guarded
    path: /guarded
    auth: { bearer: ["${ORDERS_TOKEN}"] }
    targets:
      - name: dead
        url: http://${DEAD}/in
        retry: { attempts: 1 }
  - name: signed
    path: /signed
    targets:
      - name: rotating
        url: http://${RECEIVER}/rotating
        sign: { secrets: ["${OLD_SIGNING_SECRET}", "${CRM_SIGNING_SECRET}"] }
      - name: batched
        url: http://${RECEIVER}/batched
        sign: { secrets: ["${CRM_SIGNING_SECRET}"] }
        batch: { max_events: 10, max_wait: 50ms }
  - name: signed-retries
    path: /signed-retries
    targets:
      - name: flaky-batch
        url: http://${RECEIVER}/flaky-batch
        sign: { secrets: ["${CRM_SIGNING_SECRET}"] }
        batch: { max_events: 10, max_wait: 50ms }
        retry: { attempts: 3 }
      - name: flaky-single
        url: http://${RECEIVER}/flaky-single
        sign: { secrets: ["${CRM_SIGNING_SECRET}"] }
        retry: { attempts: 3 }
"#;

pub const SVIX_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const CRM_SIGNING_SECRET: &str = "whsec_c2lnbmluZy1zZWNyZXQtZm9yLXRoZS1jcm0tdGFyZ2V0";
pub const OLD_SIGNING_SECRET: &str = "whsec_b2xkLXNpZ25pbmctc2VjcmV0";
pub const GITHUB_SECRET: &str = "It's a Secret to Everybody";
pub const CUSTOM_SECRET: &str = "custom-secret";
pub const UNAUTHORIZED: &str = r#"{"error":"unauthorized"}"#;

pub fn webhooks_py() -> String {
    format!("{}/tests/security/webhooks.py", env!("CARGO_MANIFEST_DIR"))
}

pub fn binary() -> &'static PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            crate::common::built::fanout_with("security-build", ROUTES, &[]).map(|(b, _)| b)
        })
        .as_ref()
        .unwrap_or_else(|error| panic!("{error}"))
}

/// What the receiver got: the library's verdict and the request.
#[derive(Clone, Debug)]
pub struct Got {
    pub path: String,
    /// What the receiver answered.
    pub status: u16,
    pub verified: bool,
    pub error: Option<String>,
    pub headers: serde_json::Map<String, Value>,
    pub body: String,
}

impl Got {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(Value::as_str)
    }
}

/// `webhooks.py receiver`: the official library verifying every delivery with the CRM
/// signing secret.
pub struct Receiver {
    pub child: Child,
    pub addr: SocketAddr,
    pub got: Arc<Mutex<Vec<Got>>>,
}

impl Receiver {
    pub fn start() -> Receiver {
        let mut child = Command::new("python3")
            .args([&webhooks_py(), "receiver", CRM_SIGNING_SECRET])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start python3");
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let first = lines.next().expect("a first line").expect("readable");
        let port = serde_json::from_str::<Value>(&first).expect("JSON")["port"]
            .as_u64()
            .unwrap_or_else(|| panic!("the receiver names its port; it said {first} (is the standardwebhooks package installed? .ci/run installs it)"));
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let record: Value = serde_json::from_str(&line).expect("a JSON line");
                let text = |key: &str| {
                    let value = record[key].as_str();
                    value
                        .unwrap_or_else(|| panic!("no {key} in {line}"))
                        .to_owned()
                };
                let status = record["status"].as_u64().expect("a status");
                let verified = record["verified"].as_bool().expect("a verdict");
                let headers = record["headers"].as_object().expect("headers").clone();
                sink.lock().unwrap().push(Got {
                    path: text("path"),
                    status: u16::try_from(status).expect("an HTTP status"),
                    verified,
                    error: record["error"].as_str().map(str::to_owned),
                    headers,
                    body: text("body"),
                });
            }
        });
        Receiver {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port as u16)),
            got,
        }
    }

    /// Waits until `n` requests to `path` arrived; returns them.
    pub fn wait_for(&self, path: &str, n: usize) -> Vec<Got> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let got: Vec<Got> = self
                .got
                .lock()
                .unwrap()
                .iter()
                .filter(|g| g.path == path)
                .cloned()
                .collect();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} requests reached {path}",
                got.len()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The built binary with the receiver as every target, its admin listener on a port of its
/// own.
pub struct Setup {
    pub fanout: Fanout,
    pub admin: SocketAddr,
    pub receiver: Receiver,
    /// The environment it was started with.
    pub env: Vec<(&'static str, String)>,
    _admin_port: ReservedPort,
    /// Where the `guarded` route's target is: a port that refuses connections.
    _dead: ReservedPort,
}

pub fn start() -> Setup {
    start_in(&crate::common::scratch_dir("security-data"))
}

/// The same, with `data_dir` as its data directory.
pub fn start_in(data_dir: &std::path::Path) -> Setup {
    let receiver = Receiver::start();
    let (admin_port, dead) = (ReservedPort::bind(true), ReservedPort::new());
    let admin = admin_port.addr.to_string();
    let env = environment(&receiver, &dead.addr.to_string());
    let binary = binary().display().to_string();
    let data_dir = data_dir.display().to_string();
    let args = ["--admin-listen", &admin, "--data-dir", &data_dir];
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let fanout = Fanout::start_with(&binary, &args, &pairs);
    Setup {
        fanout,
        admin: admin_port.addr,
        receiver,
        env,
        _admin_port: admin_port,
        _dead: dead,
    }
}

/// Every variable the routes name, for `receiver` and a `dead` target address.
pub fn environment(receiver: &Receiver, dead: &str) -> Vec<(&'static str, String)> {
    vec![
        ("RECEIVER", receiver.addr.to_string()),
        ("DEAD", dead.to_owned()),
        ("ORDERS_TOKEN", "token-one".into()),
        ("ORDERS_TOKEN_NEXT", "token-two".into()),
        ("SVIX_SECRET", SVIX_SECRET.into()),
        ("GITHUB_SECRET", GITHUB_SECRET.into()),
        ("CUSTOM_SECRET", CUSTOM_SECRET.into()),
        ("CRM_SIGNING_SECRET", CRM_SIGNING_SECRET.into()),
        ("OLD_SIGNING_SECRET", OLD_SIGNING_SECRET.into()),
    ]
}

pub fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &str) -> HttpAnswer {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    http_once(addr, "POST", path, &all, body.as_bytes()).expect("fanout answers")
}

pub fn python(args: &[&str], stdin: &str) -> String {
    let mut child = Command::new("python3")
        .arg(webhooks_py())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start python3");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(stdin.as_bytes())
        .expect("write");
    let output = child.wait_with_output().expect("python3 ends");
    assert!(output.status.success(), "webhooks.py {args:?} failed");
    String::from_utf8(output.stdout)
        .expect("UTF-8")
        .trim()
        .to_owned()
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// The library's signature of `body` as message `id` at `timestamp`.
pub fn standard_signature(id: &str, timestamp: u64, body: &str) -> String {
    python(&["sign", SVIX_SECRET, id, &timestamp.to_string()], body)
}

pub fn rejected(addr: SocketAddr, route: &str, reason: &str) -> f64 {
    metric_blocking(
        addr,
        "fanout_events_rejected_total",
        &[("route", route), ("reason", reason)],
    )
}

pub fn assert_unauthorized(answer: &HttpAnswer, case: &str) {
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (401, UNAUTHORIZED),
        "{case}: {answer:?}"
    );
}

/// Runs the binary with every variable `start` sets but `without` (and with `changed`); it
/// must stop at once: its exit code and stderr.
pub fn start_up(without: &str, changed: &[(&str, &str)]) -> (Option<i32>, String) {
    let receiver = Receiver::start();
    let dead = ReservedPort::new();
    let mut env = environment(&receiver, &dead.addr.to_string());
    env.retain(|(name, _)| *name != without && !changed.iter().any(|(c, _)| c == name));
    env.extend(
        changed
            .iter()
            .map(|(name, value)| (*name, value.to_string())),
    );
    let mut command = Command::new(binary());
    if !without.is_empty() {
        command.env_remove(without);
    }
    let output = command
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .envs(env)
        .output()
        .expect("run fanout");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
