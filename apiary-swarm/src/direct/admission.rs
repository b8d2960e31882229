//! A worker admits work per query, not per task.
//!
//! datafusion-distributed sends all the stage plans of a query at once, and a task reads from
//! other tasks of its query: a task that waited for a free bee while a task of its own query held
//! one could wait forever. So a worker admits a *query*. The first of its plans to arrive takes
//! a chamber of the node's bees — `apiary.bees_per_query` of them, every bee by default — from
//! the pool the node's own queries and swarm tasks use; the query's other plans join that
//! chamber; the bees are freed when the last of its plan streams ends.
//!
//! ```text
//!  plan request ─▶ token check ─▶ Admit: holds the ─▶ datafusion-distributed's session builder:
//!                                 query's place (its   the query's first task takes a chamber
//!                                 ticket, header       (waits, or dies if younger), later ones
//!                                 x-apiary-query)      join it; the task runs in its runtime
//!  … the chamber is freed when the last plan request stream of the query ends
//! ```
//!
//! Two queries could still wait on each other across workers, each admitted on one and waiting
//! on the other. Wait-die breaks that: a query waits for bees only when it is older than every
//! other direct-path query this node knows; a younger one is refused at once, before its first
//! batch, and its coordinator runs it again over the meadow. Age is the coordinator's start
//! time, then the query's id: any total order will do, clocks need not agree.
//!
//! A coordinator that listens runs its own query's tasks in the chamber the query already holds
//! there: it registers the query ([`Admissions::coordinating`]) before it sends a plan.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use apiary_exec::{BeePool, Chamber, Spill};
use datafusion::common::exec_datafusion_err;
use datafusion::error::Result;
use datafusion::execution::runtime_env::RuntimeEnv;
use futures::future::BoxFuture;
use http::{HeaderMap, HeaderValue};
use parking_lot::Mutex;

/// The header that names a plan's query to the worker: `START.ID.BEES.SPILL`.
pub(crate) const HEADER: &str = "x-apiary-query";

/// The gRPC call that sets a task's plan on a worker: its stream lasts as long as the query.
const SET_PLAN: &str = "/worker.WorkerService/CoordinatorChannel";

/// How long the oldest query waits for a worker's bees before it goes over the meadow; below
/// datafusion-distributed's 10 s wait of a task's readers for its plan.
const ADMIT_WAIT: Duration = Duration::from_secs(8);

/// A query as a worker sees it: its age, and what it asks of the bees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ticket {
    /// The coordinator's clock when the query started, in nanoseconds.
    start_ns: u64,
    id: String,
    /// Bees asked for; 0: every bee of the node.
    bees: usize,
    /// Whether work over budget spills (`apiary.spill`).
    spill: bool,
}

impl Ticket {
    /// A query starting now.
    pub(crate) fn new(bees: usize, spill: bool) -> Self {
        let start_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self {
            start_ns,
            id: uuid::Uuid::new_v4().simple().to_string(),
            bees,
            spill,
        }
    }

    fn order(&self) -> (u64, &str) {
        (self.start_ns, &self.id)
    }

    pub(crate) fn header(&self) -> HeaderValue {
        let text = format!(
            "{}.{}.{}.{}",
            self.start_ns,
            self.id,
            self.bees,
            u8::from(self.spill)
        );
        // Digits, hex and dots only.
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("0.0.0.1"))
    }

    fn parse(value: &str) -> Option<Ticket> {
        let mut parts = value.split('.');
        let start_ns = parts.next()?.parse().ok()?;
        let id = parts.next()?;
        let bees = parts.next()?.parse().ok()?;
        let spill = match parts.next()? {
            "0" => false,
            "1" => true,
            _ => return None,
        };
        let valid = !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit());
        (valid && parts.next().is_none()).then(|| Ticket {
            start_ns,
            id: id.to_string(),
            bees,
            spill,
        })
    }
}

/// The direct-path queries a node knows: those its worker admitted, and those it coordinates.
pub(crate) struct Admissions {
    pool: BeePool,
    /// The worker's runtime: the meadow's store only; chambers are built on it.
    base: Arc<RuntimeEnv>,
    node: String,
    queries: Mutex<HashMap<String, Entry>>,
}

struct Entry {
    query: Arc<Query>,
    /// Requests (and the coordinator's own stream) that hold the query's place.
    holders: usize,
}

struct Query {
    ticket: Ticket,
    admitted: tokio::sync::OnceCell<Admitted>,
}

struct Admitted {
    runtime: Arc<RuntimeEnv>,
    /// The bees, freed when the query leaves; none for a query this node coordinates (its
    /// chamber is the coordinator's).
    _chamber: Option<Chamber>,
}

/// A query's place on this node; when the last one is dropped, the query leaves and its bees
/// are freed.
pub(crate) struct Held {
    admissions: Arc<Admissions>,
    id: String,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut queries = self.admissions.queries.lock();
        if let Some(entry) = queries.get_mut(&self.id) {
            entry.holders -= 1;
            if entry.holders == 0 {
                queries.remove(&self.id);
            }
        }
    }
}

