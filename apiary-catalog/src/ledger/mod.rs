//! The ledger: one ordered log of JSON entries per frame, the source of truth for its cells.
//!
//! Layout below the frame folder (`docs/storage.md`):
//!
//! ```text
//! _ledger/{version:020}.json               one entry per version, created conditionally
//! _ledger/_checkpoint/{version:020}.json   full state every N versions
//! _ledger/_last_checkpoint                 hint: {"version": N}
//! ```
//!
//! A commit writes the cells first, then the next entry by conditional create. Losing the race
//! means: read only the new entries, check them against the conflict rules, rebase, back off with
//! jitter, and try the next version.

mod conflict;
pub mod entry;
pub mod snapshot;

use std::sync::{Arc, RwLock};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};

pub use entry::{Action, CellRecord, ColumnStats, FrameSpec, LedgerEntry};
pub use snapshot::FrameSnapshot;

use crate::error::{Error, Kind, Result};
use crate::meadow::{Created, Meadow};
use crate::options::CommitOptions;
use crate::retry::Backoff;

/// How many entry objects are fetched at once when catching up.
const FETCH_CONCURRENCY: usize = 16;

/// What a successful commit did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    pub version: u64,
    /// Conditional creates tried (1 = no lost race).
    pub attempts: u32,
    pub cells_added: usize,
    pub cells_removed: usize,
    pub rows_added: u64,
    pub rows_removed: u64,
}

/// A handle on one frame's ledger, caching its latest known snapshot. Cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
}

struct Inner {
    meadow: Meadow,
    /// The frame folder below the meadow root.
    location: String,
    /// `hive.box.frame`, for messages.
    name: String,
    options: CommitOptions,
    latest: RwLock<Arc<FrameSnapshot>>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("name", &self.inner.name)
            .field("location", &self.inner.location)
            .field("version", &self.latest().version)
            .finish()
    }
}

fn parse_entry_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".json")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Checks a frame spec before anything is written.
pub(crate) fn validate_spec(frame: &str, spec: &FrameSpec) -> Result<()> {
    use datafusion::arrow::datatypes::DataType::*;
    let schema = &spec.schema;
    let mut seen = std::collections::HashSet::new();
    for f in schema.fields() {
        if f.name().is_empty() {
            return Err(Error::InvalidSchema(format!(
                "frame {frame}: a column has an empty name"
            )));
        }
        if !seen.insert(f.name().to_ascii_lowercase()) {
            return Err(Error::InvalidSchema(format!(
                "frame {frame}: column {} appears twice (names are compared ignoring case)",
                f.name()
            )));
        }
    }
    crate::schema_json::schema_to_json(schema)?;
    let mut seen_parts = std::collections::HashSet::new();
    for c in &spec.partition_by {
        crate::name::validate(Kind::Column, c)?;
        if !seen_parts.insert(c) {
            return Err(Error::InvalidSchema(format!(
                "frame {frame}: partition column {c} is listed twice"
            )));
        }
        let field = schema
            .field_with_name(c)
            .map_err(|_| Error::UnknownPartitionColumn { column: c.clone() })?;
        let ok = matches!(
            field.data_type(),
            Int8 | Int16
                | Int32
                | Int64
                | UInt8
                | UInt16
                | UInt32
                | UInt64
                | Utf8
                | LargeUtf8
                | Utf8View
                | Boolean
                | Date32
                | Date64
                | Timestamp(_, _)
        );
        if !ok {
            return Err(Error::UnsupportedPartitionType {
                column: c.clone(),
                data_type: field.data_type().clone(),
            });
        }
    }
    if spec.partition_by.len() >= schema.fields().len() {
        return Err(Error::InvalidSchema(format!(
            "frame {frame}: at least one column must not be a partition column"
        )));
    }
    Ok(())
}

