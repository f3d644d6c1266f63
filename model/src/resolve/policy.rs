//! Lane and delivery policies, field by field from the layer that set it (built-in defaults <
//! `defaults:` < the target), and their checks: a bad default is reported once, at
//! `defaults:`, not again for every target inheriting it.

use std::time::Duration;

use super::{with_field, Checker};
use crate::model::{self, status_set, DEFAULT_RETRY_STATUSES};
use crate::raw;
use crate::spec::{
    Auth, BatchPolicy, BreakerPolicy, DeliveryPolicy, Fsync, LanePolicy, Mode, Overflow, RateLimit,
    RetryPolicy, Storage,
};
use crate::units;

impl Checker<'_> {
    /// Checks the fields of `policy` that were set at `layer` (a path prefix), so a bad default
    /// is reported once, at `defaults:`, and not again for every target inheriting it.
    pub(super) fn check_policy(&mut self, policy: &Layered, layer: &str, context: &str) {
        let fail = |cx: &mut Self, fields: &[&dyn Sourced], message: &str| {
            if let Some(path) = fields.iter().find_map(|f| f.path_within(layer)) {
                let field = path[layer.len()..].trim_start_matches('.');
                cx.report(path, &with_field(context, field), message.to_owned());
            }
        };
        if policy.buffer.value == 0 {
            fail(self, &[&policy.buffer], "must be at least 1");
        }
        if policy.buffer_bytes.value == 0 {
            fail(self, &[&policy.buffer_bytes], "must be at least 1 byte");
        }
        if policy.concurrency.value == 0 {
            fail(self, &[&policy.concurrency], "must be at least 1");
        }
        if policy.timeout.value.is_zero() {
            fail(self, &[&policy.timeout], "must be longer than 0s");
        }
        if policy.attempts.value == 0 {
            fail(
                self,
                &[&policy.attempts],
                "must be at least 1 (the first attempt counts)",
            );
        }
        if policy.backoff.value > policy.max_backoff.value {
            let message = format!(
                "backoff ({}) must not be longer than max_backoff ({})",
                units::format_duration(policy.backoff.value),
                units::format_duration(policy.max_backoff.value)
            );
            fail(self, &[&policy.backoff, &policy.max_backoff], &message);
        }
        if let Some(bad) = policy
            .retry_on
            .value
            .iter()
            .find(|s| !(100..=599).contains(*s))
        {
            let message = format!("{bad} is not an HTTP status (100-599)");
            fail(self, &[&policy.retry_on], &message);
        }
        if policy.failures.value == 0 {
            fail(self, &[&policy.failures], "must be at least 1");
        }
        if policy.cooldown.value.is_zero() {
            fail(self, &[&policy.cooldown], "must be longer than 0s");
        }
        if policy.batch.value {
            let events = policy.batch_max_events.value;
            if !(1..=model::MAX_BATCH_EVENTS).contains(&events) {
                let message = format!(
                    "must be from 1 to {} (the ids of a batch travel in one header)",
                    model::MAX_BATCH_EVENTS
                );
                fail(self, &[&policy.batch_max_events], &message);
            }
            if policy.batch_max_bytes.value == 0 {
                fail(self, &[&policy.batch_max_bytes], "must be at least 1 byte");
            }
        }
        if policy.max_age.value.is_some_and(|age| age.is_zero()) {
            fail(self, &[&policy.max_age], "must be longer than 0s");
        }
        if policy.cooldown.value > policy.max_cooldown.value {
            let message = format!(
                "cooldown ({}) must not be longer than max_cooldown ({})",
                units::format_duration(policy.cooldown.value),
                units::format_duration(policy.max_cooldown.value)
            );
            fail(self, &[&policy.cooldown, &policy.max_cooldown], &message);
        }
    }
}

/// A setting and where it came from: `None` for the built-in default, else the path of the node
/// that set it.
pub(super) struct Setting<T> {
    pub(super) value: T,
    pub(super) path: Option<String>,
}

trait Sourced {
    fn path_within(&self, layer: &str) -> Option<&str>;
}

impl<T> Sourced for Setting<T> {
    fn path_within(&self, layer: &str) -> Option<&str> {
        self.path
            .as_deref()
            .filter(|p| p.starts_with(layer) && p[layer.len()..].starts_with('.'))
    }
}

