//! The registry: names → hives, boxes and frames, versioned in the meadow.
//!
//! ```text
//! _registry/{version:020}.json                  one change per version, created conditionally
//!                                               (version 0: the protocol)
//! _registry/_checkpoint/{version:020}.json      the whole namespace every N versions
//! _registry/_last_checkpoint                    hint: {"version": N}
//! ```
//!
//! Registries written before 20-digit names (`state_{version:06}.json`) still read.
//!
//! A [`Registry`] caches the namespace; [`Registry::refresh`] costs one GET (a probe of the next
//! version) when nothing changed. Every change is validated against the newest state, written
//! by conditional create, and retried on a lost race with jittered backoff.

pub(crate) mod state;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

pub use state::{BoxRecord, FrameRecord, HiveRecord, RegistryAction, RegistryEntry, RegistryState};

use crate::error::{CatalogError, Kind, Result};
use crate::ledger::entry::new_commit_id;
use crate::ledger::{FrameSpec, Ledger, now_ms};
use crate::meadow::Meadow;
use crate::name;
use crate::numbered_log::{Attempt, LogNames, Newest, NumberedLog, Versioned, commit_id_of};
use crate::options::CommitOptions;
use crate::protocol::Protocol;
use crate::retry::Backoff;

/// What to do when the object to create already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfExists {
    /// Fail with [`CatalogError::AlreadyExists`] (plain `CREATE`).
    Fail,
    /// Keep the existing object and report it (`CREATE … IF NOT EXISTS`).
    Keep,
}

/// What to do when the object to drop does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfMissing {
    /// Fail with [`CatalogError::NotFound`] (plain `DROP`).
    Fail,
    /// Do nothing (`DROP … IF EXISTS`).
    Ignore,
}

/// The outcome of a create with explicit `IF NOT EXISTS` semantics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Creation<T> {
    /// This call created it.
    Created(T),
    /// It existed already and [`IfExists::Keep`] was asked for.
    Existing(T),
}

impl<T> Creation<T> {
    fn new(created: bool, record: T) -> Self {
        if created {
            Creation::Created(record)
        } else {
            Creation::Existing(record)
        }
    }

    /// The object, created or not.
    pub fn into_inner(self) -> T {
        match self {
            Creation::Created(t) | Creation::Existing(t) => t,
        }
    }

    /// Whether this call created it.
    pub fn was_created(&self) -> bool {
        matches!(self, Creation::Created(_))
    }
}

/// The namespace of one meadow. Cheap to clone; clones share one cache.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    log: NumberedLog,
    options: CommitOptions,
    state: Newest<RegistryState>,
}

impl Versioned for RegistryState {
    fn version(&self) -> u64 {
        self.version
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("meadow", self.inner.log.meadow())
            .field("version", &self.snapshot().version)
            .finish()
    }
}

/// Refuses a new name that equals an existing one but for case.
fn check_case(
    kind: Kind,
    new: &str,
    existing: impl IntoIterator<Item = impl AsRef<str>>,
) -> Result<()> {
    for e in existing {
        let e = e.as_ref();
        if e != new && e.eq_ignore_ascii_case(new) {
            return Err(CatalogError::CaseCollision {
                kind,
                name: new.to_string(),
                existing: e.to_string(),
            });
        }
    }
    Ok(())
}

/// Whether `name` is taken among `existing`: `Ok(true)` when it is and `if_exists` keeps it; an
/// error when it is and must not be, or when it differs only in case from a name that is.
fn taken<V>(
    existing: &BTreeMap<String, V>,
    kind: Kind,
    name: &str,
    qualified: &str,
    if_exists: IfExists,
) -> Result<bool> {
    if existing.contains_key(name) {
        return match if_exists {
            IfExists::Keep => Ok(true),
            IfExists::Fail => Err(CatalogError::already_exists(kind, qualified)),
        };
    }
    check_case(kind, name, existing.keys())?;
    Ok(false)
}

