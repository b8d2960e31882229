//! Numbered logs in the meadow: the shape the registry and every frame's ledger share.
//!
//! A log is a folder of objects named by version, each created once by conditional create, plus
//! checkpoints (the whole state at some versions) and a hint naming the newest checkpoint. This
//! module knows the names and the I/O; what an entry means is its owner's business.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use parking_lot::RwLock;
use serde_json::{Value, json};

use crate::error::{CatalogError, Result};
use crate::meadow::{Created, Meadow};

/// How many objects are fetched at once when catching up.
const FETCH_CONCURRENCY: usize = 16;

/// How often an entry whose create ended in an ambiguous error is read back before the outcome
/// is declared unknown (with backoff: about 10 s in all).
const READ_BACK_ATTEMPTS: u32 = 8;

/// What became of one attempt to create an entry.
#[derive(Debug)]
pub(crate) enum Attempt {
    /// The entry at that version is this commit's: created now, or (`read_back`) by a try
    /// whose answer was lost, as reading it back showed.
    Landed { read_back: bool },
    /// Another writer's entry holds the version.
    Taken,
    /// The create failed and the version is still free. The write may still land later (a
    /// request the store finishes after the client gave up), so the commit is not yet provably
    /// lost: only a later entry of someone else at that version proves it.
    Absent(CatalogError),
}

/// Tries of a read that failed (reads are idempotent: a transient error is worth another go).
const READ_TRIES: u32 = 3;

/// Runs the read `read()` up to [`READ_TRIES`] times while it fails, with short backoff.
async fn retry_read<T, F, Fut>(read: F) -> Result<T>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut tries = 1;
    loop {
        match read().await {
            Ok(v) => return Ok(v),
            Err(e) if tries >= READ_TRIES => return Err(e),
            Err(e) => {
                log::debug!("retrying a read after: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10 << (2 * tries))).await;
                tries += 1;
            }
        }
    }
}

/// The commit id an encoded entry carries (`None` for entries written before commit ids).
pub(crate) fn commit_id_of(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<Value>(body)
        .ok()?
        .get("commit_id")?
        .as_str()
        .map(str::to_string)
}

/// The naming of one kind of log. Entries and checkpoints are `{version:020}.json` in both; a
/// registry written before that (`state_{version:06}.json`, `checkpoint_{version:06}.json`) is
/// still read, and its old entries keep their names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogNames {
    /// `_registry/{version:020}.json`, `_registry/_checkpoint/{version:020}.json`
    Registry,
    /// `{frame}/_ledger/{version:020}.json`, `{frame}/_ledger/_checkpoint/{version:020}.json`
    Ledger,
}

fn twenty_digits(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".json")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

impl LogNames {
    pub(crate) fn entry(self, v: u64) -> String {
        format!("{v:020}.json")
    }

    /// The version a name gives, and whether it is a legacy registry name.
    fn parse_entry(self, name: &str) -> Option<(u64, bool)> {
        if let Some(v) = twenty_digits(name) {
            return Some((v, false));
        }
        match self {
            LogNames::Registry => {
                let v = name
                    .strip_prefix("state_")?
                    .strip_suffix(".json")?
                    .parse()
                    .ok()?;
                Some((v, true))
            }
            LogNames::Ledger => None,
        }
    }

    fn legacy_entry(v: u64) -> String {
        format!("state_{v:06}.json")
    }

    fn legacy_checkpoint(v: u64) -> String {
        format!("checkpoint_{v:06}.json")
    }

    fn checkpoint(self, v: u64) -> String {
        format!("{v:020}.json")
    }

    fn parse_checkpoint(self, name: &str) -> Option<u64> {
        twenty_digits(name).or_else(|| match self {
            LogNames::Registry => name
                .strip_prefix("checkpoint_")?
                .strip_suffix(".json")?
                .parse()
                .ok(),
            LogNames::Ledger => None,
        })
    }
}

/// One numbered log below the meadow root.
#[derive(Debug, Clone)]
pub(crate) struct NumberedLog {
    meadow: Meadow,
    dir: String,
    names: LogNames,
    /// The newest entry seen under a legacy name: entries up to it keep that name.
    legacy_upto: Arc<AtomicU64>,
}

