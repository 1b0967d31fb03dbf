//! Retries with exponential backoff and jitter. The budget counts failures
//! in a row: any progress (an acknowledged chunk) starts it afresh, so a
//! long upload over a link that drops every few minutes still finishes,
//! while a server that stays down is given up on in bounded time.

use crate::error::Error;
use crate::source::random_u64;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Failed attempts in a row before giving up (0: never retry).
    pub retries: u32,
    /// Time since the first failure of a row after which no retry starts.
    pub max_time: Duration,
    /// The first delay; each next one doubles, up to `max_delay`.
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 10,
            max_time: Duration::from_secs(600),
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

pub struct Backoff<'a> {
    policy: &'a RetryPolicy,
    failures: u32,
    first_failure: Option<Instant>,
    /// Every retry of this run, for the report.
    pub retried: u32,
}

impl<'a> Backoff<'a> {
    pub fn new(policy: &'a RetryPolicy) -> Self {
        Backoff {
            policy,
            failures: 0,
            first_failure: None,
            retried: 0,
        }
    }

    pub fn progressed(&mut self) {
        self.failures = 0;
        self.first_failure = None;
    }

    /// After a failed attempt: `err` back when it is not worth retrying or
    /// the budget is spent; otherwise the delay to wait (with
    /// `on_retry` told first) before the next attempt.
    pub fn failed(
        &mut self,
        err: Error,
        on_retry: impl FnOnce(&Error, Duration, u32),
    ) -> Result<(), Error> {
        let asked = match &err {
            Error::Transient(_) => Duration::ZERO,
            Error::Throttled { after, .. } => *after,
            _ => return Err(err),
        };
        let first = *self.first_failure.get_or_insert_with(Instant::now);
        self.failures += 1;
        // The server's wish, if it has one, within the longest delay.
        let delay = self.delay().max(asked.min(self.policy.max_delay));
        if self.failures > self.policy.retries || first.elapsed() + delay > self.policy.max_time {
            return Err(Error::RetriesExhausted {
                attempts: self.failures,
                last: Box::new(err),
            });
        }
        self.retried += 1;
        on_retry(&err, delay, self.failures);
        std::thread::sleep(delay);
        Ok(())
    }

    /// Between half and all of base × 2^(failures-1), capped.
    fn delay(&self) -> Duration {
        let doubling = 1u32 << (self.failures - 1).min(20);
        let full = self
            .policy
            .base_delay
            .saturating_mul(doubling)
            .min(self.policy.max_delay);
        let half = full / 2;
        let spread = half.as_nanos() as u64;
        half + Duration::from_nanos(if spread == 0 {
            0
        } else {
            random_u64() % spread
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_with_jitter_and_the_budget_ends_retries() {
        let policy = RetryPolicy {
            retries: 3,
            max_time: Duration::from_secs(60),
            base_delay: Duration::from_millis(8),
            max_delay: Duration::from_millis(20),
        };
        let mut backoff = Backoff::new(&policy);
        let mut delays = Vec::new();
        for _ in 0..3 {
            backoff
                .failed(Error::Transient("x".into()), |_, delay, _| {
                    delays.push(delay)
                })
                .unwrap();
        }
        assert!(delays[0] >= Duration::from_millis(4) && delays[0] <= Duration::from_millis(8));
        assert!(delays[1] >= Duration::from_millis(8) && delays[1] <= Duration::from_millis(16));
        assert!(delays[2] >= Duration::from_millis(10) && delays[2] <= Duration::from_millis(20));
        let last = backoff.failed(Error::Transient("down".into()), |_, _, _| {
            panic!("no retry")
        });
        assert!(matches!(
            last,
            Err(Error::RetriesExhausted { attempts: 4, .. })
        ));
        // Progress gives a new budget; a refusal is never retried.
        backoff.progressed();
        backoff
            .failed(Error::Transient("x".into()), |_, _, _| {})
            .unwrap();
        let throttled = Error::Throttled {
            message: "busy".into(),
            after: Duration::from_millis(15),
        };
        let mut waited = Duration::ZERO;
        backoff
            .failed(throttled, |_, delay, _| waited = delay)
            .unwrap();
        assert!(waited >= Duration::from_millis(15), "{waited:?}");
        let refused = Error::Rejected {
            status: 400,
            message: "no".into(),
        };
        assert!(matches!(
            backoff.failed(refused, |_, _, _| panic!()),
            Err(Error::Rejected { .. })
        ));
        assert_eq!(backoff.retried, 5);
    }
}
