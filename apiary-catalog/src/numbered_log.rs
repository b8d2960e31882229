//! Numbered logs in the meadow: the shape the registry and every frame's ledger share.
//!
//! A log is a folder of objects named by version, each created once by conditional create, plus
//! checkpoints (the whole state at some versions) and a hint naming the newest checkpoint. This
//! module knows the names and the I/O; what an entry means is its owner's business.

use std::sync::{Arc, RwLock};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::meadow::{Created, Meadow};

/// How many objects are fetched at once when catching up.
const FETCH_CONCURRENCY: usize = 16;

/// The naming of one kind of log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogNames {
    /// `_registry/state_{version:06}.json`, `_registry/_checkpoint/checkpoint_{version:06}.json`
    Registry,
    /// `{frame}/_ledger/{version:020}.json`, `{frame}/_ledger/_checkpoint/{version:020}.json`
    Ledger,
}

impl LogNames {
    pub(crate) fn entry(self, v: u64) -> String {
        match self {
            LogNames::Registry => format!("state_{v:06}.json"),
            LogNames::Ledger => format!("{v:020}.json"),
        }
    }

    fn parse_entry(self, name: &str) -> Option<u64> {
        match self {
            LogNames::Registry => name
                .strip_prefix("state_")?
                .strip_suffix(".json")?
                .parse()
                .ok(),
            LogNames::Ledger => {
                let digits = name.strip_suffix(".json")?;
                (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| digits.parse().ok())
                    .flatten()
            }
        }
    }

    fn checkpoint(self, v: u64) -> String {
        match self {
            LogNames::Registry => format!("checkpoint_{v:06}.json"),
            LogNames::Ledger => format!("{v:020}.json"),
        }
    }

    fn parse_checkpoint(self, name: &str) -> Option<u64> {
        match self {
            LogNames::Registry => name
                .strip_prefix("checkpoint_")?
                .strip_suffix(".json")?
                .parse()
                .ok(),
            LogNames::Ledger => self.parse_entry(name),
        }
    }
}

/// One numbered log below the meadow root.
#[derive(Debug, Clone)]
pub(crate) struct NumberedLog {
    meadow: Meadow,
    dir: String,
    names: LogNames,
}

impl NumberedLog {
    pub(crate) fn new(meadow: Meadow, dir: impl Into<String>, names: LogNames) -> Self {
        Self {
            meadow,
            dir: dir.into(),
            names,
        }
    }

    pub(crate) fn meadow(&self) -> &Meadow {
        &self.meadow
    }

    pub(crate) fn entry_key(&self, v: u64) -> String {
        format!("{}/{}", self.dir, self.names.entry(v))
    }

    pub(crate) fn checkpoint_key(&self, v: u64) -> String {
        format!("{}/_checkpoint/{}", self.dir, self.names.checkpoint(v))
    }

    pub(crate) fn hint_key(&self) -> String {
        format!("{}/_last_checkpoint", self.dir)
    }

    /// The version an entry key names (used to check that an entry says the same).
    pub(crate) fn version_of(&self, key: &str) -> Option<u64> {
        self.names.parse_entry(key.rsplit('/').next()?)
    }

    /// Creates entry `v`; exactly one of many racing writers gets [`Created::Yes`].
    pub(crate) async fn create(&self, v: u64, body: Bytes) -> Result<Created> {
        self.meadow.create(&self.entry_key(v), body).await
    }

    pub(crate) async fn get(&self, v: u64) -> Result<Option<Bytes>> {
        self.meadow.get(&self.entry_key(v)).await
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
            match self.meadow.get(&key).await? {
                None => return Ok(out),
                Some(body) => out.push((key, body)),
            }
            known = after + 1;
        }
        let listed = self
            .meadow
            .list_after(&self.dir, &self.names.entry(known))
            .await?;
        let mut versions: Vec<u64> = listed
            .iter()
            .filter_map(|m| {
                let name = self
                    .meadow
                    .relative(&m.location)?
                    .strip_prefix(&self.dir)?
                    .strip_prefix('/')?;
                self.names.parse_entry(name)
            })
            .filter(|v| *v > known)
            .collect();
        versions.sort_unstable();
        for (i, v) in versions.iter().enumerate() {
            let expected = known + 1 + i as u64;
            if *v != expected {
                return Err(Error::corrupt(
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
                    let body = meadow
                        .get(&key)
                        .await?
                        .ok_or_else(|| Error::corrupt(&key, "log entry is missing"))?;
                    Ok::<_, Error>((key, body))
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
        let Some(body) = self.meadow.get(&self.hint_key()).await? else {
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
        let listed = self.meadow.list_dir(&self.dir).await?;
        let mut versions: Vec<u64> = listed
            .objects
            .iter()
            .filter_map(|m| {
                m.location
                    .filename()
                    .and_then(|n| self.names.parse_entry(n))
            })
            .collect();
        versions.sort_unstable();
        Ok(versions)
    }

    pub(crate) async fn delete_entry(&self, v: u64) -> Result<()> {
        self.meadow.delete(&self.entry_key(v)).await
    }

    pub(crate) async fn delete_checkpoint(&self, v: u64) -> Result<()> {
        self.meadow.delete(&self.checkpoint_key(v)).await
    }

    pub(crate) async fn read_checkpoint(&self, v: u64) -> Result<Option<Bytes>> {
        self.meadow.get(&self.checkpoint_key(v)).await
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
        match self.state.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Keeps `state` if it is newer; returns the newest.
    pub(crate) fn offer(&self, state: Arc<T>) -> Arc<T> {
        let mut g = match self.state.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
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
            for v in [0, 1, 99, 1_000_000] {
                assert_eq!(names.parse_entry(&names.entry(v)), Some(v));
                assert_eq!(names.parse_checkpoint(&names.checkpoint(v)), Some(v));
            }
        }
        assert_eq!(LogNames::Ledger.parse_entry("12.json"), None);
        assert_eq!(LogNames::Registry.parse_entry("_last_checkpoint"), None);
    }
}