impl Ledger {
    /// Creates version 0 of the ledger at `location`. Exactly one of many racing creators wins;
    /// the others get [`Error::AlreadyExists`].
    pub async fn create(
        meadow: Meadow,
        location: impl Into<String>,
        name: impl Into<String>,
        frame_id: impl Into<String>,
        spec: &FrameSpec,
        options: CommitOptions,
    ) -> Result<Ledger> {
        let location = location.into();
        let name = name.into();
        validate_spec(&name, spec)?;
        let entry = LedgerEntry {
            version: 0,
            timestamp_ms: now_ms(),
            writer: options.writer.clone(),
            operation: "CREATE".into(),
            action: Action::CreateFrame {
                frame_id: frame_id.into(),
                schema: spec.schema.clone(),
                partition_by: spec.partition_by.clone(),
                properties: spec.properties.clone(),
            },
        };
        let key = entry_key(&location, 0);
        let bytes = encode(&entry, &spec.partition_by)?;
        match meadow.create(&key, bytes).await? {
            Created::Yes => {}
            Created::LostRace => return Err(Error::already_exists(Kind::Frame, &name)),
        }
        let snapshot = FrameSnapshot::from_create(&entry, &key)?;
        Ok(Self::with_snapshot(
            meadow, location, name, options, snapshot,
        ))
    }

    /// Opens the ledger at `location`, loading its latest version (newest checkpoint + the
    /// entries after it).
    pub async fn open(
        meadow: Meadow,
        location: impl Into<String>,
        name: impl Into<String>,
        options: CommitOptions,
    ) -> Result<Ledger> {
        let location = location.into();
        let name = name.into();
        let base = load_base(&meadow, &location, &name, None).await?;
        let ledger = Self::with_snapshot(meadow, location, name, options, base);
        ledger.refresh().await?;
        Ok(ledger)
    }

    fn with_snapshot(
        meadow: Meadow,
        location: String,
        name: String,
        options: CommitOptions,
        snapshot: FrameSnapshot,
    ) -> Ledger {
        Ledger {
            inner: Arc::new(Inner {
                meadow,
                location,
                name,
                options,
                latest: RwLock::new(Arc::new(snapshot)),
            }),
        }
    }

    /// `hive.box.frame`.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The frame folder below the meadow root.
    pub fn location(&self) -> &str {
        &self.inner.location
    }

    pub fn meadow(&self) -> &Meadow {
        &self.inner.meadow
    }

    pub fn options(&self) -> &CommitOptions {
        &self.inner.options
    }

