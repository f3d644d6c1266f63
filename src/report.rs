//! What the proxy reports: the Prometheus text at `/metrics`, queue gauges read at scrape
//! time, and the periodic per-lane log line.

use prometheus::{Encoder, IntGauge, Registry, TextEncoder};
use std::sync::Arc;

use crate::metrics::ConnectionMetrics;
use crate::storage::wal::Log;
use crate::table::RouteTable;

/// Everything `/metrics` shows.
pub struct Metrics {
    registry: Registry,
    /// Read at scrape time.
    held_bytes: IntGauge,
}

impl Metrics {
    pub fn new<T: RouteTable>(
        connections: &ConnectionMetrics,
        table: &T,
        logs: &[Arc<Log>],
    ) -> Metrics {
        let registry = Registry::new();
        connections.register(&registry);
        for &route in T::ROUTES {
            table.metrics(route).register(&registry);
        }
        table.lanes(&mut |lane| {
            lane.metrics.register(&registry);
            lane.target.endpoint.register(&registry);
        });
        table.pools(&mut |pool| pool.register(&registry));
        for log in logs {
            log.metrics.register(&registry);
        }
        Metrics {
            registry,
            held_bytes: connections.held_bytes.clone(),
        }
    }

    /// The Prometheus text exposition of every metric, queue gauges read now.
    pub fn render<T: RouteTable>(&self, table: &T) -> Vec<u8> {
        table.lanes(&mut |lane| {
            lane.metrics.depth.set(lane.depth() as i64);
            lane.metrics.oldest_age.set(lane.oldest_age().as_secs_f64());
            lane.target.endpoint.refresh_gauges();
        });
        table.pools(&mut |pool| pool.refresh_gauges());
        self.held_bytes.set(crate::event::held_bytes() as i64);
        let mut text = Vec::with_capacity(16 * 1024);
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut text)
            .expect("encoding into a Vec cannot fail");
        text
    }
}

/// Logs one line per lane with its counters, like go-sep's periodic summary.
pub fn log_lanes<T: RouteTable>(table: &T) {
    for &route in T::ROUTES {
        let accepted = table.metrics(route).accepted.get();
        table.lanes_of(route, &mut |lane| {
            let m = &lane.metrics;
            tracing::info!(
                route = lane.target.spec.route,
                target = lane.target.spec.name,
                accepted,
                delivered = m.delivered.get(),
                failed = m.failed.get(),
                dropped = m.dropped(),
                retries = m.retries.get(),
                depth = lane.depth(),
                inflight = m.inflight.get(),
                circuit_open = m.circuit_open.get() == 1,
                "lane"
            );
        });
    }
}
