//! Whether a backend may be sent requests: the verdict of its active checks (`health:` of the
//! route, a GET of its path every interval) and passive ejection (the target's `breaker`:
//! after `failures` consecutive failed tries the backend is left out for `cooldown`, doubled
//! each time it fails again on its first try back, up to `max_cooldown`; a success resets
//! both).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::spec::BreakerPolicy;

/// Milliseconds since the first look at the clock: what ejection deadlines are kept in.
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

pub struct Health {
    policy: BreakerPolicy,
    /// What the active checks say (true until they say otherwise, and without `health:`).
    checked: AtomicBool,
    /// Failed tries in a row.
    failures: AtomicU32,
    /// Ejections in a row (each doubles the next cool-down).
    ejections: AtomicU32,
    /// Left out until this ([`now_ms`]); 0: not ejected.
    ejected_until: AtomicU64,
}

/// What a failed try did to the backend.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Kept,
    /// Left out for this long.
    Ejected(Duration),
}

impl Health {
    pub fn new(policy: BreakerPolicy) -> Health {
        Health {
            policy,
            checked: AtomicBool::new(true),
            failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
        }
    }

    /// Whether requests may go to the backend at `now` ([`now_ms`]).
    pub fn available(&self, now: u64) -> bool {
        self.checked.load(Ordering::Relaxed) && self.ejected_until.load(Ordering::Relaxed) <= now
    }

    pub fn checked_healthy(&self) -> bool {
        self.checked.load(Ordering::Relaxed)
    }

    pub fn set_checked(&self, healthy: bool) {
        self.checked.store(healthy, Ordering::Relaxed);
    }

    pub fn succeeded(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if self.ejections.load(Ordering::Relaxed) != 0 {
            self.ejections.store(0, Ordering::Relaxed);
        }
    }

    /// Counts a failed try at `now`; ejects the backend when it is one too many.
    pub fn failed(&self, now: u64) -> Verdict {
        // Tries begun before the ejection that end in failure now say nothing new: only a
        // failure after the cool-down doubles the next one.
        if self.ejected_until.load(Ordering::Relaxed) > now {
            return Verdict::Kept;
        }
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < self.policy.failures {
            return Verdict::Kept;
        }
        let ejections = self.ejections.fetch_add(1, Ordering::Relaxed);
        let cooldown = self
            .policy
            .cooldown
            .saturating_mul(1 << ejections.min(16))
            .min(self.policy.max_cooldown);
        self.ejected_until
            .store(now + cooldown.as_millis() as u64, Ordering::Relaxed);
        // Back from the cool-down, one more failure ejects it again, for twice as long.
        self.failures
            .store(self.policy.failures.saturating_sub(1), Ordering::Relaxed);
        Verdict::Ejected(cooldown)
    }
}

/// One backend's active checks: passed and failed checks in a row, against the thresholds.
pub struct Checks {
    pub passed: u32,
    pub failed: u32,
}

impl Checks {
    /// Records one check; returns the new verdict if it changes.
    pub fn record(
        &mut self,
        passed: bool,
        healthy: bool,
        (unhealthy_after, healthy_after): (u32, u32),
    ) -> Option<bool> {
        if passed {
            self.passed += 1;
            self.failed = 0;
            (!healthy && self.passed >= healthy_after).then_some(true)
        } else {
            self.failed += 1;
            self.passed = 0;
            (healthy && self.failed >= unhealthy_after).then_some(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            failures: 2,
            cooldown: Duration::from_millis(100),
            max_cooldown: Duration::from_millis(300),
        }
    }

    #[test]
    fn ejection_follows_failures_in_a_row_and_grows_until_a_success() {
        let health = Health::new(policy());
        assert_eq!(health.failed(1000), Verdict::Kept);
        health.succeeded();
        assert_eq!(health.failed(1000), Verdict::Kept);
        assert_eq!(
            health.failed(1000),
            Verdict::Ejected(Duration::from_millis(100))
        );
        assert!(!health.available(1050) && health.available(1100));
        assert_eq!(
            health.failed(1050),
            Verdict::Kept,
            "in flight before the ejection"
        );
        assert_eq!(
            health.failed(1100),
            Verdict::Ejected(Duration::from_millis(200))
        );
        assert_eq!(
            health.failed(1300),
            Verdict::Ejected(Duration::from_millis(300))
        );
        health.succeeded();
        assert_eq!(health.failed(2000), Verdict::Kept);
    }

    #[test]
    fn checks_change_the_verdict_after_their_thresholds() {
        let mut checks = Checks {
            passed: 0,
            failed: 0,
        };
        assert_eq!(checks.record(false, true, (2, 2)), None);
        assert_eq!(checks.record(false, true, (2, 2)), Some(false));
        assert_eq!(checks.record(true, false, (2, 2)), None);
        assert_eq!(checks.record(true, false, (2, 2)), Some(true));
    }
}
