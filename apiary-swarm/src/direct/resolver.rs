//! Which workers a coordinator plans with, and how it reaches them.
//!
//! [`SwarmWorkers`] answers datafusion-distributed's `WorkerResolver` from the world view: the
//! alive nodes that advertise an endpoint this node has reached. Reaching is probed off the
//! query's path ([`SwarmWorkers::probe`], from the node's direct loop) when a node first
//! appears and again while it fails, so `get_urls` never blocks. [`SwarmChannels`] makes the
//! gRPC clients: one lazily connected channel per endpoint, with connect and keep-alive
//! timeouts, and every request carrying the swarm token. The channels' connections run on
//! Apiary's I/O runtime, not the caller's: a node of one core runs its queries on one thread,
//! and a plan for another worker must leave while the query's own tasks keep that thread busy.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::common::{exec_datafusion_err, exec_err};
use datafusion::error::{DataFusionError, Result};
use datafusion_distributed::{ChannelResolver, WorkerChannel, WorkerResolver, grpc};
use parking_lot::Mutex;
use tokio::runtime::Handle;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use url::Url;

use super::secret::SwarmToken;
use crate::membership::Membership;

/// How long a connection attempt (a probe, or a channel's connect) may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// HTTP/2 pings on idle connections, so that a lost worker is noticed without traffic.
const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// An endpoint that failed is probed again after this long.
const RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
enum Reach {
    Reached,
    Failed(Instant),
}

/// The reachable workers of the swarm, as the world view and this node's probes know them.
pub struct SwarmWorkers {
    membership: Arc<Membership>,
    reach: Mutex<HashMap<String, Reach>>,
    /// Whether this node can check a TLS worker's certificate; a worker it cannot is skipped.
    tls: bool,
    /// Direct-path queries that failed before their first batch and ran again over the meadow.
    reruns: AtomicU64,
}

impl std::fmt::Debug for SwarmWorkers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwarmWorkers")
            .field("reach", &*self.reach.lock())
            .finish()
    }
}

impl SwarmWorkers {
    pub(crate) fn new(membership: Arc<Membership>, tls: bool) -> Self {
        Self {
            membership,
            reach: Mutex::new(HashMap::new()),
            tls,
            reruns: AtomicU64::new(0),
        }
    }

    /// The alive nodes' endpoints this node can call (`None` for a node that does not listen,
    /// or serves TLS to a node without the swarm's CA).
    fn alive_endpoints(&self) -> Vec<Option<String>> {
        self.membership
            .world
            .alive()
            .into_iter()
            .map(|hb| hb.endpoint.filter(|e| self.tls || !e.starts_with("https:")))
            .collect()
    }

    fn reached(&self, endpoint: &str) -> bool {
        matches!(self.reach.lock().get(endpoint), Some(Reach::Reached))
    }

    /// Whether a query can take the direct path: at least one other node alive, and every
    /// other alive node listening and reached (this node, the coordinator, need not listen).
    /// One node that cannot be reached sends the query over the meadow.
    pub fn all_reached(&self) -> bool {
        let me = self.membership.id();
        let others: Vec<Option<String>> = self
            .membership
            .world
            .alive()
            .into_iter()
            .filter(|hb| hb.node_id != me)
            .map(|hb| hb.endpoint.filter(|e| self.tls || !e.starts_with("https:")))
            .collect();
        !others.is_empty()
            && others
                .iter()
                .all(|e| e.as_deref().is_some_and(|e| self.reached(e)))
    }

