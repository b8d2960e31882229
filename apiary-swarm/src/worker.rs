//! The worker: every node polls `_queries/` for work, claims tasks with a conditional create
//! (exactly one claimant per attempt), runs them on a bee and writes their partial results.
//!
//! Tasks are pulled: whenever a node has a free bee it claims the next open task — first one
//! offered again after a failure (anyone's but the nodes it failed on, while another may run it),
//! then one that prefers this node (it caches its cells), then one that prefers nobody, and
//! after `steal_after` one that prefers another node (at once if that node is dead or gone). A
//! hot node runs one task at a time, a critical one none while another node is not critical.
//!
//! A node lists `_queries/` every `poll_min` while queries run. Otherwise it looks only at
//! `_queries/latest.json` (a HEAD) — every `linger_probe` (or four times a look's own time on a
//! slow store) for `poll_linger` after it last saw a query, then at intervals growing to
//! `poll_max` — and lists `_queries/` when that changed, or every `list_every`.
//!
//! Any node sweeps a query folder (see [`expired`]): a running query's once its coordinator's
//! lease has been seen lapsed for `dead_after` (the coordinator is dead or gone, or a heartbeat
//! it wrote after the manifest does not list the query) — never for its age; a finished one
//! after a short grace (also one holding only its `finished.json`, which a node first sees after
//! the query ended); one still without a manifest after `stale_query_after`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::task::AbortHandle;

use apiary_catalog::Created;
use apiary_catalog::sight;
use apiary_exec::{Band, Chamber, Spill};
use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::CompressionType;
use datafusion::arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::TaskContext;
use datafusion::prelude::SessionConfig;
use datafusion_proto::bytes::physical_plan_from_bytes_with_extension_codec;
use futures::StreamExt;

use crate::error::{Result, SwarmError};
use crate::fragment::narrow;
use crate::local_node::LocalNode;
use crate::manifest::{
    Claim, Done, LATEST, Manifest, PARTIAL_PART_BYTES, Progress, QUERIES, QueryDir, QueryState,
    TaskCell, TaskError, TaskSpec, decode, encode,
};
use crate::world_view::NodeState;

/// What this node knows of one query folder.
struct Known {
    first_seen: Instant,
    manifest: Option<Manifest>,
    /// Since when this node has seen the coordinator's lease on the query lapsed, if it sees it
    /// lapsed now (see [`LeaseSeen`]).
    unleased_since: Option<Instant>,
    /// When this node first saw the query finished (`finished.json`).
    finished: Option<Instant>,
    /// When this node last looked for the manifest it has not found yet.
    looked: Option<Instant>,
    /// The tasks this node runs for the query, stopped when it ends (or this entry goes).
    tasks: Vec<Attempt>,
    /// The query's fragment (datafusion-proto bytes), once read.
    fragment: Option<Bytes>,
}

impl Known {
    fn stop_tasks(&mut self) {
        self.tasks.clear();
    }
}

/// A running attempt of a claimed task, owned by whoever started it: dropping it stops the
/// attempt — also when the future that claimed it is dropped half-way (a cancelled
/// coordinator), so no attempt ever outlives the query that owns it.
pub(crate) struct Attempt {
    task: AbortHandle,
    /// The attempt's lease renewal, stopped at once with it: an aborted task goes only when its
    /// current poll ends (a long one on a loaded machine), and its beat must not renew the lease
    /// of a stopped attempt meanwhile.
    beat: AbortHandle,
}

impl Attempt {
    pub(crate) fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        self.beat.abort();
        self.task.abort();
    }
}

