//! Cleansing flights (garbage collection): bees leave the hive to void waste, never inside it.
//!
//! Every age is measured on the **store's clock** — object modification times against the time
//! of a probe object written for the purpose — never this machine's, which a board without a
//! real-time clock may have wrong. With a retention window `W` (default 7 days, never under one
//! hour unless forced):
//!
//! 1. Each stored ledger entry's time is its object's modification time, forced monotonic (a
//!    later version is never older than an earlier one, as in Delta Lake). The oldest kept
//!    version `R` is the newest version committed at or before `now − W` (a reader "as of" the
//!    edge of the window needs it); every version from `R` on stays readable.
//! 2. A cell is still needed when version `R` holds it or a later entry adds it. Cells removed
//!    before `R` go; *orphans* — cells no stored entry names (left by failed or lost commits, or
//!    a writer that died) — and staging files of interrupted local writes go once older than
//!    `W`: a writer may still be about to commit them.
//! 3. Before any removal, `R` is recorded as the oldest readable version (`_ledger/_oldest`), so
//!    that time travel below it is a clear "expired" error, never a missing object.
//! 4. Ledger entries and checkpoints older than the newest checkpoint `C ≤ R` go; when there is
//!    no such checkpoint, one is written at `R` first, so that every kept version still loads.
//!
//! A meadow-wide flight ([`cleanse_meadow`]) does this for every frame, and also reclaims the
//! folders of frames dropped more than `W` ago (after checking that each lies inside that frame's
//! own folder), folders of frames never registered (a crash between creating a ledger and the
//! registry commit), and staging files. A dry run reports the same list and removes nothing.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::error::{CatalogError, Result};
use crate::ledger::Ledger;
use crate::meadow::Meadow;
use crate::registry::{Registry, RegistryState};

/// The shortest retention a flight accepts without `force`: a writer may still commit the cells
/// it wrote this long ago.
pub const MIN_RETENTION: Duration = Duration::from_secs(3600);

/// How a cleansing flight decides.
#[derive(Debug, Clone)]
pub struct CleansingOptions {
    /// Versions committed within this window stay readable (time travel), and unnamed objects
    /// younger than it stay (a writer may still commit them). Default 7 days.
    pub retention: Duration,
    /// Only report what would go.
    pub dry_run: bool,
    /// Accept a retention under [`MIN_RETENTION`].
    pub force: bool,
}

impl Default for CleansingOptions {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(7 * 24 * 3600),
            dry_run: false,
            force: false,
        }
    }
}

impl CleansingOptions {
    /// Refuses a retention under one hour unless forced.
    pub fn validate(&self) -> Result<()> {
        if self.retention < MIN_RETENTION && !self.force {
            return Err(CatalogError::InvalidOption {
                name: "retention".into(),
                reason: format!(
                    "{} s is under the minimum of {} s: writers still committing what they wrote \
                     that recently would lose it; pass force = true to cleanse anyway",
                    self.retention.as_secs(),
                    MIN_RETENTION.as_secs()
                ),
            });
        }
        Ok(())
    }
}

/// What kind of object a removal is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemovalKind {
    /// A cell only versions older than the oldest kept one named.
    Cell,
    /// A cell no stored entry names, older than the retention.
    OrphanCell,
    /// A ledger entry older than the newest checkpoint at or below the oldest kept version.
    LedgerEntry,
    /// A checkpoint older than that checkpoint.
    Checkpoint,
    /// An object of a frame dropped longer ago than the retention.
    DroppedFrame,
    /// An object of a frame folder no registry entry ever named.
    Leftover,
    /// A staging file of an interrupted local write.
    Staging,
}

impl RemovalKind {
    /// Its name in reports (`cell`, `orphan_cell`, `ledger_entry`, …).
    pub fn name(self) -> &'static str {
        match self {
            RemovalKind::Cell => "cell",
            RemovalKind::OrphanCell => "orphan_cell",
            RemovalKind::LedgerEntry => "ledger_entry",
            RemovalKind::Checkpoint => "checkpoint",
            RemovalKind::DroppedFrame => "dropped_frame",
            RemovalKind::Leftover => "leftover",
            RemovalKind::Staging => "staging",
        }
    }
}

/// One object removed (or, in a dry run, to be removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    /// What kind of object it is.
    pub kind: RemovalKind,
    /// Key below the meadow root (a file path for staging files).
    pub key: String,
    /// Its size (0 for ledger entries and checkpoints, which are not measured).
    pub bytes: u64,
    /// The frame's oldest readable version after the flight (frame objects only).
    pub oldest_kept_version: Option<u64>,
}

