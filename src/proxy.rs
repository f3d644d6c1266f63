//! The state one running proxy shares between ingest, delivery and `/metrics`: the compiled
//! routing table (routes, their counters, their lanes with resolved targets) and the metrics.

use std::sync::atomic::AtomicBool;

use crate::metrics::ConnectionMetrics;
use crate::report::Metrics;
use crate::sink::Resolver;
use crate::startup::StartupError;
use crate::table::RouteTable;

pub struct Proxy<T: RouteTable> {
    pub table: T,
    pub metrics: Metrics,
    /// Counters of client connections, shared by every connection task.
    pub connections: ConnectionMetrics,
    /// Set when shutdown begins: requests still arriving on open connections get 503.
    pub shutting_down: AtomicBool,
}

impl<T: RouteTable> Proxy<T> {
    /// Builds empty lanes and resolves every target's `${NAME}` placeholders with `env`.
    pub fn new(env: &dyn Fn(&str) -> Option<String>) -> Result<Proxy<T>, StartupError> {
        let table = T::new(&mut Resolver::new(env))?;
        let connections = ConnectionMetrics::default();
        let metrics = Metrics::new(&connections, &table);
        Ok(Proxy {
            table,
            metrics,
            connections,
            shutting_down: AtomicBool::new(false),
        })
    }
}
