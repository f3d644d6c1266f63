//! Echo servers written with other HTTP stacks (Node, Python, nginx, Go), run as child
//! processes: each records every request it gets as one JSON line (stdout, or nginx's access
//! log), which [`Echo::wait_for`] reads back as [`Seen`] requests.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::common::PATIENCE;

const HERE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop");

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Stack {
    Node,
    Python,
    Nginx,
    Go,
}

impl Stack {
    /// The stack's name, which is also its routes' name in tests/routes/interop.yaml.
    pub fn name(self) -> &'static str {
        match self {
            Stack::Node => "node",
            Stack::Python => "python",
            Stack::Nginx => "nginx",
            Stack::Go => "go",
        }
    }

    /// The variables holding its echo server's h1 and h2c addresses in interop.yaml.
    pub fn vars(self) -> [&'static str; 2] {
        match self {
            Stack::Node => ["NODE_H1", "NODE_H2"],
            Stack::Python => ["PYTHON_H1", "PYTHON_H2"],
            Stack::Nginx => ["NGINX_H1", "NGINX_H2"],
            Stack::Go => ["GO_H1", "GO_H2"],
        }
    }
}

/// One request as the echo server's application saw it.
#[derive(Debug)]
pub struct Seen {
    /// The local port it arrived on, which tells the h1 and h2c listeners apart.
    pub port: u16,
    pub version: String,
    pub method: String,
    /// The request target as received (origin form: path and query).
    pub target: String,
    /// The status nginx answered (the other stacks always answer 200).
    pub status: Option<String>,
    /// Header names lowercased, in the order the stack lists them.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    fn parse(line: &str) -> Seen {
        let json: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let text = |key: &str| json[key].as_str().unwrap_or_default().to_owned();
        let port = match &json["port"] {
            serde_json::Value::String(port) => port.parse().ok(),
            port => port.as_u64().and_then(|p| u16::try_from(p).ok()),
        };
        let body = match json["body_hex"].as_str() {
            Some(hex) => (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex body"))
                .collect(),
            None => text("body").into_bytes(),
        };
        let headers = json["headers"]
            .as_array()
            .expect("a record lists its headers")
            .iter()
            .map(|pair| {
                let field = |i: usize| pair[i].as_str().expect("header fields are strings");
                (field(0).to_ascii_lowercase(), field(1).to_owned())
            })
            // nginx logs an absent header as an empty string.
            .filter(|(_, value)| json.get("status").is_none() || !value.is_empty())
            .collect();
        Seen {
            port: port.unwrap_or_else(|| panic!("no port in {line}")),
            version: text("version"),
            method: text("method"),
            target: text("target"),
            status: json.get("status").map(|_| text("status")),
            headers,
            body,
        }
    }

    /// The header's value; panics if the application saw it more than once.
    pub fn header(&self, name: &str) -> Option<&str> {
        let mut values = self.headers.iter().filter(|(n, _)| n == name);
        let value = values.next().map(|(_, v)| v.as_str());
        assert!(values.next().is_none(), "{name} more than once: {self:?}");
        value
    }

    /// `Host`, or `:authority` for HTTP/2 stacks that do not turn it into `Host`.
    pub fn host(&self) -> Option<&str> {
        self.header("host").or_else(|| self.header(":authority"))
    }
}

/// A running echo server of one stack; the process is killed when this is dropped.
pub struct Echo {
    pub stack: Stack,
    /// Its HTTP/1.1 port, and its h2c port for stacks that speak h2c.
    pub h1: u16,
    pub h2: Option<u16>,
    child: Child,
    /// Request lines from stdout, or nginx's access log.
    lines: Arc<Mutex<Vec<String>>>,
    log: Option<PathBuf>,
    stderr: Arc<Mutex<String>>,
    dir: Option<TempDir>,
}

impl Echo {
    /// Starts the stack's echo server; `Err` says why the stack is not installed.
    pub fn start(stack: Stack) -> Result<Echo, String> {
        match stack {
            Stack::Node => {
                installed("node", &["--version"])?;
                Ok(Echo::spawn(
                    stack,
                    Command::new("node").arg(format!("{HERE}/echo.js")),
                ))
            }
            Stack::Python => {
                installed("python3", &["-c", "import http.server"])?;
                let mut python = Command::new("python3");
                python.arg(format!("{HERE}/echo.py"));
                Ok(Echo::spawn(stack, &mut python))
            }
            Stack::Go => Ok(Echo::spawn(stack, &mut Command::new(go_echo()?))),
            Stack::Nginx => Echo::nginx(),
        }
    }

