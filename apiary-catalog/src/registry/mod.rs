//! The registry: names → hives, boxes and frames, versioned in the meadow.
//!
//! ```text
//! _registry/state_{version:06}.json              one change per version, created conditionally
//! _registry/_checkpoint/checkpoint_{version:06}.json   the whole namespace every N versions
//! _registry/_last_checkpoint                     hint: {"version": N}
//! ```
//!
//! A [`Registry`] caches the namespace; [`Registry::refresh`] costs one GET (a probe of the next
//! version) when nothing changed. Every change is validated against the newest state, written
//! by conditional create, and retried on a lost race with jittered backoff.

pub mod state;

use std::sync::{Arc, RwLock};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};

pub use state::{
    BoxRecord, DroppedFrame, FrameRecord, HiveRecord, RegistryAction, RegistryEntry, RegistryState,
};

use crate::error::{Error, Kind, Result};
use crate::ledger::{FrameSpec, Ledger, now_ms};
use crate::meadow::{Created, Meadow};
use crate::name;
use crate::options::CommitOptions;
use crate::retry::Backoff;

const DIR: &str = "_registry";

/// What to do when the object to create already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfExists {
    /// Fail with [`Error::AlreadyExists`] (plain `CREATE`).
    Fail,
    /// Keep the existing object and report it (`CREATE … IF NOT EXISTS`).
    Keep,
}

/// What to do when the object to drop does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfMissing {
    /// Fail with [`Error::NotFound`] (plain `DROP`).
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
    pub fn into_inner(self) -> T {
        match self {
            Creation::Created(t) | Creation::Existing(t) => t,
        }
    }

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
    meadow: Meadow,
    options: CommitOptions,
    state: RwLock<Arc<RegistryState>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("meadow", &self.inner.meadow)
            .field("version", &self.snapshot().version)
            .finish()
    }
}

fn state_name(version: u64) -> String {
    format!("state_{version:06}.json")
}

fn state_key(version: u64) -> String {
    format!("{DIR}/{}", state_name(version))
}

fn checkpoint_key(version: u64) -> String {
    format!("{DIR}/_checkpoint/checkpoint_{version:06}.json")
}

fn hint_key() -> String {
    format!("{DIR}/_last_checkpoint")
}

fn parse_state_name(name: &str) -> Option<u64> {
    name.strip_prefix("state_")?
        .strip_suffix(".json")?
        .parse()
        .ok()
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
            return Err(Error::CaseCollision {
                kind,
                name: new.to_string(),
                existing: e.to_string(),
            });
        }
    }
    Ok(())
}

impl Registry {
    /// Loads the namespace: newest checkpoint, then the entries after it.
    pub async fn open(meadow: Meadow, options: CommitOptions) -> Result<Registry> {
        let base = load_checkpoint(&meadow).await?;
        let registry = Registry {
            inner: Arc::new(Inner {
                meadow,
                options,
                state: RwLock::new(Arc::new(base)),
            }),
        };
        registry.catch_up(true).await?;
        Ok(registry)
    }

    pub fn meadow(&self) -> &Meadow {
        &self.inner.meadow
    }

    pub fn options(&self) -> &CommitOptions {
        &self.inner.options
    }

