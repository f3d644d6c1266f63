//! What a durable route's log counts: its syncs, its failed file operations and the damage
//! found in it (`fanout_log_*{route}`).

use prometheus::{IntCounter, Opts, Registry};

use crate::spec::RouteSpec;

/// A file operation of the log that can fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Writing a group of records.
    Write,
    /// Syncing a segment (`fdatasync`) or the directory naming it.
    Sync,
    /// Creating the next segment.
    Roll,
    /// Saving a lane's position.
    SavePosition,
    /// A lane reading a record (it tries again: a record is never skipped for an I/O error).
    Read,
}

impl Op {
    pub const ALL: [Op; 5] = [Op::Write, Op::Sync, Op::Roll, Op::SavePosition, Op::Read];

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Write => "write",
            Op::Sync => "sync",
            Op::Roll => "roll",
            Op::SavePosition => "save_position",
            Op::Read => "read",
        }
    }
}

pub struct LogMetrics {
    /// Regions of damaged records found (each at least one record), skipped or cut.
    pub corrupt_records: IntCounter,
    /// Syncs of the log's segments (`fsync: always`: one per group; a period: one per period
    /// with writes; `never`: none).
    pub syncs: IntCounter,
    /// Failed file operations, one counter per [`Op`] in `Op::ALL` order.
    errors: [IntCounter; Op::ALL.len()],
}

impl LogMetrics {
    pub fn new(route: &RouteSpec) -> LogMetrics {
        let opts = |name: &str, help: &str| Opts::new(name, help).const_label("route", route.name);
        let counter = |opts| IntCounter::with_opts(opts).expect("counter options are valid");
        LogMetrics {
            corrupt_records: counter(opts(
                "fanout_log_corrupt_records_total",
                "Damaged records found in the route's log (each region counted once), skipped.",
            )),
            syncs: counter(opts(
                "fanout_log_syncs_total",
                "fdatasync calls that made the route's log durable.",
            )),
            errors: Op::ALL.map(|op| {
                counter(
                    opts(
                        "fanout_log_errors_total",
                        "Failed file operations of the route's log, by operation.",
                    )
                    .const_label("op", op.as_str()),
                )
            }),
        }
    }

    pub fn error(&self, op: Op) -> &IntCounter {
        &self.errors[op as usize]
    }

    pub fn register(&self, registry: &Registry) {
        let collectors = [&self.corrupt_records, &self.syncs]
            .into_iter()
            .chain(&self.errors);
        for counter in collectors {
            registry
                .register(Box::new(counter.clone()))
                .expect("every route is unique, so no metric is registered twice");
        }
    }
}
