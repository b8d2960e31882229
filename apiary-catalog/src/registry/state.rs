//! The namespace at one registry version: hives, their boxes, their frames.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{CatalogError, Kind, Result};
use crate::protocol::Protocol;

/// A frame's entry in the registry: its identity and where its ledger and cells live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameRecord {
    /// Unique per incarnation: a frame dropped and created again gets a new id and folder.
    pub id: String,
    /// Folder below the meadow root: `{hive}/{box}/{frame}/{id}`.
    pub location: String,
    /// When the registry entry creating it was committed, by its writer's clock (ms since the
    /// Unix epoch).
    pub created_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoxRecord {
    pub id: String,
    pub created_ms: i64,
    #[serde(default)]
    pub frames: BTreeMap<String, FrameRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HiveRecord {
    pub id: String,
    pub created_ms: i64,
    #[serde(default)]
    pub boxes: BTreeMap<String, BoxRecord>,
}

/// A dropped frame, remembered so that cleanup can reclaim its folder after retention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DroppedFrame {
    /// `hive.box.frame` at the time of the drop.
    pub name: String,
    pub id: String,
    pub location: String,
    pub dropped_ms: i64,
    /// The registry version that dropped it (0 for drops recorded before this was kept).
    #[serde(default)]
    pub dropped_version: u64,
}

/// One registry change; `_registry/{version:020}.json` holds exactly one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegistryAction {
    /// Version 0: the registry's protocol (on the entry), nothing else.
    Init,
    CreateHive {
        name: String,
        id: String,
    },
    CreateBox {
        hive: String,
        name: String,
        id: String,
    },
    CreateFrame {
        hive: String,
        #[serde(rename = "box")]
        box_: String,
        name: String,
        id: String,
        location: String,
    },
    DropHive {
        name: String,
        cascade: bool,
    },
    DropBox {
        hive: String,
        name: String,
        cascade: bool,
    },
    DropFrame {
        hive: String,
        #[serde(rename = "box")]
        box_: String,
        name: String,
    },
    /// Forgets dropped frames whose folders cleansing reclaimed: they can no longer be undropped.
    PurgeDropped {
        ids: Vec<String>,
    },
    /// Gives `name` to another frame in one step (`CREATE OR REPLACE`): the frame it named, if
    /// any, is dropped.
    ReplaceFrame {
        hive: String,
        #[serde(rename = "box")]
        box_: String,
        name: String,
        id: String,
        location: String,
    },
}

/// A committed registry entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegistryEntry {
    pub version: u64,
    pub timestamp_ms: i64,
    pub writer: String,
    /// Unique per commit: how a writer with an ambiguous answer knows whether it won (empty
    /// for entries written before commit ids).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub commit_id: String,
    /// On version 0, and on an entry raising it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    pub action: RegistryAction,
}

/// The namespace at one version. Version 0 is the empty namespace (no object).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryState {
    /// The registry version.
    pub version: u64,
    /// The hives by name, each with its boxes and their frames.
    #[serde(default)]
    pub hives: BTreeMap<String, HiveRecord>,
    /// Dropped frames whose folders cleansing has not reclaimed yet (they can be undropped).
    #[serde(default)]
    pub dropped: Vec<DroppedFrame>,
    /// What a client must understand to read and write this registry.
    #[serde(default)]
    pub protocol: Protocol,
}

impl RegistryState {
    /// The hive `hive`, or [`CatalogError::NotFound`].
    pub fn hive(&self, hive: &str) -> Result<&HiveRecord> {
        self.hives
            .get(hive)
            .ok_or_else(|| CatalogError::not_found(Kind::Hive, hive))
    }

    /// The box `hive.box_`, or [`CatalogError::NotFound`].
    pub fn get_box(&self, hive: &str, box_: &str) -> Result<&BoxRecord> {
        self.hive(hive)?
            .boxes
            .get(box_)
            .ok_or_else(|| CatalogError::not_found(Kind::Box, format!("{hive}.{box_}")))
    }

    /// The frame `hive.box_.frame`, or [`CatalogError::NotFound`].
    pub fn frame(&self, hive: &str, box_: &str, frame: &str) -> Result<&FrameRecord> {
        self.get_box(hive, box_)?
            .frames
            .get(frame)
            .ok_or_else(|| CatalogError::not_found(Kind::Frame, format!("{hive}.{box_}.{frame}")))
    }

    /// The hives' names, sorted.
    pub fn hive_names(&self) -> Vec<String> {
        self.hives.keys().cloned().collect()
    }

    /// The names of the boxes of `hive`, sorted.
    pub fn box_names(&self, hive: &str) -> Result<Vec<String>> {
        Ok(self.hive(hive)?.boxes.keys().cloned().collect())
    }

