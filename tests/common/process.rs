//! The `fanout` binary as a test runs it: started with extra flags and environment, its JSON
//! log lines collected, its listen address read from the `fanout ready` line.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const FANOUT: &str = env!("CARGO_BIN_EXE_fanout");

/// A running `fanout` process and the log lines it has written so far.
pub struct Fanout {
    pub child: Child,
    pub addr: SocketAddr,
    logs: Arc<Mutex<Vec<serde_json::Value>>>,
    /// Where `start` points the default routes' targets: held, so nothing else listens there.
    _targets: Option<super::ReservedPort>,
}

impl Fanout {
    /// The binary with the default routes, both targets pointed at a port that refuses
    /// connections (the events stay undelivered).
    pub fn start(extra_args: &[&str]) -> Fanout {
        let dead = super::ReservedPort::new();
        let addr = dead.addr.to_string();
        let env = [("RECEIVER_A", addr.as_str()), ("RECEIVER_B", addr.as_str())];
        let mut fanout = Fanout::start_with(FANOUT, extra_args, &env);
        fanout._targets = Some(dead);
        fanout
    }

    /// Starts `binary` with `extra_args` and `env` added to the environment, and a fresh data
    /// directory unless `extra_args` name one.
    pub fn start_with(binary: &str, extra_args: &[&str], env: &[(&str, &str)]) -> Fanout {
        let data_dir = if extra_args.contains(&"--data-dir") {
            Vec::new()
        } else {
            vec![
                "--data-dir".to_owned(),
                super::scratch_dir("data").display().to_string(),
            ]
        };
        let mut command = Command::new(binary);
        command
            .envs(env.iter().copied())
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(&data_dir)
            .args(extra_args);
        let (child, addr, logs) = spawn_logged(&mut command);
        Fanout {
            child,
            addr,
            logs,
            _targets: None,
        }
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        let deadline = Instant::now() + super::PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for fanout") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "fanout did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_messages(&self) -> Vec<serde_json::Value> {
        self.logs.lock().unwrap().clone()
    }
}

impl Drop for Fanout {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends raw bytes and returns everything the server writes back before closing or going
/// quiet for 500ms.
pub fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect to fanout");
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    stream.write_all(request).expect("send");
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buffer) {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buffer[..n]);
    }
    String::from_utf8_lossy(&answer).into_owned()
}

// ---- Helpers of the durable-route crash tests (tests/durable_crash.rs) ----

impl Fanout {
    /// SIGKILL by pid (no shutdown at all), and waits until the process is gone, so its
    /// data directory's lock is released.
    pub fn kill_hard(&mut self) {
        // SAFETY: kill only sends a signal to the pid of the child this struct owns.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }

    /// The resident set size of the process, from `/proc/<pid>/status` (VmRSS), in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        self.memory_kib("VmRSS")
    }

    /// The peak resident set size of the process so far (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        self.memory_kib("VmHWM")
    }

    /// A `KiB` field of `/proc/<pid>/status`.
    fn memory_kib(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status
            .lines()
            .find(|l| l.split(':').next() == Some(field))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }
}

/// POSTs `body` (application/json) to `path` over a new connection, blocking, with `headers`
/// added; the status and body of the answer. An error if fanout is not there or dies first.
pub fn http_post(
    addr: SocketAddr,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes())?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {answer:?}")))?;
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Ok((status, body))
}

/// The id of a `202 {"id": "..."}`; `None` for anything else.
pub fn accepted_id(answer: &std::io::Result<(u16, String)>) -> Option<String> {
    match answer {
        Ok((202, body)) => serde_json::from_str::<serde_json::Value>(body).ok()?["id"]
            .as_str()
            .map(str::to_owned),
        _ => None,
    }
}

/// One request a [`PyTarget`] received.
#[derive(Clone, Debug)]
pub struct Delivered {
    pub path: String,
    /// Its `fanout-event-id` header ("" if none).
    pub id: String,
    pub body: String,
}

/// A python3 `http.server` target (HTTP/1.1, keep-alive) answering 200 `{}` to every POST,
/// reporting each request on its stdout. It starts down (its port refuses connections);
/// [`PyTarget::up`] and [`PyTarget::down`] (SIGKILL) flip it, as often as a test likes, on the
/// same port; what every run received is kept.
pub struct PyTarget {
    /// Held with SO_REUSEPORT: refused while the target is down, and nothing else takes it.
    port: super::ReservedPort,
    child: Mutex<Option<Child>>,
    received: Arc<Mutex<Vec<Delivered>>>,
}

