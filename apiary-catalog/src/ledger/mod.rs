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
//! jitter, and try the next version. [`Ledger::commit`] step by step:
//!
//! ```text
//!   read: FrameSnapshot at version v  (the cells are already written; the commit only names them)
//!      │  refuse at once: a create_frame action, a subset snapshot, a writer protocol this build
//!      │  lacks, removing a cell not active at v; raise the protocol if the action needs a feature
//!      ▼
//!   ┌─► create _ledger/{v+1}.json if absent ─────────────── Landed ──► apply to the snapshot,
//!   │    (conditional create, its id = this commit's)                  checkpoint every N,
//!   │      │                    │                                      Ok(CommitInfo)
//!   │      │ Taken              │ Absent (the store failed; it may still land later)
//!   │      ▼                    ▼
//!   │   read the entries after v     remember v+1 as uncertain; back off and try v+1 again,
//!   │    ├─ one is this commit's ──► Ok (an earlier try landed)   or give up: CommitUnknown
//!   │    ├─ conflict::check each winner: one that removed or rewrote a cell this commit
//!   │    │   removes ──► Err(Conflict); a schema or properties change against one of this
//!   │    │   commit's ──► Err(SchemaChanged); appends never conflict
//!   │    │   (CommitUnknown while an uncertain version is not seen taken by another)
//!   │    └─ rebase: apply the winners (renames followed in this commit's statistics)
//!   │      │
//!   └──────┘ back off with jitter; RetriesExhausted (or CommitUnknown) when the policy ends
//! ```

mod conflict;
pub(crate) mod entry;
pub(crate) mod snapshot;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

pub use entry::{Action, CellRecord, ColumnStats, FrameSpec, LedgerEntry};
pub use snapshot::FrameSnapshot;

use crate::error::{CatalogError, Kind, Result};
use crate::meadow::Meadow;
use crate::numbered_log::{Attempt, LogNames, Newest, NumberedLog, Versioned};
use crate::options::CommitOptions;
use crate::protocol::Protocol;
use crate::retry::Backoff;
use crate::sight;

/// What a successful commit did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    /// The version the commit made.
    pub version: u64,
    /// Conditional creates tried (1 = no lost race).
    pub attempts: u32,
    /// Cells it added.
    pub cells_added: usize,
    /// Cells it removed.
    pub cells_removed: usize,
    /// Rows in the cells it added.
    pub rows_added: u64,
    /// Rows in the cells it removed.
    pub rows_removed: u64,
    /// The store's answer to the create was lost (an error, or its own retry meeting the first
    /// try), and reading the entry back showed it landed.
    pub read_back: bool,
}

/// A handle on one frame's ledger, caching its latest known snapshot. Cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
}

struct Inner {
    log: NumberedLog,
    /// The frame folder below the meadow root.
    location: String,
    /// `hive.box.frame`, for messages.
    name: String,
    options: CommitOptions,
    latest: Newest<FrameSnapshot>,
}