    /// A stack that prints `{"listening":{"h1":PORT,"h2":PORT}}`, then one line per request.
    fn spawn(stack: Stack, command: &mut Command) -> Echo {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start the {stack:?} echo server: {e}"));
        let stderr = collect(child.stderr.take().expect("piped"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (ready, listening) = mpsc::channel();
        let sink = lines.clone();
        let stdout = child.stdout.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let json: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                match json.get("listening") {
                    Some(ports) => drop(ready.send(ports.clone())),
                    None => sink.lock().unwrap().push(line),
                }
            }
        });
        let mut echo = Echo {
            stack,
            h1: 0,
            h2: None,
            child,
            lines,
            log: None,
            stderr,
            dir: None,
        };
        let ports = listening.recv_timeout(PATIENCE).unwrap_or_else(|_| {
            panic!("the {stack:?} echo server did not start: {}", echo.errors())
        });
        let port = |key: &str| ports[key].as_u64().and_then(|p| u16::try_from(p).ok());
        echo.h1 = port("h1").expect("an h1 port");
        echo.h2 = port("h2");
        echo
    }

    fn nginx() -> Result<Echo, String> {
        let nginx = ["/usr/sbin/nginx", "nginx"]
            .into_iter()
            .find(|nginx| installed(nginx, &["-v"]).is_ok())
            .ok_or("nginx is not installed (no /usr/sbin/nginx, none in PATH)")?;
        let template = std::fs::read_to_string(format!("{HERE}/nginx.conf")).expect("template");
        // nginx cannot report an ephemeral port: take free ones, again if one was taken since.
        for _ in 0..5 {
            let dir = TempDir::new("nginx");
            let (h1, h2) = (free_port(), free_port());
            let config = template
                .replace("@DIR@", &dir.0.display().to_string())
                .replace("@H1@", &h1.to_string())
                .replace("@H2@", &h2.to_string());
            let conf = dir.0.join("nginx.conf");
            std::fs::write(&conf, config).expect("write nginx.conf");
            let mut child = Command::new(nginx)
                .arg("-p")
                .arg(&dir.0)
                .arg("-c")
                .arg(&conf)
                .arg("-e")
                .arg(dir.0.join("error.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start nginx");
            let mut echo = Echo {
                stack: Stack::Nginx,
                h1,
                h2: Some(h2),
                stderr: collect(child.stderr.take().expect("piped")),
                child,
                lines: Arc::default(),
                log: Some(dir.0.join("requests.log")),
                dir: Some(dir),
            };
            let deadline = Instant::now() + PATIENCE;
            loop {
                if echo.child.try_wait().expect("poll nginx").is_some() {
                    break; // most likely a port taken in between: try others
                }
                let up = |port| TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port)));
                if up(h1).is_ok() && up(h2).is_ok() {
                    return Ok(echo);
                }
                assert!(Instant::now() < deadline, "nginx: {}", echo.errors());
                std::thread::sleep(Duration::from_millis(10));
            }
            eprintln!(
                "nginx exited at start-up, trying other ports: {}",
                echo.errors()
            );
        }
        panic!("nginx did not start on free ports five times");
    }

    /// What the stack wrote on stderr (and nginx in its error log), for failure messages.
    pub fn errors(&self) -> String {
        let mut errors = self.stderr.lock().unwrap().clone();
        if let Some(dir) = &self.dir {
            errors += &std::fs::read_to_string(dir.0.join("error.log")).unwrap_or_default();
        }
        errors
    }

    /// Every request recorded so far.
    pub fn seen(&self) -> Vec<Seen> {
        let lines = match &self.log {
            // Only whole lines: nginx may be writing the next one.
            Some(log) => match std::fs::read_to_string(log) {
                Ok(text) => text,
                // nginx creates its log with the first request.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
                Err(e) => panic!("read {}: {e}", log.display()),
            }
            .split_inclusive('\n')
            .filter_map(|line| line.strip_suffix('\n'))
            .map(str::to_owned)
            .collect(),
            None => self.lines.lock().unwrap().clone(),
        };
        lines.iter().map(|line| Seen::parse(line)).collect()
    }

    /// Polls the records until `done` holds for them; panics after [`PATIENCE`].
    pub async fn wait_for(&self, what: &str, done: impl Fn(&[Seen]) -> bool) -> Vec<Seen> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let seen = self.seen();
            if done(&seen) {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "{:?} echo server: still waiting for {what}; it saw {seen:#?}\nits errors: {}",
                self.stack,
                self.errors()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `program args` runs and succeeds.
fn installed(program: &str, args: &[&str]) -> Result<(), String> {
    let run = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match run {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("`{program} {}` failed: {status}", args.join(" "))),
        Err(e) => Err(format!("`{program}` is not installed: {e}")),
    }
}

/// The Go echo server, built once per test run (stdlib only, offline, GOPATH mode).
fn go_echo() -> Result<PathBuf, String> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            installed("go", &["version"])?;
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("interop-go");
            let binary = dir.join("echo");
            let output = Command::new("go")
                .args(["build", "-o"])
                .arg(&binary)
                .arg(format!("{HERE}/echo.go"))
                .env("GOCACHE", dir.join("cache"))
                .env("GOPATH", dir.join("gopath"))
                .env("GO111MODULE", "off")
                .env("GOFLAGS", "")
                .env("GOPROXY", "off")
                .env("CGO_ENABLED", "0")
                .output()
                .map_err(|e| format!("run go build: {e}"))?;
            assert!(
                output.status.success(),
                "go build of the echo server failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            Ok(binary)
        })
        .clone()
}

/// Gathers what a child writes on `stream`, as it comes.
fn collect(mut stream: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(n @ 1..) = stream.read(&mut buffer) {
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buffer[..n]));
        }
    });
    text
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("bound").port()
}

/// A private directory under the system's temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("fanout-{what}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