    /// Probes the endpoints of alive nodes not reached yet (or failed a while ago) with
    /// [`answers`]. Returns how many were reached.
    pub(crate) async fn probe(&self) -> usize {
        let mut newly = 0;
        let due: Vec<String> = {
            let reach = self.reach.lock();
            self.alive_endpoints()
                .into_iter()
                .flatten()
                .filter(|e| match reach.get(e) {
                    None => true,
                    Some(Reach::Reached) => false,
                    Some(Reach::Failed(at)) => at.elapsed() >= RETRY_AFTER,
                })
                .collect()
        };
        for endpoint in due {
            let reached = answers(&endpoint).await;
            if !reached {
                log::info!("node {}: cannot reach {endpoint}", self.membership.id());
            }
            let state = if reached {
                newly += 1;
                Reach::Reached
            } else {
                Reach::Failed(Instant::now())
            };
            self.reach.lock().insert(endpoint, state);
        }
        newly
    }
    /// The workers reached before that do not answer now, each as `node ID (ENDPOINT)`; they
    /// are probed again before a query plans with them. Asked when a direct-path query failed,
    /// to name the node it lost.
    pub(crate) async fn unanswering(&self) -> Vec<String> {
        let reached: Vec<String> = self
            .reach
            .lock()
            .iter()
            .filter(|(_, r)| matches!(r, Reach::Reached))
            .map(|(e, _)| e.clone())
            .collect();
        let names: HashMap<String, String> = self
            .membership
            .world
            .nodes()
            .into_iter()
            .filter_map(|n| Some((n.heartbeat.endpoint?, n.heartbeat.node_id)))
            .collect();
        let mut lost = vec![];
        for endpoint in reached {
            if answers(&endpoint).await {
                continue;
            }
            self.reach
                .lock()
                .insert(endpoint.clone(), Reach::Failed(Instant::now()));
            lost.push(match names.get(&endpoint) {
                Some(id) => format!("node {id} ({endpoint})"),
                None => endpoint,
            });
        }
        lost.sort();
        lost
    }

    /// A query failed before its first batch and runs again over the meadow: it is counted,
    /// and the workers reached are probed at once — those that no longer answer are not
    /// planned with until a later probe reaches them. (A worker that refused the query for want
    /// of bees still answers, and stays.)
    pub(crate) async fn rerun(&self) {
        self.reruns.fetch_add(1, Ordering::Relaxed);
        let lost = self.unanswering().await;
        if !lost.is_empty() {
            log::warn!("the direct path lost {}", lost.join(", "));
        }
    }

    /// Queries that ran again over the meadow (see `SwarmWorkers::rerun`).
    pub fn reruns(&self) -> u64 {
        self.reruns.load(Ordering::Relaxed)
    }
}

/// Whether the worker at `endpoint` answers: a TCP connection opens and, sent HTTP/2's
/// connection preface, the worker's process replies (its own SETTINGS, or a TLS alert and a
/// close) — each within [`CONNECT_TIMEOUT`]. A connection alone is not enough: the kernel
/// accepts them for a process that is frozen or cut off, which would then take the query.
async fn answers(endpoint: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    /// HTTP/2's client preface and an empty SETTINGS frame (RFC 9113, 3.4 and 6.5).
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
    let Ok(url) = Url::parse(endpoint) else {
        return false;
    };
    let (Some(host), Some(port)) = (url.host_str(), url.port()) else {
        return false;
    };
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect((host, port)).await?;
        stream.write_all(PREFACE).await?;
        let mut reply = [0u8; 16];
        match stream.read(&mut reply).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(0),
            read => read,
        }
    };
    matches!(
        tokio::time::timeout(CONNECT_TIMEOUT, exchange).await,
        Ok(Ok(_))
    )
}

impl WorkerResolver for SwarmWorkers {
    fn get_urls(&self) -> Result<Vec<Url>> {
        let mut urls = vec![];
        for endpoint in self.alive_endpoints().into_iter().flatten() {
            if self.reached(&endpoint) {
                let url = Url::parse(&endpoint)
                    .map_err(|e| exec_datafusion_err!("bad worker endpoint {endpoint}: {e}"))?;
                urls.push(url);
            }
        }
        urls.sort();
        Ok(urls)
    }
}

/// gRPC clients of the swarm's workers, each request carrying the swarm token.
#[derive(Clone)]
pub struct SwarmChannels {
    token: SwarmToken,
    /// The swarm's CA, for workers that serve TLS.
    tls: Option<ClientTlsConfig>,
    channels: Arc<Mutex<HashMap<Url, Channel>>>,
    /// Clients handed out per endpoint: which workers this node's queries and tasks called.
    calls: Arc<Mutex<BTreeMap<String, u64>>>,
    /// Where the channels' connections run (Apiary's I/O runtime).
    io: Handle,
}

