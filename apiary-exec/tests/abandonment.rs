//! A task that keeps failing is abandoned after three bees, with every failure listed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use apiary_exec::{BeePool, ExecError, NodeConfig};
use datafusion::common::DataFusionError;
use datafusion::execution::runtime_env::RuntimeEnv;

#[tokio::test]
async fn a_failing_task_is_abandoned_after_three_bees() {
    let scratch = tempfile::tempdir().unwrap();
    let pool = BeePool::new(NodeConfig::fixed(3, 64 << 20, scratch.path())).unwrap();
    let runtime = RuntimeEnv::default();
    let tries = Arc::new(AtomicUsize::new(0));
    let err = pool
        .run_with_abandonment("fragment 7", &runtime, 3, |chamber| {
            let tries = Arc::clone(&tries);
            async move {
                tries.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(ExecError::DataFusion(DataFusionError::Execution(format!(
                    "cell unreadable on bee {}",
                    chamber.bees()[0]
                ))))
            }
        })
        .await
        .unwrap_err();
    assert_eq!(tries.load(Ordering::SeqCst), 3);
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
    let pool = BeePool::new(NodeConfig::fixed(2, 64 << 20, scratch.path())).unwrap();
    let runtime = RuntimeEnv::default();
    let tries = Arc::new(AtomicUsize::new(0));
    let bee = pool
        .run_with_abandonment("fragment 1", &runtime, 3, |chamber| {
            let tries = Arc::clone(&tries);
            async move {
                if tries.fetch_add(1, Ordering::SeqCst) == 0 {
                    return Err(ExecError::DataFusion(DataFusionError::Execution(
                        "flaky".into(),
                    )));
                }
                Ok(chamber.bees()[0])
            }
        })
        .await
        .unwrap();
    assert_eq!((tries.load(Ordering::SeqCst), bee), (2, 1));
}