impl Admissions {
    pub(crate) fn new(pool: BeePool, base: Arc<RuntimeEnv>, node: &str) -> Arc<Self> {
        Arc::new(Self {
            pool,
            base,
            node: node.to_string(),
            queries: Mutex::new(HashMap::new()),
        })
    }

    fn join(self: &Arc<Self>, ticket: &Ticket) -> (Arc<Query>, Held) {
        let mut queries = self.queries.lock();
        let entry = queries.entry(ticket.id.clone()).or_insert_with(|| Entry {
            query: Arc::new(Query {
                ticket: ticket.clone(),
                admitted: tokio::sync::OnceCell::new(),
            }),
            holders: 0,
        });
        entry.holders += 1;
        let held = Held {
            admissions: Arc::clone(self),
            id: ticket.id.clone(),
        };
        (Arc::clone(&entry.query), held)
    }

    /// Holds a place for the query of a plan request that just arrived until the returned
    /// [`Held`] is dropped; `None` for a request without a ticket (refused by [`Self::admit`]).
    fn hold(self: &Arc<Self>, headers: &HeaderMap) -> std::result::Result<Option<Held>, String> {
        let Some(value) = headers.get(HEADER) else {
            return Ok(None);
        };
        let ticket = value
            .to_str()
            .ok()
            .and_then(Ticket::parse)
            .ok_or_else(|| format!("the plan request's {HEADER} header is malformed"))?;
        Ok(Some(self.join(&ticket).1))
    }

    /// Admits the task of a plan request whose query holds a place here: the query's first
    /// task takes its chamber (or waits for it a while, or is refused — see the module docs),
    /// later ones join it. Returns the runtime the task runs in.
    ///
    /// This runs in the worker's session builder, not before it: datafusion-distributed hands
    /// a session builder's error at once to the tasks that read this one, where a request
    /// refused earlier would leave them waiting for its plan.
    pub(crate) async fn admit(&self, headers: &HeaderMap) -> Result<Arc<RuntimeEnv>> {
        let ticket = headers
            .get(HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(Ticket::parse)
            .ok_or_else(|| {
                exec_datafusion_err!(
                    "node {} runs the plans of Apiary coordinators only: this one came without \
                     its query's ticket ({HEADER})",
                    self.node
                )
            })?;
        let query = self
            .queries
            .lock()
            .get(&ticket.id)
            .map(|e| Arc::clone(&e.query))
            .ok_or_else(|| {
                exec_datafusion_err!("a plan reached node {} after its query left", self.node)
            })?;
        let admitted = query
            .admitted
            .get_or_try_init(|| self.chamber(&query.ticket))
            .await
            .map_err(|e| exec_datafusion_err!("{e}"))?;
        Ok(Arc::clone(&admitted.runtime))
    }

    async fn chamber(&self, ticket: &Ticket) -> std::result::Result<Admitted, String> {
        let bees = match ticket.bees {
            0 => self.pool.bees(),
            n => n.min(self.pool.bees()),
        };
        let failed = |e: apiary_exec::ExecError| format!("node {}: {e}", self.node);
        let chamber = match self
            .pool
            .try_acquire(bees, &self.base, Spill::when(ticket.spill))
            .map_err(failed)?
        {
            Some(chamber) => chamber,
            None if self.oldest(ticket) => {
                let acquire = self
                    .pool
                    .acquire(bees, &self.base, Spill::when(ticket.spill));
                match tokio::time::timeout(ADMIT_WAIT, acquire).await {
                    Ok(chamber) => chamber.map_err(failed)?,
                    Err(_) => {
                        return Err(format!(
                            "node {} has had no free bee for this query for {} s; it runs \
                             again over the meadow",
                            self.node,
                            ADMIT_WAIT.as_secs()
                        ));
                    }
                }
            }
            None => {
                return Err(format!(
                    "node {} has no free bee for this query, and an older direct-path query \
                     holds or waits for them; a younger query does not wait (wait-die), it runs \
                     again over the meadow",
                    self.node
                ));
            }
        };
        Ok(Admitted {
            runtime: chamber.runtime(),
            _chamber: Some(chamber),
        })
    }

    /// Whether `ticket`'s query is older than every other query this node knows.
    fn oldest(&self, ticket: &Ticket) -> bool {
        self.queries
            .lock()
            .values()
            .map(|e| &e.query.ticket)
            .all(|other| other.id == ticket.id || other.order() > ticket.order())
    }

    /// Registers a query this node coordinates from inside a chamber it holds (`chamber`, that
    /// chamber's runtime): its tasks that reach this node's worker run in the same bees.
    pub(crate) fn coordinating(self: &Arc<Self>, ticket: &Ticket, chamber: &RuntimeEnv) -> Held {
        let (query, held) = self.join(ticket);
        let mut runtime = (*self.base).clone();
        runtime.memory_pool = Arc::clone(&chamber.memory_pool);
        runtime.disk_manager = Arc::clone(&chamber.disk_manager);
        // A fresh id: nothing was set before.
        let _ = query.admitted.set(Admitted {
            runtime: Arc::new(runtime),
            _chamber: None,
        });
        held
    }

    /// Queries known now (admitted, waiting, or coordinated here).
    #[cfg(test)]
    fn known(&self) -> usize {
        self.queries.lock().len()
    }
}

/// The worker's gRPC service with a place for each query: a plan request holds its query's
/// place (and with it the query's chamber, once admitted) until the request's stream ends —
/// when the coordinator ends the query, or the connection is lost.
#[derive(Clone)]
pub(crate) struct Admit<S> {
    pub(crate) inner: S,
    pub(crate) admissions: Arc<Admissions>,
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for Admit<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower::Service<http::Request<B>> for Admit<S>
where
    S: tower::Service<
            http::Request<Holding<B>>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, std::result::Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // The clone that was made ready serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let admissions = Arc::clone(&self.admissions);
        Box::pin(async move {
            let held = match req.uri().path() {
                SET_PLAN => match admissions.hold(req.headers()) {
                    Ok(held) => held,
                    Err(e) => return Ok(tonic::Status::invalid_argument(e).into_http()),
                },
                _ => None,
            };
            inner
                .call(req.map(|body| Holding { body, _held: held }))
                .await
        })
    }
}

