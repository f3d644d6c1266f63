//! What tests/durable_ops.rs runs besides `fanout`: targets on Python's http.server
//! (tests/durable/receiver.py), a tmpfs to fill up, and the client threads of the hand-over
//! test, which post over new connections or over one keep-alive connection and tally what
//! they got.

use serde_json::Value;
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::blocking::{http_once, read_answer, write_request, HttpAnswer};
use crate::common::scratch_dir;

const RECEIVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/durable/receiver.py");
/// How long a test waits for deliveries.
pub const DELIVERY: Duration = Duration::from_secs(20);

/// A target on Python's http.server and the requests it recorded; killed when dropped.
pub struct Receiver {
    child: Child,
    addr: String,
    seen: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    pub fn start(status: u16) -> Receiver {
        let mut child = Command::new("python3")
            .args([RECEIVER, &status.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the receiver");
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        let Some(port) = serde_json::from_str::<Value>(&first)
            .ok()
            .and_then(|v| v["port"].as_u64())
        else {
            let _ = child.kill();
            panic!("the receiver did not name its port: {first:?}");
        };
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock()
                    .unwrap()
                    .push(serde_json::from_str(&line).expect("a JSON record"));
            }
        });
        let addr = format!("127.0.0.1:{port}");
        Receiver { child, addr, seen }
    }

    pub fn set_status(&self, status: u16) {
        let path = format!("/control?status={status}");
        let answer = http_once(self.addr.parse().unwrap(), "POST", &path, &[], b"").unwrap();
        assert_eq!(answer.status, 204);
    }

    /// Waits until `done` holds for what the receiver has recorded; panics after [`DELIVERY`].
    pub fn wait_for(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + DELIVERY;
        loop {
            let seen = self.seen.lock().unwrap().clone();
            if done(&seen) {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not after {DELIVERY:?}; got {} requests",
                seen.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the receiver has answered 200 to every id of `ids` on `path`.
    pub fn wait_for_ids<'a>(&self, path: &str, ids: impl IntoIterator<Item = &'a String> + Clone) {
        self.wait_for(
            &format!("every id delivered to {path} at {}", self.addr),
            |seen| {
                let got = delivered(seen, path);
                ids.clone().into_iter().all(|id| got.contains(id.as_str()))
            },
        );
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The ids a receiver answered 200 on `path`.
pub fn delivered<'a>(seen: &'a [Value], path: &str) -> HashSet<&'a str> {
    seen.iter()
        .filter(|r| r["path"] == path && r["status"] == 200)
        .filter_map(|r| r["id"].as_str())
        .collect()
}

pub fn env_of<'a>(a: &'a Receiver, b: &'a Receiver) -> [(&'static str, &'a str); 2] {
    [
        ("RECEIVER_A", a.addr.as_str()),
        ("RECEIVER_B", b.addr.as_str()),
    ]
}

/// A tmpfs mounted on a scratch directory, unmounted (lazily) when dropped.
pub struct Tmpfs {
    pub dir: PathBuf,
}

impl Tmpfs {
    /// `None` (after saying why) if it cannot be mounted, unless `CI` is `true`.
    pub fn mount(size: &str) -> Option<Tmpfs> {
        let dir = scratch_dir("tmpfs");
        let options = format!("size={size}");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &options, "tmpfs"])
            .arg(&dir)
            .output();
        let why = match mounted {
            Ok(output) if output.status.success() => return Some(Tmpfs { dir }),
            Ok(output) => String::from_utf8_lossy(&output.stderr).into_owned(),
            Err(error) => error.to_string(),
        };
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI=true and no tmpfs: {why}"
        );
        let note = format!("skipping the full-disk test: cannot mount a tmpfs: {why}\n");
        let _ = std::io::stderr().write_all(note.as_bytes());
        None
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Fills the file system of `path` with a file there, then gives back `leave` bytes.
pub fn fill(path: &Path, leave: u64) {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    while file.write_all(&chunk).is_ok() {}
    let len = file.metadata().unwrap().len();
    file.set_len(len.saturating_sub(leave)).unwrap();
}