/// Runs the futures tonic spawns for a channel (its request queue, its HTTP/2 connection) on a
/// runtime of Apiary's own.
#[derive(Clone)]
struct OnRuntime(Handle);

impl<F> hyper::rt::Executor<F> for OnRuntime
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        self.0.spawn(fut);
    }
}

impl SwarmChannels {
    /// Clients that carry `token`, check workers' certificates with `tls`, and run their
    /// connections on `io`.
    pub(crate) fn new(token: SwarmToken, tls: Option<ClientTlsConfig>, io: Handle) -> Self {
        Self {
            token,
            tls,
            channels: Arc::default(),
            calls: Arc::default(),
            io,
        }
    }

    /// Calls made so far, per worker endpoint.
    pub fn calls(&self) -> BTreeMap<String, u64> {
        self.calls.lock().clone()
    }

    fn channel(&self, url: &Url) -> Result<Channel> {
        let mut channels = self.channels.lock();
        if let Some(c) = channels.get(url) {
            return Ok(c.clone());
        }
        let mut endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| exec_datafusion_err!("bad worker endpoint {url}: {e}"))?;
        if url.scheme() == "https" {
            let Some(tls) = &self.tls else {
                return exec_err!(
                    "the worker at {url} serves TLS, and this node has no CA to check it against \
                     (--tls-ca)"
                );
            };
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| exec_datafusion_err!("TLS for the worker at {url}: {e}"))?;
        }
        let channel = endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(KEEP_ALIVE)
            .keep_alive_timeout(KEEP_ALIVE)
            .keep_alive_while_idle(true)
            .tcp_nodelay(true)
            .executor(OnRuntime(self.io.clone()))
            .connect_lazy();
        channels.insert(url.clone(), channel.clone());
        Ok(channel)
    }
}

#[async_trait]
impl ChannelResolver for SwarmChannels {
    async fn get_worker_client_for_url(
        &self,
        url: &Url,
    ) -> Result<Box<dyn WorkerChannel>, DataFusionError> {
        let channel = self.channel(url)?;
        *self.calls.lock().entry(url.to_string()).or_default() += 1;
        let bearer = http::HeaderValue::from_str(&self.token.bearer())
            .map_err(|e| exec_datafusion_err!("the swarm token is not a header value: {e}"))?;
        let service = tower::ServiceBuilder::new()
            .map_request(move |mut req: http::Request<tonic::body::Body>| {
                req.headers_mut()
                    .insert(http::header::AUTHORIZATION, bearer.clone());
                req
            })
            .service(channel);
        Ok(grpc::create_worker_client(grpc::BoxCloneSyncChannel::new(
            service,
        )))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::time::Duration;

    use apiary_catalog::IoRuntime;
    use datafusion_distributed::GetWorkerInfoRequest;

    use super::*;

    /// A node of one core runs a query on one thread; datafusion-distributed hands a plan to a
    /// remote worker from a task on that thread while the query's local tasks compute there.
    /// The request must leave even if that thread gets no turn after the first poll.
    #[test]
    fn a_request_leaves_while_the_callers_only_thread_is_busy() {
        let io = IoRuntime::new().expect("io runtime");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url =
            Url::parse(&format!("http://{}/", listener.local_addr().expect("addr"))).expect("url");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            let mut preface = [0u8; 24];
            stream.read_exact(&mut preface).expect("read");
            tx.send(preface).expect("send");
            // Hold the connection until the test is over.
            std::thread::sleep(Duration::from_secs(10));
        });
        let caller = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        caller.block_on(async {
            let channels = SwarmChannels::new(SwarmToken::default(), None, io.handle().clone());
            let mut client = channels
                .get_worker_client_for_url(&url)
                .await
                .expect("client");
            let mut call = Box::pin(client.get_worker_info(GetWorkerInfoRequest {}));
            assert!(futures::poll!(call.as_mut()).is_pending());
            // The caller's only thread now blocks: nothing else on its runtime runs.
            let preface = rx.recv_timeout(Duration::from_secs(5));
            assert_eq!(
                preface.ok().as_ref().map(|p| &p[..]),
                Some(&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..]),
                "the request did not reach the worker while the caller's thread was busy"
            );
        });
    }
}
