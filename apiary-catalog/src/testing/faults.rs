//! An object store that injects faults: a call fails before it reaches the store, fails after the
//! store did it (the ambiguous case a commit must survive), times out, answers 503, or is slowed
//! down — by rule, or at random from a seed so that a failing run can be replayed.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::sync::Arc;
//! use apiary_catalog::testing::faults::{Fault, Faults, Op, Rule};
//! use object_store::{ObjectStoreExt, PutPayload, memory::InMemory, path::Path};
//!
//! let faults = Faults::new(7).with_rule(Rule::new(Fault::After).on(&[Op::Put]).times(1));
//! let store = faults.wrap(Arc::new(InMemory::new()));
//! let key = Path::from("a");
//! assert!(store.put(&key, PutPayload::from_static(b"x")).await.is_err()); // but it landed
//! assert!(store.get(&key).await.is_ok());
//! assert_eq!(faults.injected(Fault::After), 1);
//! # });
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The kinds of calls a rule can pick out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    /// A conditional create (`PutMode::Create`): every commit point.
    Create,
    /// Any other single put.
    Put,
    /// Completing a multipart upload (cells).
    Multipart,
    /// A read, ranged reads included.
    Get,
    /// A HEAD: the metadata alone.
    Head,
    /// A listing, keyed by its prefix.
    List,
    /// The deletion of one key.
    Delete,
    /// A copy, keyed by its destination.
    Copy,
}

impl Op {
    /// Every kind of call.
    pub const ALL: [Op; 8] = [
        Op::Create,
        Op::Put,
        Op::Multipart,
        Op::Get,
        Op::Head,
        Op::List,
        Op::Delete,
        Op::Copy,
    ];
}

/// What happens to a call a rule picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// Fails without reaching the store.
    Before,
    /// Reaches the store and succeeds there; the caller gets an error. For a read this is a
    /// plain failure; for a write the caller cannot tell whether it happened.
    After,
    /// Reaches the store and succeeds there; the caller waits this long, then gets a timeout.
    Timeout(Duration),
    /// The store answers 503 Service Unavailable, having done nothing.
    Unavailable,
    /// The call waits this long, then runs normally.
    Delay(Duration),
    /// The store client retried a request that had landed (a 5xx after the store kept it): the
    /// caller gets the retry's answer — for a conditional create, "already exists" for its own
    /// object.
    Replay,
}

impl Fault {
    /// The kind without its duration, for counting.
    fn kind(self) -> Fault {
        match self {
            Fault::Timeout(_) => Fault::Timeout(Duration::ZERO),
            Fault::Delay(_) => Fault::Delay(Duration::ZERO),
            other => other,
        }
    }

    /// Whether a write hit by this fault may have happened although the caller got an error.
    pub fn is_ambiguous(self) -> bool {
        matches!(self, Fault::After | Fault::Timeout(_) | Fault::Replay)
    }
}

/// When a fault is injected.
#[derive(Debug, Clone)]
pub struct Rule {
    fault: Fault,
    ops: Vec<Op>,
    key_contains: Option<String>,
    probability: f64,
    remaining: Option<usize>,
    skip: usize,
}

impl Rule {
    /// `fault` on every call (narrow it with the builder methods).
    pub fn new(fault: Fault) -> Self {
        Self {
            fault,
            ops: Op::ALL.to_vec(),
            key_contains: None,
            probability: 1.0,
            remaining: None,
            skip: 0,
        }
    }

    /// Only calls of these kinds.
    pub fn on(mut self, ops: &[Op]) -> Self {
        self.ops = ops.to_vec();
        self
    }

    /// Only calls whose key (or listing prefix) contains `part`.
    pub fn key_contains(mut self, part: impl Into<String>) -> Self {
        self.key_contains = Some(part.into());
        self
    }

    /// Each matching call is hit with probability `p`, drawn from the store's seeded generator.
    pub fn probability(mut self, p: f64) -> Self {
        self.probability = p;
        self
    }

    /// At most `n` faults from this rule.
    pub fn times(mut self, n: usize) -> Self {
        self.remaining = Some(n);
        self
    }

    /// The first `n` matching calls pass untouched.
    pub fn after(mut self, n: usize) -> Self {
        self.skip = n;
        self
    }

    fn matches(&self, op: Op, key: &str) -> bool {
        self.ops.contains(&op)
            && self.key_contains.as_ref().is_none_or(|k| key.contains(k))
            && self.remaining != Some(0)
    }
}

/// The rules and what they injected, shared with the streams a store hands out.
struct Picker {
    rules: Mutex<Vec<Rule>>,
    rng: Mutex<StdRng>,
    injected: Mutex<BTreeMap<(Op, Fault), usize>>,
    enabled: AtomicBool,
}

