//! Deadlines cancel for real: the query's stream is dropped, its work stops, its bees are free.

use std::time::{Duration, Instant};

use crate::support::{MIB, pool, session};
use apiary_exec::Spill;

/// CPU seconds used so far by this process's threads named `name`.
fn cpu_of_threads(name: &str) -> f64 {
    let ticks = 100.0; // USER_HZ on Linux
    let mut total = 0.0;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after "(comm) ": utime is the 12th, stime the 13th.
        let after = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
        let fields: Vec<&str> = after.split_whitespace().collect();
        let utime: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
        let stime: f64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
        total += (utime + stime) / ticks;
    }
    total
}

#[test]
fn a_query_past_its_deadline_stops_and_frees_its_bees() {
    // A runtime of its own, with named threads, so that its CPU use can be told apart.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("deadline-rt")
        .enable_all()
        .build()
        .unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let pool = pool(2, 64 * MIB, scratch.path());
    let ctx = session(&pool);
    rt.block_on(async {
        ctx.sql("SET apiary.timeout_ms = 300").await.unwrap();
        let start = Instant::now();
        let err = ctx
            .sql("SELECT sum(value * 3 % 7) FROM generate_series(1, 100000000000)")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap_err();
        let elapsed = start.elapsed();
        let text = err.to_string();
        assert!(
            text.contains("deadline of 300 ms exceeded while running"),
            "{text}"
        );
        // Stopping is proven by the CPU check below; this only catches a query that ran on
        // regardless (unbounded, it would take hours), with room for a loaded machine.
        assert!(
            elapsed < Duration::from_secs(60),
            "the error came after {elapsed:?}"
        );
    });
    // The bees are free at once.
    assert_eq!(pool.busy(), 0);
    // And the work has stopped: the runtime's threads stay idle.
    std::thread::sleep(Duration::from_millis(200));
    let before = cpu_of_threads("deadline-rt");
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_of_threads("deadline-rt") - before;
    assert!(
        used < 0.1,
        "{used} CPU seconds used in the second after the deadline"
    );
    drop(rt);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_covers_waiting_for_bees() {
    let scratch = tempfile::tempdir().unwrap();
    let pool = pool(1, 64 * MIB, scratch.path());
    let runtime = datafusion::execution::runtime_env::RuntimeEnv::default();
    let held = pool.acquire(1, &runtime, Spill::ToScratch).await.unwrap();
    let ctx = session(&pool);
    ctx.sql("SET apiary.timeout_ms = 200").await.unwrap();
    let err = ctx
        .sql("SELECT 1")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("deadline of 200 ms exceeded while waiting for bees"),
        "{err}"
    );
    assert_eq!(pool.waiting(), 0, "it left the queue");
    drop(held);
    assert_eq!(pool.busy(), 0);
}
