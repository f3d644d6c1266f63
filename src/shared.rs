//! The state one running proxy shares between ingest, delivery and `/metrics`: the compiled
//! routing table (routes, their counters, their lanes with resolved targets) and the metrics.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::ops::data_dir::DataDir;
use crate::storage::wal::Log;

use crate::metrics::ConnectionMetrics;
use crate::ops::startup::StartupError;
use crate::report::Metrics;
use crate::sink::Resolver;
use crate::table::RouteTable;

pub struct Shared<T: RouteTable> {
    pub table: T,
    /// The log of every durable route.
    pub logs: Vec<Arc<Log>>,
    pub metrics: Metrics,
    /// Counters of client connections, shared by every connection task.
    pub connections: ConnectionMetrics,
    /// Set when shutdown begins: requests still arriving on open connections get 503.
    pub shutting_down: AtomicBool,
    /// The data directory, once this process owns it.
    pub data_dir: Mutex<Option<DataDir>>,
    /// Set when shutdown begins with a successor waiting for the data directory: requests on
    /// open connections are served, not refused, so a restart refuses nothing.
    pub handing_over: AtomicBool,
    /// Whether `/metrics` and `/healthz` are served on `admin_listen` (and so not on the
    /// ingest listener).
    pub admin_apart: bool,
    /// Tasks settling a durable request's keys and count once its commit is written: the
    /// data directory is not handed over before they are done.
    pub settling: Settling,
}

/// Counts tasks under way; see [`Shared::settling`].
#[derive(Default)]
pub struct Settling(Arc<AtomicUsize>);

/// One task under way while it lives.
pub struct Settlement(Arc<AtomicUsize>);

impl Settling {
    pub fn begin(&self) -> Settlement {
        self.0.fetch_add(1, Ordering::AcqRel);
        Settlement(self.0.clone())
    }

    /// Waits until no task is under way, for `patience` at most.
    async fn done(&self, patience: Duration) {
        let deadline = tokio::time::Instant::now() + patience;
        while self.0.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

impl Drop for Settlement {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<T: RouteTable> Shared<T> {
    /// Builds empty lanes and resolves every target's `${NAME}` placeholders with `env`.
    pub fn new(env: &dyn Fn(&str) -> Option<String>) -> Result<Shared<T>, StartupError> {
        let mut resolver = Resolver::new(env);
        let table = T::new(&mut resolver)?;
        let logs = table.logs();
        let connections = ConnectionMetrics::default();
        let metrics = Metrics::new(&connections, &table, &logs);
        Ok(Shared {
            table,
            logs,
            metrics,
            connections,
            shutting_down: AtomicBool::new(false),
            data_dir: Mutex::new(None),
            handing_over: AtomicBool::new(false),
            admin_apart: false,
            settling: Settling::default(),
        })
    }

    /// Opens what the proxy keeps in the data directory it has locked, and keeps the lock.
    pub fn own(&self, data_dir: DataDir) -> Result<(), StartupError> {
        data_dir.open(&self.table, &self.logs)?;
        *self.data_dir.lock().unwrap_or_else(|p| p.into_inner()) = Some(data_dir);
        Ok(())
    }

    /// Whether a process is waiting to take the data directory over.
    pub fn successor_waiting(&self) -> bool {
        let data_dir = self.data_dir.lock().unwrap_or_else(|p| p.into_inner());
        data_dir.as_ref().is_some_and(DataDir::successor_waiting)
    }

    /// At shutdown, once the durable lanes have stopped: writes, syncs and closes every log,
    /// lets the requests it completed settle their keys (for 1 s at most), and releases the
    /// data directory, for a process taking over.
    pub async fn hand_over(&self) {
        for log in &self.logs {
            log.close();
        }
        self.settling.done(Duration::from_secs(1)).await;
        if let Some(data_dir) = self
            .data_dir
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            tracing::info!(data_dir = %data_dir.path.display(), "data directory released");
        }
    }
}