impl Picker {
    /// The fault for this call, if a rule fires.
    fn pick(&self, op: Op, key: &str) -> Option<Fault> {
        if !self.enabled.load(Ordering::SeqCst) {
            return None;
        }
        let mut rules = self.rules.lock();
        for rule in rules.iter_mut() {
            if !rule.matches(op, key) {
                continue;
            }
            if rule.skip > 0 {
                rule.skip -= 1;
                continue;
            }
            let fire = rule.probability >= 1.0 || self.rng.lock().random_bool(rule.probability);
            if !fire {
                continue;
            }
            if let Some(n) = rule.remaining.as_mut() {
                *n -= 1;
            }
            let fault = rule.fault;
            *self.injected.lock().entry((op, fault.kind())).or_insert(0) += 1;
            return Some(fault);
        }
        None
    }
}

/// The rules of a fault-injecting store and what they injected. Cheap to clone: every clone,
/// and every store it wraps, shares them.
#[derive(Clone)]
pub struct Faults {
    picker: Arc<Picker>,
}

impl fmt::Debug for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Faults")
            .field("rules", &self.picker.rules.lock().len())
            .field("injected", &*self.picker.injected.lock())
            .finish()
    }
}

impl Faults {
    /// No rules yet; `seed` drives every random choice.
    pub fn new(seed: u64) -> Self {
        Self {
            picker: Arc::new(Picker {
                rules: Mutex::new(vec![]),
                rng: Mutex::new(StdRng::seed_from_u64(seed)),
                injected: Mutex::new(BTreeMap::new()),
                enabled: AtomicBool::new(true),
            }),
        }
    }

    /// These faults with `rule` added after the others.
    pub fn with_rule(self, rule: Rule) -> Self {
        self.add_rule(rule);
        self
    }

    /// Adds `rule` after the others; the first rule that fires decides a call's fault.
    pub fn add_rule(&self, rule: Rule) {
        self.picker.rules.lock().push(rule);
    }

    /// Forgets every rule; what they injected stays counted.
    pub fn clear_rules(&self) {
        self.picker.rules.lock().clear();
    }

    /// Turns every rule off (or on again) without forgetting them.
    pub fn set_enabled(&self, on: bool) {
        self.picker.enabled.store(on, Ordering::SeqCst);
    }

    /// How many faults of this kind were injected (durations ignored).
    pub fn injected(&self, fault: Fault) -> usize {
        let kind = fault.kind();
        self.picker
            .injected
            .lock()
            .iter()
            .filter(|((_, f), _)| *f == kind)
            .map(|(_, n)| n)
            .sum()
    }

    /// How many faults of this kind hit calls of this kind.
    pub fn injected_on(&self, op: Op, fault: Fault) -> usize {
        self.picker
            .injected
            .lock()
            .get(&(op, fault.kind()))
            .copied()
            .unwrap_or(0)
    }

    /// Every injected fault, by call and kind.
    pub fn injections(&self) -> BTreeMap<(Op, Fault), usize> {
        self.picker.injected.lock().clone()
    }

    /// `inner` behind these rules.
    pub fn wrap(&self, inner: Arc<dyn ObjectStore>) -> Arc<Faulty> {
        Arc::new(Faulty {
            inner,
            picker: Arc::clone(&self.picker),
        })
    }

    /// These rules as a layer for [`crate::Meadow::with_store_layer`].
    pub fn layer(&self) -> crate::StoreLayer {
        let faults = self.clone();
        Arc::new(move |inner| faults.wrap(inner) as Arc<dyn ObjectStore>)
    }
}

/// An object store that injects the faults its rules pick ([`Faults::wrap`]). Rules are tried in
/// order; the first one that fires decides the call.
pub struct Faulty {
    inner: Arc<dyn ObjectStore>,
    picker: Arc<Picker>,
}

impl fmt::Debug for Faulty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Faulty")
            .field("inner", &self.inner.to_string())
            .finish()
    }
}

impl fmt::Display for Faulty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Faulty({})", self.inner)
    }
}

impl Faulty {
    /// Runs `call()` under the fault picked for `op` on `key`.
    async fn run<T, F, Fut>(&self, op: Op, key: &str, call: F) -> object_store::Result<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = object_store::Result<T>>,
    {
        apply(self.picker.pick(op, key), op, key, call).await
    }
}

/// Runs `call()` under `fault` (twice for a replay).
async fn apply<T, F, Fut>(
    fault: Option<Fault>,
    op: Op,
    key: &str,
    call: F,
) -> object_store::Result<T>
where
    F: Fn() -> Fut,
    Fut: Future<Output = object_store::Result<T>>,
{
    match fault {
        None => call().await,
        Some(Fault::Delay(d)) => {
            tokio::time::sleep(d).await;
            call().await
        }
        Some(Fault::Before) => Err(injected(op, key, "failed before reaching the store")),
        Some(Fault::Unavailable) => Err(injected(op, key, "503 Service Unavailable")),
        Some(Fault::After) => {
            call().await?;
            Err(injected(
                op,
                key,
                "connection reset after the request was sent",
            ))
        }
        Some(Fault::Timeout(d)) => {
            call().await?;
            tokio::time::sleep(d).await;
            Err(injected(op, key, "operation timed out"))
        }
        // The client's retry of a request that landed: the caller sees the second answer.
        Some(Fault::Replay) => {
            call().await?;
            call().await
        }
    }
}

