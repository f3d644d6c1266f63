//! A lane's circuit breaker: after `failures` consecutive failed attempts the lane stops
//! sending for a cool-down, then lets one probe through; a success closes the circuit, a
//! failure doubles the cool-down (up to `max_cooldown`); each pause is jittered (the
//! cool-down and up to a quarter more). While open, delivery workers sleep
//! instead of spending sockets and CPU on a dead target, and events wait in the lane.

use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

use crate::spec::BreakerPolicy;

/// While a probe is out, how often the other workers look again.
const PROBE_POLL: Duration = Duration::from_millis(50);

pub struct Breaker {
    policy: &'static BreakerPolicy,
    state: Mutex<State>,
}

#[derive(Clone, Copy, Debug)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
        cooldown: Duration,
    },
    /// One probe is out; `cooldown` is the one that just ended.
    Probing {
        cooldown: Duration,
    },
}

/// What a worker may do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permit {
    /// Send.
    Send,
    /// Send the one probe that decides whether the circuit closes.
    Probe,
    /// Do not send before then.
    WaitUntil(Instant),
}

/// How the circuit changed with an outcome, for logging and the gauge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    None,
    Opened(Duration),
    Closed,
}

impl Breaker {
    pub fn new(policy: &'static BreakerPolicy) -> Breaker {
        Breaker {
            policy,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        // Every transition is a single assignment: a poisoned lock still holds a valid state.
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn permit(&self) -> Permit {
        let now = Instant::now();
        self.with(|state| match *state {
            State::Closed { .. } => Permit::Send,
            State::Open { until, cooldown } if now >= until => {
                *state = State::Probing { cooldown };
                Permit::Probe
            }
            State::Open { until, .. } => Permit::WaitUntil(until),
            State::Probing { .. } => Permit::WaitUntil(now + PROBE_POLL),
        })
    }

    /// Gives back a probe whose outcome will never be recorded (its worker panicked or was
    /// stopped): the circuit stays open and the next worker may probe at once, instead of every
    /// worker waiting for a probe that is gone.
    pub fn abandon(&self, permit: Permit) {
        if permit != Permit::Probe {
            return;
        }
        let now = Instant::now();
        self.with(|state| {
            if let State::Probing { cooldown } = *state {
                *state = State::Open {
                    until: now,
                    cooldown,
                };
            }
        });
    }

    /// Records the outcome of an attempt made under `permit`. `ok` means the target answered
    /// (even with a permanent error status): it is alive.
    pub fn record(&self, permit: Permit, ok: bool) -> Change {
        let now = Instant::now();
        let policy = self.policy;
        self.with(|state| match (*state, ok) {
            (State::Probing { .. }, true) if permit == Permit::Probe => {
                *state = State::Closed { failures: 0 };
                Change::Closed
            }
            (State::Probing { cooldown }, false) if permit == Permit::Probe => {
                let cooldown = (cooldown * 2).min(policy.max_cooldown);
                *state = State::Open {
                    until: now + jittered(cooldown),
                    cooldown,
                };
                Change::Opened(cooldown)
            }
            (State::Closed { .. }, true) => {
                *state = State::Closed { failures: 0 };
                Change::None
            }
            (State::Closed { failures }, false) if failures + 1 >= policy.failures => {
                *state = State::Open {
                    until: now + jittered(policy.cooldown),
                    cooldown: policy.cooldown,
                };
                Change::Opened(policy.cooldown)
            }
            (State::Closed { failures }, false) => {
                *state = State::Closed {
                    failures: failures + 1,
                };
                Change::None
            }
            // Outcomes of attempts that started before the circuit opened change nothing.
            _ => Change::None,
        })
    }
}

/// An attempt under way with a permit: [`Attempt::record`] says how it went; dropped before
/// that (the worker panicked or was stopped), a probe is given back.
#[must_use]
pub struct Attempt<'a> {
    breaker: &'a Breaker,
    permit: Permit,
    recorded: bool,
}

impl Breaker {
    /// Starts an attempt under `permit` (from [`Breaker::permit`], not `WaitUntil`).
    pub fn attempt(&self, permit: Permit) -> Attempt<'_> {
        Attempt {
            breaker: self,
            permit,
            recorded: false,
        }
    }
}

