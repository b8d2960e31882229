//! The meadow exchange: a coordinator's distributed scan through `_queries/{id}/` objects.
//!
//! Executing a scan writes its fragment and manifest (and points `_queries/latest.json` at it),
//! works tasks on this node's free bees inside the query's own chamber (pulled like any node's),
//! and streams every task's partial result back as soon as its `done_{n}` appears — task `n`
//! feeds output partition `n mod P`, so the operators above see the partitioning they were
//! planned with. Failed attempts (an error, a dead claimant, a missed deadline) are offered again
//! until task abandonment gives up; then the query fails with the diagnostic. When the query ends
//! — finished, failed or cancelled — `finished.json` tells the workers, and the folder is removed.
//! The workers' side is in [`crate::worker`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use apiary_exec::{TaskFailures, Verdict};
use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::buffer::Buffer;
use datafusion::arrow::ipc::reader::StreamDecoder;
use datafusion::config::ConfigOptions;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder};
use futures::StreamExt;
use object_store::ObjectStoreExt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::error::{Result, SwarmError};
use crate::local_node::LocalNode;
use crate::manifest::{
    Claim, Done, Finished, LATEST, Latest, Manifest, Outcome, QueryDir, Retry, TaskCell, TaskError,
    TaskSpec, decode, encode,
};
use crate::membership::Lease;
use crate::swarm_exec::{Exchange, PlannedTask, ScanJob};
use crate::worker::{
    Attempt, Handover, Slots, claim_and_run, query_state, remove_query_but_marker,
};
use crate::world_view::NodeState;

/// The exchange through this node's meadow.
#[derive(Clone)]
pub(crate) struct MeadowExchange {
    node: Arc<LocalNode>,
}

impl MeadowExchange {
    pub(crate) fn new(node: Arc<LocalNode>) -> Self {
        Self { node }
    }
}

impl std::fmt::Debug for MeadowExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeadowExchange")
            .field("node", &self.node.config.node_id)
            .finish()
    }
}

impl Exchange for MeadowExchange {
    fn start(
        &self,
        job: ScanJob,
        ctx: Arc<TaskContext>,
    ) -> Vec<mpsc::Receiver<DfResult<RecordBatch>>> {
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..job.partitions.max(1)).map(|_| mpsc::channel(4)).unzip();
        let run = Coordination {
            node: Arc::clone(&self.node),
            query: QueryDir::new(uuid::Uuid::now_v7().simple().to_string()),
            tasks: job.tasks,
            fragment: job.fragment,
            senders,
            ctx,
            metrics: job.metrics,
            local: vec![],
        };
        tokio::spawn(run.run());
        receivers
    }
}

/// One distributed query, from the coordinator's side.
struct Coordination {
    node: Arc<LocalNode>,
    query: QueryDir,
    tasks: Vec<PlannedTask>,
    fragment: Bytes,
    senders: Vec<mpsc::Sender<DfResult<RecordBatch>>>,
    ctx: Arc<TaskContext>,
    metrics: ExecutionPlanMetricsSet,
    /// This node's own attempts of the query's tasks.
    local: Vec<Attempt>,
}

impl Coordination {
    async fn run(mut self) {
        // Held until the folder is cleaned up: while this node's heartbeats list the query, no
        // node sweeps its folder, however long it runs.
        let _lease = Lease::take(&self.node.membership, &self.query.query_id);
        // A cancel (every consumer gone) is noticed at once, not at the next look at the folder.
        let watched = self.senders.clone();
        let cancelled = async {
            if watched.is_empty() {
                std::future::pending::<()>().await;
            }
            futures::future::join_all(watched.iter().map(|s| s.closed())).await
        };
        let outcome = tokio::select! {
            outcome = self.drive() => outcome,
            _ = cancelled => Ok(false),
        };
        drop(watched);
        // This node's own attempts stop with the query, whatever its end.
        self.local.clear();
        let finished = match &outcome {
            Ok(true) => Finished {
                outcome: Outcome::Ok,
                error: None,
            },
            Ok(false) => Finished {
                outcome: Outcome::Cancelled,
                error: None,
            },
            Err(e) => Finished {
                outcome: Outcome::Failed,
                error: Some(e.to_string()),
            },
        };
        if let Err(e) = outcome {
            let reason = e.to_string();
            for s in &self.senders {
                let err = SwarmError::QueryFailed {
                    query: self.query.query_id.clone(),
                    reason: reason.clone(),
                };
                let _ = s.send(Err(DataFusionError::from(err))).await;
            }
        }
        // The result streams end before any cleanup: the caller has its answer now.
        self.senders.clear();
        let key = self.query.finished();
        if let Ok(body) = encode(&finished, &key)
            && let Err(e) = self.node.meadow.put(&key, body).await
        {
            log::warn!("could not mark {} finished: {e}", self.query.dir());
        }
        // Everything but `finished.json` goes at once; the marker stays a short while, so that
        // a late write of an attempt lands in a folder that says the query is over (workers
        // remove it after a grace period).
        if !self.node.config.keep_queries
            && let Err(e) = remove_query_but_marker(&self.node, &self.query).await
        {
            log::warn!("could not remove {}: {e}", self.query.dir());
        }
    }

