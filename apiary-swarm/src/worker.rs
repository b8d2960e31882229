//! The worker: every node polls `_queries/` for work, claims tasks with a conditional create
//! (exactly one claimant per attempt), runs them on a bee and writes their partial results.
//!
//! A node takes the tasks assigned to it at once, and any other unclaimed task after
//! `steal_after`; a task offered again (after a failure) is anyone's. The poll interval is short
//! while queries run and for `poll_linger` after, and grows to `poll_max` when the swarm is idle.
//! Query folders older than `stale_query_after` (since this node first saw them) are removed by
//! whichever node sees them.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::time::Instant;

use apiary_catalog::Created;
use apiary_exec::Chamber;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::execution::TaskContext;
use datafusion_proto::bytes::physical_plan_from_bytes_with_extension_codec;
use futures::StreamExt;

use crate::error::{Result, SwarmError};
use crate::manifest::{
    Claim, Done, Manifest, Progress, QUERIES, QueryDir, QueryState, TaskError, decode, encode,
};
use crate::node::NodeInner;

/// What this node knows of one query folder.
struct Known {
    first_seen: Instant,
    manifest: Option<Manifest>,
    finished: bool,
}

/// Runs until the node stops.
pub(crate) async fn worker_loop(node: Arc<NodeInner>) {
    let mut known: HashMap<String, Known> = HashMap::new();
    let config = node.config.clone();
    let mut interval = config.poll_max;
    let mut last_active: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = node.nudge.notified() => {}
        }
        if node.stopping.load(Ordering::SeqCst) {
            break;
        }
        match poll(&node, &mut known).await {
            Ok(true) => {
                last_active = Some(Instant::now());
                interval = config.poll_min;
            }
            Ok(false) if last_active.is_some_and(|t| t.elapsed() < config.poll_linger) => {
                interval = config.poll_min;
            }
            Ok(false) => interval = (interval * 2).clamp(config.poll_min, config.poll_max),
            Err(e) => {
                log::warn!("node {}: polling for work failed: {e}", config.node_id);
                interval = config.poll_max;
            }
        }
    }
}

/// One look at `_queries/`; true when some query is in progress.
async fn poll(node: &Arc<NodeInner>, known: &mut HashMap<String, Known>) -> Result<bool> {
    let listed = node.meadow.list_dir(QUERIES).await?;
    let ids: Vec<String> = listed
        .common_prefixes
        .iter()
        .filter_map(|p| p.filename().map(str::to_string))
        .collect();
    known.retain(|id, _| ids.contains(id));
    let mut active = false;
    for id in ids {
        let entry = known.entry(id.clone()).or_insert_with(|| Known {
            first_seen: Instant::now(),
            manifest: None,
            finished: false,
        });
        if entry.first_seen.elapsed() >= node.config.stale_query_after {
            log::info!("removing stale query folder {QUERIES}/{id}");
            remove_query(node, &QueryDir::new(&id)).await?;
            known.remove(&id);
            continue;
        }
        if entry.finished {
            continue;
        }
        let dir = QueryDir::new(&id);
        if entry.manifest.is_none() {
            let Some(bytes) = node.meadow.get(&dir.manifest()).await? else {
                continue; // still being written
            };
            entry.manifest = Some(decode(&bytes, &dir.manifest())?);
        }
        let Some(manifest) = entry.manifest.clone() else {
            continue;
        };
        // The coordinator works its own query's tasks inside that query's chamber.
        if manifest.coordinator == node.config.node_id {
            active = true;
            continue;
        }
        let state = query_state(node, &dir).await?;
        if state.finished {
            entry.finished = true;
            continue;
        }
        active = true;
        let may_steal = entry.first_seen.elapsed() >= node.config.steal_after;
        let slots = Slots {
            running: node.running.clone(),
            capacity: node.colony.pool().bees(),
            ctx: None,
        };
        claim_and_run(node, &dir, &manifest, &state, may_steal, &slots).await?;
    }
    Ok(active)
}

/// The state of a query folder, from one listing.
pub(crate) async fn query_state(node: &NodeInner, dir: &QueryDir) -> Result<QueryState> {
    let listed = node.meadow.list_dir(dir.dir()).await?;
    Ok(QueryState::from_listing(&listed.objects))
}

