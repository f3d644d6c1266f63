//! Dead letters: an event a lane gives up on (its attempts exhausted, refused for good by the
//! target, or older than the target's `max_age`) is written to the lane's dead-letter file in
//! the data directory, `dead-letters/<route>/<target>.ndjson`, one JSON object per line:
//!
//! ```json
//! {"id":"…","route":"orders","target":"crm","time":"2026-11-23T18:00:00.000Z",
//!  "accepted":"2026-11-23T17:59:58.120Z","reason":"exhausted","status":503,
//!  "error":"status 503","attempts":5,"content_type":"application/json","body":"{…}"}
//! ```
//!
//! `reason` is `exhausted`, `refused` or `expired`; `status` is the target's last answer
//! (`null` if it gave none), `error` says what happened in words. A body that is not UTF-8 is
//! written as `body_base64` instead of `body`. The file rolls by size into numbered files that
//! nothing but `fanout dead-letters purge` or a replay deletes (`files.rs`). Every write holds
//! the lane's exclusive `flock`, which `fanout dead-letters replay|purge` take too, so a running
//! server and a tool never interleave.
//!
//! A write is blocking file I/O: the lane runs it on tokio's blocking pool
//! (`Lane::dead_letter`), never on a runtime worker.

mod files;

use base64::Engine;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::event::Event;
use crate::sink::Why;
use crate::spec::TargetSpec;

pub use files::{files, purge, Locked, Purged};

/// Past this size the current file rolls into a numbered one: small enough to read, copy or
/// replay one file at a time, large enough that a lane rolls rarely (about 64,000 letters of
/// 1 KiB).
pub const ROLL_BYTES: u64 = 64 << 20;

/// Why a lane gave up on an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Every attempt failed.
    Exhausted,
    /// The target refused it for good (a status not in `retry.on`).
    Refused,
    /// Still undelivered after the target's `max_age`.
    Expired,
}

impl Reason {
    pub const ALL: [Reason; 3] = [Reason::Exhausted, Reason::Refused, Reason::Expired];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Exhausted => "exhausted",
            Reason::Refused => "refused",
            Reason::Expired => "expired",
        }
    }
}

/// The dead-letter files of one lane. Cheap to clone: a write moves a clone to the blocking
/// pool.
#[derive(Clone, Debug)]
pub struct DeadLetters {
    /// `dead-letters/<route>` of the data directory (created on the first dead letter).
    dir: PathBuf,
    target: &'static str,
    /// The size past which the current file rolls ([`ROLL_BYTES`]).
    roll_at: u64,
}

/// How a delivery ended, for the record.
pub struct LastAttempt<'a> {
    pub reason: Reason,
    pub why: Option<&'a Why>,
    pub attempts: u32,
}

impl DeadLetters {
    /// The dead-letter files of `target` in `data_dir`.
    pub fn new(data_dir: &Path, target: &TargetSpec) -> DeadLetters {
        DeadLetters {
            dir: dir(data_dir, target.route),
            target: target.name,
            roll_at: ROLL_BYTES,
        }
    }

    /// Appends `lines` (whole lines, from [`lines`]) to the current file with one `write`
    /// under the lane's lock, rolling the file first if they would take it past its size.
    /// Blocking.
    pub fn write(&self, lines: &[u8]) -> io::Result<()> {
        #[cfg(feature = "failpoints")]
        crate::failpoints::io("dead_letter::write")?;
        std::fs::create_dir_all(&self.dir)?;
        Locked::lane(&self.dir, self.target)?
            .roll_for(lines.len() as u64, self.roll_at)?
            .append(lines)
    }
}

/// One line per event, stamped with the time the lane gave them up.
pub fn lines(target: &TargetSpec, events: &[Event], last: &LastAttempt<'_>) -> Vec<u8> {
    let mut lines = Vec::new();
    for event in events {
        serde_json::to_writer(&mut lines, &line(target, event, last))
            .expect("a JSON value serializes into a Vec");
        lines.push(b'\n');
    }
    lines
}

fn line(target: &TargetSpec, event: &Event, last: &LastAttempt<'_>) -> serde_json::Value {
    let (status, error) = match last.why {
        Some(Why::Status(status)) => (Some(*status), last.why.map(Why::to_string)),
        Some(why) => (None, Some(why.to_string())),
        None => (None, None),
    };
    let mut line = serde_json::json!({
        "id": event.id_text(&mut [0; 36]),
        "route": target.route,
        "target": target.name,
        "time": timestamp(SystemTime::now()),
        "accepted": timestamp(event.accepted_at()),
        "reason": last.reason.as_str(),
        "status": status,
        "error": error,
        "attempts": last.attempts,
        "content_type": event.content_type_bytes().map(String::from_utf8_lossy),
    });
    match std::str::from_utf8(event.body_slice()) {
        Ok(body) => line["body"] = body.into(),
        Err(_) => {
            line["body_base64"] = base64::engine::general_purpose::STANDARD
                .encode(event.body_slice())
                .into()
        }
    }
    line
}

/// RFC 3339 UTC with milliseconds.
pub fn timestamp(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

/// The directory of a route's dead letters.
pub fn dir(data_dir: &Path, route: &str) -> PathBuf {
    data_dir.join("dead-letters").join(route)
}

/// The current dead-letter file of a lane: the one written to.
pub fn path(data_dir: &Path, route: &str, target: &str) -> PathBuf {
    files::current(&dir(data_dir, route), target)
}