    /// The names of the frames of `hive.box_`, sorted.
    pub fn frame_names(&self, hive: &str, box_: &str) -> Result<Vec<String>> {
        Ok(self.get_box(hive, box_)?.frames.keys().cloned().collect())
    }

    /// Applies version 0, which only sets the protocol.
    pub(crate) fn apply_init(&mut self, entry: &RegistryEntry, key: &str) -> Result<()> {
        if entry.version != 0 || entry.action != RegistryAction::Init {
            return Err(CatalogError::corrupt(
                key,
                "version 0 of the registry is not an init entry",
            ));
        }
        let protocol = entry.protocol.clone().unwrap_or_default();
        protocol.check_read("the registry")?;
        self.protocol = protocol;
        Ok(())
    }

    /// Applies the next entry. `key` names the object in errors.
    pub(crate) fn apply(&mut self, entry: &RegistryEntry, key: &str) -> Result<()> {
        if let Some(p) = &entry.protocol {
            p.check_read("the registry")?;
            self.protocol = p.clone();
        }
        if entry.version != self.version + 1 {
            return Err(CatalogError::corrupt(
                key,
                format!(
                    "registry entry has version {} but follows {}",
                    entry.version, self.version
                ),
            ));
        }
        let at = (entry.timestamp_ms, entry.version);
        let broken = |what: String| CatalogError::corrupt(key, what);
        match &entry.action {
            RegistryAction::Init => {
                return Err(broken("an init entry after version 0".into()));
            }
            RegistryAction::CreateHive { name, id } => {
                self.hives.insert(
                    name.clone(),
                    HiveRecord {
                        id: id.clone(),
                        created_ms: at.0,
                        boxes: BTreeMap::new(),
                    },
                );
            }
            RegistryAction::CreateBox { hive, name, id } => {
                let h = self
                    .hives
                    .get_mut(hive)
                    .ok_or_else(|| broken(format!("box {name} created in missing hive {hive}")))?;
                h.boxes.insert(
                    name.clone(),
                    BoxRecord {
                        id: id.clone(),
                        created_ms: at.0,
                        frames: BTreeMap::new(),
                    },
                );
            }
            RegistryAction::PurgeDropped { ids } => {
                self.dropped.retain(|d| !ids.contains(&d.id));
            }
            RegistryAction::CreateFrame {
                hive,
                box_,
                name,
                id,
                location,
            }
            | RegistryAction::ReplaceFrame {
                hive,
                box_,
                name,
                id,
                location,
            } => {
                let replaced = matches!(entry.action, RegistryAction::ReplaceFrame { .. });
                let b = self
                    .hives
                    .get_mut(hive)
                    .and_then(|h| h.boxes.get_mut(box_))
                    .ok_or_else(|| {
                        let done = if replaced { "replaced" } else { "created" };
                        broken(format!("frame {name} {done} in missing box {hive}.{box_}"))
                    })?;
                let old = b.frames.insert(
                    name.clone(),
                    FrameRecord {
                        id: id.clone(),
                        location: location.clone(),
                        created_ms: at.0,
                    },
                );
                // An undrop gives a dropped frame its name back.
                self.dropped.retain(|d| d.id != *id);
                if let Some(old) = old.filter(|_| replaced) {
                    self.remember_dropped(
                        &format!("{hive}.{box_}"),
                        BTreeMap::from([(name.clone(), old)]),
                        at,
                    );
                }
            }
            RegistryAction::DropHive { name, .. } => {
                if let Some(h) = self.hives.remove(name) {
                    for (b, bx) in h.boxes {
                        self.remember_dropped(&format!("{name}.{b}"), bx.frames, at);
                    }
                }
            }
            RegistryAction::DropBox { hive, name, .. } => {
                if let Some(bx) = self.hives.get_mut(hive).and_then(|h| h.boxes.remove(name)) {
                    self.remember_dropped(&format!("{hive}.{name}"), bx.frames, at);
                }
            }
            RegistryAction::DropFrame { hive, box_, name } => {
                let removed = self
                    .hives
                    .get_mut(hive)
                    .and_then(|h| h.boxes.get_mut(box_))
                    .and_then(|b| b.frames.remove(name));
                if let Some(f) = removed {
                    self.remember_dropped(
                        &format!("{hive}.{box_}"),
                        BTreeMap::from([(name.clone(), f)]),
                        at,
                    );
                }
            }
        }
        self.version = entry.version;
        Ok(())
    }

    fn remember_dropped(
        &mut self,
        prefix: &str,
        frames: BTreeMap<String, FrameRecord>,
        (at, version): (i64, u64),
    ) {
        for (n, f) in frames {
            self.dropped.push(DroppedFrame {
                name: format!("{prefix}.{n}"),
                id: f.id,
                location: f.location,
                dropped_ms: at,
                dropped_version: version,
            });
        }
    }
}