impl NumberedLog {
    pub(crate) fn new(meadow: Meadow, dir: impl Into<String>, names: LogNames) -> Self {
        Self {
            meadow,
            dir: dir.into(),
            names,
            legacy_upto: Arc::new(AtomicU64::new(0)),
        }
    }

    pub(crate) fn meadow(&self) -> &Meadow {
        &self.meadow
    }

    pub(crate) fn entry_key(&self, v: u64) -> String {
        if v > 0 && v <= self.legacy_upto.load(Ordering::Relaxed) {
            return format!("{}/{}", self.dir, LogNames::legacy_entry(v));
        }
        format!("{}/{}", self.dir, self.names.entry(v))
    }

    pub(crate) fn checkpoint_key(&self, v: u64) -> String {
        format!("{}/_checkpoint/{}", self.dir, self.names.checkpoint(v))
    }

    fn legacy_checkpoint_key(&self, v: u64) -> Option<String> {
        (self.names == LogNames::Registry).then(|| {
            format!(
                "{}/_checkpoint/{}",
                self.dir,
                LogNames::legacy_checkpoint(v)
            )
        })
    }

    /// The version an entry name gives; a legacy name is remembered so that its key is used.
    fn parse_entry(&self, name: &str) -> Option<u64> {
        let (v, legacy) = self.names.parse_entry(name)?;
        if legacy {
            self.legacy_upto.fetch_max(v, Ordering::Relaxed);
        }
        Some(v)
    }

    pub(crate) fn hint_key(&self) -> String {
        format!("{}/_last_checkpoint", self.dir)
    }

    /// The version an entry key names (used to check that an entry says the same).
    pub(crate) fn version_of(&self, key: &str) -> Option<u64> {
        self.names
            .parse_entry(key.rsplit('/').next()?)
            .map(|(v, _)| v)
    }

    /// Creates entry `v`; exactly one of many racing writers gets [`Created::Yes`].
    pub(crate) async fn create(&self, v: u64, body: Bytes) -> Result<Created> {
        self.meadow.create(&self.entry_key(v), body).await
    }

