//! A `fanout` process run under `strace -f`, and its trace read back as calls in the order
//! strace saw them, so a test can say which syscall came before which: a segment's `write`,
//! the `fdatasync` that covers it, the `202` written to the client's socket.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::process::{spawn_logged, Logs};

/// Whether strace runs here. When it does not, a test that needs it is skipped with a note on
/// stderr, unless `CI` is `true`: there it fails (`.ci/run` installs strace).
pub fn available() -> bool {
    let run = Command::new("strace")
        .args(["-f", "-e", "trace=none", "true"])
        .output();
    let why = match run {
        Ok(output) if output.status.success() => return true,
        Ok(output) => String::from_utf8_lossy(&output.stderr).into_owned(),
        Err(error) => format!("strace is not installed: {error}"),
    };
    assert_ne!(
        std::env::var("CI").as_deref(),
        Ok("true"),
        "CI=true and strace does not run: {why}"
    );
    let note = format!("skipping a test that needs strace: {why}\n");
    let _ = std::io::Write::write_all(&mut std::io::stderr(), note.as_bytes());
    false
}

/// `fanout` under strace: writes, syncs and socket sends of every thread, with the path of each
/// fd (`-yy`: segment files end in `.seg`, sockets show their addresses) and 4 KiB of each
/// buffer. Both processes are killed when this is dropped.
pub struct Traced {
    /// The strace process; fanout is its child.
    pub strace: Child,
    pub addr: std::net::SocketAddr,
    pub trace: PathBuf,
    logs: Logs,
}

impl Traced {
    /// Starts `binary` under strace with `args` and `env`; `inject` adds strace options (such
    /// as `-e inject=fdatasync:delay_enter=...`).
    pub fn start(binary: &Path, args: &[&str], env: &[(&str, &str)], inject: &[&str]) -> Traced {
        let trace = super::scratch_dir("strace").join("trace");
        let mut command = Command::new("strace");
        command
            .args(["-f", "-ttt", "-yy", "-s", "4096", "-e", "signal=none", "-o"])
            .arg(&trace)
            .args([
                "-e",
                "trace=write,pwrite64,writev,fdatasync,fsync,sendto,sendmsg",
            ])
            .args(inject)
            .arg(binary)
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(args)
            .envs(env.iter().copied());
        let (strace, addr, logs) = spawn_logged(&mut command);
        Traced {
            strace,
            addr,
            trace,
            logs,
        }
    }

    /// The calls traced so far (whole lines only: strace may be writing the next).
    pub fn calls(&self) -> Vec<Call> {
        let text = std::fs::read_to_string(&self.trace).expect("read the trace");
        let whole = text.rfind('\n').map_or("", |end| &text[..end]);
        parse(whole)
    }

    /// Polls the trace until `done` holds for its calls; panics after `patience`.
    pub fn wait_for(&self, what: &str, patience: Duration, done: impl Fn(&[Call]) -> bool) {
        let deadline = Instant::now() + patience;
        while !done(&self.calls()) {
            assert!(Instant::now() < deadline, "the trace never showed {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// fanout's pid: the child strace started.
    pub fn fanout_pid(&self) -> i32 {
        let pid = self.strace.id();
        let children = format!("/proc/{pid}/task/{pid}/children");
        let text = std::fs::read_to_string(&children).expect("strace's children");
        let first = text.split_whitespace().next().expect("strace runs fanout");
        first.parse().expect("a pid")
    }

    pub fn log_messages(&self) -> Vec<serde_json::Value> {
        self.logs.lock().unwrap().clone()
    }
}

impl Drop for Traced {
    fn drop(&mut self) {
        if let Ok(text) =
            std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", self.strace.id()))
        {
            for pid in text
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                // SAFETY: kill only sends a signal, to the child of the strace this owns.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let _ = self.strace.kill();
        let _ = self.strace.wait();
    }
}

/// One syscall as traced.
#[derive(Clone, Debug)]
pub struct Call {
    pub name: String,
    /// When it was entered, Unix seconds.
    pub at: f64,
    /// The line that shows it entered, and the line that shows it returned (the same line
    /// unless strace had to split it): strace writes lines in the order it sees these events,
    /// so a call whose `done` line comes before another's `start` line returned before that
    /// one was made.
    pub start: usize,
    pub done: usize,
    /// Its arguments as strace printed them at entry (the fd's path in `<...>`).
    pub args: String,
}

impl Call {
    /// Whether its first argument is a segment file of `route`.
    pub fn on_segment_of(&self, route: &str) -> bool {
        let fd = self.fd();
        fd.contains(&format!("/routes/{route}/")) && fd.ends_with(".seg>")
    }

    /// Its first argument, an fd with its path as strace showed it (`16</dir/0.seg>`,
    /// `20<TCP:[127.0.0.1:8000->127.0.0.1:5000]>`); "" if it has none.
    pub fn fd(&self) -> &str {
        let Some(open) = self.args.find('<') else {
            return "";
        };
        let path = &self.args[open..];
        let end = match path.strip_prefix("<TCP:[") {
            Some(_) => path.find("]>").map(|i| i + 2),
            None => path.find('>').map(|i| i + 1),
        };
        end.map_or("", |end| &self.args[..open + end])
    }

    pub fn is_write(&self) -> bool {
        matches!(self.name.as_str(), "write" | "pwrite64" | "writev")
    }

    pub fn is_sync(&self) -> bool {
        matches!(self.name.as_str(), "fdatasync" | "fsync")
    }
}

/// Parses `strace -f -ttt` output (`PID SECONDS name(args) = ret`, split calls shown as
/// `name(args <unfinished ...>` and `<... name resumed>...`).
pub fn parse(text: &str) -> Vec<Call> {
    let mut calls: Vec<Call> = Vec::new();
    let mut open: HashMap<String, usize> = HashMap::new();
    for (line_no, line) in text.lines().enumerate() {
        // strace pads the pid column to the widest pid so far.
        let Some((pid, rest)) = line.trim_start().split_once(' ') else {
            continue;
        };
        let Some((at, rest)) = rest.trim_start().split_once(' ') else {
            continue;
        };
        if let Some(resumed) = rest.strip_prefix("<... ") {
            let name = resumed.split(' ').next().unwrap_or("");
            if let Some(index) = open.remove(pid) {
                assert_eq!(calls[index].name, name, "a resumed call of {pid}: {line}");
                calls[index].done = line_no;
            }
            continue;
        }
        let Some((name, args)) = rest.split_once('(') else {
            continue; // `+++ exited`, `--- SIG...`
        };
        let Ok(at) = at.parse::<f64>() else { continue };
        let unfinished = args.ends_with("<unfinished ...>");
        calls.push(Call {
            name: name.to_owned(),
            at,
            start: line_no,
            // Not returned yet: after every line so far.
            done: if unfinished { usize::MAX } else { line_no },
            args: args.to_owned(),
        });
        if unfinished {
            open.insert(pid.to_owned(), calls.len() - 1);
        }
    }
    calls
}

/// The first write to a client of fanout listening on `listen` that carries `id` (the body of
/// its 202), if there is one.
pub fn answer_with<'a>(
    calls: &'a [Call],
    listen: std::net::SocketAddr,
    id: &str,
) -> Option<&'a Call> {
    let client = format!("<TCP:[{listen}->");
    calls
        .iter()
        .filter(|c| c.is_write() || c.name.starts_with("send"))
        .find(|c| c.fd().contains(&client) && c.args.contains(id))
}
