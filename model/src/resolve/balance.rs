//! Balance routes (`mode: balance`): how a route picks a backend and fails over (`methods`,
//! `strategy`, `health`, `retry`, `retry_non_idempotent`, a target's `weight`), and the fields
//! each mode has alone. A field of the other mode, set on a route or target, is reported where
//! it is written; one inherited from `defaults:` is simply unused.

use std::time::Duration;

use super::Checker;
use crate::model::{leak_str, status_set};
use crate::raw;
use crate::spec::{BalancePolicy, HealthCheck, MethodSet, Mode};
use crate::units;

const FANOUT_ONLY: &str =
    "applies to fanout routes only: a balance route relays each request to one backend";
const BALANCE_ONLY: &str = "applies to balance routes only (mode: balance)";

/// The most tries a balance route may make for one request.
const MAX_ATTEMPTS: u64 = 10;
/// The largest weight: shares from 1 to 1000 are precise enough, and keep a smooth weighted
/// round robin's sums small.
const MAX_WEIGHT: u64 = 1000;

impl Checker<'_> {
    /// Reports the route-level fields that `mode` does not use.
    pub(super) fn check_route_fields_of_mode(
        &mut self,
        raw: &raw::Route,
        mode: Mode,
        base: &str,
        context: &str,
    ) {
        let (fields, message): ([(&str, bool); 4], &str) = match mode {
            Mode::Balance => (
                [
                    ("storage", raw.storage.is_some()),
                    ("disk_buffer", raw.disk_buffer.is_some()),
                    ("fsync", raw.fsync.is_some()),
                    ("idempotency_window", raw.idempotency_window.is_some()),
                ],
                FANOUT_ONLY,
            ),
            Mode::Fanout => {
                if raw.retry.is_some() {
                    let message = format!("{BALANCE_ONLY}: set retry per target or in defaults");
                    self.report_field(base, context, "retry", message);
                }
                (
                    [
                        ("methods", raw.methods.is_some()),
                        ("strategy", raw.strategy.is_some()),
                        ("health", raw.health.is_some()),
                        ("retry_non_idempotent", raw.retry_non_idempotent.is_some()),
                    ],
                    BALANCE_ONLY,
                )
            }
        };
        for (field, set) in fields {
            if set {
                self.report_field(base, context, field, message.into());
            }
        }
    }

    /// Reports the target-level fields that `mode` does not use, and returns the target's own
    /// policy layer without them, so that they are not checked a second time.
    pub(super) fn target_policy_of_mode(
        &mut self,
        raw: &raw::Target,
        mode: Mode,
        base: &str,
        context: &str,
    ) -> raw::Policy {
        let own = raw.policy();
        match mode {
            Mode::Fanout => {
                if raw.weight.is_some() {
                    self.report_field(base, context, "weight", BALANCE_ONLY.into());
                }
                own
            }
            Mode::Balance => {
                for (field, set) in [
                    ("buffer", raw.buffer.is_some()),
                    ("buffer_bytes", raw.buffer_bytes.is_some()),
                    ("overflow", raw.overflow.is_some()),
                    ("concurrency", raw.concurrency.is_some()),
                    ("batch", raw.batch.is_some()),
                    ("max_age", raw.max_age.is_some()),
                    ("sign", raw.sign.is_some()),
                ] {
                    if set {
                        self.report_field(base, context, field, FANOUT_ONLY.into());
                    }
                }
                if raw.retry.is_some() {
                    let message =
                        "set retry on the route: a balance route's tries go to other backends";
                    self.report_field(base, context, "retry", message.into());
                }
                // What a balance target uses: the time to its response head, how it is
                // spoken to, and when it is ejected.
                raw::Policy {
                    timeout: own.timeout,
                    http2: own.http2,
                    breaker: own.breaker,
                    ..raw::Policy::default()
                }
            }
        }
    }

    /// The checked `weight` of a balance route's target.
    pub(super) fn weight(&mut self, weight: Option<u64>, base: &str, context: &str) -> u32 {
        let message = match weight {
            None => return 1,
            Some(0) => "must be at least 1; remove the target to send it nothing".to_owned(),
            Some(weight) if weight > MAX_WEIGHT => format!("must be at most {MAX_WEIGHT}"),
            Some(weight) => return u32::try_from(weight).unwrap_or(u32::MAX),
        };
        self.report_field(base, context, "weight", message);
        1
    }

    /// The checked balance policy of the balance route at `base`.
    pub(super) fn balance_policy(
        &mut self,
        raw: &raw::Route,
        base: &str,
        context: &str,
    ) -> BalancePolicy {
        let mut policy = BalancePolicy::DEFAULT;
        if let Some(names) = &raw.methods {
            let (methods, problems) = method_set(names);
            policy.methods = methods;
            for (field, message) in problems {
                self.report_field(base, context, &field, message);
            }
        }
        if let Some(strategy) = raw.strategy {
            policy.strategy = strategy.0;
        }
        policy.health = raw
            .health
            .as_ref()
            .map(|health| self.health(health, base, context));
        if let Some(retry) = &raw.retry {
            for (field, set) in [
                ("retry.backoff", retry.backoff.is_some()),
                ("retry.max_backoff", retry.max_backoff.is_some()),
            ] {
                if set {
                    let message = "a balance route tries another backend at once: no backoff";
                    self.report_field(base, context, field, message.into());
                }
            }
            if let Some(attempts) = retry.attempts {
                if !(1..=MAX_ATTEMPTS).contains(&attempts) {
                    let message =
                        format!("must be from 1 to {MAX_ATTEMPTS} (the first try counts)");
                    self.report_field(base, context, "retry.attempts", message);
                }
                policy.attempts = u32::try_from(attempts).unwrap_or(u32::MAX);
            }
            if let Some(statuses) = &retry.on {
                match statuses.iter().find(|s| !(100..=599).contains(*s)) {
                    Some(bad) => {
                        let message = format!("{bad} is not an HTTP status (100-599)");
                        self.report_field(base, context, "retry.on", message);
                    }
                    None => {
                        policy.retry_on = status_set(
                            statuses
                                .iter()
                                .map(|&s| u16::try_from(s).unwrap_or(u16::MAX))
                                .collect(),
                        );
                    }
                }
            }
        }
        policy.retry_non_idempotent = raw.retry_non_idempotent.unwrap_or(false);
        policy
    }

    fn health(&mut self, raw: &raw::Health, base: &str, context: &str) -> HealthCheck {
        let interval = raw.interval.map_or(Duration::from_secs(5), |d| d.0);
        let health = HealthCheck {
            path: leak_str(raw.path.clone()),
            interval,
            timeout: raw
                .timeout
                .map_or(Duration::from_secs(1).min(interval), |d| d.0),
            unhealthy_after: count(raw.unhealthy_after.unwrap_or(3)),
            healthy_after: count(raw.healthy_after.unwrap_or(2)),
        };
        let mut problems: Vec<(&str, String)> = Vec::new();
        if !health.path.starts_with('/') {
            problems.push(("path", format!("\"{}\" must start with '/'", health.path)));
        } else if !health.path.bytes().all(|b| b.is_ascii_graphic()) {
            let message = format!("\"{}\" must be printable ASCII without spaces", health.path);
            problems.push(("path", message));
        }
        // An unset timeout is the interval's when that is shorter: only its own zero counts.
        for (field, zero) in [
            ("interval", health.interval.is_zero()),
            ("timeout", raw.timeout.is_some_and(|d| d.0.is_zero())),
        ] {
            if zero {
                problems.push((field, "must be longer than 0s".into()));
            }
        }
        if health.timeout > health.interval && !health.interval.is_zero() {
            let message = format!(
                "{} must not be longer than the interval ({}): one check ends before the next",
                units::format_duration(health.timeout),
                units::format_duration(health.interval)
            );
            problems.push(("timeout", message));
        }
        for (field, value) in [
            ("unhealthy_after", health.unhealthy_after),
            ("healthy_after", health.healthy_after),
        ] {
            if value == 0 {
                problems.push((field, "must be at least 1".into()));
            }
        }
        for (field, message) in problems {
            self.report_field(base, context, &format!("health.{field}"), message);
        }
        health
    }
}