    /// The cached namespace, without I/O.
    pub fn snapshot(&self) -> Arc<RegistryState> {
        match self.inner.state.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn offer(&self, state: Arc<RegistryState>) -> Arc<RegistryState> {
        let mut g = match self.inner.state.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if state.version > g.version {
            *g = state;
        }
        g.clone()
    }

    /// Brings the cache up to date: one GET when nothing changed.
    pub async fn refresh(&self) -> Result<Arc<RegistryState>> {
        self.catch_up(false).await
    }

    /// Reads the entries after the cached version. Without `list_first` it probes the next
    /// version and lists only if that exists.
    async fn catch_up(&self, list_first: bool) -> Result<Arc<RegistryState>> {
        let current = self.snapshot();
        let meadow = &self.inner.meadow;
        let mut next = (*current).clone();
        let mut versions = vec![];
        if !list_first {
            let key = state_key(current.version + 1);
            match meadow.get(&key).await? {
                None => return Ok(current),
                Some(bytes) => next.apply(&decode_entry(&bytes, &key)?, &key)?,
            }
        }
        let listed = meadow.list_after(DIR, &state_name(next.version)).await?;
        versions.extend(
            listed
                .iter()
                .filter_map(|m| m.location.filename().and_then(parse_state_name))
                .filter(|v| *v > next.version),
        );
        versions.sort_unstable();
        let fetches: Vec<_> = versions
            .into_iter()
            .map(|v| {
                let (meadow, key) = (meadow.clone(), state_key(v));
                async move {
                    let bytes = meadow
                        .get(&key)
                        .await?
                        .ok_or_else(|| Error::corrupt(&key, "registry entry is missing"))?;
                    let e = decode_entry(&bytes, &key)?;
                    Ok::<_, Error>((key, e))
                }
            })
            .collect();
        let entries: Vec<(String, RegistryEntry)> = futures::stream::iter(fetches)
            .buffered(16)
            .try_collect()
            .await?;
        for (key, e) in &entries {
            next.apply(e, key)?;
        }
        if next.version == current.version {
            return Ok(current);
        }
        Ok(self.offer(Arc::new(next)))
    }

    /// Commits the change `plan` derives from the newest state (`None`: nothing to do), retrying
    /// lost races. Returns the state after the commit (or the state that made it unnecessary).
    async fn commit(
        &self,
        mut plan: impl FnMut(&RegistryState) -> Result<Option<RegistryAction>>,
    ) -> Result<(Arc<RegistryState>, bool)> {
        let mut state = self.refresh().await?;
        let mut backoff = Backoff::new(&self.inner.options.retry);
        loop {
            let Some(action) = plan(&state)? else {
                return Ok((state, false));
            };
            let entry = RegistryEntry {
                version: state.version + 1,
                timestamp_ms: now_ms(),
                writer: self.inner.options.writer.clone(),
                action,
            };
            let key = state_key(entry.version);
            let body = serde_json::to_vec(&entry).map_err(|e| Error::corrupt(&key, e))?;
            match self.inner.meadow.create(&key, Bytes::from(body)).await? {
                Created::Yes => {
                    let mut next = (*state).clone();
                    next.apply(&entry, &key)?;
                    let next = self.offer(Arc::new(next));
                    let interval = self.inner.options.checkpoint_interval;
                    if interval > 0
                        && entry.version.is_multiple_of(interval)
                        && let Err(e) = self.write_checkpoint(&next).await
                    {
                        log::warn!("registry checkpoint at {} failed: {e}", entry.version);
                    }
                    return Ok((next, true));
                }
                Created::LostRace => {
                    if !backoff.lost_race().await {
                        return Err(Error::RetriesExhausted {
                            target: "the registry".into(),
                            attempts: backoff.attempts(),
                            elapsed_ms: backoff.elapsed().as_millis(),
                        });
                    }
                    state = self.refresh().await?;
                }
            }
        }
    }

    async fn write_checkpoint(&self, state: &RegistryState) -> Result<()> {
        let key = checkpoint_key(state.version);
        let body = serde_json::to_vec(state).map_err(|e| Error::corrupt(&key, e))?;
        self.inner.meadow.create(&key, Bytes::from(body)).await?;
        let hint = json!({ "version": state.version }).to_string();
        self.inner.meadow.put(&hint_key(), Bytes::from(hint)).await
    }

    pub async fn create_hive(
        &self,
        hive: &str,
        if_exists: IfExists,
    ) -> Result<Creation<HiveRecord>> {
        name::validate(Kind::Hive, hive)?;
        let id = new_id();
        let (state, created) = self
            .commit(|s| {
                if s.hives.contains_key(hive) {
                    return match if_exists {
                        IfExists::Keep => Ok(None),
                        IfExists::Fail => Err(Error::already_exists(Kind::Hive, hive)),
                    };
                }
                check_case(Kind::Hive, hive, s.hives.keys())?;
                Ok(Some(RegistryAction::CreateHive {
                    name: hive.into(),
                    id: id.clone(),
                }))
            })
            .await?;
        let record = state.hive(hive)?.clone();
        Ok(if created {
            Creation::Created(record)
        } else {
            Creation::Existing(record)
        })
    }

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
                let h = s.hive(hive)?;
                if h.boxes.contains_key(box_) {
                    return match if_exists {
                        IfExists::Keep => Ok(None),
                        IfExists::Fail => {
                            Err(Error::already_exists(Kind::Box, format!("{hive}.{box_}")))
                        }
                    };
                }
                check_case(Kind::Box, box_, h.boxes.keys())?;
                Ok(Some(RegistryAction::CreateBox {
                    hive: hive.into(),
                    name: box_.into(),
                    id: id.clone(),
                }))
            })
            .await?;
        let record = state.get_box(hive, box_)?.clone();
        Ok(if created {
            Creation::Created(record)
        } else {
            Creation::Existing(record)
        })
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
            let b = s.get_box(hive, box_)?;
            if b.frames.contains_key(frame) {
                return match if_exists {
                    IfExists::Keep => Ok(true),
                    IfExists::Fail => Err(Error::already_exists(Kind::Frame, &qualified)),
                };
            }
            check_case(Kind::Frame, frame, b.frames.keys())?;
            Ok(false)
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
            self.inner.meadow.clone(),
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
                self.discard_ledger(&ledger).await;
                Err(e)
            }
        }
    }

    /// Removes version 0 of a ledger that never got registered (best effort: cleanup would
    /// reclaim it later anyway).
    async fn discard_ledger(&self, ledger: &Ledger) {
        let key = crate::ledger::entry_key(ledger.location(), 0);
        if let Err(e) = self.inner.meadow.delete(&key).await {
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
                        IfMissing::Fail => Err(Error::not_found(Kind::Hive, hive)),
                    };
                };
                if !cascade && !h.boxes.is_empty() {
                    return Err(Error::NotEmpty {
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
                            Err(Error::not_found(Kind::Box, format!("{hive}.{box_}")))
                        }
                    };
                };
                if !cascade && !b.frames.is_empty() {
                    return Err(Error::NotEmpty {
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
                            Err(Error::not_found(
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

    /// Opens the ledger of a frame, refreshing the namespace once if the name is unknown.
    pub async fn open_ledger(&self, hive: &str, box_: &str, frame: &str) -> Result<Ledger> {
        let record = match self.snapshot().frame(hive, box_, frame) {
            Ok(r) => r.clone(),
            Err(_) => self.refresh().await?.frame(hive, box_, frame)?.clone(),
        };
        let qualified = name::qualified(&[hive, box_, frame]);
        let ledger = Ledger::open(
            self.inner.meadow.clone(),
            &record.location,
            &qualified,
            self.inner.options.clone(),
        )
        .await?;
        if ledger.latest().frame_id != record.id {
            return Err(Error::corrupt(
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

fn decode_entry(bytes: &[u8], key: &str) -> Result<RegistryEntry> {
    let e: RegistryEntry = serde_json::from_slice(bytes)
        .map_err(|e| Error::corrupt(key, format!("bad registry entry: {e}")))?;
    if Some(e.version) != key.rsplit('/').next().and_then(parse_state_name) {
        return Err(Error::corrupt(
            key,
            format!("entry claims version {}", e.version),
        ));
    }
    Ok(e)
}

/// The newest checkpointed state (by the hint), or the empty namespace.
async fn load_checkpoint(meadow: &Meadow) -> Result<RegistryState> {
    let Some(hint) = meadow.get(&hint_key()).await? else {
        return Ok(RegistryState::default());
    };
    let version = serde_json::from_slice::<Value>(&hint)
        .ok()
        .and_then(|v| v.get("version").and_then(Value::as_u64))
        .ok_or_else(|| Error::corrupt(hint_key(), "hint is not {\"version\": N}"))?;
    let key = checkpoint_key(version);
    let bytes = meadow
        .get(&key)
        .await?
        .ok_or_else(|| Error::corrupt(&key, "the hint names a missing checkpoint"))?;
    let state: RegistryState = serde_json::from_slice(&bytes)
        .map_err(|e| Error::corrupt(&key, format!("bad checkpoint: {e}")))?;
    if state.version != version {
        return Err(Error::corrupt(&key, "checkpoint holds another version"));
    }
    Ok(state)
}