/// What one cleansing flight removed (or, in a dry run, would remove).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleansingReport {
    /// `hive.box.frame`, or `*` for a meadow-wide flight.
    pub target: String,
    /// The oldest version still readable afterwards (one frame's flight).
    pub oldest_kept_version: Option<u64>,
    /// The objects removed, or to be removed.
    pub removals: Vec<Removal>,
    /// True when nothing was removed, only reported.
    pub dry_run: bool,
}

/// The store-clock time of each stored entry, forced monotonic.
async fn entry_times(ledger: &Ledger) -> Result<BTreeMap<u64, DateTime<Utc>>> {
    let log = ledger.log();
    let listed = ledger
        .meadow()
        .list_dir(&format!("{}/_ledger", ledger.location()))
        .await?;
    let mut times: BTreeMap<u64, DateTime<Utc>> = BTreeMap::new();
    for o in &listed.objects {
        if let Some(v) = o
            .location
            .filename()
            .and_then(|n| log.version_of(&format!("x/{n}")))
        {
            times.insert(v, o.last_modified);
        }
    }
    let mut newest = DateTime::<Utc>::MIN_UTC;
    for t in times.values_mut() {
        newest = newest.max(*t);
        *t = newest;
    }
    Ok(times)
}

/// Runs one cleansing flight over `ledger`'s frame.
pub async fn cleanse_frame(ledger: &Ledger, options: &CleansingOptions) -> Result<CleansingReport> {
    options.validate()?;
    let meadow = ledger.meadow();
    let boundary = boundary(meadow, options).await?;
    cleanse_frame_at(ledger, options, boundary).await
}

async fn boundary(meadow: &Meadow, options: &CleansingOptions) -> Result<DateTime<Utc>> {
    let now = meadow.store_now().await?;
    let window = chrono::Duration::from_std(options.retention).unwrap_or(chrono::Duration::MAX);
    Ok(now
        .checked_sub_signed(window)
        .unwrap_or(DateTime::<Utc>::MIN_UTC))
}

