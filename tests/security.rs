//! Authenticated ingest, signed deliveries, rate limits and the admin listener, through a
//! `fanout` binary built with the routes of `ROUTES` (the contract's keys), against peers
//! fanout did not write: requests are signed, and deliveries verified, by the official
//! Standard Webhooks library for Python (`tests/security/webhooks.py`, installed by
//! `.ci/run`); GitHub and generic HMAC signatures are computed by Python's own hmac module.

mod common;

use common::blocking::{http_once, metric_blocking, HttpAnswer};
use common::process::Fanout;
use common::{ReservedPort, PATIENCE};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const ROUTES: &str = r#"# Written by tests/security.rs and built.
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
"#;

const SVIX_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const CRM_SIGNING_SECRET: &str = "whsec_c2lnbmluZy1zZWNyZXQtZm9yLXRoZS1jcm0tdGFyZ2V0";
const OLD_SIGNING_SECRET: &str = "whsec_b2xkLXNpZ25pbmctc2VjcmV0";
const GITHUB_SECRET: &str = "It's a Secret to Everybody";
const CUSTOM_SECRET: &str = "custom-secret";
const UNAUTHORIZED: &str = r#"{"error":"unauthorized"}"#;

fn webhooks_py() -> String {
    format!("{}/tests/security/webhooks.py", env!("CARGO_MANIFEST_DIR"))
}

fn binary() -> &'static PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| common::built::fanout_with("security-build", ROUTES).map(|(b, _)| b))
        .as_ref()
        .unwrap_or_else(|error| panic!("{error}"))
}

/// What the receiver got: the library's verdict and the request.
#[derive(Clone, Debug)]
struct Got {
    path: String,
    verified: bool,
    error: Option<String>,
    headers: serde_json::Map<String, Value>,
    body: String,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(Value::as_str)
    }
}

/// `webhooks.py receiver`: the official library verifying every delivery with the CRM
/// signing secret.
struct Receiver {
    child: Child,
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Got>>>,
}

