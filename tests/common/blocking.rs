//! What tests of restarts and hand-overs use from plain threads: a `fanout` process on an
//! address the test chooses, a blocking HTTP/1.1 client that tells every way a request can
//! fail, and a blocking `/metrics` reader.

use super::*;

/// A `fanout` process listening on an address the test chooses (two can share one port: the
/// listener uses SO_REUSEPORT, as a restart hand-over does) with `--log-format json` and the
/// given `--data-dir`, its log lines collected. Killed (SIGKILL) when dropped.
pub struct FanoutAt {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    logs: process::Logs,
}

impl FanoutAt {
    /// Starts the binary and waits for its `fanout ready` line.
    pub fn start(listen: &str, data_dir: &std::path::Path, env: &[(&str, &str)]) -> FanoutAt {
        let mut command = std::process::Command::new(process::FANOUT);
        command
            .envs(env.iter().copied())
            .args(["--listen", listen, "--log-format", "json", "--data-dir"])
            .arg(data_dir);
        let (child, addr, logs) = process::spawn_logged(&mut command);
        FanoutAt { child, addr, logs }
    }

    pub fn log_messages(&self) -> Vec<serde_json::Value> {
        self.logs.lock().unwrap().clone()
    }

    /// Whether a log line with this message has been written.
    pub fn logged(&self, message: &str) -> bool {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .any(|entry| entry["fields"]["message"] == message)
    }

    /// Sends `signal` (`libc::SIGTERM`, `libc::SIGKILL`) to the process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill only sends a signal to our own child, which has not been reaped.
        let sent = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(sent, 0, "signal {signal} to fanout");
    }

    /// Sends `signal` and waits for the process to exit.
    pub fn signal_and_wait(&mut self, signal: i32) -> std::process::ExitStatus {
        self.signal(signal);
        self.wait_exit()
    }

    /// Waits for the process to exit; panics after [`PATIENCE`].
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for fanout") {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "fanout did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for FanoutAt {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP/1.1 answer as the blocking client read it (header names lower-cased).
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpAnswer {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find_map(|(n, v)| (*n == name).then_some(v.as_str()))
    }

    /// The id of a 202 `{"id":"..."}`.
    pub fn id(&self) -> String {
        receipt_id(self.status, &self.body, &self)
    }
}

/// Writes one HTTP/1.1 request with a Content-Length body.
pub fn write_request(
    stream: &mut impl std::io::Write,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut request = format!("{method} {path} HTTP/1.1\r\nhost: fanout\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    stream.write_all(&bytes)?;
    stream.flush()
}

/// Reads one answer: its head, then a Content-Length body (or everything to the end of the
/// connection without one). An end of the connection before the first byte is `UnexpectedEof`.
pub fn read_answer(reader: &mut impl std::io::BufRead) -> std::io::Result<HttpAnswer> {
    use std::io::{Error, ErrorKind};
    let bad = |what: String| Error::new(ErrorKind::InvalidData, what);
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(ErrorKind::UnexpectedEof.into());
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("a bad status line: {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(bad("the connection ended in the head".into()));
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| bad(format!("a bad header: {line:?}")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map(|(_, v)| {
            v.parse::<usize>()
                .map_err(|_| bad(format!("content-length {v}")))
        })
        .transpose()?;
    let mut body = Vec::new();
    match length {
        Some(length) => {
            body.resize(length, 0);
            reader.read_exact(&mut body)?;
        }
        None => {
            std::io::Read::read_to_end(reader, &mut body)?;
        }
    }
    Ok(HttpAnswer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// One request over a new connection, answered within 35 s (a durable route's request waits
/// up to 30 s for a data directory being handed over).
pub fn http_once(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<HttpAnswer> {
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(35)))?;
    let mut all = vec![("connection", "close")];
    all.extend_from_slice(headers);
    write_request(&mut stream, method, path, &all, body)?;
    read_answer(&mut std::io::BufReader::new(stream))
}

/// The sum of the samples of `name` with `labels` on `addr`'s `/metrics` (see [`Metrics::value`]).
pub fn metric_blocking(addr: SocketAddr, name: &str, labels: &[(&str, &str)]) -> f64 {
    let answer = http_once(addr, "GET", "/metrics", &[], b"").expect("GET /metrics");
    Metrics(answer.body).value(name, labels)
}

/// Polls `addr`'s `/metrics` until `done` holds for the metric; its value then. Panics after
/// `patience`.
pub fn wait_metric(
    addr: SocketAddr,
    (name, labels): (&str, &[(&str, &str)]),
    done: impl Fn(f64) -> bool,
    patience: std::time::Duration,
) -> f64 {
    let deadline = std::time::Instant::now() + patience;
    loop {
        let now = metric_blocking(addr, name, labels);
        if done(now) {
            return now;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name}{labels:?} is still {now}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// `BINARY --data-dir DIR log verify`: its exit code and stdout.
pub fn log_verify(binary: &std::path::Path, dir: &std::path::Path) -> (Option<i32>, String) {
    let output = std::process::Command::new(binary)
        .arg("--data-dir")
        .arg(dir)
        .args(["log", "verify"])
        .output()
        .expect("run fanout log verify");
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    (output.status.code(), out)
}
