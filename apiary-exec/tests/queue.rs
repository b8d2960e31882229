//! When every bee is busy, tasks wait in a bounded, first-come-first-served queue.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use apiary_exec::{BeePool, ExecError, NodeConfig, Spill};
use datafusion::execution::runtime_env::RuntimeEnv;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_tasks_are_served_in_order_and_the_queue_is_bounded() {
    let scratch = tempfile::tempdir().unwrap();
    let pool = BeePool::new(NodeConfig::fixed(1, 64 << 20, scratch.path()).with_queue_capacity(3))
        .unwrap();
    let runtime = Arc::new(RuntimeEnv::default());
    let first = pool.acquire(1, &runtime, Spill::ToScratch).await.unwrap();
    let order = Arc::new(Mutex::new(vec![]));
    let mut waiters = vec![];
    for i in 0..3 {
        let (p, runtime, order) = (pool.clone(), Arc::clone(&runtime), Arc::clone(&order));
        waiters.push(tokio::spawn(async move {
            let chamber = p.acquire(1, &runtime, Spill::ToScratch).await.unwrap();
            order.lock().unwrap().push(i);
            tokio::time::sleep(Duration::from_millis(10)).await;
            drop(chamber);
        }));
        // Queue them in a known order.
        while pool.waiting() < i + 1 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    // A fourth waiter is one too many.
    let err = pool
        .acquire(1, &runtime, Spill::ToScratch)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ExecError::QueueFull {
                waiting: 3,
                capacity: 3
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("retry later"));
    drop(first);
    for w in waiters {
        w.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2]);
    assert_eq!(pool.status().tasks, 4);
    let err = pool
        .acquire(2, &runtime, Spill::ToScratch)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("asks for 2 bees but this node has 1"),
        "{err}"
    );
}