/// How long a finished query's folder (only `finished.json` left in it) stays, so that a late
/// write of an attempt lands in a folder that says the query is over, and goes with it.
const FINISHED_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs until the node stops.
pub(crate) async fn worker_loop(node: Arc<LocalNode>) {
    let mut known: HashMap<String, Known> = HashMap::new();
    let config = node.config.clone();
    let mut interval = config.poll_max;
    let mut last_active: Option<Instant> = None;
    let mut idle = false;
    let mut lingering = false;
    let mut listed_at: Option<Instant> = None;
    let mut latest: Option<String> = None;
    // How often a lingering node looks: `linger_probe`, or four times as long as a look takes —
    // a slow or busy store (a bucket across a network, a loaded server) is asked less often, and
    // no node spends more than a fifth of its lingering waiting on its look.
    let mut probe = config.linger_probe;
    loop {
        let nudged = tokio::select! {
            _ = tokio::time::sleep(interval) => false,
            _ = node.nudge.notified() => true,
        };
        if node.stopping.load(Ordering::SeqCst) {
            break;
        }
        // Idle: one HEAD of the object every coordinator rewrites when it publishes a query.
        if idle && !nudged {
            let asked = Instant::now();
            let seen = latest_fingerprint(&node).await;
            probe = config.linger_probe.max(asked.elapsed() * 4);
            if lingering {
                interval = probe;
            }
            let due = listed_at.is_none_or(|t| t.elapsed() >= config.list_every);
            // Unreadable (`None`): cannot tell, so list.
            if seen.is_some() && seen == latest && !due {
                continue;
            }
            latest = seen;
        }
        listed_at = Some(Instant::now());
        match poll(&node, &mut known).await {
            Ok(true) => {
                last_active = Some(Instant::now());
                interval = config.poll_min;
                (idle, lingering) = (false, false);
            }
            Ok(false) if last_active.is_some_and(|t| t.elapsed() < config.poll_linger) => {
                // Nothing running, but more may come soon: watch the one object closely.
                interval = probe;
                (idle, lingering) = (true, true);
            }
            Ok(false) => {
                interval = (interval * 2).clamp(config.poll_min, config.poll_max);
                (idle, lingering) = (true, false);
            }
            Err(e) => {
                log::warn!("node {}: polling for work failed: {e}", config.node_id);
                interval = config.poll_max;
                (idle, lingering) = (false, false);
            }
        }
    }
}

/// What identifies the content of `_queries/latest.json` now: its e-tag (else modification time
/// and size), or `"absent"`; `None` when the store could not say.
async fn latest_fingerprint(node: &LocalNode) -> Option<String> {
    match node.meadow.head(LATEST).await {
        Ok(Some(meta)) => {
            Some(meta.e_tag.unwrap_or_else(|| {
                format!("{}:{}", meta.last_modified.timestamp_micros(), meta.size)
            }))
        }
        Ok(None) => Some("absent".into()),
        Err(_) => None,
    }
}

/// One look at `_queries/`; true when some query is in progress.
async fn poll(node: &Arc<LocalNode>, known: &mut HashMap<String, Known>) -> Result<bool> {
    let listed = node.meadow.list_dir(QUERIES).await?;
    let ids: Vec<String> = listed
        .common_prefixes
        .iter()
        .filter_map(|p| p.filename().map(str::to_string))
        .collect();
    known.retain(|id, _| ids.contains(id));
    node.failed.lock().retain(|(id, _)| ids.contains(id));
    for id in &ids {
        known.entry(id.clone()).or_insert_with(|| Known {
            first_seen: Instant::now(),
            manifest: None,
            unleased_since: None,
            finished: None,
            looked: None,
            tasks: vec![],
            fragment: None,
        });
    }
    // The store's time of the latest publish: a lower bound of its "now".
    let published = listed
        .objects
        .iter()
        .find(|o| o.location.as_ref().ends_with(LATEST))
        .map(|o| o.last_modified);
    look_for_manifests(node, known, published).await?;
    let mut active = false;
    for id in ids {
        let Some(entry) = known.get_mut(&id) else {
            continue;
        };
        if expired(node, entry) {
            log::info!("removing query folder {QUERIES}/{id}");
            entry.stop_tasks();
            remove_query(node, &QueryDir::new(&id)).await?;
            known.remove(&id);
            continue;
        }
        if entry.finished.is_some() {
            continue;
        }
        let dir = QueryDir::new(&id);
        let Some(manifest) = entry.manifest.clone() else {
            continue; // not published yet, or over (looked at above)
        };
        match lease(node, &manifest) {
            LeaseSeen::Held => entry.unleased_since = None,
            LeaseSeen::Lapsed => {
                entry.unleased_since.get_or_insert_with(Instant::now);
            }
            LeaseSeen::NotYet => {}
        }
        // The coordinator works its own query's tasks inside that query's chamber, and looks at
        // its folder itself while it runs: nothing to list here until it is over.
        let mine = manifest.coordinator == node.config.node_id;
        if mine && node.membership.coordinates(&manifest.query_id) {
            active = true;
            continue;
        }
        let state = query_state(node, &dir).await?;
        if state.finished {
            // Over (done, failed or cancelled): stop this node's attempts at once.
            entry.finished = Some(Instant::now());
            entry.stop_tasks();
            continue;
        }
        if mine {
            active = true;
            continue;
        }
        active = true;
        // The query's one fragment, read once by this node.
        if entry.fragment.is_none() {
            let Some(bytes) = node.meadow.get(&dir.fragment()).await? else {
                continue; // removed: the query is ending
            };
            entry.fragment = Some(bytes);
        }
        let Some(fragment) = entry.fragment.clone() else {
            continue;
        };
        let may_steal = entry.first_seen.elapsed() >= node.config.steal_after;
        let slots = Slots {
            running: Arc::clone(&node.running),
            capacity: node.colony.pool().bees(),
            ctx: None,
            fragment,
            ended: None,
            handover: None,
        };
        let started = claim_and_run(node, &dir, &manifest, &state, may_steal, &slots).await?;
        entry.tasks.retain(|t| !t.is_finished());
        entry.tasks.extend(started);
    }
    Ok(active)
}