/// What the clients of the hand-over test saw.
pub struct Tally {
    started: Instant,
    pub accepted: Vec<(&'static str, String)>,
    pub failures: Vec<String>,
    pub reconnects: usize,
}

impl Tally {
    pub fn new() -> Tally {
        Tally {
            started: Instant::now(),
            accepted: Vec::new(),
            failures: Vec::new(),
            reconnects: 0,
        }
    }

    /// Milliseconds since the clients started.
    pub fn ms(&self) -> u128 {
        self.started.elapsed().as_millis()
    }
}

const PATHS: [&str; 2] = ["/orders", "/demo"];
/// Between two requests of a client: the targets (Python) must keep up with three clients,
/// through a hand-over in which both processes deliver to them. At 1 ms they did not on a
/// slow day: the default routes' `reject` lane of 100 events filled and answered 503.
const PACE: Duration = Duration::from_millis(5);

fn note(
    tally: &Mutex<Tally>,
    client: &str,
    path: &'static str,
    answer: std::io::Result<HttpAnswer>,
) {
    let mut tally = tally.lock().unwrap();
    let at = tally.ms();
    match answer {
        Ok(answer) if answer.status == 202 => tally.accepted.push((path, answer.id())),
        Ok(answer) => tally
            .failures
            .push(format!("{client} {path} at {at} ms: {answer:?}")),
        Err(error) => tally
            .failures
            .push(format!("{client} {path} at {at} ms: {error}")),
    }
}

/// Posts over a new connection each time until `stop`.
pub fn fresh_client(addr: SocketAddr, client: usize, stop: &AtomicBool, tally: &Mutex<Tally>) {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let path = PATHS[n % 2];
        let body = format!(r#"{{"client":{client},"n":{n}}}"#);
        let answer = http_once(
            addr,
            "POST",
            path,
            &[("content-type", "application/json")],
            body.as_bytes(),
        );
        note(tally, &format!("client {client}"), path, answer);
        n += 1;
        std::thread::sleep(PACE);
    }
}

/// Whether the server has closed (or reset) an idle connection.
fn closed(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let peeked = stream.peek(&mut [0u8; 1]);
    stream.set_nonblocking(false).unwrap();
    !matches!(peeked, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// Posts over one keep-alive connection, opening a new one when the server has closed it
/// (`Connection: close`, or an end seen before the next request is sent).
pub fn keep_alive_client(addr: SocketAddr, stop: &AtomicBool, tally: &Mutex<Tally>) {
    let mut connection: Option<BufReader<TcpStream>> = None;
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let path = PATHS[n % 2];
        if connection.as_ref().is_some_and(|c| closed(c.get_ref())) {
            connection = None;
            tally.lock().unwrap().reconnects += 1;
        }
        let reader = match connection.as_mut() {
            Some(reader) => reader,
            None => match TcpStream::connect(addr) {
                Ok(stream) => {
                    stream
                        .set_read_timeout(Some(Duration::from_secs(35)))
                        .unwrap();
                    connection.insert(BufReader::new(stream))
                }
                Err(error) => {
                    note(tally, "keep-alive", path, Err(error));
                    std::thread::sleep(PACE);
                    continue;
                }
            },
        };
        let body = format!(r#"{{"client":"keep-alive","n":{n}}}"#);
        let headers = [("content-type", "application/json")];
        if write_request(reader.get_mut(), "POST", path, &headers, body.as_bytes()).is_err() {
            // Refused before the request went out: the server had closed the connection.
            connection = None;
            tally.lock().unwrap().reconnects += 1;
            continue;
        }
        let answer = read_answer(reader);
        let close = answer
            .as_ref()
            .map_or(true, |a| a.header("connection") == Some("close"));
        note(tally, "keep-alive", path, answer);
        if close {
            connection = None;
            tally.lock().unwrap().reconnects += 1;
        }
        n += 1;
        std::thread::sleep(PACE);
    }
}