/// Where claimed tasks run: at most `capacity` at once, counted in `running`; on a bee of this
/// node's pool each, or — for a coordinator working its own query — in `ctx`, the chamber of that
/// query.
#[derive(Clone)]
pub(crate) struct Slots {
    pub running: Arc<AtomicUsize>,
    pub capacity: usize,
    pub ctx: Option<Arc<TaskContext>>,
}

/// Where one claimed task runs: a bee of this node, held before the claim was made, or the
/// chamber of the coordinator's own query.
enum Place {
    Bee(Chamber),
    Query(Arc<TaskContext>),
}

impl Slots {
    /// A place for one more task now, or `None`: a node claims a task only when it can start it
    /// at once — never claims and then waits for a bee, which would stall the task's query (two
    /// busy coordinators would each sit on the other's tasks until the deadline).
    fn place(&self, node: &NodeInner) -> Result<Option<Place>> {
        if self.running.load(Ordering::SeqCst) >= self.capacity {
            return Ok(None);
        }
        Ok(match &self.ctx {
            Some(ctx) => Some(Place::Query(ctx.clone())),
            None => node
                .colony
                .pool()
                .try_acquire(1, &node.session.runtime_env(), true)?
                .map(Place::Bee),
        })
    }
}

/// Claims the tasks this node may run now and starts them. Returns how many it started.
pub(crate) async fn claim_and_run(
    node: &Arc<NodeInner>,
    dir: &QueryDir,
    manifest: &Manifest,
    state: &QueryState,
    may_steal: bool,
    slots: &Slots,
) -> Result<usize> {
    let mut started = 0;
    for task in &manifest.tasks {
        let n = task.n;
        if state.done.contains(&n) {
            continue;
        }
        let a = state.attempt(n);
        if state.claims.contains(&(n, a)) {
            continue;
        }
        let mine = task.assigned == node.config.node_id;
        if !(mine || a > 0 || may_steal) {
            continue;
        }
        let Some(place) = slots.place(node)? else {
            break; // no free bee: the task stays open for another node
        };
        let claim = Claim {
            node: node.config.node_id.clone(),
            attempt: a,
            clock_ms: node.clock_ms(),
        };
        let key = dir.claim(n, a);
        if node.meadow.create(&key, encode(&claim, &key)?).await? != Created::Yes {
            continue; // another node was first; the bee goes back
        }
        slots.running.fetch_add(1, Ordering::SeqCst);
        let (node, dir, slots) = (node.clone(), dir.clone(), slots.clone());
        tokio::spawn(async move {
            let progress = ProgressBeat::start(&node, &dir, n, a);
            let outcome = run_task(&node, &dir, n, a, place).await;
            drop(progress);
            report(&node, &dir, n, a, outcome).await;
            slots.running.fetch_sub(1, Ordering::SeqCst);
            node.nudge.notify_one();
        });
        started += 1;
    }
    Ok(started)
}

/// Rewrites `progress_{n}_{a}.json` every heartbeat interval while an attempt runs (through the
/// node's membership client); stops when dropped.
struct ProgressBeat(tokio::task::JoinHandle<()>);

