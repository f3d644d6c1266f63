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
            vec!["--data-dir".to_owned(), super::scratch_dir("data").display().to_string()]
        };
        let mut child = Command::new(binary)
            .envs(env.iter().copied())
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(&data_dir)
            .args(extra_args)
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
                    let listen = entry["fields"]["listen"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    let _ = ready_tx.send(listen);
                }
                sink.lock().unwrap().push(entry);
            }
        });
        let listen = ready_rx
            .recv_timeout(super::PATIENCE)
            .expect("fanout logs `fanout ready` with its address");
        Fanout {
            child,
            addr: listen.parse().expect("the logged address parses"),
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
