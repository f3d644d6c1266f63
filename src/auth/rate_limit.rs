//! A route's `rate_limit`: a token bucket of `burst` events refilled at `events` per `per`,
//! kept as one atomic (the generic cell rate algorithm: the bucket is the "theoretical arrival
//! time" of the next event), so a request takes its token without a lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

use crate::spec::RateLimit;

pub struct Limiter {
    /// Nanoseconds between two events at the sustained rate.
    interval: u64,
    /// How far ahead of now the next arrival time may be: `burst - 1` intervals.
    tolerance: u64,
    /// The time (nanoseconds since `start`) at which the bucket is full again.
    full_at: AtomicU64,
    start: Instant,
}

impl Limiter {
    pub fn new(limit: &RateLimit) -> Limiter {
        let interval = limit.per.as_nanos() / u128::from(limit.events.max(1));
        let interval = u64::try_from(interval).unwrap_or(u64::MAX).max(1);
        Limiter {
            interval,
            tolerance: interval.saturating_mul(limit.burst.saturating_sub(1)),
            full_at: AtomicU64::new(0),
            start: Instant::now(),
        }
    }

    /// Takes one event's token, or says how long until one is there.
    pub fn take(&self) -> Result<(), Duration> {
        let now = self.start.elapsed().as_nanos() as u64;
        let mut full_at = self.full_at.load(Ordering::Relaxed);
        loop {
            let from = full_at.max(now);
            if from - now > self.tolerance {
                return Err(Duration::from_nanos(from - now - self.tolerance));
            }
            match self.full_at.compare_exchange_weak(
                full_at,
                from.saturating_add(self.interval),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(current) => full_at = current,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_the_sustained_rate() {
        let limiter = Limiter::new(&RateLimit {
            events: 10,
            per: Duration::from_secs(1),
            burst: 3,
        });
        assert!((0..3).all(|_| limiter.take().is_ok()), "the burst");
        let wait = limiter.take().unwrap_err();
        assert_eq!(
            wait,
            Duration::from_millis(100),
            "one interval to the next token"
        );
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(limiter.take().is_ok());
        assert!(limiter.take().is_err());
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(
            (0..3).all(|_| limiter.take().is_ok()),
            "full again, no more"
        );
        assert!(limiter.take().is_err());
    }
}