    /// The newest snapshot this handle knows, without any I/O.
    pub fn latest(&self) -> Arc<FrameSnapshot> {
        match self.inner.latest.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Keeps `snapshot` if it is newer than the cached one; returns the newest.
    fn offer(&self, snapshot: Arc<FrameSnapshot>) -> Arc<FrameSnapshot> {
        let mut guard = match self.inner.latest.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if snapshot.version > guard.version {
            *guard = snapshot;
        }
        guard.clone()
    }

    /// Brings the cached snapshot up to date. When nothing changed this costs one GET (a probe of
    /// the next version).
    pub async fn refresh(&self) -> Result<Arc<FrameSnapshot>> {
        let current = self.latest();
        let new = self.fetch_new_entries(current.version, &current).await?;
        if new.is_empty() {
            return Ok(current);
        }
        let mut next = (*current).clone();
        for (key, e) in &new {
            next.apply(e, key)?;
        }
        Ok(self.offer(Arc::new(next)))
    }

    /// The entries after `after`, in order: a probe of `after + 1`, then (only if it exists) one
    /// listing that starts after it.
    async fn fetch_new_entries(
        &self,
        after: u64,
        frame: &FrameSnapshot,
    ) -> Result<Vec<(String, LedgerEntry)>> {
        let meadow = &self.inner.meadow;
        let loc = &self.inner.location;
        let first_key = entry_key(loc, after + 1);
        let Some(first) = meadow.get(&first_key).await? else {
            return Ok(vec![]);
        };
        let mut out = vec![(first_key.clone(), decode(&first, &first_key, Some(frame))?)];
        let dir = ledger_dir(loc);
        let listed = meadow.list_after(&dir, &entry_name(after + 1)).await?;
        let versions: Vec<u64> = listed
            .iter()
            .filter_map(|m| {
                let rel = meadow.relative(&m.location)?;
                parse_entry_name(rel.strip_prefix(&dir)?.strip_prefix('/')?)
            })
            .filter(|v| *v > after + 1)
            .collect();
        for (i, v) in versions.iter().enumerate() {
            let expected = after + 2 + i as u64;
            if *v != expected {
                return Err(Error::corrupt(
                    entry_key(loc, expected),
                    format!(
                        "ledger of {} has a gap: version {expected} is missing but {v} exists",
                        self.inner.name
                    ),
                ));
            }
        }
        out.extend(fetch_entries(meadow, loc, &versions, frame).await?);
        Ok(out)
    }

    /// The frame as of `version` (time travel). Reads the newest checkpoint at or below it and
    /// the entries up to it.
    pub async fn snapshot_at(&self, version: u64) -> Result<Arc<FrameSnapshot>> {
        let mut latest = self.latest();
        if version > latest.version {
            latest = self.refresh().await?;
        }
        if version == latest.version {
            return Ok(latest);
        }
        if version > latest.version {
            return Err(Error::NoSuchVersion {
                frame: self.inner.name.clone(),
                version,
                latest: latest.version,
            });
        }
        let meadow = &self.inner.meadow;
        let loc = &self.inner.location;
        let mut base = load_base(meadow, loc, &self.inner.name, Some(version)).await?;
        let versions: Vec<u64> = (base.version + 1..=version).collect();
        for (key, e) in fetch_entries(meadow, loc, &versions, &latest).await? {
            base.apply(&e, &key)?;
        }
        Ok(Arc::new(base))
    }

    /// All entries from `from` (inclusive) to the latest, in order. Versions removed by cleanup
    /// are an error naming the oldest readable one.
    pub async fn entries(&self, from: u64) -> Result<Vec<LedgerEntry>> {
        let latest = self.refresh().await?;
        let versions: Vec<u64> = (from..=latest.version).collect();
        let loc = &self.inner.location;
        let mut out = Vec::with_capacity(versions.len());
        if versions.first() == Some(&0) {
            let key = entry_key(loc, 0);
            let bytes =
                self.inner
                    .meadow
                    .get(&key)
                    .await?
                    .ok_or_else(|| Error::VersionExpired {
                        frame: self.inner.name.clone(),
                        version: 0,
                        oldest: latest.version,
                    })?;
            out.push(decode(&bytes, &key, None)?);
        }
        let rest: Vec<u64> = versions.into_iter().filter(|v| *v > 0).collect();
        out.extend(
            fetch_entries(&self.inner.meadow, loc, &rest, &latest)
                .await?
                .into_iter()
                .map(|(_, e)| e),
        );
        Ok(out)
    }

    /// Commits `action` on top of `read`, the snapshot the caller planned it from.
    ///
    /// Cells the action adds must already be written (and durable). On a lost race the new
    /// entries are read and checked against the conflict rules; a compatible commit is rebased
    /// and retried with jittered backoff until the retry budget is spent.
    pub async fn commit(
        &self,
        read: &FrameSnapshot,
        operation: &str,
        action: Action,
    ) -> Result<CommitInfo> {
        if matches!(action, Action::CreateFrame { .. }) {
            return Err(Error::InvalidOption {
                name: "action".into(),
                reason: "create_frame is written by Ledger::create only".into(),
            });
        }
        for p in action.removed() {
            if read.cell(p).is_none() {
                return Err(Error::InvalidOption {
                    name: "removed".into(),
                    reason: format!(
                        "cell {p} is not active in version {} of {}",
                        read.version, self.inner.name
                    ),
                });
            }
        }
        let rows_removed = action
            .removed()
            .iter()
            .filter_map(|p| read.cell(p))
            .map(|c| c.rows)
            .sum();
        let mut base = read.clone();
        let mut backoff = Backoff::new(&self.inner.options.retry);
        loop {
            let version = base.version + 1;
            let entry = LedgerEntry {
                version,
                timestamp_ms: now_ms(),
                writer: self.inner.options.writer.clone(),
                operation: operation.to_string(),
                action: action.clone(),
            };
            let key = entry_key(&self.inner.location, version);
            let bytes = encode(&entry, &base.partition_by)?;
            match self.inner.meadow.create(&key, bytes).await? {
                Created::Yes => {
                    base.apply(&entry, &key)?;
                    let snapshot = Arc::new(base);
                    self.offer(snapshot.clone());
                    let interval = self.inner.options.checkpoint_interval;
                    if interval > 0
                        && version.is_multiple_of(interval)
                        && let Err(e) = self.write_checkpoint(&snapshot).await
                    {
                        log::warn!("checkpoint of {} at {version} failed: {e}", self.inner.name);
                    }
                    return Ok(CommitInfo {
                        version,
                        attempts: backoff.attempts() + 1,
                        cells_added: action.added().len(),
                        cells_removed: action.removed().len(),
                        rows_added: action.added().iter().map(|c| c.rows).sum(),
                        rows_removed,
                    });
                }
                Created::LostRace => {
                    let winners = self.fetch_new_entries(base.version, &base).await?;
                    for (key, winner) in &winners {
                        conflict::check(&self.inner.name, &action, operation, winner)?;
                        base.apply(winner, key)?;
                    }
                    if !winners.is_empty() {
                        self.offer(Arc::new(base.clone()));
                    }
                    if !backoff.lost_race().await {
                        return Err(Error::RetriesExhausted {
                            target: format!("ledger of {}", self.inner.name),
                            attempts: backoff.attempts(),
                            elapsed_ms: backoff.elapsed().as_millis(),
                        });
                    }
                }
            }
        }
    }

    /// Writes the full state of `snapshot` as a checkpoint and points the hint at it.
    pub async fn write_checkpoint(&self, snapshot: &FrameSnapshot) -> Result<()> {
        let loc = &self.inner.location;
        let body = serde_json::to_vec(&snapshot.checkpoint_json()?)
            .map_err(|e| Error::corrupt(checkpoint_key(loc, snapshot.version), e))?;
        self.inner
            .meadow
            .create(&checkpoint_key(loc, snapshot.version), Bytes::from(body))
            .await?;
        let hint = json!({ "version": snapshot.version }).to_string();
        self.inner
            .meadow
            .put(&hint_key(loc), Bytes::from(hint))
            .await
    }
}

/// Version 0, or the newest checkpoint (at or below `at`, when given).
async fn load_base(
    meadow: &Meadow,
    loc: &str,
    name: &str,
    at: Option<u64>,
) -> Result<FrameSnapshot> {
    // The hint names the newest checkpoint; when time travelling below it, list them all.
    let hinted = match meadow.get(&hint_key(loc)).await? {
        Some(bytes) => serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v.get("version").and_then(Value::as_u64)),
        None => None,
    };
    let wanted = match (hinted, at) {
        (Some(h), None) => Some(h),
        (Some(h), Some(a)) if h <= a => Some(h),
        (Some(_), Some(a)) => newest_checkpoint(meadow, loc, a).await?,
        (None, _) => None,
    };
    if let Some(cp) = wanted {
        let key = checkpoint_key(loc, cp);
        if let Some(bytes) = meadow.get(&key).await? {
            let snap = FrameSnapshot::from_checkpoint_json(&bytes, &key)?;
            if snap.version != cp {
                return Err(Error::corrupt(key, "checkpoint holds another version"));
            }
            return Ok(snap);
        }
    }
    let key = entry_key(loc, 0);
    match meadow.get(&key).await? {
        Some(bytes) => {
            let entry = decode(&bytes, &key, None)?;
            FrameSnapshot::from_create(&entry, &key)
        }
        None => {
            // No version 0: either the frame does not exist, or cleanup removed the old
            // entries and the hint is missing. A listing of the checkpoints decides.
            match newest_checkpoint(meadow, loc, at.unwrap_or(u64::MAX)).await? {
                Some(cp) => {
                    let key = checkpoint_key(loc, cp);
                    let bytes = meadow
                        .get(&key)
                        .await?
                        .ok_or_else(|| Error::corrupt(&key, "listed but not readable"))?;
                    FrameSnapshot::from_checkpoint_json(&bytes, &key)
                }
                None if at.is_some() => Err(Error::VersionExpired {
                    frame: name.to_string(),
                    version: at.unwrap_or_default(),
                    oldest: oldest_checkpoint(meadow, loc).await?.unwrap_or_default(),
                }),
                None => Err(Error::not_found(
                    Kind::Frame,
                    format!("{name} (no ledger at {loc})"),
                )),
            }
        }
    }
}