impl ProgressBeat {
    fn start(node: &Arc<NodeInner>, dir: &QueryDir, n: usize, a: usize) -> Self {
        let (node, key) = (node.clone(), dir.progress(n, a));
        Self(tokio::spawn(async move {
            // Its own schedule, as heartbeats: a slow write does not hold back the next one.
            let mut ticks = tokio::time::interval(node.config.heartbeat_interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            let in_flight = Arc::new(AtomicUsize::new(0));
            let mut tick = 0;
            loop {
                ticks.tick().await;
                if in_flight.load(Ordering::SeqCst) >= 2 {
                    continue;
                }
                tick += 1;
                let progress = Progress {
                    node: node.config.node_id.clone(),
                    attempt: a,
                    tick,
                };
                let Ok(body) = encode(&progress, &key) else {
                    continue;
                };
                in_flight.fetch_add(1, Ordering::SeqCst);
                let (node, key, in_flight) = (node.clone(), key.clone(), in_flight.clone());
                tokio::spawn(async move {
                    if let Err(e) = node.membership.put(&key, body).await {
                        log::debug!("node {}: progress of {key}: {e}", node.config.node_id);
                    }
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                });
            }
        }))
    }
}

impl Drop for ProgressBeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Writes `done_{n}` (the first attempt to finish wins) or `error_{n}_{a}`.
async fn report(node: &NodeInner, dir: &QueryDir, n: usize, a: usize, outcome: Result<(u64, u64)>) {
    let written = match outcome {
        Ok((rows, bytes)) => {
            let done = Done {
                node: node.config.node_id.clone(),
                attempt: a,
                rows,
                bytes,
            };
            let key = dir.done(n);
            match encode(&done, &key) {
                Ok(body) => node
                    .meadow
                    .create(&key, body)
                    .await
                    .map(|_| ())
                    .map_err(SwarmError::from),
                Err(e) => Err(e),
            }
        }
        Err(e) => {
            log::warn!(
                "node {}: task {n} (attempt {a}) of {} failed: {e}",
                node.config.node_id,
                dir.query_id
            );
            let err = TaskError {
                node: node.config.node_id.clone(),
                attempt: a,
                error: e.to_string(),
            };
            let key = dir.error(n, a);
            match encode(&err, &key) {
                Ok(body) => node.meadow.put(&key, body).await.map_err(SwarmError::from),
                Err(e) => Err(e),
            }
        }
    };
    if let Err(e) = written {
        log::warn!(
            "node {}: could not report task {n} of {}: {e}",
            node.config.node_id,
            dir.query_id
        );
    }
}

/// Runs attempt `a` of task `n`: decodes its fragment against this node's object stores, runs
/// it (in `ctx`, or on a bee of this node), and streams its batches into `partial_{n}_{a}.arrow`.
async fn run_task(
    node: &NodeInner,
    dir: &QueryDir,
    n: usize,
    a: usize,
    place: Place,
) -> Result<(u64, u64)> {
    if !node.config.debug_task_delay.is_zero() {
        tokio::time::sleep(node.config.debug_task_delay).await;
    }
    let key = dir.plan(n);
    let bytes = node
        .meadow
        .get(&key)
        .await?
        .ok_or_else(|| SwarmError::corrupt(&key, "the fragment is missing"))?;
    let base = node.session.task_ctx();
    let plan = physical_plan_from_bytes_with_extension_codec(&bytes, &base, &node.codec)?;
    // The chamber (if any) stays held until the task is done.
    let (ctx, _chamber) = match place {
        Place::Query(ctx) => (ctx, None),
        Place::Bee(chamber) => (chamber.task_context(&base), Some(chamber)),
    };
    let mut stream = plan.execute(0, ctx)?;
    let schema = stream.schema();
    let partial = node.meadow.key(&dir.partial(n, a));
    let mut upload = node.meadow.upload(partial.clone());
    let mut ipc = StreamWriter::try_new(Vec::new(), &schema)?;
    let (mut rows, mut bytes) = (0u64, 0u64);
    let io = |source| SwarmError::Io {
        path: partial.to_string(),
        source,
    };
    let result: Result<()> = async {
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            rows += batch.num_rows() as u64;
            ipc.write(&batch)?;
            let chunk = std::mem::take(ipc.get_mut());
            bytes += chunk.len() as u64;
            upload.write(&chunk).await.map_err(io)?;
        }
        ipc.finish()?;
        let tail = std::mem::take(ipc.get_mut());
        bytes += tail.len() as u64;
        upload.write(&tail).await.map_err(io)?;
        upload.finish().await.map_err(io)?;
        Ok(())
    }
    .await;
    if let Err(e) = result {
        upload.abort().await;
        return Err(e);
    }
    Ok((rows, bytes))
}

/// Deletes everything in a query folder.
pub(crate) async fn remove_query(node: &NodeInner, dir: &QueryDir) -> Result<()> {
    for object in node.meadow.list(dir.dir()).await? {
        if let Some(key) = node.meadow.relative(&object.location) {
            node.meadow.delete(key).await?;
        }
    }
    Ok(())
}
