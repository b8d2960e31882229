//! Jittered exponential backoff for commits that lost a race.

use std::time::{Duration, Instant};

/// How long a commit keeps retrying after lost races before it gives up.
///
/// The defaults are generous: a commit only gives up after `max_attempts` lost races or
/// `max_elapsed` of trying, whichever comes first.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Lost races after which a commit gives up. Default 10 000.
    pub max_attempts: u32,
    /// Time of trying after which a commit gives up. Default 5 minutes.
    pub max_elapsed: Duration,
    /// First backoff; each lost race doubles it up to `max_backoff`.
    pub base_backoff: Duration,
    /// The backoff never grows beyond this.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 10_000,
            max_elapsed: Duration::from_secs(300),
            base_backoff: Duration::from_millis(2),
            max_backoff: Duration::from_millis(500),
        }
    }
}

/// One commit's retry state.
pub(crate) struct Backoff<'a> {
    policy: &'a RetryPolicy,
    started: Instant,
    attempts: u32,
    failures: u32,
}

/// Storage errors in a row (each one resolved as "not landed") before a commit gives up.
const MAX_FAILURES: u32 = 10;

impl<'a> Backoff<'a> {
    pub(crate) fn new(policy: &'a RetryPolicy) -> Self {
        Self {
            policy,
            started: Instant::now(),
            attempts: 0,
            failures: 0,
        }
    }

    pub(crate) fn attempts(&self) -> u32 {
        self.attempts
    }

    pub(crate) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Records a failed try (a storage error whose write did not land); sleeps a full-jitter
    /// backoff, or returns false after a few: a store that keeps failing is an error to report,
    /// not a race to wait out.
    pub(crate) async fn failed(&mut self) -> bool {
        self.failures += 1;
        if self.failures > MAX_FAILURES || self.elapsed() >= self.policy.max_elapsed {
            return false;
        }
        self.sleep().await;
        true
    }

    /// Records a lost race; sleeps a full-jitter backoff, or returns false when the budget is spent.
    pub(crate) async fn lost_race(&mut self) -> bool {
        self.attempts += 1;
        if self.attempts >= self.policy.max_attempts || self.elapsed() >= self.policy.max_elapsed {
            return false;
        }
        self.sleep().await;
        true
    }

    async fn sleep(&self) {
        let exp = (self.attempts + self.failures).min(20);
        let cap = self
            .policy
            .base_backoff
            .saturating_mul(1u32 << exp)
            .min(self.policy.max_backoff);
        let jitter = rand::random_range(0..=cap.as_micros().max(1) as u64);
        tokio::time::sleep(Duration::from_micros(jitter)).await;
    }
}