async fn checkpoint_versions(meadow: &Meadow, loc: &str) -> Result<Vec<u64>> {
    let dir = format!("{}/_checkpoint", ledger_dir(loc));
    let listed = meadow.list_dir(&dir).await?;
    let mut versions: Vec<u64> = listed
        .objects
        .iter()
        .filter_map(|m| m.location.filename().and_then(parse_entry_name))
        .collect();
    versions.sort_unstable();
    Ok(versions)
}

async fn newest_checkpoint(meadow: &Meadow, loc: &str, at_most: u64) -> Result<Option<u64>> {
    Ok(checkpoint_versions(meadow, loc)
        .await?
        .into_iter()
        .rfind(|v| *v <= at_most))
}

async fn oldest_checkpoint(meadow: &Meadow, loc: &str) -> Result<Option<u64>> {
    Ok(checkpoint_versions(meadow, loc).await?.first().copied())
}

/// GETs the given entries concurrently, keeping their order.
async fn fetch_entries(
    meadow: &Meadow,
    loc: &str,
    versions: &[u64],
    frame: &FrameSnapshot,
) -> Result<Vec<(String, LedgerEntry)>> {
    // Each future owns what it uses, so the whole stays `Send` for any caller.
    let schema = frame.schema.clone();
    let partition_by: Arc<[String]> = frame.partition_by.clone().into();
    let fetches: Vec<_> = versions
        .iter()
        .map(|v| {
            let key = entry_key(loc, *v);
            let (meadow, schema, partition_by) =
                (meadow.clone(), schema.clone(), partition_by.clone());
            async move {
                let bytes = meadow
                    .get(&key)
                    .await?
                    .ok_or_else(|| Error::corrupt(&key, "ledger entry is missing"))?;
                let entry = decode_typed(&bytes, &key, Some((&schema, &partition_by)))?;
                Ok::<_, Error>((key, entry))
            }
        })
        .collect();
    futures::stream::iter(fetches)
        .buffered(FETCH_CONCURRENCY)
        .try_collect()
        .await
}

