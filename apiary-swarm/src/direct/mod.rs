//! The direct path: joins, aggregations and sorts distributed by datafusion-distributed between
//! nodes that reach each other, the meadow's exchange as the fallback.
//!
//! ```text
//!  apiary node --listen ADDR                  coordinator (Apiary::session)
//!  ┌────────────────────────────┐             ┌──────────────────────────────────┐
//!  │ datafusion-distributed     │◀── plans ───│ PathPlanner: direct when every   │
//!  │ worker (gRPC) behind the   │             │ other alive node listens and is  │
//!  │ swarm token's interceptor; │── Arrow ───▶│ reached (SwarmWorkers); else the │
//!  │ bees' memory, meadow store │             │ meadow's exchange (SwarmRule)    │
//!  └────────────────────────────┘             └──────────────────────────────────┘
//!   endpoint in the heartbeat · token in `_swarm/secret.json` · DirectPathExec falls back
//! ```
//!
//! A node that listens runs a datafusion-distributed [`Worker`] on the address given (never a
//! wildcard it was not given) and advertises `http://ADDR` in its heartbeat. Every request must
//! carry the swarm token ([`SwarmToken`]), which only holders of the meadow's credentials can
//! read; a request without it, or with an old one, is refused and counted. A worker admits its
//! tasks per query into chambers of the node's bees ([`admission`]).

mod admission;
mod fallback;
mod guard;
mod planner;
mod resolver;
mod secret;
mod settings;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use apiary_catalog::Meadow;
use apiary_exec::BeePool;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion_distributed::{
    DistributedExt, SessionStateBuilderExt, Worker, WorkerPlanRewriteHandler, WorkerQueryContext,
};
use futures::TryStreamExt;
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;

pub use fallback::DirectPathExec;
pub use planner::PathPlanner;
use planner::Prepared;
pub use resolver::{SwarmChannels, SwarmWorkers};
pub use secret::{SECRET, SwarmToken};

use crate::codec::ApiaryCodec;
use crate::config::SwarmConfig;
use crate::error::{Result, SwarmError};
use crate::fragment::ScanMatcher;
use crate::membership::Membership;
use admission::{Admissions, Admit};
use guard::{MeadowGuard, MeadowStores};

/// This node's direct path: its listening worker (if it listens), the token, and the resolvers
/// its coordinator plans with.
pub(crate) struct Direct {
    pub endpoint: Option<String>,
    pub token: SwarmToken,
    pub workers: Arc<SwarmWorkers>,
    pub channels: SwarmChannels,
    pub refused: Arc<AtomicU64>,
    pub codec: ApiaryCodec,
    pub matcher: ScanMatcher,
    /// The direct-path queries of this node's worker (none when it does not listen).
    pub admissions: Option<Arc<Admissions>>,
    /// This node's worker and its endpoint, when it listens: the node's own queries reach it
    /// in-process, with no gRPC, no encoding of plans and no Arrow IPC of batches.
    local: Option<(Worker, url::Url)>,
}

impl Direct {
    /// Sets up the direct path of a node; with `config.listen`, binds it and serves a worker there
    /// (the server task is returned, to be aborted when the node leaves); its gRPC clients'
    /// connections run on `io`.
    pub(crate) async fn start(
        meadow: &Meadow,
        membership: Arc<Membership>,
        pool: &BeePool,
        base: &Arc<RuntimeEnv>,
        codec: &ApiaryCodec,
        config: &SwarmConfig,
        io: &tokio::runtime::Handle,
    ) -> Result<(Direct, Option<JoinHandle<()>>)> {
        let matcher = &ScanMatcher::of(meadow);
        let listen = config.listen;
        let tls = config.tls.clone().unwrap_or_default();
        let (server_tls, client_tls) = (tls::server(&tls)?, tls::client(&tls)?);
        let token = match listen {
            Some(_) => SwarmToken::load_or_create(meadow).await?,
            None => {
                let token = SwarmToken::default();
                token.refresh(meadow).await?;
                token
            }
        };
        let channels = SwarmChannels::new(token.clone(), client_tls.clone(), io.clone());
        let refused = Arc::new(AtomicU64::new(0));
        let (endpoint, server, admissions, local) = match listen {
            Some(addr) => {
                let runtime = worker_runtime(base, matcher, &refused)?;
                let admissions =
                    Admissions::new(pool.clone(), Arc::clone(&runtime), &config.node_id);
                let guard = Arc::new(MeadowGuard {
                    matcher: matcher.clone(),
                    refused: Arc::clone(&refused),
                });
                let worker = worker(
                    runtime,
                    codec.clone(),
                    channels.clone(),
                    pool,
                    guard,
                    Arc::clone(&admissions),
                );
                let in_process = worker.clone();
                let (endpoint, server) = serve(
                    addr,
                    worker,
                    Arc::clone(&admissions),
                    token.clone(),
                    Arc::clone(&refused),
                    server_tls,
                )
                .await?;
                let url = url::Url::parse(&endpoint).map_err(|e| SwarmError::Listen {
                    addr: endpoint.clone(),
                    reason: e.to_string(),
                })?;
                let local = Some((in_process, url));
                (Some(endpoint), Some(server), Some(admissions), local)
            }
            None => (None, None, None, None),
        };
        let direct = Direct {
            endpoint,
            token,
            workers: Arc::new(SwarmWorkers::new(membership, client_tls.is_some())),
            channels,
            refused,
            codec: codec.clone(),
            matcher: matcher.clone(),
            admissions,
            local,
        };
        Ok((direct, server))
    }