impl Registry {
    /// Loads the namespace: newest checkpoint, then the entries after it.
    pub async fn open(meadow: Meadow, options: CommitOptions) -> Result<Registry> {
        let log = NumberedLog::new(meadow, "_registry", LogNames::Registry);
        let mut base = load_checkpoint(&log).await?;
        if base.version == 0
            && let Some(body) = log.get(0).await?
        {
            let key = log.entry_key(0);
            base.apply_init(&decode_entry(&log, &body, &key)?, &key)?;
        }
        let registry = Registry {
            inner: Arc::new(Inner {
                log,
                options,
                state: Newest::new(base),
            }),
        };
        registry.catch_up(false).await?;
        Ok(registry)
    }

    /// The meadow the registry is stored in.
    pub fn meadow(&self) -> &Meadow {
        self.inner.log.meadow()
    }

    /// How this registry commits.
    pub fn options(&self) -> &CommitOptions {
        &self.inner.options
    }

    /// The cached namespace, without I/O.
    pub fn snapshot(&self) -> Arc<RegistryState> {
        self.inner.state.get()
    }

    /// Brings the cache up to date: one GET when nothing changed.
    pub async fn refresh(&self) -> Result<Arc<RegistryState>> {
        self.catch_up(true).await
    }

    async fn catch_up(&self, probe_first: bool) -> Result<Arc<RegistryState>> {
        let current = self.snapshot();
        let new = self
            .inner
            .log
            .read_after(current.version, probe_first)
            .await?;
        if new.is_empty() {
            return Ok(current);
        }
        let mut next = (*current).clone();
        for (key, body) in &new {
            next.apply(&decode_entry(&self.inner.log, body, key)?, key)?;
        }
        Ok(self.inner.state.offer(Arc::new(next)))
    }

    /// Commits the change `plan` derives from the newest state (`None`: nothing to do), retrying
    /// lost races. Returns the state after the commit (or the state that made it unnecessary).
    ///
    /// As for ledgers, an ambiguous answer is resolved by reading the entry back and comparing
    /// commit ids; when that cannot be known the error is [`CatalogError::CommitUnknown`].
    async fn commit(
        &self,
        mut plan: impl FnMut(&RegistryState) -> Result<Option<RegistryAction>>,
    ) -> Result<(Arc<RegistryState>, bool)> {
        let mut state = self.refresh().await?;
        if state.version == 0 {
            self.init().await?;
            state = self.refresh().await?;
        }
        state.protocol.check_write("the registry")?;
        let commit_id = new_commit_id();
        let mut backoff = Backoff::new(&self.inner.options.retry);
        let mut uncertain: Option<u64> = None;
        loop {
            let Some(action) = plan(&state)? else {
                return Ok((state, false));
            };
            let entry = RegistryEntry {
                version: state.version + 1,
                timestamp_ms: now_ms(),
                writer: self.inner.options.writer.clone(),
                commit_id: commit_id.clone(),
                protocol: None,
                action,
            };
            let key = self.inner.log.entry_key(entry.version);
            let body = serde_json::to_vec(&entry).map_err(|e| CatalogError::corrupt(&key, e))?;
            let unknown = |reason: String| CatalogError::CommitUnknown {
                target: "the registry".into(),
                version: entry.version,
                reason,
            };
            let attempt = self
                .inner
                .log
                .create_resolved(entry.version, Bytes::from(body), &commit_id)
                .await
                .map_err(|e| unknown(e.to_string()))?;
            match attempt {
                Attempt::Landed { .. } => {
                    let mut next = (*state).clone();
                    next.apply(&entry, &key)?;
                    let next = self.inner.state.offer(Arc::new(next));
                    let interval = self.inner.options.checkpoint_interval;
                    if interval > 0
                        && entry.version.is_multiple_of(interval)
                        && let Err(e) = self.write_checkpoint(&next).await
                    {
                        log::warn!("registry checkpoint at {} failed: {e}", entry.version);
                    }
                    return Ok((next, true));
                }
                Attempt::Absent(e) => {
                    uncertain = Some(entry.version);
                    if !backoff.failed().await {
                        return Err(unknown(e.to_string()));
                    }
                }
                Attempt::Taken => {
                    if !backoff.lost_race().await {
                        let exhausted = CatalogError::RetriesExhausted {
                            target: "the registry".into(),
                            attempts: backoff.attempts(),
                            elapsed_ms: backoff.elapsed().as_millis(),
                        };
                        return Err(match uncertain {
                            Some(_) => unknown(exhausted.to_string()),
                            None => exhausted,
                        });
                    }
                    let before = state.version;
                    state = self.refresh().await?;
                    // Did an earlier try land after all? Its entry is among the new ones.
                    if let Some(version) = uncertain
                        && version > before
                        && version <= state.version
                    {
                        let body = self.inner.log.get(version).await?.ok_or_else(|| {
                            CatalogError::corrupt(
                                self.inner.log.entry_key(version),
                                "entry vanished",
                            )
                        })?;
                        if commit_id_of(&body).as_deref() == Some(commit_id.as_str()) {
                            return Ok((state, true));
                        }
                        uncertain = None;
                    }
                }
            }
        }
    }