    /// Creates entry `v` (whose body carries `commit_id`) and finds out for sure whether it is
    /// there: a lost race or an error is resolved by reading the entry back and comparing commit
    /// ids, so that an entry whose write was answered with an error (a timeout, a 5xx after the
    /// store kept it, the store client's own retry meeting its first try) is recognised as this
    /// commit's. A clean create costs no read. `Err` only when even reading back fails: then
    /// nobody knows.
    pub(crate) async fn create_resolved(
        &self,
        v: u64,
        body: Bytes,
        commit_id: &str,
    ) -> std::result::Result<Attempt, CatalogError> {
        let failure = match self.create(v, body).await {
            Ok(Created::Yes) => return Ok(Attempt::Landed { read_back: false }),
            Ok(Created::LostRace) => None,
            Err(e) => Some(e),
        };
        let key = self.entry_key(v);
        let mut last = None;
        for attempt in 0..READ_BACK_ATTEMPTS {
            if attempt > 0 {
                let wait = std::time::Duration::from_millis(20 << attempt.min(9));
                tokio::time::sleep(wait).await;
            }
            match self.meadow.get(&key).await {
                Ok(Some(found)) => {
                    return Ok(if commit_id_of(&found).as_deref() == Some(commit_id) {
                        Attempt::Landed { read_back: true }
                    } else {
                        Attempt::Taken
                    });
                }
                Ok(None) => {
                    return Ok(Attempt::Absent(failure.unwrap_or_else(|| {
                        CatalogError::corrupt(
                            &key,
                            "the create lost a race, yet the entry is missing",
                        )
                    })));
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| CatalogError::corrupt(&key, "could not be read back")))
    }

    pub(crate) async fn get(&self, v: u64) -> Result<Option<Bytes>> {
        let key = self.entry_key(v);
        retry_read(|| self.meadow.get(&key)).await
    }

    /// The entries after `after`, in order, as `(key, body)`. With `probe_first` this costs one
    /// GET when there is nothing new; otherwise (and when there is) one listing that starts
    /// after the newest known entry, then the new entries fetched concurrently. A gap is an
    /// error naming the missing key.
    pub(crate) async fn read_after(
        &self,
        after: u64,
        probe_first: bool,
    ) -> Result<Vec<(String, Bytes)>> {
        let mut out = vec![];
        let mut known = after;
        if probe_first {
            let key = self.entry_key(after + 1);
            match retry_read(|| self.meadow.get(&key)).await? {
                None => return Ok(out),
                Some(body) => out.push((key, body)),
            }
            known = after + 1;
        }
        let offset = self.names.entry(known);
        let listed = retry_read(|| self.meadow.list_after(&self.dir, &offset)).await?;
        let mut versions: Vec<u64> = listed
            .iter()
            .filter_map(|m| {
                let name = self
                    .meadow
                    .relative(&m.location)?
                    .strip_prefix(&self.dir)?
                    .strip_prefix('/')?;
                self.parse_entry(name)
            })
            .filter(|v| *v > known)
            .collect();
        versions.sort_unstable();
        for (i, v) in versions.iter().enumerate() {
            let expected = known + 1 + i as u64;
            if *v != expected {
                return Err(CatalogError::corrupt(
                    self.entry_key(expected),
                    format!("the log has a gap: version {expected} is missing but {v} exists"),
                ));
            }
        }
        out.extend(self.read(&versions).await?);
        Ok(out)
    }

    /// The given entries, fetched concurrently, in order. A missing one is an error naming it.
    pub(crate) async fn read(&self, versions: &[u64]) -> Result<Vec<(String, Bytes)>> {
        // Each future owns what it uses, so the whole stays `Send` for any caller.
        let fetches: Vec<_> = versions
            .iter()
            .map(|v| {
                let (meadow, key) = (self.meadow.clone(), self.entry_key(*v));
                async move {
                    let body = retry_read(|| meadow.get(&key))
                        .await?
                        .ok_or_else(|| CatalogError::corrupt(&key, "log entry is missing"))?;
                    Ok::<_, CatalogError>((key, body))
                }
            })
            .collect();
        futures::stream::iter(fetches)
            .buffered(FETCH_CONCURRENCY)
            .try_collect()
            .await
    }

    /// The version the hint names. A missing or unreadable hint is no hint: loading then reads
    /// more entries, never wrong ones.
    pub(crate) async fn hint(&self) -> Result<Option<u64>> {
        let hint = self.hint_key();
        let Some(body) = retry_read(|| self.meadow.get(&hint)).await? else {
            return Ok(None);
        };
        let version = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("version").and_then(Value::as_u64));
        if version.is_none() {
            log::warn!("ignoring unreadable hint {}", self.hint_key());
        }
        Ok(version)
    }

    /// Writes checkpoint `v` (once; a racing writer's identical copy is fine) and points the
    /// hint at it. The hint is overwritten without condition: a stale hint only costs reads.
    pub(crate) async fn write_checkpoint(&self, v: u64, body: Bytes) -> Result<()> {
        self.meadow.create(&self.checkpoint_key(v), body).await?;
        self.point_hint(v).await
    }

    /// Writes checkpoint `v` without touching the hint.
    pub(crate) async fn put_checkpoint(&self, v: u64, body: Bytes) -> Result<()> {
        self.meadow
            .create(&self.checkpoint_key(v), body)
            .await
            .map(|_| ())
    }

    pub(crate) async fn point_hint(&self, v: u64) -> Result<()> {
        let hint = json!({ "version": v }).to_string();
        self.meadow.put(&self.hint_key(), Bytes::from(hint)).await
    }

    /// The versions of the entries present, ascending (one listing of the log folder).
    pub(crate) async fn entry_versions(&self) -> Result<Vec<u64>> {
        let listed = retry_read(|| self.meadow.list_dir(&self.dir)).await?;
        let mut versions: Vec<u64> = listed
            .objects
            .iter()
            .filter_map(|m| m.location.filename().and_then(|n| self.parse_entry(n)))
            .collect();
        versions.sort_unstable();
        Ok(versions)
    }

