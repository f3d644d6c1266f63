//! A real `nats-server` (JetStream on, its store in a directory of its own) on 127.0.0.1,
//! started, SIGKILLed and restarted by a test, and the official client (async-nats) to look
//! at what it holds. Under CI a missing nats-server fails the test instead of skipping it.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The nats-server binary, if this machine has one (Debian puts it in /usr/sbin).
fn binary() -> Option<PathBuf> {
    let candidates = [
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
        "/usr/local/bin/nats-server",
    ];
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
}

/// Whether this test can run: nats-server is here, or (outside CI) it is skipped.
pub fn available() -> bool {
    if binary().is_some() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "nats-server is not installed (.ci/run installs it)"
    );
    eprintln!("skipped: nats-server is not installed");
    false
}

pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    /// JetStream's store: kept across a restart, removed with the server.
    store: PathBuf,
    extra: Vec<String>,
}

impl NatsServer {
    /// Starts nats-server with JetStream on a free port, with `extra` arguments
    /// (`--auth TOKEN`, say).
    pub fn start(extra: &[&str]) -> NatsServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut server = NatsServer {
            child: None,
            port,
            store: std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("nats-{port}")),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        server.launch();
        server
    }

    /// `127.0.0.1:PORT`, for a `nats://${...}` url.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn launch(&mut self) {
        let binary = binary().expect("nats-server is installed");
        let child = Command::new(binary)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js"])
            .arg("-sd")
            .arg(&self.store)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server listens within 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no flush, no goodbye.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same store.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// A client of the official library, connected.
    pub async fn client(&self) -> async_nats::Client {
        let mut options = async_nats::ConnectOptions::new();
        if let Some(at) = self.extra.iter().position(|a| a == "--auth") {
            options = async_nats::ConnectOptions::with_token(self.extra[at + 1].clone());
        }
        options
            .connect(self.addr())
            .await
            .expect("the test connects to its nats-server")
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}