fn injected(op: Op, key: &str, what: &str) -> object_store::Error {
    object_store::Error::Generic {
        store: "Faulty",
        source: format!("injected fault: {op:?} of {key} {what}").into(),
    }
}

fn prefix_key(prefix: Option<&Path>) -> String {
    prefix.map(|p| p.to_string()).unwrap_or_default()
}

#[async_trait]
impl ObjectStore for Faulty {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let op = if opts.mode == PutMode::Create {
            Op::Create
        } else {
            Op::Put
        };
        self.run(op, location.as_ref(), || {
            self.inner.put_opts(location, payload.clone(), opts.clone())
        })
        .await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let upload = self.inner.put_multipart_opts(location, opts).await?;
        let fault = self.picker.pick(Op::Multipart, location.as_ref());
        Ok(Box::new(FaultyUpload {
            inner: upload,
            fault,
            key: location.to_string(),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let op = if options.head { Op::Head } else { Op::Get };
        self.run(op, location.as_ref(), || {
            self.inner.get_opts(location, options.clone())
        })
        .await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.run(Op::Get, location.as_ref(), || {
            self.inner.get_ranges(location, ranges)
        })
        .await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        // Each key takes its own fault as it passes by.
        let (inner, picker) = (Arc::clone(&self.inner), Arc::clone(&self.picker));
        locations
            .then(move |location| {
                let (inner, picker) = (Arc::clone(&inner), Arc::clone(&picker));
                async move {
                    let p = location?;
                    let fault = picker.pick(Op::Delete, p.as_ref());
                    apply(fault, Op::Delete, p.as_ref(), || inner.delete(&p)).await?;
                    Ok(p)
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let fault = self.picker.pick(Op::List, &prefix_key(prefix));
        faulty_stream(fault, prefix_key(prefix), self.inner.list(prefix))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let fault = self.picker.pick(Op::List, &prefix_key(prefix));
        faulty_stream(
            fault,
            prefix_key(prefix),
            self.inner.list_with_offset(prefix, offset),
        )
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.run(Op::List, &prefix_key(prefix), || {
            self.inner.list_with_delimiter(prefix)
        })
        .await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.run(Op::Copy, to.as_ref(), || {
            self.inner.copy_opts(from, to, options.clone())
        })
        .await
    }
}

/// A listing under a fault: delayed, or failing before (or after) its items.
fn faulty_stream(
    fault: Option<Fault>,
    key: String,
    inner: BoxStream<'static, object_store::Result<ObjectMeta>>,
) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
    match fault {
        None => inner,
        Some(Fault::Delay(d)) => futures::stream::once(tokio::time::sleep(d))
            .filter_map(|_| async { None })
            .chain(inner)
            .boxed(),
        Some(Fault::Before) | Some(Fault::Unavailable) => futures::stream::once(async move {
            Err(injected(Op::List, &key, "failed before reaching the store"))
        })
        .boxed(),
        Some(Fault::Replay) => inner,
        Some(Fault::After) | Some(Fault::Timeout(_)) => inner
            .chain(futures::stream::once(async move {
                Err(injected(Op::List, &key, "connection reset while listing"))
            }))
            .boxed(),
    }
}

/// A multipart upload whose completion (where the object appears) takes the picked fault.
#[derive(Debug)]
struct FaultyUpload {
    inner: Box<dyn MultipartUpload>,
    fault: Option<Fault>,
    key: String,
}

#[async_trait]
impl MultipartUpload for FaultyUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        if matches!(self.fault, Some(Fault::Before | Fault::Unavailable)) {
            let _ = self.inner.abort().await;
        }
        let key = self.key.clone();
        match self.fault {
            // A completion replayed by the client finds its upload complete: as S3 answers.
            None | Some(Fault::Replay) => self.inner.complete().await,
            Some(Fault::Delay(d)) => {
                tokio::time::sleep(d).await;
                self.inner.complete().await
            }
            Some(Fault::Before | Fault::Unavailable) => Err(injected(
                Op::Multipart,
                &key,
                "failed before reaching the store",
            )),
            Some(Fault::After) => {
                self.inner.complete().await?;
                Err(injected(
                    Op::Multipart,
                    &key,
                    "connection reset after the request was sent",
                ))
            }
            Some(Fault::Timeout(d)) => {
                self.inner.complete().await?;
                tokio::time::sleep(d).await;
                Err(injected(Op::Multipart, &key, "operation timed out"))
            }
        }
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.inner.abort().await
    }
}
