//! The state one running proxy shares between ingest, delivery and `/metrics`: the compiled
//! routing table with its lanes, the resolved targets, and the metrics.

use std::sync::atomic::AtomicBool;

use crate::client::Clients;
use crate::metrics::{ConnectionMetrics, Metrics, RouteMetrics};
use crate::spec::RouteTable;
use crate::startup::StartupError;
use crate::target::Target;

pub struct Proxy<T: RouteTable> {
    pub table: T,
    /// Ingest counters, by route index ([`RouteTable::index`]).
    pub routes: Vec<RouteMetrics>,
    /// One resolved target per lane, in [`RouteTable::lanes`] order.
    pub targets: Vec<Target>,
    pub metrics: Metrics,
    /// Counters of client connections, shared by every connection task.
    pub connections: ConnectionMetrics,
    /// Set when shutdown begins: requests still arriving on open connections get 503.
    pub shutting_down: AtomicBool,
}

impl<T: RouteTable> Proxy<T> {
    /// Builds empty lanes and resolves every target's `${NAME}` placeholders with `env`.
    pub fn new(env: &dyn Fn(&str) -> Option<String>) -> Result<Proxy<T>, StartupError> {
        let table = T::new();
        let routes: Vec<RouteMetrics> = T::ROUTES
            .iter()
            .map(|&route| RouteMetrics::new(T::spec(route)))
            .collect();
        let lanes = table.lanes();
        let mut clients = Clients::new();
        let targets = lanes
            .iter()
            .map(|lane| Target::resolve(lane.spec, env, &mut clients))
            .collect::<Result<Vec<_>, _>>()?;
        let connections = ConnectionMetrics::default();
        let metrics = Metrics::new(&connections, &routes, lanes);
        Ok(Proxy {
            table,
            routes,
            targets,
            metrics,
            connections,
            shutting_down: AtomicBool::new(false),
        })
    }

    /// Each lane with its route's accepted count, for the periodic log line.
    pub fn lanes_with_accepted(&self) -> Vec<(&crate::lane::Lane, u64)> {
        self.table
            .lanes()
            .into_iter()
            .map(|lane| {
                let accepted = T::ROUTES
                    .iter()
                    .position(|&r| T::spec(r).name == lane.spec.route)
                    .map_or(0, |i| self.routes[i].accepted.get());
                (lane, accepted)
            })
            .collect()
    }
}
