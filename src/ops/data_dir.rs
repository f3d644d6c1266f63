//! The data directory (`server.data_dir`, or `fanout --data-dir`): durable routes' logs,
//! every lane's dead letters, and the lock that makes one process at a time its owner.
//!
//! ```text
//! DIR/LOCK                                   flock'ed by the owner; holds its pid
//! DIR/routes/<route>/<position>.seg          a durable route's log segments
//! DIR/routes/<route>/cursors/<target>        each lane's persisted watermark
//! DIR/routes/<route>/idempotency-keys        a durable route's remembered keys
//! DIR/routes/<route>/webhook-ids             a durable route's remembered webhook-ids
//! DIR/dead-letters/<route>/<target>.ndjson   each lane's dead letters
//! ```
//!
//! Handing over on a restart: the new process binds the same address (SO_REUSEPORT) and
//! serves at once; if the old one still owns the directory, the new one writes its pid to
//! `HANDOVER` and waits for the lock (its durable routes' requests wait too, up to
//! `body_read_timeout`). On SIGTERM the old process sees the successor, stops accepting and
//! serves every request already on its connections (instead of refusing them with 503, as a
//! plain shutdown does), stops its durable lanes, writes and syncs its logs, persists their
//! watermarks and releases the lock; the new one then recovers the logs and goes on where the
//! old one stopped. Dead-letter files are shared
//! safely meanwhile: every write takes an exclusive `flock` of the file.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::ops::startup::StartupError;
use crate::spec::Storage;
use crate::storage::dead_letter::DeadLetters;
use crate::storage::wal::{check_formats, route_dir, unknown_route_dirs, Log};
use crate::table::RouteTable;

/// The file a process waiting for the lock writes its pid to.
const HANDOVER: &str = "HANDOVER";

/// How often a process waiting for the lock tries again.
const LOCK_POLL: Duration = Duration::from_millis(20);

/// The data directory, locked by this process until dropped.
pub struct DataDir {
    pub path: PathBuf,
    _lock: File,
}

/// Tries to lock `path` (creating it); `Ok(None)` if another process holds it.
pub fn try_lock(path: &Path) -> Result<Option<DataDir>, StartupError> {
    let fail = |what: &str, e: io::Error| {
        StartupError(format!(
            "data directory {}: cannot {what}: {e}",
            path.display()
        ))
    };
    std::fs::create_dir_all(path).map_err(|e| fail("create it", e))?;
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path.join("LOCK"))
        .map_err(|e| fail("open its LOCK file", e))?;
    // SAFETY: flock only reads the descriptor, which `file` keeps open.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let error = io::Error::last_os_error();
        if error.kind() == io::ErrorKind::WouldBlock {
            // Tell the owner a successor is here, before this process says it is ready.
            let _ = std::fs::write(path.join(HANDOVER), std::process::id().to_string());
            return Ok(None);
        }
        return Err(fail("lock it", error));
    }
    let _ = file.set_len(0);
    let _ = writeln!(file, "{}", std::process::id());
    Ok(Some(DataDir {
        path: path.to_owned(),
        _lock: file,
    }))
}

/// Locks `path`, waiting for the process that holds it to hand it over. While it waits, a
/// `HANDOVER` file holding its pid tells the owner that a successor is there.
pub async fn lock(path: &Path) -> Result<DataDir, StartupError> {
    let mut logged = false;
    loop {
        if let Some(locked) = try_lock(path)? {
            let _ = std::fs::remove_file(path.join(HANDOVER));
            return Ok(locked);
        }
        if !logged {
            let owner = std::fs::read_to_string(path.join("LOCK")).unwrap_or_default();
            tracing::info!(
                data_dir = %path.display(),
                owner = owner.trim(),
                "another fanout owns the data directory: serving, and waiting for it to hand over"
            );
            logged = true;
        }
        tokio::time::sleep(LOCK_POLL).await;
    }
}

impl DataDir {
    /// Whether a process (alive) is waiting to take the directory over.
    pub fn successor_waiting(&self) -> bool {
        std::fs::read_to_string(self.path.join(HANDOVER))
            .ok()
            .and_then(|pid| pid.trim().parse::<u32>().ok())
            .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
    }

    /// Opens what the proxy keeps here: dead letters for every lane, and the logs,
    /// idempotency keys and Standard Webhooks ids of durable routes (recovering them).
    pub fn open<T: RouteTable>(&self, table: &T, logs: &[Arc<Log>]) -> Result<(), StartupError> {
        // First, before anything here is changed: a log of a format this build cannot read
        // stops start-up.
        for log in logs {
            check_formats(&route_dir(&self.path, log.route.name)).map_err(|e| {
                StartupError(format!(
                    "route \"{}\": cannot read its log: {e}",
                    log.route.name
                ))
            })?;
        }
        table.lanes(&mut |lane| {
            let _ = lane
                .dead_letters
                .set(DeadLetters::new(&self.path, lane.target.spec));
        });
        for &route in T::ROUTES {
            let spec = T::spec(route);
            if spec.storage != Storage::Disk {
                continue;
            }
            let remembered = [
                (table.keys(route), "idempotency-keys"),
                (&table.gate(route).replays, "webhook-ids"),
            ];
            for (keys, file) in remembered.into_iter().filter(|(keys, _)| keys.enabled()) {
                let dir = route_dir(&self.path, spec.name);
                let path = dir.join(file);
                if let Err(e) = std::fs::create_dir_all(&dir) {
                    let message = format!(
                        "route \"{}\": cannot create {}: {e}",
                        spec.name,
                        dir.display()
                    );
                    return Err(StartupError(message));
                }
                keys.open(&path).map_err(|e| {
                    StartupError(format!(
                        "route \"{}\": cannot read {}: {e}",
                        spec.name,
                        path.display()
                    ))
                })?;
            }
        }
        let durable: Vec<&str> = logs.iter().map(|log| log.route.name).collect();
        for dir in unknown_route_dirs(&self.path, &durable) {
            tracing::warn!(dir = %dir.display(), "a route directory of no durable route of this binary: kept, not read (delete it once its events are no longer needed)");
        }
        // Last: a log once open lets the requests waiting for it in, and those claim keys,
        // which must be loaded by then.
        for log in logs {
            log.open(&route_dir(&self.path, log.route.name))?;
        }
        tracing::info!(data_dir = %self.path.display(), "data directory open");
        Ok(())
    }
}