/// A request body that holds its query's place on the node until it is dropped.
pub(crate) struct Holding<B> {
    body: B,
    _held: Option<Held>,
}

impl<B: http_body::Body + Unpin> http_body::Body for Holding<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apiary_exec::NodeConfig;

    fn admissions(bees: usize) -> (Arc<Admissions>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let pool = BeePool::new(NodeConfig::fixed(bees, 64 << 20, dir.path())).unwrap();
        let base = Arc::new(RuntimeEnv::default());
        (Admissions::new(pool, base, "n1"), dir)
    }

    /// A plan request of `ticket`'s query arriving: its place, once admitted.
    async fn enter(admissions: &Arc<Admissions>, ticket: Ticket) -> Result<Held> {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER, ticket.header());
        let held = admissions.hold(&headers).unwrap().unwrap();
        admissions.admit(&headers).await?;
        Ok(held)
    }

    fn ticket(start_ns: u64, id: &str) -> Ticket {
        Ticket {
            start_ns,
            id: id.into(),
            bees: 1,
            spill: true,
        }
    }

    #[test]
    fn a_ticket_survives_its_header() {
        let t = Ticket::new(3, false);
        let parsed = Ticket::parse(t.header().to_str().unwrap());
        assert_eq!(parsed, Some(t));
        for bad in [
            "",
            "1.ab.1",
            "1.ab.1.2",
            "x.ab.1.1",
            "1.zz.1.1",
            "1.ab.1.1.9",
        ] {
            assert_eq!(Ticket::parse(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn a_plan_without_a_ticket_is_refused_by_name() {
        let (admissions, _dir) = admissions(1);
        let headers = HeaderMap::new();
        assert!(admissions.hold(&headers).unwrap().is_none());
        let e = admissions.admit(&headers).await.unwrap_err().to_string();
        assert!(
            e.contains("without its query's ticket (x-apiary-query)"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_querys_plans_share_one_chamber_freed_with_the_last() {
        let (admissions, _dir) = admissions(2);
        let a = enter(&admissions, ticket(1, "a1")).await.unwrap();
        let b = enter(&admissions, ticket(1, "a1")).await.unwrap();
        assert_eq!(admissions.pool.busy(), 1);
        drop(a);
        assert_eq!(admissions.pool.busy(), 1);
        drop(b);
        assert_eq!(admissions.pool.busy(), 0);
        assert_eq!(admissions.known(), 0);
    }

    #[tokio::test]
    async fn a_younger_query_is_refused_and_an_older_one_waits() {
        let (admissions, _dir) = admissions(1);
        let held = enter(&admissions, ticket(5, "b5")).await.unwrap();
        let younger = enter(&admissions, ticket(9, "c9"))
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(younger.contains("wait-die"), "{younger}");
        // The older one waits until the bee is free, then has it.
        let older = tokio::spawn({
            let admissions = Arc::clone(&admissions);
            async move { enter(&admissions, ticket(2, "d2")).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!older.is_finished());
        drop(held);
        let older = older.await.unwrap().unwrap();
        assert_eq!(admissions.pool.busy(), 1);
        drop(older);
        assert_eq!(admissions.pool.busy(), 0);
    }

    #[tokio::test]
    async fn a_coordinated_querys_plans_take_no_bee() {
        let (admissions, _dir) = admissions(1);
        let chamber = RuntimeEnv::default();
        let t = ticket(1, "e1");
        let coordinating = admissions.coordinating(&t, &chamber);
        let plan = enter(&admissions, t.clone()).await.unwrap();
        assert_eq!(admissions.pool.busy(), 0);
        drop((coordinating, plan));
        assert_eq!(admissions.known(), 0);
        let mut headers = HeaderMap::new();
        headers.insert(HEADER, t.header());
        assert!(admissions.admit(&headers).await.is_err());
    }
}