    /// Writes version 0, the registry's protocol, unless some writer already did.
    async fn init(&self) -> Result<()> {
        let entry = RegistryEntry {
            version: 0,
            timestamp_ms: now_ms(),
            writer: self.inner.options.writer.clone(),
            commit_id: new_commit_id(),
            protocol: Some(Protocol::current()),
            action: RegistryAction::Init,
        };
        let key = self.inner.log.entry_key(0);
        let body = serde_json::to_vec(&entry).map_err(|e| CatalogError::corrupt(&key, e))?;
        let mut backoff = Backoff::new(&self.inner.options.retry);
        loop {
            match self
                .inner
                .log
                .create_resolved(0, Bytes::from(body.clone()), &entry.commit_id)
                .await
            {
                Ok(Attempt::Landed { .. }) => {
                    let mut state = (*self.snapshot()).clone();
                    state.apply_init(&entry, &key)?;
                    self.inner.state.replace_same_version(Arc::new(state));
                    return Ok(());
                }
                Ok(Attempt::Taken) => {
                    let found = self
                        .inner
                        .log
                        .get(0)
                        .await?
                        .ok_or_else(|| CatalogError::corrupt(&key, "version 0 vanished"))?;
                    let mut state = (*self.snapshot()).clone();
                    state.apply_init(&decode_entry(&self.inner.log, &found, &key)?, &key)?;
                    self.inner.state.replace_same_version(Arc::new(state));
                    return Ok(());
                }
                Ok(Attempt::Absent(e)) => {
                    if !backoff.failed().await {
                        return Err(e);
                    }
                }
                // Either way version 0 is there or will be: a later commit finds out.
                Err(e) => return Err(e),
            }
        }
    }

    async fn write_checkpoint(&self, state: &RegistryState) -> Result<()> {
        let body = serde_json::to_vec(state)
            .map_err(|e| CatalogError::corrupt(self.inner.log.checkpoint_key(state.version), e))?;
        self.inner
            .log
            .write_checkpoint(state.version, Bytes::from(body))
            .await
    }

    /// Creates a hive; with [`IfExists::Keep`] an existing one is returned instead.
    pub async fn create_hive(
        &self,
        hive: &str,
        if_exists: IfExists,
    ) -> Result<Creation<HiveRecord>> {
        name::validate(Kind::Hive, hive)?;
        let id = new_id();
        let (state, created) = self
            .commit(|s| {
                if taken(&s.hives, Kind::Hive, hive, hive, if_exists)? {
                    return Ok(None);
                }
                Ok(Some(RegistryAction::CreateHive {
                    name: hive.into(),
                    id: id.clone(),
                }))
            })
            .await?;
        Ok(Creation::new(created, state.hive(hive)?.clone()))
    }

    /// Creates a box in `hive`; with [`IfExists::Keep`] an existing one is returned instead.
    pub async fn create_box(
        &self,
        hive: &str,
        box_: &str,
        if_exists: IfExists,
    ) -> Result<Creation<BoxRecord>> {
        name::validate(Kind::Box, box_)?;
        let id = new_id();
        let (state, created) = self
            .commit(|s| {
                let boxes = &s.hive(hive)?.boxes;
                if taken(boxes, Kind::Box, box_, &format!("{hive}.{box_}"), if_exists)? {
                    return Ok(None);
                }
                Ok(Some(RegistryAction::CreateBox {
                    hive: hive.into(),
                    name: box_.into(),
                    id: id.clone(),
                }))
            })
            .await?;
        Ok(Creation::new(created, state.get_box(hive, box_)?.clone()))
    }