impl<T: Clone> Setting<T> {
    fn builtin(value: T) -> Self {
        Setting { value, path: None }
    }

    pub(super) fn over(&self, value: Option<T>, path: String) -> Self {
        match value {
            Some(value) => Setting {
                value,
                path: Some(path),
            },
            None => Setting {
                value: self.value.clone(),
                path: self.path.clone(),
            },
        }
    }
}

/// The route settings and the lane and delivery policies of one target, field by field from
/// the layer that set it.
pub(super) struct Layered {
    pub(super) mode: Setting<Mode>,
    pub(super) storage: Setting<Storage>,
    pub(super) disk_buffer: Setting<u64>,
    pub(super) fsync: Setting<Fsync>,
    /// `None` until set: the default depends on the route's storage.
    pub(super) idempotency_window: Setting<Option<Duration>>,
    /// The `auth:` and `rate_limit:` of `defaults:`, checked there once (`Layered::over`
    /// leaves them as they are: a route's own replace them in `Checker::route`).
    pub(super) auth: Option<Auth>,
    pub(super) rate_limit: Option<RateLimit>,
    pub(super) max_age: Setting<Option<Duration>>,
    pub(super) buffer: Setting<u64>,
    pub(super) buffer_bytes: Setting<u64>,
    pub(super) overflow: Setting<Overflow>,
    pub(super) timeout: Setting<Duration>,
    pub(super) concurrency: Setting<u64>,
    pub(super) attempts: Setting<u64>,
    pub(super) backoff: Setting<Duration>,
    pub(super) max_backoff: Setting<Duration>,
    pub(super) retry_on: Setting<Vec<u64>>,
    pub(super) failures: Setting<u64>,
    pub(super) cooldown: Setting<Duration>,
    pub(super) max_cooldown: Setting<Duration>,
    pub(super) http2: Setting<bool>,
    /// Whether a `batch:` was given at some layer.
    pub(super) batch: Setting<bool>,
    pub(super) batch_max_events: Setting<u64>,
    pub(super) batch_max_bytes: Setting<u64>,
    pub(super) batch_max_wait: Setting<Duration>,
}

impl Layered {
    pub(super) fn builtin() -> Self {
        Layered {
            mode: Setting::builtin(Mode::Fanout),
            storage: Setting::builtin(Storage::Memory),
            disk_buffer: Setting::builtin(1 << 30),
            fsync: Setting::builtin(Fsync::Always),
            idempotency_window: Setting::builtin(None),
            auth: None,
            rate_limit: None,
            max_age: Setting::builtin(None),
            buffer: Setting::builtin(10_000),
            buffer_bytes: Setting::builtin(64 << 20),
            overflow: Setting::builtin(Overflow::DropOldest),
            timeout: Setting::builtin(Duration::from_secs(5)),
            concurrency: Setting::builtin(16),
            attempts: Setting::builtin(5),
            backoff: Setting::builtin(Duration::from_millis(100)),
            max_backoff: Setting::builtin(Duration::from_secs(10)),
            retry_on: Setting::builtin(
                DEFAULT_RETRY_STATUSES
                    .0
                    .iter()
                    .flat_map(|&(first, last)| first..=last)
                    .map(u64::from)
                    .collect(),
            ),
            failures: Setting::builtin(5),
            cooldown: Setting::builtin(Duration::from_secs(1)),
            max_cooldown: Setting::builtin(Duration::from_secs(30)),
            http2: Setting::builtin(false),
            batch: Setting::builtin(false),
            batch_max_events: Setting::builtin(100),
            batch_max_bytes: Setting::builtin(1 << 20),
            batch_max_wait: Setting::builtin(Duration::from_millis(5)),
        }
    }