/// The set of `methods:`, and the problems of the list as (field, message).
fn method_set(names: &[String]) -> (MethodSet, Vec<(String, String)>) {
    let mut bits = 0;
    let mut problems = Vec::new();
    if names.is_empty() {
        let message = "list at least one method, or leave out `methods:` for every method";
        problems.push(("methods".to_owned(), message.to_owned()));
    }
    for (index, name) in names.iter().enumerate() {
        let field = format!("methods[{index}]");
        match MethodSet::bit(name) {
            Some(bit) if bits & bit != 0 => {
                problems.push((field, format!("{name} is listed twice")));
            }
            Some(bit) => bits |= bit,
            None => {
                let uppercase = name.to_ascii_uppercase();
                let message = if MethodSet::bit(&uppercase).is_some() {
                    format!("\"{name}\": methods are uppercase, write {uppercase}")
                } else {
                    format!(
                        "\"{name}\" is not a standard method: use {}",
                        MethodSet::METHODS.join(", ")
                    )
                };
                problems.push((field, message));
            }
        }
    }
    (MethodSet(bits), problems)
}

/// A checked count as a `u32` (a count over its range saturates).
fn count(value: u64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|name| name.to_string()).collect()
    }

    #[test]
    fn methods_become_their_bits() {
        let (set, problems) = method_set(&names(&["GET", "POST"]));
        assert!(problems.is_empty());
        let get = MethodSet::bit("GET").unwrap();
        let post = MethodSet::bit("POST").unwrap();
        assert_eq!(set, MethodSet(get | post));
        assert_eq!(set.names().collect::<Vec<_>>(), ["GET", "POST"]);
        assert!(!set.contains_bit(MethodSet::bit("DELETE").unwrap()));
    }

    #[test]
    fn a_lowercase_method_is_refused_with_its_uppercase_form() {
        let (set, problems) = method_set(&names(&["GET", "post"]));
        assert_eq!(set, MethodSet(MethodSet::bit("GET").unwrap()));
        assert_eq!(
            problems,
            [(
                "methods[1]".to_owned(),
                "\"post\": methods are uppercase, write POST".to_owned()
            )]
        );
    }

    #[test]
    fn unknown_repeated_and_missing_methods_are_refused() {
        let (_, problems) = method_set(&names(&["GET", "FETCH", "GET"]));
        let fields: Vec<&str> = problems.iter().map(|(field, _)| field.as_str()).collect();
        assert_eq!(fields, ["methods[1]", "methods[2]"]);
        assert!(problems[0].1.contains("not a standard method"));
        assert!(problems[1].1.contains("listed twice"));
        let (_, problems) = method_set(&[]);
        assert_eq!(problems[0].0, "methods");
    }
}