impl Attempt<'_> {
    pub fn record(mut self, ok: bool) -> Change {
        self.recorded = true;
        self.breaker.record(self.permit, ok)
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.recorded {
            self.breaker.abandon(self.permit);
        }
    }
}

/// The pause of an open circuit: `cooldown` and up to a quarter more, at random, so that the
/// probes of a doubling cool-down do not keep landing in the same phase of a target that
/// flaps with a period dividing it (a target down every other second, cool-downs of 1, 2,
/// 4 s...). Never less than `cooldown`: the lane rests at least that long.
fn jittered(cooldown: Duration) -> Duration {
    cooldown.mul_f64(1.0 + fastrand::f64() / 4.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits out a pause of `cooldown` (jittered up to a quarter more).
    async fn rest(cooldown: Duration) {
        tokio::time::advance(cooldown.mul_f64(1.25)).await;
    }

    #[test]
    fn a_pause_is_the_cooldown_and_at_most_a_quarter_more() {
        for _ in 0..100 {
            let pause = jittered(Duration::from_secs(4));
            assert!(pause >= Duration::from_secs(4) && pause <= Duration::from_secs(5));
        }
    }

    static POLICY: BreakerPolicy = BreakerPolicy {
        failures: 3,
        cooldown: Duration::from_secs(1),
        max_cooldown: Duration::from_secs(4),
    };

    #[tokio::test(start_paused = true)]
    async fn opens_probes_backs_off_and_closes() {
        let breaker = Breaker::new(&POLICY);
        for _ in 0..2 {
            assert_eq!(breaker.record(Permit::Send, false), Change::None);
        }
        assert_eq!(breaker.permit(), Permit::Send);
        assert_eq!(
            breaker.record(Permit::Send, false),
            Change::Opened(Duration::from_secs(1))
        );
        assert!(matches!(breaker.permit(), Permit::WaitUntil(_)));

        rest(Duration::from_secs(1)).await;
        assert_eq!(breaker.permit(), Permit::Probe);
        assert!(
            matches!(breaker.permit(), Permit::WaitUntil(_)),
            "only one probe at a time"
        );
        assert_eq!(
            breaker.record(Permit::Probe, false),
            Change::Opened(Duration::from_secs(2))
        );

        rest(Duration::from_secs(2)).await;
        assert_eq!(breaker.permit(), Permit::Probe);
        assert_eq!(
            breaker.record(Permit::Probe, false),
            Change::Opened(Duration::from_secs(4))
        );
        rest(Duration::from_secs(4)).await;
        assert_eq!(breaker.permit(), Permit::Probe);
        assert_eq!(
            breaker.record(Permit::Probe, false),
            Change::Opened(Duration::from_secs(4)),
            "capped"
        );

        rest(Duration::from_secs(4)).await;
        assert_eq!(breaker.permit(), Permit::Probe);
        assert_eq!(breaker.record(Permit::Probe, true), Change::Closed);
        assert_eq!(breaker.permit(), Permit::Send);
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_whose_outcome_never_comes_is_given_back() {
        let breaker = Breaker::new(&POLICY);
        for _ in 0..3 {
            breaker.record(Permit::Send, false);
        }
        rest(Duration::from_secs(1)).await;
        let probe = breaker.attempt(breaker.permit());
        assert!(matches!(breaker.permit(), Permit::WaitUntil(_)));
        drop(probe); // its worker panicked
        assert_eq!(
            breaker.permit(),
            Permit::Probe,
            "another worker probes at once"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_count() {
        let breaker = Breaker::new(&POLICY);
        breaker.record(Permit::Send, false);
        breaker.record(Permit::Send, false);
        breaker.record(Permit::Send, true);
        breaker.record(Permit::Send, false);
        breaker.record(Permit::Send, false);
        assert_eq!(breaker.permit(), Permit::Send);
    }
}