    /// This policy with the fields `raw` sets (at `base`) replacing it.
    pub(super) fn over(&self, raw: &raw::Policy, base: &str) -> Layered {
        let at = |field: &str| format!("{base}.{field}");
        let retry = raw.retry.clone().unwrap_or_default();
        let breaker = raw.breaker.clone().unwrap_or_default();
        let batch = raw.batch.clone().unwrap_or_default();
        let retry_on = retry.on.map(|mut on| {
            on.sort_unstable();
            on.dedup();
            on
        });
        Layered {
            mode: self.mode.over(raw.mode.map(|m| m.0), at("mode")),
            storage: self.storage.over(raw.storage.map(|s| s.0), at("storage")),
            disk_buffer: self
                .disk_buffer
                .over(raw.disk_buffer.map(|s| s.0), at("disk_buffer")),
            fsync: self.fsync.over(raw.fsync.map(|f| f.0), at("fsync")),
            idempotency_window: self.idempotency_window.over(
                raw.idempotency_window.map(|d| Some(d.0)),
                at("idempotency_window"),
            ),
            auth: self.auth,
            rate_limit: self.rate_limit,
            max_age: self
                .max_age
                .over(raw.max_age.map(|d| Some(d.0)), at("max_age")),
            buffer: self.buffer.over(raw.buffer, at("buffer")),
            buffer_bytes: self
                .buffer_bytes
                .over(raw.buffer_bytes.map(|s| s.0), at("buffer_bytes")),
            overflow: self
                .overflow
                .over(raw.overflow.map(|o| o.0), at("overflow")),
            timeout: self.timeout.over(raw.timeout.map(|d| d.0), at("timeout")),
            concurrency: self.concurrency.over(raw.concurrency, at("concurrency")),
            attempts: self.attempts.over(retry.attempts, at("retry.attempts")),
            backoff: self
                .backoff
                .over(retry.backoff.map(|d| d.0), at("retry.backoff")),
            max_backoff: self
                .max_backoff
                .over(retry.max_backoff.map(|d| d.0), at("retry.max_backoff")),
            retry_on: self.retry_on.over(retry_on, at("retry.on")),
            failures: self.failures.over(breaker.failures, at("breaker.failures")),
            cooldown: self
                .cooldown
                .over(breaker.cooldown.map(|d| d.0), at("breaker.cooldown")),
            max_cooldown: self.max_cooldown.over(
                breaker.max_cooldown.map(|d| d.0),
                at("breaker.max_cooldown"),
            ),
            http2: self.http2.over(raw.http2, at("http2")),
            batch: self
                .batch
                .over(raw.batch.as_ref().map(|_| true), at("batch")),
            batch_max_events: self
                .batch_max_events
                .over(batch.max_events, at("batch.max_events")),
            batch_max_bytes: self
                .batch_max_bytes
                .over(batch.max_bytes.map(|s| s.0), at("batch.max_bytes")),
            batch_max_wait: self
                .batch_max_wait
                .over(batch.max_wait.map(|d| d.0), at("batch.max_wait")),
        }
    }

    /// The lane policy, once checked.
    pub(super) fn lane(&self) -> LanePolicy {
        LanePolicy {
            buffer: to_usize(self.buffer.value),
            buffer_bytes: to_usize(self.buffer_bytes.value),
            overflow: self.overflow.value,
        }
    }

    /// The delivery policy, once checked.
    pub(super) fn delivery(&self) -> DeliveryPolicy {
        DeliveryPolicy {
            timeout: self.timeout.value,
            concurrency: to_usize(self.concurrency.value),
            retry: RetryPolicy {
                attempts: u32::try_from(self.attempts.value).unwrap_or(u32::MAX),
                backoff: self.backoff.value,
                max_backoff: self.max_backoff.value,
                on: status_set(
                    self.retry_on
                        .value
                        .iter()
                        .map(|&s| u16::try_from(s).unwrap_or(u16::MAX))
                        .collect(),
                ),
            },
            breaker: BreakerPolicy {
                failures: u32::try_from(self.failures.value).unwrap_or(u32::MAX),
                cooldown: self.cooldown.value,
                max_cooldown: self.max_cooldown.value,
            },
            batch: self.batch.value.then(|| BatchPolicy {
                max_events: to_usize(self.batch_max_events.value),
                max_bytes: to_usize(self.batch_max_bytes.value),
                max_wait: self.batch_max_wait.value,
            }),
            max_age: self.max_age.value,
        }
    }
}

/// A checked count as a `usize` (on a 32-bit build, a count over its range saturates).
fn to_usize(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}
