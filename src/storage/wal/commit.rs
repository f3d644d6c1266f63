//! A group commit's bookkeeping: what requests have appended and no writer has taken yet
//! ([`Pending`]), and the one write that will cover them ([`Batch`]), which each request awaits
//! through its [`Commit`] before it answers.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;

use crate::storage::Refused;

/// Records appended and not yet taken by a writer.
pub(super) struct Pending {
    pub(super) bytes: Vec<u8>,
    pub(super) records: u64,
    /// Completes when the writer has written what `bytes` holds.
    pub(super) batch: Arc<Batch>,
    /// The buffer of the last write, cleared, for the next one.
    pub(super) spare: Vec<u8>,
    /// A request is writing (`never` or a period): appends leave the write to it.
    pub(super) writing: bool,
    /// The writer thread waits for appends (`always`): the next append wakes it.
    pub(super) idle: bool,
    pub(super) closing: bool,
}

/// One write of the writer thread, and everyone waiting for it.
pub(super) struct Batch {
    state: AtomicU8,
    done: Notify,
}

const WAITING: u8 = 0;
const WRITTEN: u8 = 1;
const FAILED: u8 = 2;

impl Batch {
    pub(super) fn new() -> Arc<Batch> {
        Arc::new(Batch {
            state: AtomicU8::new(WAITING),
            done: Notify::new(),
        })
    }

    pub(super) fn finish(&self, written: bool) {
        let state = if written { WRITTEN } else { FAILED };
        self.state.store(state, Ordering::Release);
        self.done.notify_waiters();
    }
}

/// An event appended to the log, to await before answering 202 (a clone awaits the same).
#[must_use]
#[derive(Clone)]
pub struct Commit(pub(super) Arc<Batch>);

impl Commit {
    /// Completes once the event's record is written (and synced, with `fsync: always`), or
    /// could not be.
    pub async fn written(self) -> Result<(), Refused> {
        loop {
            let done = self.0.done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            match self.0.state.load(Ordering::Acquire) {
                WRITTEN => return Ok(()),
                FAILED => return Err(Refused::Failed),
                _ => done.await,
            }
        }
    }
}
