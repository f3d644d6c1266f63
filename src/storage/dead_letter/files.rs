//! The files of one lane's dead letters, in `dead-letters/<route>/`: `<target>.ndjson`, the
//! current file that letters are appended to, and `<target>.<N>.ndjson`, what it rolled into
//! when it reached its size (N from 1, the oldest; a name never changes once rolled). Nothing
//! deletes them but a replay (what it delivered) and `fanout dead-letters purge`.
//!
//! The lane's lock is an exclusive `flock` of its current file: whoever holds it may append,
//! roll, rewrite or remove the lane's files. A file is rewritten beside itself and renamed over
//! the old one, so a crash leaves one or the other whole; since a rename replaces the current
//! file under a writer that opened it, [`Locked::lane`] checks after locking that the file it
//! holds is still the one at the path.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The current file of `target` in `dir`.
pub fn current(dir: &Path, target: &str) -> PathBuf {
    dir.join(format!("{target}.ndjson"))
}

fn rolled(dir: &Path, target: &str, number: u64) -> PathBuf {
    dir.join(format!("{target}.{number}.ndjson"))
}

/// The number of a rolled file of `target` named `name`.
fn number(name: &str, target: &str) -> Option<u64> {
    let digits = name
        .strip_prefix(target)?
        .strip_prefix('.')?
        .strip_suffix(".ndjson")?;
    digits
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| digits.parse().ok())?
}

/// The rolled files of `target` in `dir`, oldest first, with their numbers.
fn rolled_files(dir: &Path, target: &str) -> io::Result<Vec<(u64, PathBuf)>> {
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        entries => entries?,
    };
    let mut rolled = Vec::new();
    for entry in entries {
        let entry = entry?;
        if let Some(number) = entry.file_name().to_str().and_then(|n| number(n, target)) {
            rolled.push((number, entry.path()));
        }
    }
    rolled.sort();
    Ok(rolled)
}

/// Every dead-letter file of `target` in `dir` that exists, oldest first: the rolled ones by
/// number, then the current one.
pub fn files(dir: &Path, target: &str) -> io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = rolled_files(dir, target)?
        .into_iter()
        .map(|(_, path)| path)
        .collect();
    let current = current(dir, target);
    if current.exists() {
        files.push(current);
    }
    Ok(files)
}

/// The lock of a lane's dead letters, held until dropped: an exclusive `flock` of its current
/// file (created if missing), open for appending.
pub struct Locked {
    /// The current file; its open description holds the `flock`, which closing it releases.
    file: File,
    dir: PathBuf,
    target: String,
}

impl Locked {
    /// Waits for the lock of `target`'s dead letters in `dir` (which must exist).
    pub fn lane(dir: &Path, target: &str) -> io::Result<Locked> {
        let path = current(dir, target);
        loop {
            let file = OpenOptions::new().create(true).append(true).open(&path)?;
            flock_exclusive(&file)?;
            // A rename (a roll, a rewrite) may have put another file at the path while this
            // one waited: only a lock of the file at the path is the lane's.
            let held = file.metadata()?;
            let at_path = std::fs::metadata(&path)?;
            if (held.dev(), held.ino()) == (at_path.dev(), at_path.ino()) {
                return Ok(Locked {
                    file,
                    dir: dir.to_owned(),
                    target: target.to_owned(),
                });
            }
        }
    }

