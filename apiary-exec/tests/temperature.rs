//! The colony temperature follows the pool's real state, and regulates writes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use apiary_catalog::WriteAdmission;
use apiary_exec::{Band, BeePool, Colony, NodeConfig, Regulation, Spill};
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::execution::runtime_env::RuntimeEnv;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_bees_reserved_memory_and_a_queue_heat_the_colony() {
    let scratch = tempfile::tempdir().unwrap();
    let pool = BeePool::new(NodeConfig::fixed(2, 64 << 20, scratch.path()).with_queue_capacity(4))
        .unwrap();
    let colony = Colony::new(
        pool.clone(),
        Regulation {
            max_throttle: Duration::from_millis(400),
            ..Regulation::default()
        },
    );
    let runtime = Arc::new(RuntimeEnv::default());
    assert_eq!(colony.temperature().band, Band::Cold);
    let (_, throttle, refuse) = colony.verdict();
    assert_eq!(
        (throttle, refuse),
        (None, false),
        "a cold colony does not throttle"
    );
    colony.admit("h.b.f").await.unwrap();

    // Both bees busy: half way (ideal), however many bees.
    let a = pool.acquire(1, &runtime, Spill::ToScratch).await.unwrap();
    let b = pool.acquire(1, &runtime, Spill::ToScratch).await.unwrap();
    assert_eq!(
        colony.temperature().band,
        Band::Ideal,
        "{:?}",
        colony.temperature()
    );
    // … and most of their memory reserved, nothing waiting yet: hot (0.5 + 0.4 × 0.8 = 0.82).
    let mut reservations = vec![];
    for c in [&a, &b] {
        let r = MemoryConsumer::new("load").register(&c.runtime().memory_pool);
        r.try_grow((64 << 20) * 80 / 100).unwrap();
        reservations.push(r);
    }
    assert_eq!(pool.reserved(), 2 * ((64 << 20) * 80 / 100));
    let t = colony.temperature();
    assert_eq!(t.band, Band::Hot, "{t:?}");
    let (_, throttle, refuse) = colony.verdict();
    assert!(
        throttle.is_some() && !refuse,
        "a hot colony throttles writes"
    );
    let mut waiting = vec![];
    let t0 = Instant::now();
    colony.admit("h.b.f").await.unwrap();
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(20),
        "a hot colony throttles writes: {waited:?}"
    );

    // Tasks queueing on top: critical, and writes are refused with a retryable error.
    for _ in 0..2 {
        let (pool, runtime) = (pool.clone(), Arc::clone(&runtime));
        waiting.push(tokio::spawn(async move {
            pool.acquire(1, &runtime, Spill::ToScratch)
                .await
                .map(|_| ())
        }));
    }
    while pool.waiting() < 2 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let t = colony.temperature();
    assert_eq!(t.band, Band::Critical, "{t:?}");
    let err = colony.admit("h.b.f").await.unwrap_err();
    assert!(err.is_retryable());
    assert!(
        err.to_string()
            .contains("write to h.b.f refused: the colony is critical"),
        "{err}"
    );

    // Cooling down: everything is released, and writes pass again.
    drop(reservations);
    drop((a, b));
    for w in waiting {
        w.await.unwrap().unwrap();
    }
    assert_eq!(colony.temperature().band, Band::Cold);
    colony.admit("h.b.f").await.unwrap();
}
