//! A durable route's key file, `idempotency-keys` (or `webhook-ids`) in its log directory: one
//! line per key taken, `<expires, Unix ms> <id, 32 hex> <key, hex>`, read back at start-up.
//!
//! The append is one small `write` to the page cache, made by the request itself under the
//! keys' mutex: the 202 must not come before it, or a crash right after the answer would forget
//! a key its client was told is taken (the log's own writes are made inline the same way). The
//! file only grows, so once it holds twice as many lines as there are live keys (plus 1000) a
//! thread of its own rewrites it with the keys still in their window, off the runtime and
//! outside the mutex: it reads the file, writes the live keys beside it, and only then takes the
//! mutex to copy the few lines appended meanwhile and rename the new file over the old one.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::{unix_millis, Keys, MAX_KEYS};
use crate::auth::signature;

/// The file a durable route's keys are appended to.
pub(super) struct KeyFile {
    path: PathBuf,
    /// Open for appending.
    file: File,
    /// Lines it holds.
    lines: usize,
    /// Whether a thread is rewriting it (one at a time).
    compacting: bool,
    /// No rewrite is tried before the file holds this many lines: after a failed one, another
    /// 1000, so a disk that keeps failing does not cost a thread per request.
    next_try: usize,
}

/// A line of the file, as read back: when the key expires, its event's id, the key.
type Line = (u64, [u8; 16], Vec<u8>);

impl KeyFile {
    /// Reads the file at `path` (none yet: no keys), rewrites it with the keys still in their
    /// window, and opens it for appending; those keys, the ones that expire first first.
    pub(super) fn open(path: &Path) -> io::Result<(KeyFile, Vec<Line>)> {
        let text = match std::fs::read(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            text => text?,
        };
        let live = live_lines(&text, unix_millis(SystemTime::now()));
        let temporary = path.with_extension("new");
        std::fs::write(&temporary, lines(&live))?;
        std::fs::rename(&temporary, path)?;
        let file = KeyFile {
            path: path.to_owned(),
            file: OpenOptions::new().append(true).open(path)?,
            lines: live.len(),
            compacting: false,
            next_try: 0,
        };
        Ok((file, live))
    }

    /// Appends a key's line; once the file holds twice the `live` keys (plus 1000 lines), has
    /// a thread rewrite it. Called under `keys`' lock, which holds this file.
    pub(super) fn append(
        &mut self,
        expires: u64,
        id: &[u8; 16],
        key: &[u8],
        live: usize,
        keys: &Arc<Mutex<Keys>>,
    ) -> io::Result<()> {
        #[cfg(feature = "failpoints")]
        crate::failpoints::io("keys::write")?;
        self.file.write_all(line(expires, id, key).as_bytes())?;
        self.lines += 1;
        let grown = self.lines > 2 * live + 1000 && self.lines >= self.next_try;
        if grown && !self.compacting {
            self.compacting = true;
            let (keys, path) = (keys.clone(), self.path.clone());
            let compacting = std::thread::Builder::new()
                .name("fanout-keys".into())
                .spawn(move || compact_in_background(&keys, &path));
            if let Err(error) = compacting {
                self.compacting = false;
                self.next_try = self.lines + 1000;
                return Err(error);
            }
        }
        Ok(())
    }
}

fn lines(live: &[Line]) -> String {
    let mut lines = String::new();
    for (expires, id, key) in live {
        lines.push_str(&line(*expires, id, key));
    }
    lines
}

/// The key file's rewrite, on a thread of its own; if it fails, tried again 1000 lines later.
fn compact_in_background(keys: &Mutex<Keys>, path: &Path) {
    let compacted = compact(keys, path);
    let mut keys = keys.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(file) = &mut keys.file {
        file.compacting = false;
        if compacted.is_err() {
            file.next_try = file.lines + 1000;
        }
    }
    if let Err(error) = compacted {
        tracing::warn!(path = %path.display(), %error, "cannot rewrite the remembered keys");
    }
}