const PY_TARGET: &str = r#"
import http.server, json, socket, sys, threading
lock = threading.Lock()
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                chunk = self.rfile.read(size + 2)
                if size == 0:
                    break
                body += chunk[:-2]
        else:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
        line = json.dumps([self.path, self.headers.get("fanout-event-id") or "", body.decode("utf-8", "replace")])
        with lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")
    def log_message(self, *args):
        pass
class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    def server_bind(self):
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()
server = Server(("127.0.0.1", int(sys.argv[1])), Handler)
print("ready", flush=True)
server.serve_forever()
"#;

/// The python3 interpreter itself (not a version manager's shim), found once.
fn python() -> &'static str {
    static PYTHON: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PYTHON.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("python3 is installed");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    })
}

impl PyTarget {
    /// A target that is down until [`PyTarget::up`].
    pub fn new() -> PyTarget {
        PyTarget {
            port: super::ReservedPort::bind(true),
            child: Mutex::new(None),
            received: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// A target that is up.
    pub fn started() -> PyTarget {
        let target = PyTarget::new();
        target.up();
        target
    }

    pub fn addr(&self) -> SocketAddr {
        self.port.addr
    }

    /// Starts the python server on the target's port and waits until it listens.
    pub fn up(&self) {
        let mut slot = self.child.lock().unwrap();
        assert!(slot.is_none(), "the target is up already");
        let mut child = Command::new(python())
            .args(["-u", "-c", PY_TARGET, &self.port.addr.port().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start python3");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let sink = self.received.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line == "ready" {
                    let _ = ready_tx.send(());
                    continue;
                }
                let Ok((path, id, body)) = serde_json::from_str::<(String, String, String)>(&line)
                else {
                    continue;
                };
                sink.lock().unwrap().push(Delivered { path, id, body });
            }
        });
        *slot = Some(child);
        ready_rx
            .recv_timeout(super::PATIENCE)
            .expect("the python target says `ready`");
    }

    /// Kills the python server (SIGKILL by pid): its port refuses connections again and the
    /// connections it had are reset.
    pub fn down(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn received(&self) -> Vec<Delivered> {
        self.received.lock().unwrap().clone()
    }

    /// How many requests carried `fanout-event-id: id`.
    pub fn count_id(&self, id: &str) -> usize {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|d| d.id == id)
            .count()
    }
}

impl Drop for PyTarget {
    fn drop(&mut self) {
        self.down();
    }
}

/// A target that accepts connections, reads what comes and never answers.
pub struct Hanging {
    pub addr: SocketAddr,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Hanging {
    pub fn start() -> Hanging {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a hanging target");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held: Vec<TcpStream> = Vec::new();
            let mut buffer = [0u8; 16384];
            while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                while let Ok((stream, _)) = listener.accept() {
                    let _ = stream.set_nonblocking(true);
                    held.push(stream);
                }
                held.retain_mut(|stream| loop {
                    match stream.read(&mut buffer) {
                        Ok(0) => break false,
                        Ok(_) => continue,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break true,
                        Err(_) => break false,
                    }
                });
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Hanging {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Hanging {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Log lines of a process, as parsed JSON objects.
pub type Logs = Arc<Mutex<Vec<serde_json::Value>>>;

/// Spawns `command` (a `fanout` with `--log-format json`), collects its log lines, and waits
/// for its `fanout ready` line: the child, the address it logged, its lines. A process that
/// does not get ready is killed, and its lines shown.
pub fn spawn_logged(command: &mut Command) -> (Child, SocketAddr, Logs) {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start fanout");
    let stderr = child.stderr.take().expect("stderr is piped");
    let logs = Arc::new(Mutex::new(Vec::new()));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let sink = logs.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if entry["fields"]["message"] == "fanout ready" {
                let listen = entry["fields"]["listen"].as_str().unwrap_or_default();
                let _ = ready_tx.send(listen.to_owned());
            }
            sink.lock().unwrap().push(entry);
        }
    });
    let Ok(listen) = ready_rx.recv_timeout(super::PATIENCE) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "fanout did not log `fanout ready`: {:?}",
            logs.lock().unwrap()
        );
    };
    let addr = listen.parse().expect("the logged address parses");
    (child, addr, logs)
}

/// Sets its flag when dropped, so the threads of a `std::thread::scope` see it and stop even
/// when an assertion fails (the scope joins them before the panic goes on).
pub struct StopOnDrop<'a>(pub &'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
