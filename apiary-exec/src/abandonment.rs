//! Task abandonment: a forager gives up a flower patch that keeps failing her. A task that fails
//! on `max_failures` bees (default 3) is abandoned, with a diagnostic listing every failure.

use std::fmt;
use std::future::Future;

use datafusion::execution::runtime_env::RuntimeEnv;

use crate::error::{ExecError, Result};
use crate::pool::{BeePool, Chamber, Spill};

/// One failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Where it ran (`bee 2`, or `node-a/bee 1` in a swarm).
    pub bee: String,
    /// The error, as text.
    pub error: String,
}

/// Why a task was abandoned: each failure, in order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Diagnostic {
    /// The task's name, as the caller gave it.
    pub task: String,
    /// Every failed attempt, in order.
    pub failures: Vec<Failure>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "task {} abandoned after {} failures:",
            self.task,
            self.failures.len()
        )?;
        for (i, x) in self.failures.iter().enumerate() {
            write!(f, "\n  {}. on {}: {}", i + 1, x.bee, x.error)?;
        }
        Ok(())
    }
}

/// What to do after a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Try again, elsewhere.
    Retry,
    /// Stop: the task failed on `max_failures` bees; the diagnostic lists why.
    Abandon(Diagnostic),
}

/// The failures of one task so far.
#[derive(Debug, Clone)]
pub struct TaskFailures {
    task: String,
    max_failures: usize,
    failures: Vec<Failure>,
}

impl TaskFailures {
    /// A task named `task`, abandoned after `max_failures` failures (at least one).
    pub fn new(task: impl Into<String>, max_failures: usize) -> Self {
        Self {
            task: task.into(),
            max_failures: max_failures.max(1),
            failures: vec![],
        }
    }

    /// Records a failure on `bee`; abandons the task at the limit.
    pub fn record(&mut self, bee: impl Into<String>, error: impl fmt::Display) -> Verdict {
        self.failures.push(Failure {
            bee: bee.into(),
            error: error.to_string(),
        });
        if self.failures.len() >= self.max_failures {
            Verdict::Abandon(self.diagnostic())
        } else {
            Verdict::Retry
        }
    }

    /// The failures so far, in order.
    pub fn failures(&self) -> &[Failure] {
        &self.failures
    }

    /// What an abandonment reports: the task and every failure.
    pub fn diagnostic(&self) -> Diagnostic {
        Diagnostic {
            task: self.task.clone(),
            failures: self.failures.clone(),
        }
    }
}

impl BeePool {
    /// Runs `task` in a one-bee chamber; after a failure tries again on another bee, until it
    /// succeeds or has failed on `max_failures` bees, then abandons it with a diagnostic.
    pub async fn run_with_abandonment<T, F, Fut>(
        &self,
        name: &str,
        base: &RuntimeEnv,
        max_failures: usize,
        task: F,
    ) -> Result<T>
    where
        F: Fn(Chamber) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut failures = TaskFailures::new(name, max_failures);
        let mut tried: Vec<usize> = vec![];
        loop {
            let chamber = self
                .acquire_avoiding(1, base, Spill::ToScratch, &tried)
                .await?;
            let bee = chamber.bees()[0];
            match task(chamber).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    tried.push(bee);
                    if tried.len() >= self.bees() {
                        tried.clear();
                    }
                    if let Verdict::Abandon(d) = failures.record(format!("bee {bee}"), &e) {
                        return Err(ExecError::Abandoned(Box::new(d)));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abandons_at_the_limit_listing_every_failure() {
        let mut t = TaskFailures::new("q1/task 3", 3);
        assert_eq!(t.record("bee 0", "disk full"), Verdict::Retry);
        assert_eq!(t.record("bee 1", "timeout"), Verdict::Retry);
        let Verdict::Abandon(d) = t.record("bee 2", "boom") else {
            panic!("not abandoned");
        };
        let text = d.to_string();
        assert!(
            text.starts_with("task q1/task 3 abandoned after 3 failures:"),
            "{text}"
        );
        for part in [
            "1. on bee 0: disk full",
            "2. on bee 1: timeout",
            "3. on bee 2: boom",
        ] {
            assert!(text.contains(part), "{text}");
        }
    }
}