/// Rewrites `path` with the keys still in their window. The mutex is held only for the end:
/// the lines appended since the file was read, and the rename.
fn compact(keys: &Mutex<Keys>, path: &Path) -> io::Result<()> {
    let text = std::fs::read(path)?;
    // A line being appended as the file was read is copied with the tail.
    let read = text
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |end| end + 1);
    let live = live_lines(&text[..read], unix_millis(SystemTime::now()));
    let temporary = path.with_extension("new");
    let mut rewritten = File::create(&temporary)?;
    rewritten.write_all(lines(&live).as_bytes())?;

    let mut keys = keys.lock().unwrap_or_else(|p| p.into_inner());
    let Some(file) = &mut keys.file else {
        return Ok(());
    };
    // Another process owning the data directory now (a restart's hand-over) has replaced the
    // file: it is not this one's to rewrite any more.
    let (appending, at_path) = (file.file.metadata()?, std::fs::metadata(path)?);
    if (appending.dev(), appending.ino()) != (at_path.dev(), at_path.ino()) {
        std::fs::remove_file(&temporary)?;
        return Err(io::Error::other("the file was replaced by another process"));
    }
    let mut tail = Vec::new();
    let mut old = File::open(path)?;
    old.seek(SeekFrom::Start(read as u64))?;
    old.read_to_end(&mut tail)?;
    rewritten.write_all(&tail)?;
    std::fs::rename(&temporary, path)?;
    file.file = OpenOptions::new().append(true).open(path)?;
    file.lines = live.len() + tail.iter().filter(|&&b| b == b'\n').count();
    Ok(())
}

/// The keys of a key file's `text` still in their window at `now` (Unix ms): the latest line of
/// each key, the ones that expire first first, at most [`MAX_KEYS`] (the last ones).
fn live_lines(text: &[u8], now: u64) -> Vec<Line> {
    let mut latest: HashMap<Vec<u8>, (u64, [u8; 16])> = HashMap::new();
    let parsed = text
        .split(|&b| b == b'\n')
        .filter_map(|line| parse(std::str::from_utf8(line).ok()?));
    for (expires, id, key) in parsed.filter(|(expires, _, _)| *expires > now) {
        let entry = latest.entry(key).or_insert((expires, id));
        if expires >= entry.0 {
            *entry = (expires, id);
        }
    }
    let mut live: Vec<_> = latest
        .into_iter()
        .map(|(key, (expires, id))| (expires, id, key))
        .collect();
    live.sort_by_key(|(expires, _, _)| *expires);
    let first = live.len().saturating_sub(MAX_KEYS);
    live.split_off(first)
}

/// `<expires, Unix ms> <id, 32 hex> <key, hex>\n`.
pub(super) fn line(expires: u64, id: &[u8; 16], key: &[u8]) -> String {
    format!("{expires} {} {}\n", signature::hex(id), signature::hex(key))
}

pub(super) fn parse(line: &str) -> Option<(u64, [u8; 16], Vec<u8>)> {
    let mut fields = line.split(' ');
    let expires = fields.next()?.parse().ok()?;
    let id = signature::unhex(fields.next()?.as_bytes())?
        .try_into()
        .ok()?;
    let key = signature::unhex(fields.next()?.as_bytes())?;
    Some((expires, id, key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fan_out::idempotency::{Claim, IdempotencyKeys};
    use std::time::Duration;

    #[test]
    fn the_key_file_is_rewritten_off_the_request_path_and_read_back() {
        let dir = std::env::temp_dir().join(format!("fanout-keys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("idempotency-keys");
        let keys = IdempotencyKeys::with_window(Duration::from_secs(60));
        keys.open(&path).unwrap();
        assert_eq!(keys.claim(b"k", [1; 16]), Claim::New);
        keys.taken(b"k", [1; 16]);
        // The same key written again and again: the file outgrows twice its one live key.
        for _ in 0..1003 {
            keys.persist(b"k", [1; 16]).unwrap();
        }
        let lines = || std::fs::read_to_string(&path).unwrap().lines().count();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while lines() > 1 {
            assert!(std::time::Instant::now() < deadline, "{} lines", lines());
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(keys.claim(b"j", [2; 16]), Claim::New);
        keys.taken(b"j", [2; 16]);
        keys.persist(b"j", [2; 16]).unwrap();
        assert_eq!(lines(), 2, "appended to the rewritten file");

        let restarted = IdempotencyKeys::with_window(Duration::from_secs(60));
        restarted.open(&path).unwrap();
        assert_eq!(restarted.claim(b"k", [3; 16]), Claim::Seen([1; 16]));
        assert_eq!(restarted.claim(b"j", [3; 16]), Claim::Seen([2; 16]));
        assert_eq!(
            parse(line(5, &[7; 16], b"a b").trim_end()),
            Some((5, [7; 16], b"a b".to_vec()))
        );
        assert_eq!(
            live_lines(b"5 01010101010101010101010101010101 6b\n", 10),
            Vec::new(),
            "expired"
        );
    }
}