fn decode(bytes: &[u8], key: &str, frame: Option<&FrameSnapshot>) -> Result<LedgerEntry> {
    decode_typed(
        bytes,
        key,
        frame.map(|f| (&f.schema, f.partition_by.as_slice())),
    )
}

fn decode_typed(
    bytes: &[u8],
    key: &str,
    frame: Option<(&datafusion::arrow::datatypes::SchemaRef, &[String])>,
) -> Result<LedgerEntry> {
    let entry = LedgerEntry::from_json(bytes, key, frame)?;
    let expected = key.rsplit('/').next().and_then(parse_entry_name);
    if expected != Some(entry.version) {
        return Err(Error::corrupt(
            key,
            format!("entry claims version {}", entry.version),
        ));
    }
    Ok(entry)
}

fn encode(entry: &LedgerEntry, partition_by: &[String]) -> Result<Bytes> {
    let v = entry.to_json(partition_by)?;
    serde_json::to_vec(&v)
        .map(Bytes::from)
        .map_err(|e| Error::corrupt(format!("version {}", entry.version), e))
}

pub(crate) fn ledger_dir(loc: &str) -> String {
    format!("{loc}/_ledger")
}

fn entry_name(version: u64) -> String {
    format!("{version:020}.json")
}

pub(crate) fn entry_key(loc: &str, version: u64) -> String {
    format!("{loc}/_ledger/{}", entry_name(version))
}

pub(crate) fn checkpoint_key(loc: &str, version: u64) -> String {
    format!("{loc}/_ledger/_checkpoint/{}", entry_name(version))
}

pub(crate) fn hint_key(loc: &str) -> String {
    format!("{loc}/_ledger/_last_checkpoint")
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