impl Receiver {
    fn start() -> Receiver {
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
                sink.lock().unwrap().push(Got {
                    path: record["path"].as_str().unwrap_or_default().to_owned(),
                    verified: record["verified"].as_bool().unwrap_or(false),
                    error: record["error"].as_str().map(str::to_owned),
                    headers: record["headers"].as_object().cloned().unwrap_or_default(),
                    body: record["body"].as_str().unwrap_or_default().to_owned(),
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
    fn wait_for(&self, path: &str, n: usize) -> Vec<Got> {
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
struct Setup {
    fanout: Fanout,
    admin: SocketAddr,
    receiver: Receiver,
    /// The environment it was started with.
    env: Vec<(&'static str, String)>,
    _admin_port: ReservedPort,
    /// Where the `guarded` route's target is: a port that refuses connections.
    _dead: ReservedPort,
}

fn start() -> Setup {
    start_in(&common::scratch_dir("security-data"))
}

/// The same, with `data_dir` as its data directory.
fn start_in(data_dir: &std::path::Path) -> Setup {
    let receiver = Receiver::start();
    let (admin_port, dead) = (ReservedPort::bind(true), ReservedPort::new());
    let admin = admin_port.addr.to_string();
    let env = vec![
        ("RECEIVER", receiver.addr.to_string()),
        ("DEAD", dead.addr.to_string()),
        ("ORDERS_TOKEN", "token-one".into()),
        ("ORDERS_TOKEN_NEXT", "token-two".into()),
        ("SVIX_SECRET", SVIX_SECRET.into()),
        ("GITHUB_SECRET", GITHUB_SECRET.into()),
        ("CUSTOM_SECRET", CUSTOM_SECRET.into()),
        ("CRM_SIGNING_SECRET", CRM_SIGNING_SECRET.into()),
        ("OLD_SIGNING_SECRET", OLD_SIGNING_SECRET.into()),
    ];
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

fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &str) -> HttpAnswer {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    http_once(addr, "POST", path, &all, body.as_bytes()).expect("fanout answers")
}

fn python(args: &[&str], stdin: &str) -> String {
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

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// The library's signature of `body` as message `id` at `timestamp`.
fn standard_signature(id: &str, timestamp: u64, body: &str) -> String {
    python(&["sign", SVIX_SECRET, id, &timestamp.to_string()], body)
}

fn rejected(addr: SocketAddr, route: &str, reason: &str) -> f64 {
    metric_blocking(
        addr,
        "fanout_events_rejected_total",
        &[("route", route), ("reason", reason)],
    )
}

fn assert_unauthorized(answer: &HttpAnswer, case: &str) {
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (401, UNAUTHORIZED),
        "{case}: {answer:?}"
    );
}

#[test]
fn bearer_tokens_rotate_are_not_forwarded_and_bad_ones_spend_no_rate_limit() {
    let setup = start();
    let addr = setup.fanout.addr;
    let cases: [(&str, &[(&str, &str)]); 4] = [
        ("no token", &[]),
        ("a wrong token", &[("authorization", "Bearer token-three")]),
        (
            "a prefix of a token",
            &[("authorization", "Bearer token-on")],
        ),
        (
            "another scheme",
            &[("authorization", "Basic dG9rZW4tb25lOg==")],
        ),
    ];
    for (case, headers) in cases {
        let answer = post(addr, "/orders", headers, r#"{"order":0}"#);
        assert_unauthorized(&answer, case);
        assert_eq!(
            answer.header("www-authenticate"),
            Some("Bearer realm=\"fanout\"")
        );
    }
    assert_eq!(rejected(setup.admin, "orders", "unauthorized"), 4.0);
    let bearer = |token: &str, body: &str| post(addr, "/orders", &[("authorization", token)], body);
    let old = bearer("Bearer token-one", r#"{"order":1}"#).id();
    let new = bearer("bearer token-two", r#"{"order":2}"#).id();
    // The burst is 3: the bad tokens spent none of it.
    bearer("Bearer token-one", r#"{"order":3}"#).id();
    let limited = bearer("Bearer token-one", r#"{"order":4}"#);
    assert_eq!(limited.status, 429, "{limited:?}");
    let wait = limited
        .header("retry-after")
        .and_then(|s| s.parse::<u64>().ok());
    assert!(wait.is_some_and(|s| s > 1000), "{limited:?}");
    let logs = serde_json::to_string(&setup.fanout.log_messages()).expect("JSON");
    assert!(!logs.contains("token-"), "no token is logged: {logs}");
    let got = setup.receiver.wait_for("/orders", 3);
    let ids: Vec<&str> = got
        .iter()
        .filter_map(|g| g.header("fanout-event-id"))
        .collect();
    assert!(
        ids.contains(&old.as_str()) && ids.contains(&new.as_str()),
        "{ids:?}"
    );
    assert!(
        got.iter().all(|g| g.header("authorization").is_none()),
        "the client's token stays with fanout"
    );
}

#[test]
fn standard_webhooks_signed_by_the_library_are_accepted_and_tampering_is_refused() {
    let setup = start();
    let addr = setup.fanout.addr;
    let body = r#"{"type":"invoice.paid","n":1}"#;
    let (id, ts) = ("msg_2b7Yx0", now());
    let signature = standard_signature(id, ts, body);
    let ts_text = ts.to_string();
    let signed = |id: &'static str, ts: &str, signature: &str, body: &str| {
        let headers = [
            ("webhook-id", id),
            ("webhook-timestamp", ts),
            ("webhook-signature", signature),
        ];
        post(addr, "/hooks/svix", &headers, body)
    };
    // Tampered: the body, the id, the timestamp, the signature; and a signature that is right
    // for a timestamp outside the tolerance, either way.
    let cases = [
        (
            "body",
            signed(
                "msg_2b7Yx0",
                &ts_text,
                &signature,
                r#"{"type":"invoice.paid","n":2}"#,
            ),
        ),
        ("id", signed("msg_2b7Yx1", &ts_text, &signature, body)),
        (
            "timestamp",
            signed("msg_2b7Yx0", &(ts + 1).to_string(), &signature, body),
        ),
        (
            "signature",
            signed(
                "msg_2b7Yx0",
                &ts_text,
                &signature.replacen("v1,", "v1,A", 1),
                body,
            ),
        ),
        (
            "no signature",
            post(
                addr,
                "/hooks/svix",
                &[("webhook-id", id), ("webhook-timestamp", &ts_text)],
                body,
            ),
        ),
    ];
    for (case, answer) in &cases {
        assert_unauthorized(answer, case);
    }
    for stale in [ts - 600, ts + 600] {
        let stale_signature = standard_signature("msg_stale", stale, body);
        assert_unauthorized(
            &signed("msg_stale", &stale.to_string(), &stale_signature, body),
            "a timestamp 10 minutes off",
        );
    }
    let first = signed("msg_2b7Yx0", &ts_text, &signature, body);
    let first_id = first.id();
    // A replay of the same message within the tolerance: the first event's id, not taken in
    // again.
    let replay = signed("msg_2b7Yx0", &ts_text, &signature, body);
    assert_eq!(replay.id(), first_id, "{replay:?}");
    // A signature among several (a sender rotating its secret) is enough.
    let (other, other_ts) = ("msg_rotation", now());
    let rotated = format!(
        "v1,bm90LXRoZS1zaWduYXR1cmU= {}",
        standard_signature(other, other_ts, body)
    );
    let second = signed("msg_rotation", &other_ts.to_string(), &rotated, body).id();
    let got = setup.receiver.wait_for("/svix", 2);
    assert_eq!(
        metric_blocking(
            setup.admin,
            "fanout_events_accepted_total",
            &[("route", "from-svix")]
        ),
        2.0
    );
    assert_eq!(
        metric_blocking(
            setup.admin,
            "fanout_events_duplicate_total",
            &[("route", "from-svix")]
        ),
        1.0
    );
    assert_eq!(rejected(setup.admin, "from-svix", "unauthorized"), 7.0);
    let ids: Vec<&str> = got
        .iter()
        .filter_map(|g| g.header("fanout-event-id"))
        .collect();
    assert_eq!(ids.iter().filter(|i| **i == first_id).count(), 1, "{ids:?}");
    assert!(ids.contains(&second.as_str()));
    assert!(
        got.iter()
            .all(|g| g.body == body && g.header("webhook-signature").is_none()),
        "the sender's signature is not forwarded: {got:?}"
    );
}

#[test]
fn a_durable_route_remembers_webhook_ids_across_a_restart() {
    let data_dir = common::scratch_dir("security-restart");
    let body = r#"{"type":"order.created"}"#;
    let (id, ts) = ("msg_durable", now());
    let signature = standard_signature(id, ts, body);
    let ts = ts.to_string();
    let headers = [
        ("webhook-id", id),
        ("webhook-timestamp", ts.as_str()),
        ("webhook-signature", signature.as_str()),
    ];
    let mut first = start_in(&data_dir);
    let event = post(first.fanout.addr, "/hooks/durable", &headers, body).id();
    first.receiver.wait_for("/durable", 1);
    assert!(first.fanout.terminate().success());
    let second = start_in(&data_dir);
    let replay = post(second.fanout.addr, "/hooks/durable", &headers, body);
    assert_eq!(replay.id(), event, "{replay:?}");
    let route = [("route", "durable-hooks")];
    assert_eq!(
        metric_blocking(second.admin, "fanout_events_accepted_total", &route),
        0.0
    );
    assert_eq!(
        metric_blocking(second.admin, "fanout_events_duplicate_total", &route),
        1.0
    );
}

#[test]
fn dead_letters_replayed_through_a_guarded_route_authenticate_as_its_clients_do() {
    let data_dir = common::scratch_dir("security-replay");
    let setup = start_in(&data_dir);
    let token = [("authorization", "Bearer token-one")];
    post(setup.fanout.addr, "/guarded", &token, r#"{"lost":1}"#).id();
    let dead = [("route", "guarded"), ("target", "dead")];
    let deadline = Instant::now() + PATIENCE;
    while metric_blocking(setup.admin, "fanout_lane_dead_letters_total", &dead) < 1.0 {
        assert!(Instant::now() < deadline, "no dead letter");
        std::thread::sleep(Duration::from_millis(10));
    }
    let via = format!("http://{}", setup.fanout.addr);
    let output = Command::new(binary())
        .args([
            "dead-letters",
            "replay",
            "--route",
            "guarded",
            "--target",
            "dead",
            "--via",
            &via,
        ])
        .arg("--data-dir")
        .arg(&data_dir)
        .envs(setup.env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run the replay");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 replayed, 0 left"),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let route = [("route", "guarded")];
    assert_eq!(
        metric_blocking(setup.admin, "fanout_events_accepted_total", &route),
        2.0
    );
    assert_eq!(rejected(setup.admin, "guarded", "unauthorized"), 0.0);
}

#[test]
fn github_and_generic_hmac_signatures_computed_elsewhere_are_accepted() {
    let setup = start();
    let addr = setup.fanout.addr;
    let body = r#"{"action":"opened","number":7}"#;
    let hex = python(&["hmac", GITHUB_SECRET, "hex"], body);
    let github = format!("sha256={hex}");
    let id = post(
        addr,
        "/hooks/github",
        &[("x-hub-signature-256", &github)],
        body,
    )
    .id();
    for (case, header) in [
        (
            "a wrong signature",
            format!("sha256={}", python(&["hmac", "other", "hex"], body)),
        ),
        ("no prefix", hex.clone()),
        ("not hex", "sha256=zz".to_owned()),
    ] {
        assert_unauthorized(
            &post(
                addr,
                "/hooks/github",
                &[("x-hub-signature-256", &header)],
                body,
            ),
            case,
        );
    }
    assert_unauthorized(
        &post(
            addr,
            "/hooks/github",
            &[("x-hub-signature-256", &github)],
            "{}",
        ),
        "another body",
    );
    let got = setup.receiver.wait_for("/github", 1);
    assert_eq!(got[0].header("fanout-event-id"), Some(id.as_str()));
    assert!(got[0].header("x-hub-signature-256").is_none());

    let custom = format!("sha256={}", python(&["hmac", CUSTOM_SECRET, "hex"], body));
    post(addr, "/hooks/custom", &[("X-Signature", &custom)], body).id();
    assert_unauthorized(
        &post(addr, "/hooks/custom", &[("X-Signature", &github)], body),
        "another secret",
    );
    let base64 = python(&["hmac", CUSTOM_SECRET, "base64"], body);
    post(
        addr,
        "/hooks/custom64",
        &[("x-payload-signature", &base64)],
        body,
    )
    .id();
    let unpadded = base64.trim_end_matches('=');
    post(
        addr,
        "/hooks/custom64",
        &[("x-payload-signature", unpadded)],
        body,
    )
    .id();
    let hexed = [("x-payload-signature", hex.as_str())];
    assert_unauthorized(
        &post(addr, "/hooks/custom64", &hexed, body),
        "hex where base64 is due",
    );
}

#[test]
fn a_burst_beyond_the_rate_limit_gets_429_and_every_accepted_event_is_delivered_signed() {
    let setup = start();
    let addr = setup.fanout.addr;
    let signed: Vec<(String, String)> = (0..30)
        .map(|n| {
            let body = format!(r#"{{"n":{n}}}"#);
            let signature = format!("sha256={}", python(&["hmac", CUSTOM_SECRET, "hex"], &body));
            (body, signature)
        })
        .collect();
    let mut accepted = Vec::new();
    let mut limited = 0;
    for (body, signature) in &signed {
        let answer = post(addr, "/hooks/custom", &[("x-signature", signature)], body);
        match answer.status {
            202 => accepted.push(answer.id()),
            429 => {
                limited += 1;
                let wait: u64 = answer
                    .header("retry-after")
                    .expect("Retry-After")
                    .parse()
                    .expect("seconds");
                assert!((1..=2).contains(&wait), "{answer:?}");
            }
            _ => panic!("{answer:?}"),
        }
    }
    // Refused before the body is read: the head alone (a body announced, never sent) gets it.
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("a timeout");
    let head = "POST /hooks/custom HTTP/1.1\r\nhost: x\r\nx-signature: sha256=00\r\ncontent-length: 1000\r\n\r\n";
    stream.write_all(head.as_bytes()).expect("write");
    let mut answer = [0u8; 64];
    let n = std::io::Read::read(&mut stream, &mut answer).expect("an answer without the body");
    assert!(
        answer[..n].starts_with(b"HTTP/1.1 429"),
        "{}",
        String::from_utf8_lossy(&answer[..n])
    );
    // A burst of 10, refilled at 5 a second: 30 requests in a few milliseconds.
    assert!(
        accepted.len() >= 10 && limited >= 10,
        "{} accepted, {limited} limited",
        accepted.len()
    );
    assert_eq!(
        rejected(setup.admin, "custom", "rate_limited"),
        limited as f64 + 1.0,
        "the loop's and the head's"
    );
    let got = setup.receiver.wait_for("/crm", accepted.len());
    for id in &accepted {
        let delivery = got
            .iter()
            .find(|g| g.header("fanout-event-id") == Some(id.as_str()))
            .expect("delivered");
        assert!(
            delivery.verified,
            "the library refused a delivery: {delivery:?}"
        );
        assert_eq!(delivery.header("webhook-id"), Some(id.as_str()));
    }
}

#[test]
fn deliveries_signed_with_two_secrets_and_batches_verify_with_the_library() {
    let setup = start();
    let addr = setup.fanout.addr;
    let ids: Vec<String> = (0..5)
        .map(|n| post(addr, "/signed", &[], &format!(r#"{{"n":{n}}}"#)).id())
        .collect();
    let rotating = setup.receiver.wait_for("/rotating", 5);
    for delivery in &rotating {
        assert!(delivery.verified, "{delivery:?}");
        let signatures = delivery.header("webhook-signature").unwrap_or_default();
        assert_eq!(
            signatures
                .split(' ')
                .filter(|s| s.starts_with("v1,"))
                .count(),
            2,
            "{signatures}"
        );
        let timestamp: u64 = delivery
            .header("webhook-timestamp")
            .unwrap_or_default()
            .parse()
            .expect("seconds");
        assert!(now().abs_diff(timestamp) < 60);
    }
    let batches = setup.receiver.wait_for("/batched", 1);
    let mut batched: Vec<String> = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while batched.len() < ids.len() {
        assert!(Instant::now() < deadline, "batched ids: {batched:?}");
        batched = setup
            .receiver
            .wait_for("/batched", 1)
            .iter()
            .flat_map(|g| {
                g.header("fanout-event-ids")
                    .unwrap_or_default()
                    .split(',')
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect();
    }
    for batch in &batches {
        assert!(batch.verified, "{batch:?}");
        assert!(
            batch
                .header("webhook-id")
                .is_some_and(|id| id.starts_with("batch_")),
            "{batch:?}"
        );
        assert!(batch.error.is_none());
    }
}

#[test]
fn metrics_and_health_move_to_the_admin_listener() {
    let setup = start();
    for path in ["/metrics", "/healthz"] {
        let ingest = http_once(setup.fanout.addr, "GET", path, &[], b"").expect("answers");
        assert_eq!(ingest.status, 404, "{path} on the ingest port: {ingest:?}");
        let admin = http_once(setup.admin, "GET", path, &[], b"").expect("answers");
        assert_eq!(admin.status, 200, "{path} on the admin port: {admin:?}");
    }
    let routes = Command::new(binary())
        .arg("--routes")
        .output()
        .expect("run --routes");
    let listing = String::from_utf8_lossy(&routes.stdout);
    assert!(
        listing.contains("admin_listen=127.0.0.1:9100") && listing.contains("auth: bearer"),
        "{listing}"
    );
    assert!(!listing.contains("token-one"), "no secret is compiled in");
}

/// Runs the binary with every variable `start` sets but `without` (and with `changed`); it
/// must stop at once: its exit code and stderr.
fn start_up(without: &str, changed: &[(&str, &str)]) -> (Option<i32>, String) {
    let receiver = Receiver::start();
    let mut env = vec![
        ("RECEIVER", receiver.addr.to_string()),
        ("DEAD", "127.0.0.1:9".to_owned()),
        ("ORDERS_TOKEN", "token-one".into()),
        ("ORDERS_TOKEN_NEXT", "token-two".into()),
        ("SVIX_SECRET", SVIX_SECRET.into()),
        ("GITHUB_SECRET", GITHUB_SECRET.into()),
        ("CUSTOM_SECRET", CUSTOM_SECRET.into()),
        ("CRM_SIGNING_SECRET", CRM_SIGNING_SECRET.into()),
        ("OLD_SIGNING_SECRET", OLD_SIGNING_SECRET.into()),
    ];
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

#[test]
fn a_missing_or_bad_secret_stops_start_up_with_exit_code_2_and_is_never_shown() {
    let (code, stderr) = start_up("GITHUB_SECRET", &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("route \"from-github\"") && stderr.contains("GITHUB_SECRET is not set"),
        "{stderr}"
    );
    let (code, stderr) = start_up("CRM_SIGNING_SECRET", &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("target \"crm\"")
            && stderr.contains("sign.secrets")
            && stderr.contains("CRM_SIGNING_SECRET"),
        "{stderr}"
    );
    let (code, stderr) = start_up("", &[("SVIX_SECRET", "whsec_not base64")]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("route \"from-svix\"") && stderr.contains("auth.standard_webhooks.secrets"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("not base64"),
        "the value is never shown: {stderr}"
    );
    let (code, stderr) = start_up("", &[("ORDERS_TOKEN", "token-one\n")]);
    assert_eq!(code, Some(2), "a token no client can send: {stderr}");
    assert!(
        stderr.contains("auth.bearer") && !stderr.contains("token-one"),
        "{stderr}"
    );
}