    /// Runs the query; `Ok(false)` when every consumer went away (cancelled).
    async fn drive(&mut self) -> Result<bool> {
        let node = &self.node;
        let config = &node.config;
        let query = &self.query;
        // One fragment for the whole query, encoded (and checked to decode) while planning.
        node.meadow
            .put(&query.fragment(), self.fragment.clone())
            .await?;
        let manifest = Manifest {
            query_id: query.query_id.clone(),
            coordinator: config.node_id.clone(),
            // On the clock of this node's heartbeats: a heartbeat written later that does not list
            // the query says the lease is over (see the worker's sweep).
            created_ms: node.clock_ms(),
            tasks: self
                .tasks
                .iter()
                .enumerate()
                .map(|(n, t)| TaskSpec {
                    n,
                    preferred: t.preferred.clone(),
                    cells: t
                        .files
                        .iter()
                        .map(|f| TaskCell {
                            key: f.object_meta.location.to_string(),
                            range: f.range.as_ref().map(|r| [r.start as u64, r.end as u64]),
                        })
                        .collect(),
                    bytes: t.bytes(),
                })
                .collect(),
            task_deadline_ms: config.task_deadline.as_millis() as u64,
            max_failures: config.max_task_failures,
            options: session_options(self.ctx.session_config()),
        };
        node.meadow
            .create_ephemeral(&query.manifest(), encode(&manifest, &query.manifest())?)
            .await?;
        // Idle nodes watch this one object: a change sends them listing (off the critical path).
        let latest = Latest {
            query_id: query.query_id.clone(),
            coordinator: config.node_id.clone(),
            created_ms: manifest.created_ms,
        };
        if let Ok(body) = encode(&latest, LATEST) {
            let node = Arc::clone(node);
            tokio::spawn(async move {
                if let Err(e) = node.meadow.put(LATEST, body).await {
                    log::debug!("writing {LATEST}: {e}");
                }
            });
        }
        // This node's own attempts hand small results over here, not through the folder.
        let (handover, mut handed) = mpsc::unbounded_channel::<Handover>();
        let slots = Slots {
            running: Arc::new(AtomicUsize::new(0)),
            capacity: self.ctx.session_config().target_partitions().max(1),
            ctx: Some(Arc::clone(&self.ctx)),
            fragment: self.fragment.clone(),
            ended: Some(Arc::new(tokio::sync::Notify::new())),
            handover: Some(handover),
        };
        let ended = slots.ended.clone().unwrap_or_default();
        let counter = |name: &'static str| MetricBuilder::new(&self.metrics).global_counter(name);
        let (tasks_total, elsewhere, retries) = (
            counter("tasks"),
            counter("tasks_on_other_nodes"),
            counter("task_retries"),
        );
        tasks_total.add(self.tasks.len());
        let started = Instant::now();
        let mut delivered: BTreeSet<usize> = BTreeSet::new();
        let mut deliveries: JoinSet<Result<()>> = JoinSet::new();
        // When this node first saw each claim, and — once its lease was judged — who holds it.
        let mut claims: HashMap<(usize, usize), Instant> = HashMap::new();
        let mut claimants: HashMap<(usize, usize), String> = HashMap::new();
        let mut failures: HashMap<usize, TaskFailures> = HashMap::new();
        let mut retried: BTreeSet<(usize, usize)> = BTreeSet::new();
        // When each attempt's progress object last changed, on this node's clock.
        let mut progressed: HashMap<(usize, usize), (String, Instant)> = HashMap::new();
        let mut interval = LOOK_MIN;
        loop {
            if self.senders.iter().all(|s| s.is_closed()) {
                return Ok(false);
            }
            while let Some(joined) = deliveries.try_join_next() {
                joined.map_err(|e| SwarmError::QueryFailed {
                    query: query.query_id.clone(),
                    reason: e.to_string(),
                })??;
            }
            let state = query_state(node, query).await?;
            for (attempt, fingerprint) in &state.progress {
                let changed = progressed
                    .get(attempt)
                    .is_none_or(|(seen, _)| seen != fingerprint);
                if changed {
                    progressed.insert(*attempt, (fingerprint.clone(), Instant::now()));
                }
            }
            let mut progress = false;
            let mine = claim_and_run(
                node,
                query,
                &manifest,
                &state,
                started.elapsed() >= config.steal_after,
                &slots,
            )
            .await?;
            progress |= !mine.is_empty();
            self.local.retain(|t| !t.is_finished());
            self.local.extend(mine);

            while let Ok(Handover { n, batches }) = handed.try_recv() {
                if delivered.insert(n) {
                    let sender = self.senders[n % self.senders.len()].clone();
                    deliveries.spawn(async move {
                        for batch in batches {
                            if sender.send(Ok(batch)).await.is_err() {
                                break; // the consumer went away
                            }
                        }
                        Ok(())
                    });
                    progress = true;
                }
            }
            let landed: Vec<usize> = state
                .done
                .iter()
                .copied()
                .filter(|n| !delivered.contains(n))
                .collect();
            for n in landed {
                let key = query.done(n);
                let done: Done = match node.meadow.get(&key).await? {
                    Some(body) => decode(&body, &key)?,
                    None => continue,
                };
                if done.in_memory && done.node == config.node_id {
                    continue; // its batches were handed over by this node's own attempt
                }
                if done.node != config.node_id {
                    elsewhere.add(1);
                }
                let sender = self.senders[n % self.senders.len()].clone();
                let parts = (0..done.parts)
                    .map(|k| node.meadow.key(&query.partial(n, done.attempt, k)))
                    .collect();
                let node = Arc::clone(node);
                deliveries.spawn(async move { deliver(&node, parts, sender).await });
                delivered.insert(n);
                progress = true;
            }

            for (n, a) in state.current_claims(self.tasks.len()) {
                if state.done.contains(&n) || delivered.contains(&n) || retried.contains(&(n, a)) {
                    continue;
                }
                let seen = *claims.entry((n, a)).or_insert_with(Instant::now);
                let (claimant, reason) = if state.errors.contains(&(n, a)) {
                    let key = query.error(n, a);
                    match node.meadow.get(&key).await? {
                        Some(body) => {
                            let error: TaskError = decode(&body, &key)?;
                            (error.node, error.error)
                        }
                        None => continue,
                    }
                } else {
                    // A claim is a lease its claimant renews by rewriting the attempt's
                    // progress object (beyond the store's lag): one unchanged for `dead_after`
                    // whose claimant is dead or gone, or for twice that whatever the heartbeat
                    // says, is taken over. A working claimant renews it however late its
                    // heartbeats are. The claim itself (who holds it) is read only then: one
                    // call fewer per task on the way of every result.
                    let silence = progressed
                        .get(&(n, a))
                        .map_or(seen, |(_, at)| (*at).max(seen))
                        .elapsed()
                        .saturating_sub(node.world().store_lag());
                    if silence < config.dead_after && seen.elapsed() < config.task_deadline {
                        continue;
                    }
                    let claimant = match claimants.get(&(n, a)) {
                        Some(claimant) => claimant.clone(),
                        None => {
                            let key = query.claim(n, a);
                            let Some(body) = node.meadow.get(&key).await? else {
                                continue;
                            };
                            let claim: Claim = decode(&body, &key)?;
                            claimants.insert((n, a), claim.node.clone());
                            claim.node
                        }
                    };
                    let state = node.world().state_of(&claimant);
                    let gone = matches!(state, Some(NodeState::Dead) | None);
                    let reason = if gone && silence >= config.dead_after {
                        match state {
                            Some(_) => format!("node {claimant} stopped heartbeating"),
                            None => format!("node {claimant} left the swarm"),
                        }
                    } else if silence >= config.dead_after * 2 {
                        // Alive, but its attempt stands still: the lease is over.
                        format!(
                            "node {claimant} made no progress on attempt {a} for {} ms",
                            silence.as_millis()
                        )
                    } else if seen.elapsed() >= config.task_deadline {
                        format!(
                            "not finished within the task deadline of {} ms",
                            config.task_deadline.as_millis()
                        )
                    } else {
                        continue;
                    };
                    (claimant, reason)
                };
                let failures = failures.entry(n).or_insert_with(|| {
                    TaskFailures::new(
                        format!("{} of query {}", n, query.query_id),
                        config.max_task_failures,
                    )
                });
                if self.senders.iter().all(|s| s.is_closed()) {
                    return Ok(false); // cancelled: no more objects for this query
                }
                match failures.record(format!("node {claimant}"), &reason) {
                    Verdict::Abandon(d) => {
                        return Err(apiary_exec::ExecError::Abandoned(Box::new(d)).into());
                    }
                    Verdict::Retry => {
                        let key = query.retry(n, a);
                        let retry = Retry {
                            attempt: a,
                            reason,
                            node: Some(claimant),
                        };
                        node.meadow.put(&key, encode(&retry, &key)?).await?;
                        retried.insert((n, a));
                        retries.add(1);
                        node.nudge.notify_one();
                        progress = true;
                    }
                }
            }

            if delivered.len() == self.tasks.len() {
                while let Some(joined) = deliveries.join_next().await {
                    joined.map_err(|e| SwarmError::QueryFailed {
                        query: query.query_id.clone(),
                        reason: e.to_string(),
                    })??;
                }
                return Ok(true);
            }
            // Looks again soon after progress, backing off to a fiftieth of the query's age (at
            // least 5 ms, at most 50 ms) — and at once when one of this node's own attempts
            // ended. A short query's last result is seen within 5 ms (a doubling back-off alone
            // saw it up to as late again as the coordinator had waited for it).
            let cap = (started.elapsed() / 50).clamp(LOOK_MIN, LOOK_MAX);
            interval = if progress {
                LOOK_MIN
            } else {
                (interval * 2).min(cap)
            };
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = ended.notified() => {}
            }
        }
    }
}

