//! A task that keeps failing is abandoned after three bees, with every failure listed.

use std::sync::atomic::{AtomicUsize, Ordering};

use apiary_exec::{BeePool, ExecError};
use datafusion::common::DataFusionError;
use datafusion::execution::runtime_env::RuntimeEnv;

use crate::support::{MIB, pool};

#[tokio::test]
async fn a_failing_task_is_abandoned_after_three_bees() {
    let scratch = tempfile::tempdir().unwrap();
    let pool = pool(3, 64 * MIB, scratch.path());
    let (outcome, tries) = tries_of(&pool, "fragment 7", |_, bee| {
        Err::<(), _>(failure(format!("cell unreadable on bee {bee}")))
    })
    .await;
    let err = outcome.unwrap_err();
    assert_eq!(tries, 3);
    let ExecError::Abandoned(d) = &err else {
        panic!("not abandoned: {err}");
    };
    let bees: Vec<&str> = d.failures.iter().map(|f| f.bee.as_str()).collect();
    assert_eq!(
        bees,
        vec!["bee 0", "bee 1", "bee 2"],
        "each try on another bee"
    );
    let text = err.to_string();
    assert!(
        text.starts_with("task fragment 7 abandoned after 3 failures:"),
        "{text}"
    );
    assert!(text.contains("cell unreadable on bee 2"), "{text}");
    assert_eq!(pool.busy(), 0);
}

#[tokio::test]
async fn a_task_that_fails_once_succeeds_on_another_bee() {
    let scratch = tempfile::tempdir().unwrap();
    let pool = pool(2, 64 * MIB, scratch.path());
    let (outcome, tries) = tries_of(&pool, "fragment 1", |try_, bee| {
        if try_ == 0 {
            return Err(failure("flaky".into()));
        }
        Ok(bee)
    })
    .await;
    let bee = outcome.unwrap();
    assert_eq!((tries, bee), (2, 1));
}

/// Runs `task(try, bee)` — the number of the try, from 0, and the first bee of its chamber —
/// as task `name` on `pool`, abandoned after 3 failures; returns its outcome and how many
/// times it was tried.
async fn tries_of<T>(
    pool: &BeePool,
    name: &str,
    task: impl Fn(usize, usize) -> Result<T, ExecError>,
) -> (Result<T, ExecError>, usize) {
    let runtime = RuntimeEnv::default();
    let tries = AtomicUsize::new(0);
    let (tries_ref, task) = (&tries, &task);
    let outcome = pool
        .run_with_abandonment(name, &runtime, 3, |chamber| async move {
            let try_ = tries_ref.fetch_add(1, Ordering::SeqCst);
            task(try_, chamber.bees()[0])
        })
        .await;
    (outcome, tries.load(Ordering::SeqCst))
}

/// A task's failure with `message`.
fn failure(message: String) -> ExecError {
    ExecError::DataFusion(DataFusionError::Execution(message))
}
