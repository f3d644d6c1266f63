//! The lanes' delivery workers over a proxy's life: started with the server, waited for by
//! the drain at shutdown, and what they left undelivered counted and logged.

use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::fan_out::delivery;
use crate::table::RouteTable;

/// How often a drain checks whether every lane is empty.
const DRAIN_POLL: Duration = Duration::from_millis(10);

/// Spawns `concurrency` supervised delivery workers per lane: those of durable lanes, and
/// those of memory lanes.
pub fn start<T: RouteTable>(table: &T) -> (JoinSet<()>, JoinSet<()>) {
    let (mut durable, mut memory) = (JoinSet::new(), JoinSet::new());
    table.lanes(&mut |lane| {
        let workers = if lane.queue.is_durable() {
            &mut durable
        } else {
            &mut memory
        };
        for _ in 0..lane.target.spec.delivery.concurrency {
            let lane = lane.clone();
            workers.spawn(async move { delivery::supervise(&lane).await });
        }
    });
    (durable, memory)
}

/// Waits until no durable lane (if `durable`, else no memory lane) has events a drain waits
/// for, or the deadline.
pub async fn wait_for_empty_lanes<T: RouteTable>(table: &T, deadline: Instant, durable: bool) {
    let busy = || {
        let mut busy = false;
        table.lanes(&mut |lane| {
            busy |= lane.queue.is_durable() == durable && lane.undrained() > 0;
        });
        busy
    };
    while busy() && Instant::now() < deadline {
        tokio::time::sleep(DRAIN_POLL).await;
    }
}

/// Counts what the drain did not deliver as dropped (reason `shutdown`) and logs it per lane.
/// Events held by a worker were counted when the worker stopped. A durable lane drops
/// nothing: what it did not deliver stays in its log.
pub fn report_leftovers<T: RouteTable>(table: &T) {
    table.lanes(&mut |lane| {
        if lane.queue.is_durable() {
            tracing::info!(
                route = lane.target.spec.route,
                target = lane.target.spec.name,
                waiting = lane.depth(),
                "durable lane stopped: what it holds stays in its log"
            );
            return;
        }
        let waiting = lane.queue.clear() as u64;
        lane.metrics.dropped_shutdown.inc_by(waiting);
        let undelivered = lane.metrics.dropped_shutdown.get();
        if undelivered > 0 {
            tracing::warn!(
                route = lane.target.spec.route,
                target = lane.target.spec.name,
                undelivered,
                "lane stopped with undelivered events"
            );
        } else {
            tracing::info!(
                route = lane.target.spec.route,
                target = lane.target.spec.name,
                undelivered,
                "lane drained"
            );
        }
    });
}