    /// `builder` with the direct path: datafusion-distributed's planner behind Apiary's
    /// [`PathPlanner`], which chooses per query. `builder`'s settings are the node's own: what a
    /// session changes from them travels to the workers. A node that listens reaches its own
    /// worker in-process.
    pub(crate) fn install(&self, mut builder: SessionStateBuilder) -> SessionStateBuilder {
        let node_settings = builder
            .config()
            .as_ref()
            .map(|c| settings::NodeSettings::of(c.options()))
            .unwrap_or_default();
        if let (Some((worker, url)), Some(config)) = (&self.local, builder.config().as_mut()) {
            config.set_extension(Arc::new(worker.to_local_worker_context(url.clone())));
        }
        let mut builder = builder
            .with_query_planner(Arc::new(Prepared::default()))
            .with_distributed_worker_resolver(ResolverHandle(Arc::clone(&self.workers)))
            .with_distributed_channel_resolver(self.channels.clone())
            .with_distributed_user_codec(self.codec.clone())
            .with_distributed_planner();
        let distributed = builder.query_planner().clone();
        if let Some(distributed) = distributed {
            builder = builder.with_query_planner(Arc::new(PathPlanner::new(
                distributed,
                Arc::clone(&self.workers),
                self.token.clone(),
                self.matcher.clone(),
                Arc::new(node_settings),
                self.admissions.clone(),
            )));
        }
        builder
    }

    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// `Arc<SwarmWorkers>` as datafusion-distributed's resolver (it takes one by value).
struct ResolverHandle(Arc<SwarmWorkers>);

impl datafusion_distributed::WorkerResolver for ResolverHandle {
    fn get_urls(&self) -> datafusion::error::Result<Vec<url::Url>> {
        datafusion_distributed::WorkerResolver::get_urls(self.0.as_ref())
    }
}

/// The runtime a worker's chambers are built on: the meadow's store (and no other — not even
/// DataFusion's default `file://`, unless the meadow is a local folder) and the node's footer
/// cache. Its memory pool and spill folders are never used: every task runs in a chamber of
/// the bees ([`admission`]), which brings its own.
fn worker_runtime(
    base: &Arc<RuntimeEnv>,
    matcher: &ScanMatcher,
    refused: &Arc<AtomicU64>,
) -> Result<Arc<RuntimeEnv>> {
    let stores = MeadowStores {
        store_url: matcher.store_url.clone(),
        store: base.object_store(&matcher.store_url)?,
        refused: Arc::clone(refused),
    };
    let mut runtime = RuntimeEnvBuilder::new()
        .with_object_store_registry(Arc::new(stores))
        .build()?;
    runtime.cache_manager = Arc::clone(&base.cache_manager);
    Ok(Arc::new(runtime))
}

/// A datafusion-distributed worker whose sessions run in their query's chamber of this node's
/// bees, decode Apiary's plan nodes, refuse plans that read outside the meadow, reach other
/// workers with the token, and run with the node's execution settings (batch size and spill
/// reservation sized to its bees) under the coordinator session's own.
fn worker(
    runtime: Arc<RuntimeEnv>,
    codec: ApiaryCodec,
    channels: SwarmChannels,
    pool: &BeePool,
    guard: Arc<dyn WorkerPlanRewriteHandler>,
    admissions: Arc<Admissions>,
) -> Worker {
    let execution = pool.session_config().options().execution.clone();
    Worker::from_session_builder(move |ctx: WorkerQueryContext| {
        let (codec, channels, guard) = (codec.clone(), channels.clone(), Arc::clone(&guard));
        let execution = execution.clone();
        let admissions = Arc::clone(&admissions);
        async move {
            let chamber = admissions.admit(&ctx.headers).await?;
            let mut builder = ctx.builder.with_runtime_env(chamber);
            if let Some(config) = builder.config().as_mut() {
                config.options_mut().execution = execution;
                settings::apply(config, &ctx.headers)?;
            }
            Ok(builder
                .with_distributed_user_codec(codec)
                .with_distributed_channel_resolver(channels)
                .with_distributed_worker_plan_rewrite_handler(guard)
                .build())
        }
    })
    .with_runtime_env(runtime)
}

/// Binds `addr` and serves `worker` there behind the token's check, then admission per query,
/// over TLS when given; the endpoint advertised is the bound address (port 0 becomes the port
/// given).
async fn serve(
    addr: SocketAddr,
    worker: Worker,
    admissions: Arc<Admissions>,
    token: SwarmToken,
    refused: Arc<AtomicU64>,
    tls: Option<tonic::transport::ServerTlsConfig>,
) -> Result<(String, JoinHandle<()>)> {
    let mut builder = tonic::transport::Server::builder();
    let scheme = match tls {
        Some(tls) => {
            builder = builder.tls_config(tls).map_err(|e| SwarmError::Tls {
                what: "the certificate and key".into(),
                reason: e.to_string(),
            })?;
            "https"
        }
        None => "http",
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| SwarmError::Listen {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?;
    let bound = listener.local_addr().map_err(|e| SwarmError::Listen {
        addr: addr.to_string(),
        reason: e.to_string(),
    })?;
    let check = move |req: tonic::Request<()>| {
        let admitted = req
            .metadata()
            .get("authorization")
            .is_some_and(|v| token.admits(v.as_bytes()));
        if admitted {
            Ok(req)
        } else {
            refused.fetch_add(1, Ordering::Relaxed);
            Err(tonic::Status::unauthenticated(
                "this worker takes plans from its swarm only: no valid swarm token",
            ))
        }
    };
    let admit = Admit {
        inner: worker.into_worker_server(),
        admissions,
    };
    let service = InterceptedService::new(admit, check);
    let server = tokio::spawn(async move {
        // Without TCP_NODELAY, a small reply waits for the ACK of the one before, which the
        // peer delays: 40 ms stalls on Linux, a fixed cost of every short query.
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map_ok(|stream| {
            if let Err(e) = stream.set_nodelay(true) {
                log::debug!("TCP_NODELAY on a direct-path connection: {e}");
            }
            stream
        });
        if let Err(e) = builder
            .add_service(service)
            .serve_with_incoming(incoming)
            .await
        {
            log::error!("the direct-path worker on {bound} stopped: {e}");
        }
    });
    Ok((format!("{scheme}://{bound}"), server))
}

/// Keeps the direct path current while the node lives: probes endpoints of nodes not reached
/// yet every view interval, and reads the swarm token again every few (a rotation) — or at once
/// when a node that listens was just reached and this node has no token yet (that node may
/// have just created it). A swarm where no node listens costs no reads per interval.
pub(crate) async fn direct_loop(node: std::sync::Weak<crate::local_node::LocalNode>) {
    const TOKEN_EVERY: u64 = 5;
    let mut round = 0u64;
    loop {
        let Some(inner) = node.upgrade() else { return };
        let interval = inner.config.view_interval;
        let reached = inner.direct.workers.probe().await;
        let token = &inner.direct.token;
        let due = if token.is_known() {
            round % TOKEN_EVERY == TOKEN_EVERY - 1
        } else {
            reached > 0
        };
        if due && let Err(e) = token.refresh(&inner.meadow).await {
            log::warn!(
                "node {}: reading the swarm token failed: {e}",
                inner.config.node_id
            );
        }
        round += 1;
        drop(inner);
        tokio::time::sleep(interval).await;
    }
}
