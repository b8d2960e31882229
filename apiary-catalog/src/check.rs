//! `apiary check`: verifies that a meadow, or one frame, keeps Apiary's promises.
//!
//! For every frame: its ledger is contiguous, every stored entry and checkpoint decodes, its
//! protocol is one this build knows, its version 0 belongs to the frame id the registry names,
//! and every cell of every readable version (from the oldest readable one to the latest) is
//! present with the size its record gives. For the meadow: the registry loads and its protocol
//! is known. Each problem names the object's key. Nothing is changed.

use std::collections::{BTreeSet, HashMap};

use crate::error::{CatalogError, Result};
use crate::ledger::Ledger;
use crate::name;
use crate::registry::{FrameRecord, Registry};

/// One broken promise, with the key of the object it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key below the meadow root.
    pub key: String,
    /// What is wrong with it.
    pub problem: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.problem)
    }
}

/// What a check looked at, and what it found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Frames checked.
    pub frames: usize,
    /// Readable versions checked, over all frames.
    pub versions: u64,
    /// Distinct cells checked, over all frames.
    pub cells: usize,
    /// What was found broken (none: the check passed).
    pub problems: Vec<Problem>,
}

impl CheckReport {
    /// True when no problem was found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    fn absorb(&mut self, other: CheckReport) {
        self.frames += other.frames;
        self.versions += other.versions;
        self.cells += other.cells;
        self.problems.extend(other.problems);
    }
}

/// The key an error is about, or `fallback`.
fn key_of(e: &CatalogError, fallback: &str) -> String {
    match e {
        CatalogError::Corrupt { key, .. } | CatalogError::Storage { key, .. } => key.clone(),
        _ => fallback.to_string(),
    }
}

fn problem(e: &CatalogError, fallback: &str) -> Problem {
    Problem {
        key: key_of(e, fallback),
        problem: e.to_string(),
    }
}

/// Checks every frame of the meadow behind `registry`.
pub async fn check_meadow(registry: &Registry) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    let state = match registry.refresh().await {
        Ok(s) => s,
        Err(e) => {
            report.problems.push(problem(&e, "_registry"));
            return Ok(report);
        }
    };
    if let Err(e) = state.protocol.check_read("the registry") {
        report.problems.push(problem(&e, "_registry"));
        return Ok(report);
    }
    for (hive, h) in &state.hives {
        for (box_, b) in &h.boxes {
            for (frame, record) in &b.frames {
                let qualified = name::qualified(&[hive, box_, frame]);
                report.absorb(check_frame(registry, &qualified, record).await?);
            }
        }
    }
    Ok(report)
}

/// Checks the frame `hive.box.frame`.
pub async fn check_named_frame(
    registry: &Registry,
    hive: &str,
    box_: &str,
    frame: &str,
) -> Result<CheckReport> {
    let state = registry.refresh().await?;
    let record = state.frame(hive, box_, frame)?.clone();
    check_frame(registry, &name::qualified(&[hive, box_, frame]), &record).await
}

/// Checks one frame, registered as `record`.
pub async fn check_frame(
    registry: &Registry,
    qualified: &str,
    record: &FrameRecord,
) -> Result<CheckReport> {
    let mut report = CheckReport {
        frames: 1,
        ..CheckReport::default()
    };
    let meadow = registry.meadow();
    let ledger_dir = format!("{}/_ledger", record.location);
    let first_key = crate::ledger::entry_key(&record.location, 0);
    let ledger = match Ledger::open(
        meadow.clone(),
        &record.location,
        qualified,
        registry.options().clone(),
    )
    .await
    {
        Ok(l) => l,
        Err(e) => {
            report.problems.push(problem(&e, &first_key));
            return Ok(report);
        }
    };
    let latest = ledger.latest();
    if latest.frame_id != record.id {
        report.problems.push(Problem {
            key: first_key.clone(),
            problem: format!(
                "the ledger belongs to frame id {} but the registry names {} for {qualified}",
                latest.frame_id, record.id
            ),
        });
    }
    if let Err(e) = latest.protocol.check_read(&format!("frame {qualified}")) {
        report.problems.push(problem(&e, &first_key));
    }

    // Contiguity of what is stored, and every stored entry decodes.
    let present = ledger.log().entry_versions().await?;
    for pair in present.windows(2) {
        for missing in pair[0] + 1..pair[1] {
            report.problems.push(Problem {
                key: ledger.log().entry_key(missing),
                problem: format!(
                    "ledger of {qualified} has a gap: version {missing} is missing between {} and {}",
                    pair[0], pair[1]
                ),
            });
        }
    }
    if present.last().copied().unwrap_or(0) < latest.version {
        report.problems.push(Problem {
            key: ledger_dir.clone(),
            problem: format!(
                "ledger of {qualified} loads to version {} but stores entries only to {:?}",
                latest.version,
                present.last()
            ),
        });
    }
    for v in &present {
        if let Err(e) = ledger.read_entries(&[*v]).await {
            report
                .problems
                .push(problem(&e, &ledger.log().entry_key(*v)));
        }
    }
    for v in ledger.log().checkpoint_versions().await? {
        if let Err(e) = ledger.load_at(v).await
            && !matches!(e, CatalogError::VersionExpired { .. })
        {
            report
                .problems
                .push(problem(&e, &ledger.log().checkpoint_key(v)));
        }
    }

    // Every cell of every readable version is there, with its recorded size.
    let oldest_stored = present.first().copied().unwrap_or(latest.version);
    let oldest = ledger.oldest_readable().await?.max(oldest_stored);
    let from = match ledger.snapshot_at(oldest.min(latest.version)).await {
        Ok(s) => s,
        Err(e) => {
            report
                .problems
                .push(problem(&e, &ledger.log().entry_key(oldest)));
            return Ok(report);
        }
    };
    let mut needed: HashMap<String, u64> = from.cells().map(|c| (c.path.clone(), c.size)).collect();
    let later: Vec<u64> = present.iter().copied().filter(|v| *v > oldest).collect();
    if let Ok(entries) = ledger.read_entries(&later).await {
        for e in entries {
            for c in e.action.added() {
                needed.insert(c.path.clone(), c.size);
            }
        }
    }
    report.versions = latest.version.saturating_sub(oldest) + 1;
    report.cells = needed.len();
    let prefix = format!("{}/", record.location);
    let mut stored: HashMap<String, u64> = HashMap::new();
    for object in meadow.list(&record.location).await? {
        if let Some(rel) = meadow
            .relative(&object.location)
            .and_then(|k| k.strip_prefix(&prefix))
        {
            stored.insert(rel.to_string(), object.size);
        }
    }
    let mut paths: BTreeSet<&String> = needed.keys().collect();
    paths.retain(|p| stored.get(*p) != Some(&needed[*p]));
    for path in paths {
        let key = format!("{prefix}{path}");
        report.problems.push(Problem {
            problem: match stored.get(path) {
                None => format!("cell of {qualified} is missing (a readable version names it)"),
                Some(size) => format!(
                    "cell of {qualified} has {size} bytes but its record says {}",
                    needed[path]
                ),
            },
            key,
        });
    }
    Ok(report)
}