    /// Appends `lines` with one `write` and syncs them (and the directory, for a file that was
    /// empty: new, or just rolled), since the caller then settles their events and a durable
    /// lane's log lets them go: a dead letter is as durable as the record it replaces.
    pub fn append(&self, lines: &[u8]) -> io::Result<()> {
        let new = self.file.metadata()?.len() == 0;
        (&self.file).write_all(lines)?;
        self.file.sync_data()?;
        if new {
            File::open(&self.dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Rolls the current file into the next numbered one if `more` bytes would take it past
    /// `limit` (a file holds at least one write, however large), and holds the lock of the new
    /// current file, taken before the old one's is released.
    pub fn roll_for(self, more: u64, limit: u64) -> io::Result<Locked> {
        let len = self.file.metadata()?.len();
        if len == 0 || len + more <= limit {
            return Ok(self);
        }
        let next = rolled_files(&self.dir, &self.target)?
            .last()
            .map_or(1, |(number, _)| number + 1);
        let path = current(&self.dir, &self.target);
        std::fs::rename(&path, rolled(&self.dir, &self.target, next))?;
        Locked::lane(&self.dir, &self.target)
    }

    /// Replaces the lines of `path`, one of the lane's files, with `text`: written to a file
    /// beside it, synced and renamed over it. A rolled file left empty is removed; the current
    /// file stays, and the new one is locked before the rename, so no writer slips in.
    pub fn rewrite(&mut self, path: &Path, text: &str) -> io::Result<()> {
        let is_current = path == current(&self.dir, &self.target);
        if text.is_empty() && !is_current {
            return std::fs::remove_file(path);
        }
        let mut name = path.as_os_str().to_owned();
        name.push(".new");
        let temporary = PathBuf::from(name);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&temporary)?;
        if is_current {
            flock_exclusive(&file)?;
        }
        file.write_all(text.as_bytes())?;
        file.sync_data()?;
        std::fs::rename(&temporary, path)?;
        if is_current {
            self.file = file;
        }
        Ok(())
    }
}

fn flock_exclusive(file: &File) -> io::Result<()> {
    loop {
        // SAFETY: flock only reads the descriptor, which `file` keeps open.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(());
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// When a dead letter was written (its `time`); `None` for a line that cannot be read.
fn written_at(line: &str) -> Option<SystemTime> {
    let letter: serde_json::Value = serde_json::from_str(line).ok()?;
    humantime::parse_rfc3339(letter["time"].as_str()?).ok()
}

/// What a purge did to a lane's dead letters.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Purged {
    pub removed: usize,
    pub left: usize,
}

/// Removes the dead letters of `target` in `dir` written before `before`, under the lane's
/// lock. A line that cannot be read (no JSON, no `time`) stays: nothing goes unseen.
pub fn purge(dir: &Path, target: &str, before: SystemTime) -> io::Result<Purged> {
    let mut purged = Purged::default();
    if files(dir, target)?.is_empty() {
        return Ok(purged);
    }
    let mut locked = Locked::lane(dir, target)?;
    for path in files(dir, target)? {
        let text = std::fs::read_to_string(&path)?;
        let (mut kept, mut removed) = (String::new(), 0);
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if written_at(line).is_some_and(|time| time < before) {
                removed += 1;
            } else {
                kept.push_str(line);
                kept.push('\n');
                purged.left += 1;
            }
        }
        if removed > 0 {
            locked.rewrite(&path, &kept)?;
            purged.removed += removed;
        }
    }
    Ok(purged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::dead_letter::DeadLetters;
    use std::time::Duration;

    fn scratch(what: &str) -> PathBuf {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "fanout-dead-letters-{what}-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn letter(n: usize, time: SystemTime) -> String {
        let time = crate::storage::dead_letter::timestamp(time);
        format!(
            "{{\"id\":\"{n}\",\"time\":\"{time}\",\"body\":\"{}\"}}\n",
            "x".repeat(20)
        )
    }

    fn names(dir: &Path) -> Vec<String> {
        let files = files(dir, "crm").unwrap();
        files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    fn ids(dir: &Path) -> Vec<String> {
        let mut ids = Vec::new();
        for path in files(dir, "crm").unwrap() {
            for line in std::fs::read_to_string(path).unwrap().lines() {
                let letter: serde_json::Value = serde_json::from_str(line).unwrap();
                ids.push(letter["id"].as_str().unwrap().to_owned());
            }
        }
        ids
    }

    #[test]
    fn the_current_file_rolls_into_numbered_files_by_size() {
        let dir = scratch("roll");
        let line_len = letter(0, SystemTime::now()).len() as u64;
        let letters = DeadLetters {
            dir: dir.clone(),
            target: "crm",
            roll_at: 3 * line_len,
        };
        for n in 0..8 {
            letters
                .write(letter(n, SystemTime::now()).as_bytes())
                .unwrap();
        }
        assert_eq!(
            names(&dir),
            ["crm.1.ndjson", "crm.2.ndjson", "crm.ndjson"],
            "three letters a file, oldest first"
        );
        let expected: Vec<String> = (0..8).map(|n| n.to_string()).collect();
        assert_eq!(ids(&dir), expected, "every letter, in the order written");

        let big = letter(8, SystemTime::now()).repeat(5);
        letters.write(big.as_bytes()).unwrap();
        assert_eq!(
            std::fs::read_to_string(current(&dir, "crm")).unwrap(),
            big,
            "a write larger than the limit fills a file of its own"
        );
        assert_eq!(names(&dir).len(), 4);
        assert_eq!(number("crm.12.ndjson", "crm"), Some(12));
        assert_eq!(number("crm.ndjson", "crm"), None);
        assert_eq!(number("crm.+1.ndjson", "crm"), None);
        assert_eq!(number("crm-eu.1.ndjson", "crm"), None);
    }

    #[test]
    fn purge_removes_letters_older_than_a_time_from_every_file_and_keeps_unreadable_lines() {
        let dir = scratch("purge");
        let old = SystemTime::now() - Duration::from_secs(7200);
        let new = SystemTime::now();
        let write = |path: PathBuf, text: String| std::fs::write(path, text).unwrap();
        write(rolled(&dir, "crm", 1), letter(0, old) + &letter(1, old));
        write(
            rolled(&dir, "crm", 2),
            letter(2, old) + "not json\n" + &letter(3, new),
        );
        write(current(&dir, "crm"), letter(4, new));
        write(dir.join("other.ndjson"), letter(9, old));

        let before = SystemTime::now() - Duration::from_secs(3600);
        let purged = purge(&dir, "crm", before).unwrap();
        assert_eq!(
            purged,
            Purged {
                removed: 3,
                left: 3
            }
        );
        assert_eq!(
            names(&dir),
            ["crm.2.ndjson", "crm.ndjson"],
            "an emptied rolled file is removed"
        );
        assert_eq!(
            std::fs::read_to_string(rolled(&dir, "crm", 2)).unwrap(),
            "not json\n".to_owned() + &letter(3, new)
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("other.ndjson")).unwrap(),
            letter(9, old),
            "another lane's letters are not touched"
        );

        let purged = purge(&dir, "crm", SystemTime::now() + Duration::from_secs(1)).unwrap();
        assert_eq!(
            purged,
            Purged {
                removed: 2,
                left: 1
            }
        );
        assert_eq!(names(&dir), ["crm.2.ndjson", "crm.ndjson"]);
        assert_eq!(
            std::fs::read_to_string(current(&dir, "crm")).unwrap(),
            "",
            "the current file stays, empty"
        );

        let letters = DeadLetters {
            dir: dir.clone(),
            target: "crm",
            roll_at: 1,
        };
        letters.write(letter(5, new).as_bytes()).unwrap();
        letters.write(letter(6, new).as_bytes()).unwrap();
        assert_eq!(
            names(&dir),
            ["crm.2.ndjson", "crm.3.ndjson", "crm.ndjson"],
            "a roll after a purge takes the next number: names never change"
        );
        assert_eq!(
            purge(&scratch("none"), "crm", new).unwrap(),
            Purged::default()
        );
    }
}