async fn cleanse_frame_at(
    ledger: &Ledger,
    options: &CleansingOptions,
    boundary: DateTime<Utc>,
) -> Result<CleansingReport> {
    let latest = ledger.refresh().await?;
    let log = ledger.log();
    let meadow = ledger.meadow();
    let times = entry_times(ledger).await?;
    let present: Vec<u64> = times
        .keys()
        .copied()
        .filter(|v| *v <= latest.version)
        .collect();
    let entries = ledger.read_entries(&present).await?;
    let oldest_present = present.first().copied().unwrap_or(latest.version);

    // 1. The oldest version kept.
    let keep_from = times
        .iter()
        .filter(|(_, t)| **t <= boundary)
        .map(|(v, _)| *v)
        .max()
        .unwrap_or(oldest_present)
        .clamp(oldest_present, latest.version)
        .max(ledger.oldest_readable().await?.min(latest.version));
    let at_keep = ledger.load_at(keep_from).await?;

    // 2. Cells no kept version needs.
    let mut needed: HashSet<String> = at_keep.cells().map(|c| c.path.clone()).collect();
    for e in entries.iter().filter(|e| e.version > keep_from) {
        needed.extend(e.action.added().iter().map(|c| c.path.clone()));
    }
    // Cells some stored version names: removed by the history, never in flight.
    let mut known: HashSet<String> = needed.clone();
    known.extend(
        entries
            .iter()
            .flat_map(|e| e.action.added().iter().map(|c| c.path.clone())),
    );
    if oldest_present > 0 {
        let first = ledger.load_at(oldest_present).await?;
        known.extend(first.cells().map(|c| c.path.clone()));
    }
    let mut removals = vec![];
    let prefix = format!("{}/", ledger.location());
    let oldest_kept_version = Some(keep_from);
    for object in meadow.list(ledger.location()).await? {
        let Some(key) = meadow.relative(&object.location) else {
            continue;
        };
        let Some(rel) = key.strip_prefix(&prefix) else {
            continue;
        };
        if rel.starts_with("_ledger/") || !rel.ends_with(".parquet") || needed.contains(rel) {
            continue;
        }
        let kind = if known.contains(rel) {
            RemovalKind::Cell
        } else if object.last_modified <= boundary {
            RemovalKind::OrphanCell
        } else {
            continue; // a writer may still commit it
        };
        removals.push(Removal {
            kind,
            key: key.to_string(),
            bytes: object.size,
            oldest_kept_version,
        });
    }
    for f in meadow.staging_files(ledger.location()).await? {
        if f.modified <= boundary {
            removals.push(Removal {
                kind: RemovalKind::Staging,
                key: f.path.display().to_string(),
                bytes: f.size,
                oldest_kept_version,
            });
        }
    }

    // 4. Ledger history before the newest checkpoint at or below the kept version.
    let checkpoints = log.checkpoint_versions().await?;
    let base = match checkpoints.iter().rev().find(|v| **v <= keep_from) {
        Some(c) => Some(*c),
        None if keep_from > oldest_present => {
            if !options.dry_run {
                let body = serde_json::to_vec(&at_keep.checkpoint_json()?)
                    .map_err(|e| CatalogError::corrupt(log.checkpoint_key(keep_from), e))?;
                log.put_checkpoint(keep_from, Bytes::from(body)).await?;
            }
            Some(keep_from)
        }
        None => None,
    };
    if let Some(base) = base {
        let entries = present.iter().map(|v| (RemovalKind::LedgerEntry, *v));
        let older = checkpoints.iter().map(|v| (RemovalKind::Checkpoint, *v));
        for (kind, v) in entries.chain(older).filter(|(_, v)| *v < base) {
            let key = match kind {
                RemovalKind::Checkpoint => log.checkpoint_key(v),
                _ => log.entry_key(v),
            };
            removals.push(Removal {
                kind,
                key,
                bytes: 0,
                oldest_kept_version,
            });
        }
    }

    if !options.dry_run && !removals.is_empty() {
        // 3. Readers learn the oldest readable version before anything of older ones goes.
        ledger.raise_oldest_readable(keep_from).await?;
        // Cells first, then the history: a flight cut short leaves a consistent ledger.
        remove(meadow, &removals, |k| {
            matches!(
                k,
                RemovalKind::Cell | RemovalKind::OrphanCell | RemovalKind::Staging
            )
        })
        .await?;
        if let Some(base) = base {
            if log.hint().await?.is_none_or(|h| h < base) {
                log.point_hint(base).await?;
            }
            for v in present.iter().filter(|v| **v < base) {
                log.delete_entry(*v).await?;
            }
            for v in checkpoints.iter().filter(|v| **v < base) {
                log.delete_checkpoint(*v).await?;
            }
        }
    }
    ledger.meadow().sight().count(crate::sight::CLEANSES, 1);
    Ok(CleansingReport {
        target: ledger.name().to_string(),
        oldest_kept_version,
        removals,
        dry_run: options.dry_run,
    })
}

/// Deletes the removals of the kinds `which` picks (staging files by path).
async fn remove(
    meadow: &Meadow,
    removals: &[Removal],
    which: impl Fn(RemovalKind) -> bool,
) -> Result<()> {
    for r in removals.iter().filter(|r| which(r.kind)) {
        if r.kind == RemovalKind::Staging {
            let path = std::path::PathBuf::from(&r.key);
            tokio::task::spawn_blocking(move || match std::fs::remove_file(&path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(source) => Err(CatalogError::Io {
                    path: path.display().to_string(),
                    source,
                }),
            })
            .await??;
        } else {
            meadow.delete(&r.key).await?;
        }
    }
    Ok(())
}

/// A meadow-wide flight: every frame, the folders of frames dropped longer than the retention
/// ago, folders no registry entry names (crash leftovers), and staging files.
pub async fn cleanse_meadow(
    registry: &Registry,
    options: &CleansingOptions,
) -> Result<CleansingReport> {
    options.validate()?;
    let meadow = registry.meadow();
    let boundary = boundary(meadow, options).await?;
    let state = registry.refresh().await?;
    let mut removals = vec![];
    for (hive, h) in &state.hives {
        for (box_, b) in &h.boxes {
            for frame in b.frames.keys() {
                let ledger = registry.open_ledger(hive, box_, frame).await?;
                removals.extend(cleanse_frame_at(&ledger, options, boundary).await?.removals);
            }
        }
    }
    let (dropped, purged) = dropped_frames(registry, &state, boundary).await?;
    removals.extend(dropped);
    removals.extend(leftovers(meadow, &state, boundary).await?);
    // Staging files the flights above did not find (outside any live or dropped frame).
    let seen: HashSet<String> = removals
        .iter()
        .filter(|r| r.kind == RemovalKind::Staging)
        .map(|r| r.key.clone())
        .collect();
    for f in meadow.staging_files("").await? {
        let key = f.path.display().to_string();
        let in_a_frame = state
            .hives
            .values()
            .flat_map(|h| h.boxes.values())
            .flat_map(|b| b.frames.values())
            .any(|fr| key.contains(&format!("/{}/", fr.location)));
        if !seen.contains(&key) && !in_a_frame && f.modified <= boundary {
            removals.push(Removal {
                kind: RemovalKind::Staging,
                key,
                bytes: f.size,
                oldest_kept_version: None,
            });
        }
    }
    if !options.dry_run {
        remove(meadow, &removals, |k| {
            matches!(
                k,
                RemovalKind::DroppedFrame | RemovalKind::Leftover | RemovalKind::Staging
            )
        })
        .await?;
        registry.purge_dropped(purged).await?;
    }
    Ok(CleansingReport {
        target: "*".into(),
        oldest_kept_version: None,
        removals,
        dry_run: options.dry_run,
    })
}