    /// Creates a frame: its ledger (version 0) in a folder of its own, then its registry entry.
    ///
    /// A concurrent creator of the same name makes exactly one of the two win; the loser's
    /// unused ledger is deleted.
    pub async fn create_frame(
        &self,
        hive: &str,
        box_: &str,
        frame: &str,
        spec: &FrameSpec,
        if_exists: IfExists,
    ) -> Result<Creation<FrameRecord>> {
        name::validate(Kind::Frame, frame)?;
        let qualified = name::qualified(&[hive, box_, frame]);
        // Check early so that a plain mistake writes nothing.
        let exists = |s: &RegistryState| -> Result<bool> {
            let frames = &s.get_box(hive, box_)?.frames;
            taken(frames, Kind::Frame, frame, &qualified, if_exists)
        };
        let current = self.refresh().await?;
        if exists(&current)? {
            return Ok(Creation::Existing(
                current.frame(hive, box_, frame)?.clone(),
            ));
        }
        let id = new_id();
        let location = format!("{hive}/{box_}/{frame}/{id}");
        let ledger = Ledger::create(
            self.meadow().clone(),
            &location,
            &qualified,
            &id,
            spec,
            self.inner.options.clone(),
        )
        .await?;
        let outcome = self
            .commit(|s| {
                if exists(s)? {
                    return Ok(None);
                }
                Ok(Some(RegistryAction::CreateFrame {
                    hive: hive.into(),
                    box_: box_.into(),
                    name: frame.into(),
                    id: id.clone(),
                    location: location.clone(),
                }))
            })
            .await;
        match outcome {
            Ok((state, true)) => Ok(Creation::Created(state.frame(hive, box_, frame)?.clone())),
            Ok((state, false)) => {
                self.discard_ledger(&ledger).await;
                Ok(Creation::Existing(state.frame(hive, box_, frame)?.clone()))
            }
            Err(e) => {
                // A registry entry that may have landed names this ledger: keep it.
                if e.proves_nothing_committed() {
                    self.discard_ledger(&ledger).await;
                }
                Err(e)
            }
        }
    }

    /// Removes version 0 of a ledger that never got registered (best effort: cleanup would
    /// reclaim it later anyway).
    async fn discard_ledger(&self, ledger: &Ledger) {
        let key = crate::ledger::entry_key(ledger.location(), 0);
        if let Err(e) = self.meadow().delete(&key).await {
            log::warn!("could not remove unused ledger {key}: {e}");
        }
    }