/// How many folders a node looks into at once.
const LOOKS_AT_ONCE: usize = 16;

/// Reads the manifest of every known folder that has none yet, [`LOOKS_AT_ONCE`] at a time: a
/// newcomer may find many folders holding nothing but `finished.json` (queries over, swept after
/// a grace), and one slow call after another would keep it from new queries for seconds. A
/// folder without a manifest is looked into again at most once a `poll_max`.
///
/// A marker written [`FINISHED_GRACE`] or more before the latest publish (`published`; both times
/// on the store's own clock) is past its grace at first sight: short-lived coordinators (one
/// process per query) never outlive a grace counted from when a node first sees a marker, and
/// their markers would otherwise stay for every newcomer to look into.
async fn look_for_manifests(
    node: &LocalNode,
    known: &mut HashMap<String, Known>,
    published: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<()> {
    let due: Vec<String> = known
        .iter()
        .filter(|(_, e)| e.manifest.is_none() && e.finished.is_none())
        .filter(|(_, e)| e.looked.is_none_or(|t| t.elapsed() >= node.config.poll_max))
        .map(|(id, _)| id.clone())
        .collect();
    let looks: Vec<(String, Result<Look>)> = futures::stream::iter(due)
        .map(|id| async move {
            let look = look(node, &QueryDir::new(&id)).await;
            (id, look)
        })
        .buffer_unordered(LOOKS_AT_ONCE)
        .collect()
        .await;
    for (id, look) in looks {
        let Some(entry) = known.get_mut(&id) else {
            continue;
        };
        entry.looked = Some(Instant::now());
        match look? {
            Look::Manifest(manifest) => entry.manifest = Some(manifest),
            Look::Finished(written) => {
                let now = Instant::now();
                let past = published
                    .and_then(|p| (p - written).to_std().ok())
                    .is_some_and(|age| age >= FINISHED_GRACE);
                entry.finished = Some(match past {
                    true => now.checked_sub(FINISHED_GRACE).unwrap_or(now),
                    false => now,
                });
            }
            Look::Nothing => {}
        }
    }
    Ok(())
}

/// What one look into a query folder without a known manifest found.
enum Look {
    Manifest(Manifest),
    /// No manifest, but `finished.json` (written at this time on the store's clock): the query
    /// is over and its folder cleaned up but for the marker; it goes after the grace, like any
    /// finished folder.
    Finished(chrono::DateTime<chrono::Utc>),
    /// Neither: the manifest is still being written.
    Nothing,
}

async fn look(node: &LocalNode, dir: &QueryDir) -> Result<Look> {
    let key = dir.manifest();
    Ok(match node.meadow.get(&key).await? {
        Some(bytes) => Look::Manifest(decode(&bytes, &key)?),
        None => match node.meadow.head(&dir.finished()).await? {
            Some(marker) => Look::Finished(marker.last_modified),
            None => Look::Nothing,
        },
    })
}

/// Whether a query folder is to be swept now: a running query whose coordinator has held no lease
/// on it for `dead_after` beyond the store's lag; a finished one after [`FINISHED_GRACE`] (kept
/// for `stale_query_after` with `keep_queries`); one still without a manifest after
/// `stale_query_after`.
fn expired(node: &LocalNode, entry: &Known) -> bool {
    let config = &node.config;
    let old = entry.first_seen.elapsed() >= config.stale_query_after;
    match (&entry.manifest, entry.finished) {
        (_, Some(finished)) if config.keep_queries => old && finished.elapsed() >= FINISHED_GRACE,
        (_, Some(finished)) => finished.elapsed() >= FINISHED_GRACE,
        (None, None) => old,
        (Some(_), None) => entry.unleased_since.is_some_and(|t| {
            t.elapsed().saturating_sub(node.world().store_lag()) >= config.dead_after
        }),
    }
}

/// What this node's world view says of a coordinator's lease on a query.
enum LeaseSeen {
    /// The coordinator is this node and runs the query, or its heartbeat lists the query.
    Held,
    /// The coordinator is dead or gone, or a heartbeat it wrote after it published the query
    /// does not list it (both times on the coordinator's own clock): it no longer runs it.
    Lapsed,
    /// The coordinator's latest heartbeat seen is older than the query: no word yet.
    NotYet,
}

fn lease(node: &LocalNode, manifest: &Manifest) -> LeaseSeen {
    if manifest.coordinator == node.config.node_id {
        return match node.membership.coordinates(&manifest.query_id) {
            true => LeaseSeen::Held,
            false => LeaseSeen::Lapsed,
        };
    }
    match node.world().node(&manifest.coordinator) {
        None => LeaseSeen::Lapsed,
        Some(v) if v.state == NodeState::Dead => LeaseSeen::Lapsed,
        Some(v) if v.heartbeat.queries.contains(&manifest.query_id) => LeaseSeen::Held,
        Some(v) if v.heartbeat.clock_ms > manifest.created_ms => LeaseSeen::Lapsed,
        Some(_) => LeaseSeen::NotYet,
    }
}

/// The state of a query folder, from one listing.
pub(crate) async fn query_state(node: &LocalNode, dir: &QueryDir) -> Result<QueryState> {
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
    /// The query's fragment, which each task narrows to its cells.
    pub fragment: Bytes,
    /// Told whenever one of these tasks ends (the coordinator's own: it looks at once).
    pub ended: Option<Arc<tokio::sync::Notify>>,
    /// Where the coordinator's own attempts hand a small result over in memory, instead of
    /// putting it in the folder for the coordinator to read back.
    pub handover: Option<tokio::sync::mpsc::UnboundedSender<Handover>>,
}

/// A complete result of one of the coordinator's own attempts, kept in memory (at most
/// [`PARTIAL_PART_BYTES`] of batches; a larger one goes to the folder as any node's).
pub(crate) struct Handover {
    pub n: usize,
    pub batches: Vec<RecordBatch>,
}

/// Counts a running task while it lives — also when it is aborted.
struct Running(Arc<AtomicUsize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
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
    fn place(&self, node: &LocalNode) -> Result<Option<Place>> {
        let capacity = match &self.ctx {
            Some(_) => self.capacity,
            None => {
                let me = &node.config.node_id;
                let others_critical = node
                    .world()
                    .alive()
                    .iter()
                    .filter(|h| h.node_id != *me)
                    .all(|h| h.band == Band::Critical);
                pull_capacity(
                    self.capacity,
                    node.colony.temperature().band,
                    others_critical,
                )
            }
        };
        if self.running.load(Ordering::SeqCst) >= capacity {
            return Ok(None);
        }
        Ok(match &self.ctx {
            Some(ctx) => Some(Place::Query(Arc::clone(ctx))),
            None => node
                .colony
                .pool()
                .try_acquire(1, &node.session.runtime_env(), Spill::ToScratch)?
                .map(Place::Bee),
        })
    }
}

/// Claims the tasks this node may run now and starts them. Returns them, to stop when their
/// query ends.
pub(crate) async fn claim_and_run(
    node: &Arc<LocalNode>,
    dir: &QueryDir,
    manifest: &Manifest,
    state: &QueryState,
    may_steal: bool,
    slots: &Slots,
) -> Result<Vec<Attempt>> {
    let me = node.config.node_id.as_str();
    let gone = |id: &str| matches!(node.world().state_of(id), Some(NodeState::Dead) | None);
    let mut open: Vec<(u8, &TaskSpec, usize)> = manifest
        .tasks
        .iter()
        .filter_map(|task| {
            let n = task.n;
            let a = state.attempt(n);
            if state.done.contains(&n)
                || state.claims.contains(&(n, a))
                || (a > 0 && leave_to_others(node, &dir.query_id, n, a))
            {
                return None;
            }
            let preferred = task.preferred.as_deref();
            let rank = claim_rank(preferred, a, me, may_steal || preferred.is_some_and(gone))?;
            Some((rank, task, a))
        })
        .collect();
    open.sort_by_key(|(rank, task, _)| (*rank, task.n));
    let mut started = vec![];
    for (_, task, a) in open {
        let n = task.n;
        let Some(place) = slots.place(node)? else {
            break; // no free bee: the task stays open for another node
        };
        let claim = Claim {
            node: node.config.node_id.clone(),
            attempt: a,
            clock_ms: node.clock_ms(),
        };
        let key = dir.claim(n, a);
        if node
            .meadow
            .create_ephemeral(&key, encode(&claim, &key)?)
            .await?
            != Created::Yes
        {
            continue; // another node was first; the bee goes back
        }
        let sight = node.meadow.sight();
        sight.count_by(sight::SWARM_TASKS, "outcome", "claimed", 1);
        if a > 0 {
            sight.count_by(sight::SWARM_TASKS, "outcome", "retried", 1);
        }
        slots.running.fetch_add(1, Ordering::SeqCst);
        let (node, dir, slots) = (Arc::clone(node), dir.clone(), slots.clone());
        let running = Running(Arc::clone(&slots.running));
        let work = Work {
            fragment: slots.fragment.clone(),
            cells: task.cells.clone(),
            options: manifest.options.clone(),
            place,
            in_memory: slots.handover.is_some(),
        };
        let progress = ProgressBeat::start(&node, &dir, n, a);
        let beat = progress.0.abort_handle();
        let task = tokio::spawn(async move {
            let _running = running;
            let outcome = run_task(&node, &dir, n, a, work).await;
            drop(progress);
            report(&node, &dir, n, a, outcome, slots.handover.as_ref()).await;
            node.nudge.notify_one();
            if let Some(ended) = &slots.ended {
                ended.notify_one();
            }
        });
        started.push(Attempt {
            task: task.abort_handle(),
            beat,
        });
    }
    Ok(started)
}

/// Rewrites `progress_{n}_{a}.json` every heartbeat interval while an attempt runs (through the
/// node's membership client); stops when dropped.
struct ProgressBeat(tokio::task::JoinHandle<()>);

impl ProgressBeat {
    fn start(node: &Arc<LocalNode>, dir: &QueryDir, n: usize, a: usize) -> Self {
        let (node, key) = (Arc::clone(node), dir.progress(n, a));
        Self(tokio::spawn(async move {
            // Its own schedule, as heartbeats: a slow write does not hold back the next one.
            let mut ticks = tokio::time::interval(node.config.heartbeat_interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            // The writes under way belong to this task: stopping it stops them (no progress
            // object lands after the attempt ended).
            let mut writes = tokio::task::JoinSet::new();
            let in_flight = Arc::new(AtomicUsize::new(0));
            let mut tick = 0;
            loop {
                ticks.tick().await;
                while writes.try_join_next().is_some() {}
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
                let (node, key, in_flight) =
                    (Arc::clone(&node), key.clone(), Arc::clone(&in_flight));
                writes.spawn(async move {
                    if let Err(e) = node.membership.store.put(&key, body).await {
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

/// In which turn this node claims an open attempt `a` of a task that prefers `preferred` (lower
/// first), or `None` while it must leave it: attempts offered again after a failure come first
/// (they are late), then the tasks that prefer this node, then anyone's, and — once `may_take` (after
/// `steal_after`, or the preferred node is gone) — those that prefer another node.
fn claim_rank(preferred: Option<&str>, a: usize, me: &str, may_take: bool) -> Option<u8> {
    if a > 0 {
        return Some(0);
    }
    match preferred {
        Some(p) if p == me => Some(1),
        None => Some(2),
        Some(_) if may_take => Some(3),
        Some(_) => None,
    }
}

/// How many tasks a node runs at once on its bees: all of them; one while its colony is hot; none
/// while it is critical, unless every other alive node is critical too (the query must run).
fn pull_capacity(bees: usize, band: Band, others_critical: bool) -> usize {
    match band {
        Band::Critical if !others_critical => 0,
        Band::Hot => 1.min(bees),
        _ => bees,
    }
}

/// Whether this node leaves attempt `a` of task `n` to others: it failed the task before, and
/// more nodes are alive than attempts have failed, so one that has not failed it may be among
/// them (with as many failures as alive nodes, anyone may take it: the query must go on).
fn leave_to_others(node: &LocalNode, query: &str, n: usize, a: usize) -> bool {
    node.failed.lock().contains(&(query.to_string(), n)) && node.world().alive().len() > a
}

/// How often a report (`done`, `error`) is tried before it is given up, and the first pause.
const REPORT_TRIES: u32 = 5;
const REPORT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(50);

/// `write`, tried up to [`REPORT_TRIES`] times with doubling pauses while the query lasts.
async fn with_backoff<F, Fut>(node: &LocalNode, dir: &QueryDir, what: &str, write: F) -> Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut pause = REPORT_BACKOFF;
    let mut tries = 1;
    loop {
        match write().await {
            Ok(()) => return Ok(()),
            Err(e) if tries >= REPORT_TRIES || query_over(node, dir).await => return Err(e),
            Err(e) => {
                log::debug!(
                    "node {}: writing {what} failed (try {tries}): {e}; trying again",
                    node.config.node_id
                );
                tokio::time::sleep(pause).await;
                pause *= 2;
                tries += 1;
            }
        }
    }
}

/// How a report object is written.
#[derive(Clone, Copy)]
enum Write {
    /// A conditional create: the first writer wins (`done`).
    Create,
    /// A plain put (`error`: one writer per attempt).
    Put,
}

/// Writes one report object with backoff.
async fn write_report(
    node: &LocalNode,
    dir: &QueryDir,
    key: &str,
    body: Result<Bytes>,
    how: Write,
) -> Result<()> {
    let body = body?;
    with_backoff(node, dir, key, || async {
        match how {
            Write::Create => node
                .meadow
                .create_ephemeral(key, body.clone())
                .await
                .map(|_| ())?,
            Write::Put => node.meadow.put(key, body.clone()).await?,
        }
        Ok(())
    })
    .await
}

/// Writes `done_{n}` (the first attempt to finish wins) or `error_{n}_{a}` — nothing when the
/// query is over (its folder says so, or its manifest is gone; a finished attempt looked at that
/// before it completed its partial). Each write is retried with
/// backoff; a `done` that cannot be written becomes an `error`, so that the coordinator offers
/// the task again at once; if that cannot be written either, the attempt's lease runs out (its
/// progress object stops changing) and the task is taken over.
async fn report(
    node: &LocalNode,
    dir: &QueryDir,
    n: usize,
    a: usize,
    outcome: Result<Outcome>,
    handover: Option<&tokio::sync::mpsc::UnboundedSender<Handover>>,
) {
    let tasks = |outcome: &'static str| {
        node.meadow
            .sight()
            .count_by(sight::SWARM_TASKS, "outcome", outcome, 1)
    };
    if let Err(SwarmError::QueryOver { query }) = &outcome {
        tasks("abandoned");
        log::debug!(
            "node {}: query {query} ended before task {n} (attempt {a}) ran; nothing to report",
            node.config.node_id
        );
        return;
    }
    // A finished attempt looked just before it completed its partial; a failed one looks now.
    if outcome.is_err() && query_over(node, dir).await {
        tasks("abandoned");
        return;
    }
    tasks(if outcome.is_ok() { "done" } else { "failed" });
    let failure = match outcome {
        Ok(Outcome {
            rows,
            bytes,
            parts,
            kept,
        }) => {
            let done = Done {
                node: node.config.node_id.clone(),
                attempt: a,
                rows,
                bytes,
                parts,
                in_memory: kept.is_some(),
            };
            let key = dir.done(n);
            if let (Some(batches), Some(handover)) = (kept, handover) {
                // The coordinator's own result, handed over at once: it delivers each task once,
                // whichever complete attempt reaches it first. Its `done` tells the other nodes
                // — unless the query is over (the coordinator let go of the handover): a late
                // write must not bring the folder back.
                if handover.send(Handover { n, batches }).is_err() {
                    return;
                }
                if let Err(e) =
                    write_report(node, dir, &key, encode(&done, &key), Write::Create).await
                {
                    log::debug!("node {}: writing {key}: {e}", node.config.node_id);
                }
                return;
            }
            // Lost to another attempt's `done` (or to an earlier try of this one that landed
            // unseen): either way the task is done.
            match write_report(node, dir, &key, encode(&done, &key), Write::Create).await {
                Ok(()) => return,
                Err(e) => format!("the result was written but reporting it failed: {e}"),
            }
        }
        Err(e) => {
            log::warn!(
                "node {}: task {n} (attempt {a}) of {} failed: {e}",
                node.config.node_id,
                dir.query_id
            );
            node.failed.lock().insert((dir.query_id.clone(), n));
            e.to_string()
        }
    };
    let err = TaskError {
        node: node.config.node_id.clone(),
        attempt: a,
        error: failure,
    };
    let key = dir.error(n, a);
    let written = write_report(node, dir, &key, encode(&err, &key), Write::Put).await;
    if let Err(e) = written {
        log::warn!(
            "node {}: could not report task {n} of {}: {e}",
            node.config.node_id,
            dir.query_id
        );
    }
}

/// What one attempt runs: the query's fragment narrowed to the task's cells, under the
/// coordinator's settings, in its place.
struct Work {
    fragment: Bytes,
    cells: Vec<TaskCell>,
    options: BTreeMap<String, String>,
    place: Place,
    /// Keep a small result in memory (the coordinator's own attempt), not in the folder.
    in_memory: bool,
}

/// Runs attempt `a` of task `n`: decodes the query's fragment against this node's object stores,
/// narrows it to the task's cells, runs it under the coordinator's settings (in its query's
/// chamber, or on a bee of this node), and writes its batches as `partial_{n}_{a}_{k}.arrow`.
async fn run_task(
    node: &LocalNode,
    dir: &QueryDir,
    n: usize,
    a: usize,
    work: Work,
) -> Result<Outcome> {
    if !node.config.debug_task_delay.is_zero() {
        tokio::time::sleep(node.config.debug_task_delay).await;
    }
    if !node.config.debug_task_block.is_zero() {
        std::thread::sleep(node.config.debug_task_block);
    }
    // The chamber (if any) stays held until the task is done.
    let (ctx, _chamber) = match work.place {
        Place::Query(ctx) => (ctx, None),
        Place::Bee(chamber) => {
            let state = SessionStateBuilder::new_from_existing(node.session.state())
                .with_config(settings(node, &work.options))
                .build();
            (
                chamber.task_context(&TaskContext::from(&state)),
                Some(chamber),
            )
        }
    };
    // Decoding binds the scan to the decoding context's object store and footer cache: a
    // worker's (through its cell cache), or — for the coordinator's own tasks — its query's,
    // so that they read cells exactly as its plain queries do.
    let plan = physical_plan_from_bytes_with_extension_codec(&work.fragment, &ctx, &node.codec)?;
    let plan = narrow(&plan, &work.cells)?;
    let mut stream = plan.execute(0, ctx)?;
    let mut parts = Parts::new(node, dir, n, a, stream.schema(), work.in_memory)?;
    let result: Result<()> = async {
        while let Some(batch) = stream.next().await {
            parts.write(&batch?).await?;
        }
        parts.finish().await
    }
    .await;
    node.meadow.sight().count_spills(&plan);
    if let Err(e) = result {
        parts.remove().await;
        return Err(e);
    }
    Ok(parts.outcome())
}

/// The result of one attempt going up as `partial_{n}_{a}_{k}.arrow`: one LZ4-compressed Arrow
/// IPC stream per part, each put whole once it reaches [`PARTIAL_PART_BYTES`] (and the last at
/// the end) — never a multipart upload, which a killed attempt would leave incomplete where no
/// sweep can see it.
struct Parts<'a> {
    node: &'a LocalNode,
    dir: &'a QueryDir,
    n: usize,
    a: usize,
    schema: SchemaRef,
    ipc: StreamWriter<Vec<u8>>,
    /// The batches kept in memory while the result stays below [`PARTIAL_PART_BYTES`], when it
    /// may (the coordinator's own attempt); `None` once it goes to the folder.
    kept: Option<Vec<RecordBatch>>,
    /// Parts put so far.
    written: usize,
    rows: u64,
    bytes: u64,
}

impl<'a> Parts<'a> {
    fn new(
        node: &'a LocalNode,
        dir: &'a QueryDir,
        n: usize,
        a: usize,
        schema: SchemaRef,
        in_memory: bool,
    ) -> Result<Self> {
        let ipc = Self::stream(&schema)?;
        Ok(Self {
            node,
            dir,
            n,
            a,
            schema,
            ipc,
            kept: in_memory.then(Vec::new),
            written: 0,
            rows: 0,
            bytes: 0,
        })
    }

    /// Partials travel LZ4-compressed: less to upload, store and fetch.
    fn stream(schema: &SchemaRef) -> Result<StreamWriter<Vec<u8>>> {
        let options =
            IpcWriteOptions::default().try_with_compression(Some(CompressionType::LZ4_FRAME))?;
        Ok(StreamWriter::try_new_with_options(
            Vec::new(),
            schema,
            options,
        )?)
    }

    async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.rows += batch.num_rows() as u64;
        if let Some(kept) = &mut self.kept {
            // While kept, `bytes` counts the batches' memory.
            let size = batch.get_array_memory_size() as u64;
            if self.bytes + size <= PARTIAL_PART_BYTES as u64 {
                self.bytes += size;
                kept.push(batch.clone());
                return Ok(());
            }
            // Too large to hold: the whole result goes to the folder, the kept batches first.
            let kept = self.kept.take().unwrap_or_default();
            self.bytes = 0;
            for held in &kept {
                self.ipc.write(held)?;
            }
        }
        self.ipc.write(batch)?;
        if self.ipc.get_ref().len() >= PARTIAL_PART_BYTES {
            let next = Self::stream(&self.schema)?;
            let full = std::mem::replace(&mut self.ipc, next);
            self.put(full).await?;
        }
        Ok(())
    }

    /// Puts the last part (also an empty result's only one), unless the result is kept.
    async fn finish(&mut self) -> Result<()> {
        if self.kept.is_some() {
            return Ok(());
        }
        let last = Self::stream(&self.schema)?;
        let last = std::mem::replace(&mut self.ipc, last);
        self.put(last).await
    }

    /// Puts one finished part — unless the query ended meanwhile: no one will read it, and a late
    /// write must not bring the folder back.
    async fn put(&mut self, mut part: StreamWriter<Vec<u8>>) -> Result<()> {
        part.finish()?;
        let body = Bytes::from(part.into_inner()?);
        if query_over(self.node, self.dir).await {
            return Err(SwarmError::QueryOver {
                query: self.dir.query_id.clone(),
            });
        }
        self.bytes += body.len() as u64;
        let key = self.dir.partial(self.n, self.a, self.written);
        self.node.meadow.put(&key, body).await?;
        self.written += 1;
        Ok(())
    }

    /// Removes the parts put so far (best effort: the folder goes with its query).
    async fn remove(self) {
        let keys = (0..self.written)
            .map(|k| self.node.meadow.key(&self.dir.partial(self.n, self.a, k)))
            .collect();
        if let Err(e) = self.node.meadow.delete_many(keys).await {
            log::debug!("removing the parts of a failed attempt: {e}");
        }
    }

    /// Rows, bytes and parts written, and the batches kept.
    fn outcome(self) -> Outcome {
        Outcome {
            rows: self.rows,
            bytes: self.bytes,
            parts: self.written,
            kept: self.kept,
        }
    }
}

/// What a finished attempt wrote (or kept in memory).
struct Outcome {
    rows: u64,
    bytes: u64,
    parts: usize,
    kept: Option<Vec<RecordBatch>>,
}

/// This node's session settings with the coordinator's `options` laid over them (one it does
/// not know is skipped, and logged).
fn settings(node: &LocalNode, options: &BTreeMap<String, String>) -> SessionConfig {
    let mut config = node.session.copied_config();
    let target = config.options_mut();
    for (key, value) in options {
        if let Err(e) = target.set(key, value) {
            log::debug!("node {}: setting {key} = {value}: {e}", node.config.node_id);
        }
    }
    config
}

/// Whether the query's folder says it is over (`finished.json`), or is gone (its manifest with
/// it): a late write must not bring a folder back.
async fn query_over(node: &LocalNode, dir: &QueryDir) -> bool {
    let (finished, manifest) = (dir.finished(), dir.manifest());
    let (finished, manifest) =
        tokio::join!(node.meadow.exists(&finished), node.meadow.exists(&manifest));
    matches!(finished, Ok(true)) || matches!(manifest, Ok(false))
}

/// Deletes everything in a query folder (the store's bulk delete where it has one).
pub(crate) async fn remove_query(node: &LocalNode, dir: &QueryDir) -> Result<()> {
    let keys = node
        .meadow
        .list(dir.dir())
        .await?
        .into_iter()
        .map(|o| o.location);
    node.meadow.delete_many(keys.collect()).await?;
    // A local meadow's emptied folder would still be listed, and looked into, by every node.
    Ok(node.meadow.remove_empty_folder(dir.dir()).await?)
}

/// Deletes everything in a query folder but `finished.json`.
pub(crate) async fn remove_query_but_marker(node: &LocalNode, dir: &QueryDir) -> Result<()> {
    let marker = node.meadow.key(&dir.finished());
    let keys = node
        .meadow
        .list(dir.dir())
        .await?
        .into_iter()
        .map(|o| o.location)
        .filter(|k| *k != marker);
    Ok(node.meadow.delete_many(keys.collect()).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_then_own_then_anyones_then_others_tasks() {
        let rank = |preferred: Option<&str>, a, may_take| claim_rank(preferred, a, "me", may_take);
        assert_eq!(rank(Some("other"), 1, false), Some(0));
        assert_eq!(rank(Some("me"), 0, false), Some(1));
        assert_eq!(rank(None, 0, false), Some(2));
        assert_eq!(rank(Some("other"), 0, false), None);
        assert_eq!(rank(Some("other"), 0, true), Some(3));
    }

    #[test]
    fn a_hot_node_pulls_one_task_and_a_critical_one_none() {
        assert_eq!(pull_capacity(4, Band::Ideal, false), 4);
        assert_eq!(pull_capacity(4, Band::Hot, false), 1);
        assert_eq!(pull_capacity(4, Band::Critical, false), 0);
        // Everyone critical: the query still runs.
        assert_eq!(pull_capacity(4, Band::Critical, true), 4);
    }
}