/// The objects of frames dropped before `boundary` (by the store's time of the drop entry), and
/// their ids. A dropped frame whose recorded folder is not its own is left alone, with a warning.
async fn dropped_frames(
    registry: &Registry,
    state: &RegistryState,
    boundary: DateTime<Utc>,
) -> Result<(Vec<Removal>, Vec<String>)> {
    let meadow = registry.meadow();
    let (mut removals, mut ids) = (vec![], vec![]);
    for d in &state.dropped {
        let dropped_at = match registry.entry_time(d.dropped_version).await? {
            Some(t) => t,
            None => {
                DateTime::from_timestamp_millis(d.dropped_ms).unwrap_or(DateTime::<Utc>::MAX_UTC)
            }
        };
        if dropped_at > boundary {
            continue;
        }
        let parts: Vec<&str> = d.name.split('.').collect();
        let own = match parts[..] {
            [h, b, f] => format!("{h}/{b}/{f}/{}", d.id),
            _ => String::new(),
        };
        if d.location != own || d.id.is_empty() || d.id.contains('/') {
            log::warn!(
                "not reclaiming dropped frame {} (id {}): its folder {:?} is not its own ({own:?})",
                d.name,
                d.id,
                d.location
            );
            continue;
        }
        for object in meadow.list(&d.location).await? {
            if let Some(key) = meadow.relative(&object.location) {
                removals.push(Removal {
                    kind: RemovalKind::DroppedFrame,
                    key: key.to_string(),
                    bytes: object.size,
                    oldest_kept_version: None,
                });
            }
        }
        for f in meadow.staging_files(&d.location).await? {
            removals.push(Removal {
                kind: RemovalKind::Staging,
                key: f.path.display().to_string(),
                bytes: f.size,
                oldest_kept_version: None,
            });
        }
        ids.push(d.id.clone());
    }
    Ok((removals, ids))
}

/// Objects of `{hive}/{box}/{frame}/{id}` folders that no live or dropped frame owns, whose
/// newest object is older than `boundary`.
async fn leftovers(
    meadow: &Meadow,
    state: &RegistryState,
    boundary: DateTime<Utc>,
) -> Result<Vec<Removal>> {
    let mut owned: HashSet<String> = state.dropped.iter().map(|d| d.location.clone()).collect();
    for h in state.hives.values() {
        for b in h.boxes.values() {
            owned.extend(b.frames.values().map(|f| f.location.clone()));
        }
    }
    let dirs = |listed: object_store::ListResult| -> Vec<String> {
        listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .filter(|n| !n.starts_with('_') && !n.starts_with('.'))
            .collect()
    };
    let mut removals = vec![];
    for hive in dirs(meadow.list_dir("").await?) {
        for box_ in dirs(meadow.list_dir(&hive).await?) {
            for frame in dirs(meadow.list_dir(&format!("{hive}/{box_}")).await?) {
                let at = format!("{hive}/{box_}/{frame}");
                for id in dirs(meadow.list_dir(&at).await?) {
                    let location = format!("{at}/{id}");
                    if owned.contains(&location) {
                        continue;
                    }
                    let objects = meadow.list(&location).await?;
                    if objects.iter().any(|o| o.last_modified > boundary) {
                        continue; // a creator may still be about to register it
                    }
                    for object in objects {
                        if let Some(key) = meadow.relative(&object.location) {
                            removals.push(Removal {
                                kind: RemovalKind::Leftover,
                                key: key.to_string(),
                                bytes: object.size,
                                oldest_kept_version: None,
                            });
                        }
                    }
                }
            }
        }
    }
    Ok(removals)
}