    /// Soft-drops a hive: it disappears from the namespace; its frames are remembered in
    /// [`RegistryState::dropped`] for cleanup. Without `cascade` a hive with boxes is refused.
    pub async fn drop_hive(
        &self,
        hive: &str,
        if_missing: IfMissing,
        cascade: bool,
    ) -> Result<bool> {
        let (_, dropped) = self
            .commit(|s| {
                let Some(h) = s.hives.get(hive) else {
                    return match if_missing {
                        IfMissing::Ignore => Ok(None),
                        IfMissing::Fail => Err(CatalogError::not_found(Kind::Hive, hive)),
                    };
                };
                if !cascade && !h.boxes.is_empty() {
                    return Err(CatalogError::NotEmpty {
                        kind: Kind::Hive,
                        name: hive.into(),
                        detail: format!(
                            "boxes: {}",
                            h.boxes.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    });
                }
                Ok(Some(RegistryAction::DropHive {
                    name: hive.into(),
                    cascade,
                }))
            })
            .await?;
        Ok(dropped)
    }

    /// Soft-drops a box; without `cascade` a box with frames is refused.
    pub async fn drop_box(
        &self,
        hive: &str,
        box_: &str,
        if_missing: IfMissing,
        cascade: bool,
    ) -> Result<bool> {
        let (_, dropped) = self
            .commit(|s| {
                let found = s.hives.get(hive).and_then(|h| h.boxes.get(box_));
                let Some(b) = found else {
                    return match if_missing {
                        IfMissing::Ignore => Ok(None),
                        IfMissing::Fail => {
                            s.hive(hive)?;
                            Err(CatalogError::not_found(Kind::Box, format!("{hive}.{box_}")))
                        }
                    };
                };
                if !cascade && !b.frames.is_empty() {
                    return Err(CatalogError::NotEmpty {
                        kind: Kind::Box,
                        name: format!("{hive}.{box_}"),
                        detail: format!(
                            "frames: {}",
                            b.frames.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    });
                }
                Ok(Some(RegistryAction::DropBox {
                    hive: hive.into(),
                    name: box_.into(),
                    cascade,
                }))
            })
            .await?;
        Ok(dropped)
    }

    /// Soft-drops a frame: its name is free again at once; its cells stay until cleanup.
    pub async fn drop_frame(
        &self,
        hive: &str,
        box_: &str,
        frame: &str,
        if_missing: IfMissing,
    ) -> Result<bool> {
        let (_, dropped) = self
            .commit(|s| {
                let found = s
                    .hives
                    .get(hive)
                    .and_then(|h| h.boxes.get(box_))
                    .and_then(|b| b.frames.get(frame));
                if found.is_none() {
                    return match if_missing {
                        IfMissing::Ignore => Ok(None),
                        IfMissing::Fail => {
                            s.get_box(hive, box_)?;
                            Err(CatalogError::not_found(
                                Kind::Frame,
                                name::qualified(&[hive, box_, frame]),
                            ))
                        }
                    };
                }
                Ok(Some(RegistryAction::DropFrame {
                    hive: hive.into(),
                    box_: box_.into(),
                    name: frame.into(),
                }))
            })
            .await?;
        Ok(dropped)
    }

    /// Gives a dropped frame its name back (`apiary_undrop`): the incarnation dropped at registry
    /// version `dropped_version`, or the one dropped last. The name must be free.
    pub async fn undrop_frame(
        &self,
        hive: &str,
        box_: &str,
        frame: &str,
        dropped_version: Option<u64>,
    ) -> Result<FrameRecord> {
        let qualified = name::qualified(&[hive, box_, frame]);
        let (state, _) = self
            .commit(|s| {
                if s.get_box(hive, box_)?.frames.contains_key(frame) {
                    return Err(CatalogError::InvalidOption {
                        name: "frame".into(),
                        reason: format!(
                            "{qualified} exists: drop it first (or undrop the old one under its name once free)"
                        ),
                    });
                }
                let found = s
                    .dropped
                    .iter()
                    .filter(|d| d.name == qualified)
                    .filter(|d| dropped_version.is_none_or(|v| d.dropped_version == v))
                    .max_by_key(|d| (d.dropped_version, d.dropped_ms))
                    .ok_or_else(|| {
                        CatalogError::not_found(
                            Kind::Frame,
                            match dropped_version {
                                Some(v) => format!("{qualified} dropped at registry version {v}"),
                                None => format!("{qualified} among the dropped frames"),
                            },
                        )
                    })?;
                Ok(Some(RegistryAction::CreateFrame {
                    hive: hive.into(),
                    box_: box_.into(),
                    name: frame.into(),
                    id: found.id.clone(),
                    location: found.location.clone(),
                }))
            })
            .await?;
        Ok(state.frame(hive, box_, frame)?.clone())
    }

    /// When entry `version` was committed, on the store's clock (`None`: not stored).
    pub(crate) async fn entry_time(
        &self,
        version: u64,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
        if version == 0 {
            return Ok(None);
        }
        let key = self.inner.log.entry_key(version);
        Ok(self.meadow().head(&key).await?.map(|m| m.last_modified))
    }

    /// Forgets dropped frames whose folders were reclaimed.
    pub(crate) async fn purge_dropped(&self, ids: Vec<String>) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.commit(|s| {
            let ids: Vec<String> = ids
                .iter()
                .filter(|id| s.dropped.iter().any(|d| d.id == **id))
                .cloned()
                .collect();
            Ok((!ids.is_empty()).then_some(RegistryAction::PurgeDropped { ids }))
        })
        .await?;
        Ok(())
    }

    /// Creates the ledger of a new frame in a folder of its own, without registering it yet:
    /// it can be filled first, then published under a name in one registry commit
    /// ([`Registry::publish_frame`]). A prepared frame never published is a leftover that
    /// cleansing reclaims after retention.
    pub async fn prepare_frame(
        &self,
        hive: &str,
        box_: &str,
        frame: &str,
        spec: &FrameSpec,
    ) -> Result<Ledger> {
        name::validate(Kind::Frame, frame)?;
        self.refresh().await?.get_box(hive, box_)?;
        let qualified = name::qualified(&[hive, box_, frame]);
        let id = new_id();
        let location = format!("{hive}/{box_}/{frame}/{id}");
        Ledger::create(
            self.meadow().clone(),
            &location,
            &qualified,
            &id,
            spec,
            self.inner.options.clone(),
        )
        .await
    }

    /// Publishes a prepared frame as `hive.box.frame` in one commit: `replace` gives it the
    /// name even if another frame holds it (that one is dropped, recoverable with
    /// [`Registry::undrop_frame`]); otherwise an existing name is an error.
    pub async fn publish_frame(
        &self,
        hive: &str,
        box_: &str,
        frame: &str,
        ledger: &Ledger,
        replace: bool,
    ) -> Result<FrameRecord> {
        let qualified = name::qualified(&[hive, box_, frame]);
        let id = ledger.latest().frame_id.clone();
        let location = ledger.location().to_string();
        let (state, _) = self
            .commit(|s| {
                let b = s.get_box(hive, box_)?;
                if !replace && b.frames.contains_key(frame) {
                    return Err(CatalogError::already_exists(Kind::Frame, &qualified));
                }
                check_case(Kind::Frame, frame, b.frames.keys())?;
                Ok(Some(RegistryAction::ReplaceFrame {
                    hive: hive.into(),
                    box_: box_.into(),
                    name: frame.into(),
                    id: id.clone(),
                    location: location.clone(),
                }))
            })
            .await?;
        Ok(state.frame(hive, box_, frame)?.clone())
    }

    /// Opens the ledger of a frame, refreshing the namespace once if the name is unknown.
    pub async fn open_ledger(&self, hive: &str, box_: &str, frame: &str) -> Result<Ledger> {
        let record = match self.snapshot().frame(hive, box_, frame) {
            Ok(r) => r.clone(),
            Err(_) => self.refresh().await?.frame(hive, box_, frame)?.clone(),
        };
        let qualified = name::qualified(&[hive, box_, frame]);
        let ledger = Ledger::open(
            self.meadow().clone(),
            &record.location,
            &qualified,
            self.inner.options.clone(),
        )
        .await?;
        if ledger.latest().frame_id != record.id {
            return Err(CatalogError::corrupt(
                crate::ledger::entry_key(&record.location, 0),
                format!(
                    "ledger belongs to frame id {} but the registry says {}",
                    ledger.latest().frame_id,
                    record.id
                ),
            ));
        }
        Ok(ledger)
    }
}

/// A new unique id; time-ordered so that incarnations sort by creation.
fn new_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

fn decode_entry(log: &NumberedLog, body: &[u8], key: &str) -> Result<RegistryEntry> {
    let e: RegistryEntry = serde_json::from_slice(body)
        .map_err(|e| CatalogError::corrupt(key, format!("bad registry entry: {e}")))?;
    if log.version_of(key) != Some(e.version) {
        return Err(CatalogError::corrupt(
            key,
            format!("entry claims version {}", e.version),
        ));
    }
    Ok(e)
}

/// The newest checkpointed state (by the hint), or the empty namespace.
async fn load_checkpoint(log: &NumberedLog) -> Result<RegistryState> {
    let Some(version) = log.hint().await? else {
        return Ok(RegistryState::default());
    };
    let key = log.checkpoint_key(version);
    let body = log
        .read_checkpoint(version)
        .await?
        .ok_or_else(|| CatalogError::corrupt(&key, "the hint names a missing checkpoint"))?;
    let state: RegistryState = serde_json::from_slice(&body)
        .map_err(|e| CatalogError::corrupt(&key, format!("bad checkpoint: {e}")))?;
    if state.version != version {
        return Err(CatalogError::corrupt(
            &key,
            "checkpoint holds another version",
        ));
    }
    Ok(state)
}