    /// Every entry's version with the time the store wrote it (its `last_modified`), ascending
    /// by version (one listing).
    pub(crate) async fn entry_times(&self) -> Result<Vec<(u64, chrono::DateTime<chrono::Utc>)>> {
        let listed = retry_read(|| self.meadow.list_dir(&self.dir)).await?;
        let mut times: Vec<(u64, chrono::DateTime<chrono::Utc>)> = listed
            .objects
            .iter()
            .filter_map(|m| {
                let v = m.location.filename().and_then(|n| self.parse_entry(n))?;
                Some((v, m.last_modified))
            })
            .collect();
        times.sort_unstable_by_key(|(v, _)| *v);
        Ok(times)
    }

    pub(crate) async fn delete_entry(&self, v: u64) -> Result<()> {
        self.meadow.delete(&self.entry_key(v)).await
    }

    pub(crate) async fn delete_checkpoint(&self, v: u64) -> Result<()> {
        self.meadow.delete(&self.checkpoint_key(v)).await
    }

    /// Checkpoint `v`, under its name or (a registry written before 20-digit names) its old one.
    pub(crate) async fn read_checkpoint(&self, v: u64) -> Result<Option<Bytes>> {
        if let Some(body) = self.meadow.get(&self.checkpoint_key(v)).await? {
            return Ok(Some(body));
        }
        match self.legacy_checkpoint_key(v) {
            Some(key) => self.meadow.get(&key).await,
            None => Ok(None),
        }
    }

    /// Every checkpoint's version, ascending (one listing of the checkpoint folder).
    pub(crate) async fn checkpoint_versions(&self) -> Result<Vec<u64>> {
        let listed = self
            .meadow
            .list_dir(&format!("{}/_checkpoint", self.dir))
            .await?;
        let mut versions: Vec<u64> = listed
            .objects
            .iter()
            .filter_map(|m| {
                m.location
                    .filename()
                    .and_then(|n| self.names.parse_checkpoint(n))
            })
            .collect();
        versions.sort_unstable();
        Ok(versions)
    }
}

/// Anything with a version, so that a cache keeps only the newest.
pub(crate) trait Versioned {
    fn version(&self) -> u64;
}

/// The newest known state of a log, shared by every clone of a handle.
#[derive(Debug)]
pub(crate) struct Newest<T> {
    state: RwLock<Arc<T>>,
}

impl<T: Versioned> Newest<T> {
    pub(crate) fn new(state: T) -> Self {
        Self {
            state: RwLock::new(Arc::new(state)),
        }
    }

    pub(crate) fn get(&self) -> Arc<T> {
        self.state.read().clone()
    }

    /// Replaces the state with one of the same version (a detail of that version learnt later).
    pub(crate) fn replace_same_version(&self, state: Arc<T>) {
        let mut g = self.state.write();
        if state.version() == g.version() {
            *g = state;
        }
    }

    /// Keeps `state` if it is newer; returns the newest.
    pub(crate) fn offer(&self, state: Arc<T>) -> Arc<T> {
        let mut g = self.state.write();
        if state.version() > g.version() {
            *g = state;
        }
        g.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for names in [LogNames::Registry, LogNames::Ledger] {
            for v in [0, 1, 99, 1_000_000, 12_345_678_901] {
                assert_eq!(names.parse_entry(&names.entry(v)), Some((v, false)));
                assert_eq!(names.parse_checkpoint(&names.checkpoint(v)), Some(v));
            }
        }
        // Past a million versions names still sort as numbers.
        assert!(LogNames::Registry.entry(999_999) < LogNames::Registry.entry(1_000_000));
        assert_eq!(LogNames::Ledger.parse_entry("12.json"), None);
        assert_eq!(LogNames::Registry.parse_entry("_last_checkpoint"), None);
        // A registry written before 20-digit names still reads.
        assert_eq!(
            LogNames::Registry.parse_entry("state_000042.json"),
            Some((42, true))
        );
        assert_eq!(LogNames::Ledger.parse_entry("state_000042.json"), None);
        assert_eq!(
            LogNames::Registry.parse_checkpoint("checkpoint_000100.json"),
            Some(100)
        );
    }
}
