//! What the balance tests share: Python backends (tests/balance/worker.py, and gRPC servers of
//! tests/balance/grpc_echo.py) started and killed by PID, the fanout binary built with
//! tests/routes/balance.yaml and pointed at them, and curl as the client.

#![allow(dead_code)] // each balance test file uses its own part of this module

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use crate::common::built::fanout_with;
use crate::common::process::Fanout;

const WORKER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/balance/worker.py");
pub const GRPC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/balance/grpc_echo.py");

/// Whether python3 with `module` (`http.server`, `grpc`) and curl run here. When not, a test
/// that needs them is skipped with a note on stderr, unless `CI` is `true`: there it fails
/// (`.ci/run` installs grpcio and curl).
pub fn stack(module: &str) -> bool {
    let python = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output();
    let curl = Command::new("curl").arg("--version").output();
    let why = match (python, curl) {
        (Ok(p), Ok(c)) if p.status.success() && c.status.success() => return true,
        (Ok(p), _) if !p.status.success() => String::from_utf8_lossy(&p.stderr).into_owned(),
        (Err(e), _) => format!("python3 does not run: {e}"),
        _ => "curl does not run".to_owned(),
    };
    assert_ne!(
        std::env::var("CI").as_deref(),
        Ok("true"),
        "CI=true and the balance tests' stack is missing: {why}"
    );
    eprintln!("skipping a balance test: {why}");
    false
}

/// A Python backend process, killed when dropped.
pub struct Backend {
    child: Child,
    pub port: u16,
}

impl Backend {
    /// An HTTP worker named `name` on a free port.
    pub fn worker(name: &str) -> Backend {
        Backend::worker_on(name, 0)
    }

    /// An HTTP worker named `name` on `port` (0: any free port).
    pub fn worker_on(name: &str, port: u16) -> Backend {
        Backend::spawn(Command::new("python3").args([WORKER, name, &port.to_string()]))
    }

    /// A gRPC server named `name` on a free port.
    pub fn grpc(name: &str) -> Backend {
        Backend::spawn(Command::new("python3").args([GRPC, "serve", name]))
    }

    fn spawn(command: &mut Command) -> Backend {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs (CI installs it)");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the backend's PORT line");
        let port = line
            .strip_prefix("PORT ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("the backend printed {line:?}, not its port"));
        Backend { child, port }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGKILL, as a crashed backend: its connections are reset, its port refuses.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}

/// fanout built with tests/routes/balance.yaml, its placeholders set by `env`; every name the
/// file uses must be in `env` (`DEAD` and unused ones can point at a refusing port).
pub fn fanout(env: &[(&str, &str)]) -> Fanout {
    fanout_with_args(&[], env)
}

/// [`fanout`] with extra flags (`--tls-cert`...).
pub fn fanout_with_args(args: &[&str], env: &[(&str, &str)]) -> Fanout {
    // Built once per test binary: its tests start at once.
    static BINARY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let binary = BINARY.get_or_init(|| {
        let routes = include_str!("../routes/balance.yaml");
        let (binary, _) = fanout_with("balance", routes, &[]).expect("build with balance.yaml");
        binary.to_str().expect("a UTF-8 path").to_owned()
    });
    Fanout::start_with(binary, args, env)
}

/// A curl exchange: status line, status, response headers (lowercase names) and body.
pub struct Curl {
    /// `HTTP/1.1 200 OK`, `HTTP/2 200`.
    pub status_line: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Curl {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {:?}", self.status, self.body))
    }
}

/// Runs curl with `args` (a url among them), headers dumped to stdout before the body.
pub fn curl(args: &[&str]) -> Curl {
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-D", "-"])
        .args(args)
        .output()
        .expect("curl runs (CI installs it)");
    assert!(
        output.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (mut head, mut body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    // Interim answers (`100 Continue`) come first, each with its own blank line.
    while head
        .split_whitespace()
        .nth(1)
        .is_some_and(|s| s.starts_with('1'))
    {
        (head, body) = body.split_once("\r\n\r\n").unwrap_or((body, ""));
    }
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Curl {
        status_line: head.lines().next().unwrap_or_default().to_owned(),
        status,
        headers,
        body: body.to_owned(),
    }
}