/// How often a coordinator looks at its query folder: soon after progress, and never less often
/// than this.
const LOOK_MIN: Duration = Duration::from_millis(5);
const LOOK_MAX: Duration = Duration::from_millis(50);

/// The settings of `config` that differ from DataFusion's defaults, and every extension's
/// (`apiary.*`, `swarm.*`): what a worker must run a task under to give the coordinator's answer.
fn session_options(config: &datafusion::prelude::SessionConfig) -> BTreeMap<String, String> {
    let defaults: HashMap<String, Option<String>> = ConfigOptions::default()
        .entries()
        .into_iter()
        .map(|e| (e.key, e.value))
        .collect();
    config
        .options()
        .entries()
        .into_iter()
        .filter_map(|e| {
            let value = e.value?;
            match defaults.get(&e.key) {
                Some(Some(d)) if *d == value => None,
                _ => Some((e.key, value)),
            }
        })
        .collect()
}

/// Streams one partial result (its parts, each an Arrow IPC stream) into `sender`, batch by
/// batch.
async fn deliver(
    node: &LocalNode,
    parts: Vec<object_store::path::Path>,
    sender: mpsc::Sender<DfResult<RecordBatch>>,
) -> Result<()> {
    for part in parts {
        let storage = |source| SwarmError::Storage {
            key: part.to_string(),
            source,
        };
        let mut chunks = node
            .meadow
            .store()
            .get(&part)
            .await
            .map_err(storage)?
            .into_stream();
        let mut decoder = StreamDecoder::new();
        while let Some(chunk) = chunks.next().await {
            let mut buffer = Buffer::from(chunk.map_err(storage)?);
            while !buffer.is_empty() {
                match decoder.decode(&mut buffer)? {
                    Some(batch) => {
                        if sender.send(Ok(batch)).await.is_err() {
                            return Ok(()); // the consumer went away
                        }
                    }
                    None => break,
                }
            }
        }
        decoder.finish()?;
    }
    Ok(())
}
