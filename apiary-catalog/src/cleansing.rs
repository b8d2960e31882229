//! Cleansing flights (garbage collection): bees leave the hive to void waste, never inside it.
//!
//! For one frame, with a retention window `W` (default 7 days) and a grace period `G` (default one
//! hour):
//!
//! 1. The oldest kept version `R` is the newest version committed at or before `now − W` (a reader
//!    "as of" the edge of the window needs it); every version from `R` to the latest stays
//!    readable. With nothing older than `W`, nothing expires.
//! 2. A cell is still needed when version `R` holds it or a later entry adds it. Every other cell
//!    object in the frame's folder goes: the cells removed before `R` at once, and the orphans of
//!    failed or lost commits (cells no stored version ever named) once they are older than `G` —
//!    a writer may be about to commit a younger one.
//! 3. Ledger entries and checkpoints older than the newest checkpoint `C ≤ R` go; when there is no
//!    such checkpoint, one is written at `R` first, so that every kept version still loads.
//!
//! A dry run reports the same list and removes nothing. [`cleanse_dropped`] removes the folders of
//! frames dropped longer than `W` ago.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::ledger::{Ledger, now_ms};
use crate::registry::Registry;

/// How a cleansing flight decides.
#[derive(Debug, Clone)]
pub struct CleansingOptions {
    /// Versions committed within this window stay readable (time travel).
    pub retention: Duration,
    /// Cells no stored version names (orphans) younger than this are kept: a writer may still
    /// commit them.
    pub grace: Duration,
    /// Only report what would go.
    pub dry_run: bool,
}

impl Default for CleansingOptions {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(7 * 24 * 3600),
            grace: Duration::from_secs(3600),
            dry_run: false,
        }
    }
}

/// What kind of object a removal is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemovalKind {
    Cell,
    LedgerEntry,
    Checkpoint,
    DroppedFrame,
}

impl RemovalKind {
    pub fn name(self) -> &'static str {
        match self {
            RemovalKind::Cell => "cell",
            RemovalKind::LedgerEntry => "ledger_entry",
            RemovalKind::Checkpoint => "checkpoint",
            RemovalKind::DroppedFrame => "dropped_frame",
        }
    }
}

/// One object removed (or, in a dry run, to be removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    pub kind: RemovalKind,
    /// Key below the meadow root.
    pub key: String,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleansingReport {
    pub frame: String,
    /// The oldest version still readable afterwards.
    pub oldest_kept_version: u64,
    pub removals: Vec<Removal>,
    pub dry_run: bool,
}

/// Runs one cleansing flight over `ledger`'s frame.
pub async fn cleanse_frame(ledger: &Ledger, options: &CleansingOptions) -> Result<CleansingReport> {
    let latest = ledger.refresh().await?;
    let log = ledger.log();
    let meadow = ledger.meadow();
    let now = now_ms();
    let boundary = now - options.retention.as_millis() as i64;
    let present = log.entry_versions().await?;
    let entries = ledger.read_entries(&present).await?;
    let oldest_present = present.first().copied().unwrap_or(latest.version);

    // 1. The oldest version kept.
    let keep_from = entries
        .iter()
        .filter(|e| e.timestamp_ms <= boundary)
        .map(|e| e.version)
        .max()
        .unwrap_or(oldest_present)
        .clamp(oldest_present, latest.version);
    let at_keep = ledger.snapshot_at(keep_from).await?;

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
        let first = ledger.snapshot_at(oldest_present).await?;
        known.extend(first.cells().map(|c| c.path.clone()));
    }
    let mut removals = vec![];
    let prefix = format!("{}/", ledger.location());
    let young = now - options.grace.as_millis() as i64;
    for object in meadow.list(ledger.location()).await? {
        let Some(key) = meadow.relative(&object.location) else {
            continue;
        };
        let Some(rel) = key.strip_prefix(&prefix) else {
            continue;
        };
        let orphan_in_grace =
            !known.contains(rel) && object.last_modified.timestamp_millis() > young;
        if rel.starts_with("_ledger/")
            || !rel.ends_with(".parquet")
            || needed.contains(rel)
            || orphan_in_grace
        {
            continue;
        }
        removals.push(Removal {
            kind: RemovalKind::Cell,
            key: key.to_string(),
            bytes: object.size,
        });
    }

    // 3. Ledger history before the newest checkpoint at or below the kept version.
    let checkpoints = log.checkpoint_versions().await?;
    let base = match checkpoints.iter().rev().find(|v| **v <= keep_from) {
        Some(c) => Some(*c),
        None if keep_from > oldest_present => {
            if !options.dry_run {
                let body = serde_json::to_vec(&at_keep.checkpoint_json()?)
                    .map_err(|e| Error::corrupt(log.checkpoint_key(keep_from), e))?;
                log.put_checkpoint(keep_from, Bytes::from(body)).await?;
            }
            Some(keep_from)
        }
        None => None,
    };
    if let Some(base) = base {
        for v in present.iter().filter(|v| **v < base) {
            removals.push(Removal {
                kind: RemovalKind::LedgerEntry,
                key: log.entry_key(*v),
                bytes: 0,
            });
        }
        for v in checkpoints.iter().filter(|v| **v < base) {
            removals.push(Removal {
                kind: RemovalKind::Checkpoint,
                key: log.checkpoint_key(*v),
                bytes: 0,
            });
        }
    }

    if !options.dry_run {
        // Cells first, then the history: a flight cut short leaves a consistent ledger.
        for r in removals.iter().filter(|r| r.kind == RemovalKind::Cell) {
            meadow.delete(&r.key).await?;
        }
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
    Ok(CleansingReport {
        frame: ledger.name().to_string(),
        oldest_kept_version: keep_from,
        removals,
        dry_run: options.dry_run,
    })
}

/// Removes the folders of frames dropped longer than the retention window ago.
pub async fn cleanse_dropped(
    registry: &Registry,
    options: &CleansingOptions,
) -> Result<Vec<Removal>> {
    let state = registry.refresh().await?;
    let boundary = now_ms() - options.retention.as_millis() as i64;
    let meadow = registry.meadow();
    let mut removals = vec![];
    for dropped in state.dropped.iter().filter(|d| d.dropped_ms <= boundary) {
        for object in meadow.list(&dropped.location).await? {
            let Some(key) = meadow.relative(&object.location) else {
                continue;
            };
            removals.push(Removal {
                kind: RemovalKind::DroppedFrame,
                key: key.to_string(),
                bytes: object.size,
            });
        }
    }
    if !options.dry_run {
        for r in &removals {
            meadow.delete(&r.key).await?;
        }
    }
    Ok(removals)
}