impl Versioned for FrameSnapshot {
    fn version(&self) -> u64 {
        self.version
    }
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

/// Checks a frame spec before anything is written.
pub(crate) fn validate_spec(frame: &str, spec: &FrameSpec) -> Result<()> {
    use datafusion::arrow::datatypes::DataType::*;
    let schema = &spec.schema;
    let mut seen = std::collections::HashSet::new();
    for f in schema.fields() {
        if f.name().is_empty() {
            return Err(CatalogError::InvalidSchema(format!(
                "frame {frame}: a column has an empty name"
            )));
        }
        if !seen.insert(f.name().to_ascii_lowercase()) {
            return Err(CatalogError::InvalidSchema(format!(
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
            return Err(CatalogError::InvalidSchema(format!(
                "frame {frame}: partition column {c} is listed twice"
            )));
        }
        let field = schema
            .field_with_name(c)
            .map_err(|_| CatalogError::UnknownPartitionColumn { column: c.clone() })?;
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
            return Err(CatalogError::UnsupportedPartitionType {
                column: c.clone(),
                data_type: field.data_type().clone(),
            });
        }
    }
    if let Some(order) = crate::clustering::SortOrder::of(&spec.properties)? {
        order.check(frame, schema, &spec.partition_by)?;
    }
    for c in crate::cell::writer::bloom_filter_columns(&spec.properties) {
        if schema.field_with_name(&c).is_err() {
            return Err(CatalogError::InvalidSchema(format!(
                "frame {frame}: {} names column {c}, which the frame does not have",
                crate::cell::writer::BLOOM_FILTER_COLUMNS
            )));
        }
        if spec.partition_by.contains(&c) {
            return Err(CatalogError::InvalidSchema(format!(
                "frame {frame}: {c} is a partition column (not stored in cells), so it cannot \
                 have a Bloom filter"
            )));
        }
    }
    if spec.partition_by.len() >= schema.fields().len() {
        return Err(CatalogError::InvalidSchema(format!(
            "frame {frame}: at least one column must not be a partition column"
        )));
    }
    Ok(())
}

impl Ledger {
    /// Creates version 0 of the ledger at `location`. Exactly one of many racing creators wins;
    /// the others get [`CatalogError::AlreadyExists`].
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
        let log = ledger_log(&meadow, &location);
        let entry = LedgerEntry {
            version: 0,
            timestamp_ms: now_ms(),
            writer: options.writer.clone(),
            commit_id: entry::new_commit_id(),
            operation: "CREATE".into(),
            protocol: Some(Protocol::current()),
            action: Action::CreateFrame {
                frame_id: frame_id.into(),
                // Ids come with the first rename, never from where a schema was copied.
                schema: crate::column_ids::without_ids(&spec.schema),
                partition_by: spec.partition_by.clone(),
                properties: spec.properties.clone(),
            },
            metrics: BTreeMap::new(),
        };
        let body = encode_checked(&log, &entry, None)?;
        // The folder is new (its name holds a fresh id), so only an earlier try of this very
        // create can hold version 0: read back, it tells.
        let mut backoff = Backoff::new(&options.retry);
        loop {
            match log.create_resolved(0, body.clone(), &entry.commit_id).await {
                Ok(Attempt::Landed { .. }) => break,
                Ok(Attempt::Taken) => return Err(CatalogError::already_exists(Kind::Frame, &name)),
                Ok(Attempt::Absent(e)) => {
                    if !backoff.failed().await {
                        return Err(e);
                    }
                }
                Err(e) => {
                    return Err(CatalogError::CommitUnknown {
                        target: format!("ledger of {name}"),
                        version: 0,
                        reason: e.to_string(),
                    });
                }
            }
        }
        let snapshot = FrameSnapshot::from_create(&entry, &log.entry_key(0))?;
        Ok(Self::with_snapshot(log, location, name, options, snapshot))
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
        let log = ledger_log(&meadow, &location);
        let base = load_base(&log, &name, None).await?;
        let ledger = Self::with_snapshot(log, location, name, options, base);
        ledger.catch_up(false).await?;
        Ok(ledger)
    }

    fn with_snapshot(
        log: NumberedLog,
        location: String,
        name: String,
        options: CommitOptions,
        snapshot: FrameSnapshot,
    ) -> Ledger {
        Ledger {
            inner: Arc::new(Inner {
                log,
                location,
                name,
                options,
                latest: Newest::new(snapshot),
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

    /// The meadow the ledger is stored in.
    pub fn meadow(&self) -> &Meadow {
        self.inner.log.meadow()
    }

    /// How this handle commits.
    pub fn options(&self) -> &CommitOptions {
        &self.inner.options
    }

    /// The newest snapshot this handle knows, without any I/O.
    pub fn latest(&self) -> Arc<FrameSnapshot> {
        self.inner.latest.get()
    }

    /// Brings the cached snapshot up to date. When nothing changed this costs one GET (a probe of
    /// the next version).
    pub async fn refresh(&self) -> Result<Arc<FrameSnapshot>> {
        self.catch_up(true).await
    }

    async fn catch_up(&self, probe_first: bool) -> Result<Arc<FrameSnapshot>> {
        let current = self.latest();
        let new = self.read_after(&current, probe_first).await?;
        if new.is_empty() {
            return Ok(current);
        }
        let mut next = (*current).clone();
        for (key, e) in &new {
            next.apply(e, key)?;
        }
        Ok(self.inner.latest.offer(Arc::new(next)))
    }

    /// The entries after `frame`'s version, decoded with its schema.
    async fn read_after(
        &self,
        frame: &FrameSnapshot,
        probe_first: bool,
    ) -> Result<Vec<(String, LedgerEntry)>> {
        let raw = self
            .inner
            .log
            .read_after(frame.version, probe_first)
            .await?;
        decode_all(&self.inner.log, raw, frame)
    }

    /// The frame as of `version` (time travel). Reads the newest checkpoint at or below it and
    /// the entries up to it. A version older than the oldest readable one (cleansing removed
    /// its cells) is [`CatalogError::VersionExpired`], naming the oldest readable version.
    pub async fn snapshot_at(&self, version: u64) -> Result<Arc<FrameSnapshot>> {
        let mut latest = self.latest();
        if version > latest.version {
            latest = self.refresh().await?;
        }
        if version == latest.version {
            return Ok(latest);
        }
        let oldest = self.oldest_readable().await?;
        if version < oldest {
            return Err(CatalogError::VersionExpired {
                frame: self.inner.name.clone(),
                version,
                oldest,
            });
        }
        self.load_at(version).await
    }

    /// The newest version committed at or before `at`, by the store's clock: when the store
    /// wrote each ledger entry (its `last_modified`), not the committing writer's clock. A time
    /// before the oldest entry still in the ledger is [`CatalogError::NoVersionAtTime`].
    pub async fn version_at_time(&self, at: chrono::DateTime<chrono::Utc>) -> Result<u64> {
        let latest = self.refresh().await?;
        let times = self.inner.log.entry_times().await?;
        let found = times
            .iter()
            .filter(|(v, t)| *v <= latest.version && *t <= at)
            .map(|(v, _)| *v)
            .max();
        found.ok_or_else(|| CatalogError::NoVersionAtTime {
            frame: self.inner.name.clone(),
            at: at.to_rfc3339(),
            oldest: times
                .first()
                .map(|(v, t)| format!("version {v}, committed at {}", t.to_rfc3339()))
                .unwrap_or_else(|| "none".into()),
        })
    }

    /// The state at `version` as far as the ledger can tell — even below the oldest readable
    /// version, whose cells cleansing may have removed: for history and upkeep, never for reads
    /// of the data.
    pub(crate) async fn load_at(&self, version: u64) -> Result<Arc<FrameSnapshot>> {
        let latest = self.latest();
        if version == latest.version {
            return Ok(latest);
        }
        if version > latest.version {
            return Err(CatalogError::NoSuchVersion {
                frame: self.inner.name.clone(),
                version,
                latest: latest.version,
            });
        }
        let log = &self.inner.log;
        let mut base = load_base(log, &self.inner.name, Some(version)).await?;
        let versions: Vec<u64> = (base.version + 1..=version).collect();
        for (key, e) in decode_all(log, log.read(&versions).await?, &base)? {
            base.apply(&e, &key)?;
        }
        Ok(Arc::new(base))
    }

    /// The oldest version whose cells are all kept: cleansing raises it (in the `_oldest`
    /// marker) before it removes the cells of older versions. 0 when nothing was ever removed.
    pub async fn oldest_readable(&self) -> Result<u64> {
        let key = self.oldest_key();
        let Some(body) = self.meadow().get(&key).await? else {
            return Ok(0);
        };
        serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("version")?.as_u64())
            .ok_or_else(|| CatalogError::corrupt(&key, "the oldest-version marker has no version"))
    }

    /// Raises the oldest readable version to `version` (never lowers it).
    pub(crate) async fn raise_oldest_readable(&self, version: u64) -> Result<()> {
        if self.oldest_readable().await? >= version {
            return Ok(());
        }
        let body = serde_json::json!({ "version": version }).to_string();
        self.meadow()
            .put(&self.oldest_key(), Bytes::from(body))
            .await
    }

    fn oldest_key(&self) -> String {
        format!("{}/_ledger/_oldest", self.inner.location)
    }

    /// The numbered log behind this ledger (cleansing works on it directly).
    pub(crate) fn log(&self) -> &NumberedLog {
        &self.inner.log
    }

    /// The given entries, decoded (version 0 included), in order.
    pub(crate) async fn read_entries(&self, versions: &[u64]) -> Result<Vec<LedgerEntry>> {
        let log = &self.inner.log;
        let Some(&first) = versions.first() else {
            return Ok(vec![]);
        };
        // Each entry is typed by the schema in force before it (a renamed column's statistics
        // may be of another type under its old name than the latest schema's column of that
        // name): the first by the state it made — the same schema, unless it set one, which it
        // carries; the state before it may be gone, as cleansing removes older entries — then
        // each by what the `set_schema` entries on the way set. A state that cannot be loaded
        // at all (entries left by an interrupted cleansing, below every checkpoint) falls back
        // to the latest schema, as entries were typed before renames.
        let typing = match first {
            0 => None,
            v => {
                let at = match self.load_at(v).await {
                    Ok(at) => at,
                    Err(_) => self.latest(),
                };
                Some((Arc::clone(&at.schema), at.partition_by.clone()))
            }
        };
        Ok(decode_rolling(log, log.read(versions).await?, typing)?
            .into_iter()
            .map(|(_, e)| e)
            .collect())
    }

    /// The entries still stored (cleansing removes those before its oldest kept checkpoint),
    /// oldest first, and the state just after the oldest of them when that is not version 0 (so
    /// that a history can still tell what later entries removed).
    pub async fn history(&self) -> Result<(Vec<LedgerEntry>, Option<Arc<FrameSnapshot>>)> {
        let latest = self.refresh().await?;
        let present: Vec<u64> = self
            .inner
            .log
            .entry_versions()
            .await?
            .into_iter()
            .filter(|v| *v <= latest.version)
            .collect();
        let entries = self.read_entries(&present).await?;
        let start = match present.first() {
            Some(v) if *v > 0 => Some(self.load_at(*v).await?),
            _ => None,
        };
        Ok((entries, start))
    }

    /// All entries from `from` (inclusive) to the latest, in order. Versions removed by cleanup
    /// are an error naming the oldest readable one.
    pub async fn entries(&self, from: u64) -> Result<Vec<LedgerEntry>> {
        let latest = self.refresh().await?;
        let log = &self.inner.log;
        let mut out = Vec::with_capacity((latest.version + 1).saturating_sub(from) as usize);
        if from == 0 {
            let body = log
                .get(0)
                .await?
                .ok_or_else(|| CatalogError::VersionExpired {
                    frame: self.inner.name.clone(),
                    version: 0,
                    oldest: latest.version,
                })?;
            out.push(decode(log, &body, &log.entry_key(0), None)?);
        }
        let rest: Vec<u64> = (from.max(1)..=latest.version).collect();
        if rest.is_empty() {
            return Ok(out);
        }
        let typing = match out.first() {
            Some(LedgerEntry {
                action:
                    Action::CreateFrame {
                        schema,
                        partition_by,
                        ..
                    },
                ..
            }) => (Arc::clone(schema), partition_by.clone()),
            // As in `read_entries`: the state entry `from` made types it and what follows.
            _ => {
                let at = self.load_at(from).await?;
                (Arc::clone(&at.schema), at.partition_by.clone())
            }
        };
        out.extend(
            decode_rolling(log, log.read(&rest).await?, Some(typing))?
                .into_iter()
                .map(|(_, e)| e),
        );
        Ok(out)
    }

    /// Commits `action` on top of `read`, the snapshot the caller planned it from.
    ///
    /// Cells the action adds must already be written (and durable). On a lost race the new
    /// entries are read and checked against the conflict rules; a compatible commit is rebased
    /// and retried with jittered backoff until the retry budget is spent. An ambiguous answer
    /// (an error from a create that may have landed) is resolved by reading the entry back: its
    /// commit id says whether it is this commit's. When even that cannot be known the error is
    /// [`CatalogError::CommitUnknown`], and the caller must keep what it wrote.
    pub async fn commit(
        &self,
        read: &FrameSnapshot,
        operation: &str,
        action: Action,
    ) -> Result<CommitInfo> {
        self.commit_with_metrics(read, operation, action, BTreeMap::new())
            .await
    }

    /// [`Ledger::commit`], recording what the operation did (`rows_deleted`, …) in the entry.
    pub async fn commit_with_metrics(
        &self,
        read: &FrameSnapshot,
        operation: &str,
        mut action: Action,
        metrics: BTreeMap<String, u64>,
    ) -> Result<CommitInfo> {
        if matches!(action, Action::CreateFrame { .. }) {
            return Err(CatalogError::InvalidOption {
                name: "action".into(),
                reason: "create_frame is written by Ledger::create only".into(),
            });
        }
        if read.is_subset() {
            return Err(CatalogError::InvalidOption {
                name: "read".into(),
                reason: format!(
                    "a subset of the cells of version {} of {} cannot be the base of a commit",
                    read.version, self.inner.name
                ),
            });
        }
        read.protocol
            .check_write(&format!("frame {}", self.inner.name))?;
        for p in action.removed() {
            if read.cell(p).is_none() {
                return Err(CatalogError::InvalidOption {
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
        // The first schema change declares its feature, and the first with column ids theirs:
        // builds that cannot read them are fenced.
        let needed: Vec<&str> = match &action {
            Action::SetSchema { schema } => {
                let mut needed = vec![crate::protocol::feature::SCHEMA_EVOLUTION];
                if crate::column_ids::has_ids(schema) {
                    needed.push(crate::protocol::feature::COLUMN_IDS);
                }
                needed
            }
            Action::SetProperties { .. } => vec![crate::protocol::feature::FRAME_PROPERTIES],
            _ => vec![],
        };
        let raised = needed
            .iter()
            .any(|f| !read.protocol.reader_features.contains(*f))
            .then(|| {
                let mut p = read.protocol.clone();
                for f in &needed {
                    p.reader_features.insert(f.to_string());
                    p.writer_features.insert(f.to_string());
                }
                p
            });
        let log = &self.inner.log;
        let commit_id = entry::new_commit_id();
        let mut base = read.clone();
        let mut backoff = Backoff::new(&self.inner.options.retry);
        // A version this commit tried, whose create failed ambiguously and which nobody else has
        // been seen to hold since: until someone does, the commit may still land there.
        let mut uncertain: Option<u64> = None;
        let target = || format!("ledger of {}", self.inner.name);
        loop {
            let version = base.version + 1;
            let entry = LedgerEntry {
                version,
                timestamp_ms: now_ms(),
                writer: self.inner.options.writer.clone(),
                commit_id: commit_id.clone(),
                operation: operation.to_string(),
                protocol: raised.clone(),
                action: action.clone(),
                metrics: metrics.clone(),
            };
            let body = encode_checked(log, &entry, Some(&base))?;
            let attempt = match log.create_resolved(version, body, &commit_id).await {
                Ok(a) => a,
                Err(e) => {
                    return Err(CatalogError::CommitUnknown {
                        target: target(),
                        version,
                        reason: e.to_string(),
                    });
                }
            };
            match attempt {
                Attempt::Landed { read_back } => {
                    self.meadow().sight().count(sight::COMMITS, 1);
                    base.apply(&entry, &log.entry_key(version))?;
                    let snapshot = Arc::new(base);
                    self.inner.latest.offer(Arc::clone(&snapshot));
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
                        read_back,
                    });
                }
                Attempt::Absent(e) => {
                    self.meadow().sight().count(sight::COMMIT_RETRIES, 1);
                    uncertain = Some(version);
                    if !backoff.failed().await {
                        return Err(CatalogError::CommitUnknown {
                            target: target(),
                            version,
                            reason: e.to_string(),
                        });
                    }
                }
                Attempt::Taken => {
                    let winners = self.read_after(&base, true).await?;
                    for (key, winner) in &winners {
                        if winner.commit_id == commit_id {
                            // An earlier try landed after all (a late write after an error).
                            self.meadow().sight().count(sight::COMMITS, 1);
                            base.apply(winner, key)?;
                            self.inner.latest.offer(Arc::new(base.clone()));
                            return Ok(CommitInfo {
                                version: winner.version,
                                attempts: backoff.attempts() + 1,
                                cells_added: action.added().len(),
                                cells_removed: action.removed().len(),
                                rows_added: action.added().iter().map(|c| c.rows).sum(),
                                rows_removed,
                                read_back: true,
                            });
                        }
                        if uncertain == Some(winner.version) {
                            uncertain = None;
                        }
                        conflict::check(&self.inner.name, &action, operation, winner)
                            .inspect_err(|_| self.meadow().sight().count(sight::CONFLICTS, 1))
                            .map_err(|e| match uncertain {
                                Some(version) => CatalogError::CommitUnknown {
                                    target: target(),
                                    version,
                                    reason: e.to_string(),
                                },
                                None => e,
                            })?;
                        // Cells written before a rename that won carry the old names in
                        // their statistics.
                        if let Action::SetSchema { schema } = &winner.action {
                            action
                                .follow_renames(&crate::column_ids::renames(&base.schema, schema));
                        }
                        base.apply(winner, key)?;
                    }
                    if !winners.is_empty() {
                        self.inner.latest.offer(Arc::new(base.clone()));
                    }
                    self.meadow().sight().count(sight::LOST_RACES, 1);
                    self.meadow().sight().count(sight::COMMIT_RETRIES, 1);
                    if !backoff.lost_race().await {
                        let exhausted = CatalogError::RetriesExhausted {
                            target: target(),
                            attempts: backoff.attempts(),
                            elapsed_ms: backoff.elapsed().as_millis(),
                        };
                        return Err(match uncertain {
                            Some(version) => CatalogError::CommitUnknown {
                                target: target(),
                                version,
                                reason: exhausted.to_string(),
                            },
                            None => exhausted,
                        });
                    }
                }
            }
        }
    }

    /// Writes the full state of `snapshot` as a checkpoint and points the hint at it.
    pub async fn write_checkpoint(&self, snapshot: &FrameSnapshot) -> Result<()> {
        let log = &self.inner.log;
        let body = serde_json::to_vec(&snapshot.checkpoint_json()?)
            .map_err(|e| CatalogError::corrupt(log.checkpoint_key(snapshot.version), e))?;
        log.write_checkpoint(snapshot.version, Bytes::from(body))
            .await
    }
}

fn ledger_log(meadow: &Meadow, location: &str) -> NumberedLog {
    NumberedLog::new(
        meadow.clone(),
        format!("{location}/_ledger"),
        LogNames::Ledger,
    )
}

/// Version 0, or the newest checkpoint (at or below `at`, when given).
async fn load_base(log: &NumberedLog, name: &str, at: Option<u64>) -> Result<FrameSnapshot> {
    // The hint names the newest checkpoint; when time travelling below it, list them all.
    let wanted = match (log.hint().await?, at) {
        (Some(h), None) => Some(h),
        (Some(h), Some(a)) if h <= a => Some(h),
        (Some(_), Some(a)) => newest_checkpoint(log, a).await?,
        (None, _) => None,
    };
    if let Some(cp) = wanted
        && let Some(snap) = read_checkpoint(log, cp).await?
    {
        return Ok(snap);
    }
    if let Some(body) = log.get(0).await? {
        let key = log.entry_key(0);
        return FrameSnapshot::from_create(&decode(log, &body, &key, None)?, &key);
    }
    // No version 0: either the frame does not exist, or cleanup removed the old entries and the
    // hint is missing. A listing of the checkpoints decides.
    let newest = newest_checkpoint(log, at.unwrap_or(u64::MAX)).await?;
    if let Some(cp) = newest
        && let Some(snap) = read_checkpoint(log, cp).await?
    {
        return Ok(snap);
    }
    match at {
        Some(version) => Err(CatalogError::VersionExpired {
            frame: name.to_string(),
            version,
            oldest: log
                .checkpoint_versions()
                .await?
                .first()
                .copied()
                .unwrap_or_default(),
        }),
        None => Err(CatalogError::not_found(
            Kind::Frame,
            format!("{name} (no ledger at {})", log.entry_key(0)),
        )),
    }
}

async fn read_checkpoint(log: &NumberedLog, v: u64) -> Result<Option<FrameSnapshot>> {
    let Some(body) = log.read_checkpoint(v).await? else {
        return Ok(None);
    };
    let key = log.checkpoint_key(v);
    let snap = FrameSnapshot::from_checkpoint_json(&body, &key)?;
    if snap.version != v {
        return Err(CatalogError::corrupt(
            key,
            "checkpoint holds another version",
        ));
    }
    Ok(Some(snap))
}

async fn newest_checkpoint(log: &NumberedLog, at_most: u64) -> Result<Option<u64>> {
    Ok(log
        .checkpoint_versions()
        .await?
        .into_iter()
        .rfind(|v| *v <= at_most))
}

/// Decodes consecutive entries after `frame`: each with the schema in force before it, so that
/// cells written after a `set_schema` are typed by the schema it set.
fn decode_all(
    log: &NumberedLog,
    raw: Vec<(String, Bytes)>,
    frame: &FrameSnapshot,
) -> Result<Vec<(String, LedgerEntry)>> {
    decode_rolling(
        log,
        raw,
        Some((Arc::clone(&frame.schema), frame.partition_by.clone())),
    )
}

/// Decodes consecutive entries, typing each by the schema (and partition columns) in force
/// before it: `typing` before the first (none for version 0, which carries its own), then what
/// each `create_frame` or `set_schema` sets.
fn decode_rolling(
    log: &NumberedLog,
    raw: Vec<(String, Bytes)>,
    mut typing: Option<(datafusion::arrow::datatypes::SchemaRef, Vec<String>)>,
) -> Result<Vec<(String, LedgerEntry)>> {
    raw.into_iter()
        .map(|(key, body)| {
            let entry = LedgerEntry::from_json(
                &body,
                &key,
                typing.as_ref().map(|(s, p)| (s, p.as_slice())),
            )?;
            if log.version_of(&key) != Some(entry.version) {
                return Err(CatalogError::corrupt(
                    &key,
                    format!("entry claims version {}", entry.version),
                ));
            }
            match &entry.action {
                Action::CreateFrame {
                    schema,
                    partition_by,
                    ..
                } => typing = Some((Arc::clone(schema), partition_by.clone())),
                Action::SetSchema { schema: next } => {
                    if let Some((schema, _)) = &mut typing {
                        *schema = Arc::clone(next);
                    }
                }
                _ => {}
            }
            Ok((key, entry))
        })
        .collect()
}

/// Parses an entry and checks that it is the version its key names. `frame` types the cell
/// values (version 0 carries its own schema).
fn decode(
    log: &NumberedLog,
    body: &[u8],
    key: &str,
    frame: Option<&FrameSnapshot>,
) -> Result<LedgerEntry> {
    let entry = LedgerEntry::from_json(
        body,
        key,
        frame.map(|f| (&f.schema, f.partition_by.as_slice())),
    )?;
    if log.version_of(key) != Some(entry.version) {
        return Err(CatalogError::corrupt(
            key,
            format!("entry claims version {}", entry.version),
        ));
    }
    Ok(entry)
}

/// Encodes `entry` for the log and decodes it again against the frame (`None` for version 0),
/// so that nothing is committed that a reader would refuse: paths outside the frame folder, a
/// wrong number of partition values, statistics that do not decode.
fn encode_checked(
    log: &NumberedLog,
    entry: &LedgerEntry,
    frame: Option<&FrameSnapshot>,
) -> Result<Bytes> {
    let partition_by: &[String] = match (&entry.action, frame) {
        (Action::CreateFrame { partition_by, .. }, _) => partition_by,
        (_, Some(f)) => &f.partition_by,
        (_, None) => &[],
    };
    let key = log.entry_key(entry.version);
    let v = entry.to_json(partition_by)?;
    let body = serde_json::to_vec(&v).map_err(|e| CatalogError::corrupt(&key, e))?;
    decode(log, &body, &key, frame).map_err(|e| CatalogError::InvalidOption {
        name: "entry".into(),
        reason: format!("version {} would not read back: {e}", entry.version),
    })?;
    Ok(Bytes::from(body))
}

/// The key of entry `version` of the ledger in the frame folder `location`.
pub(crate) fn entry_key(location: &str, version: u64) -> String {
    format!("{location}/_ledger/{}", LogNames::Ledger.entry(version))
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
