//! The namespace at one registry version: hives, their boxes, their frames.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Kind, Result};

/// A frame's entry in the registry: its identity and where its ledger and cells live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameRecord {
    /// Unique per incarnation: a frame dropped and created again gets a new id and folder.
    pub id: String,
    /// Folder below the meadow root: `{hive}/{box}/{frame}/{id}`.
    pub location: String,
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
}

/// One registry change; `_registry/state_{version:06}.json` holds exactly one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegistryAction {
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
}

/// A committed registry entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegistryEntry {
    pub version: u64,
    pub timestamp_ms: i64,
    pub writer: String,
    pub action: RegistryAction,
}

/// The namespace at one version. Version 0 is the empty namespace (no object).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryState {
    pub version: u64,
    #[serde(default)]
    pub hives: BTreeMap<String, HiveRecord>,
    #[serde(default)]
    pub dropped: Vec<DroppedFrame>,
}

impl RegistryState {
    pub fn hive(&self, hive: &str) -> Result<&HiveRecord> {
        self.hives
            .get(hive)
            .ok_or_else(|| Error::not_found(Kind::Hive, hive))
    }

    pub fn get_box(&self, hive: &str, box_: &str) -> Result<&BoxRecord> {
        self.hive(hive)?
            .boxes
            .get(box_)
            .ok_or_else(|| Error::not_found(Kind::Box, format!("{hive}.{box_}")))
    }

    pub fn frame(&self, hive: &str, box_: &str, frame: &str) -> Result<&FrameRecord> {
        self.get_box(hive, box_)?
            .frames
            .get(frame)
            .ok_or_else(|| Error::not_found(Kind::Frame, format!("{hive}.{box_}.{frame}")))
    }

    pub fn hive_names(&self) -> Vec<String> {
        self.hives.keys().cloned().collect()
    }

    pub fn box_names(&self, hive: &str) -> Result<Vec<String>> {
        Ok(self.hive(hive)?.boxes.keys().cloned().collect())
    }

    pub fn frame_names(&self, hive: &str, box_: &str) -> Result<Vec<String>> {
        Ok(self.get_box(hive, box_)?.frames.keys().cloned().collect())
    }

    /// Applies the next entry. `key` names the object in errors.
    pub(crate) fn apply(&mut self, entry: &RegistryEntry, key: &str) -> Result<()> {
        if entry.version != self.version + 1 {
            return Err(Error::corrupt(
                key,
                format!(
                    "registry entry has version {} but follows {}",
                    entry.version, self.version
                ),
            ));
        }
        let at = entry.timestamp_ms;
        let broken = |what: String| Error::corrupt(key, what);
        match &entry.action {
            RegistryAction::CreateHive { name, id } => {
                self.hives.insert(
                    name.clone(),
                    HiveRecord {
                        id: id.clone(),
                        created_ms: at,
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
                        created_ms: at,
                        frames: BTreeMap::new(),
                    },
                );
            }
            RegistryAction::CreateFrame {
                hive,
                box_,
                name,
                id,
                location,
            } => {
                let b = self
                    .hives
                    .get_mut(hive)
                    .and_then(|h| h.boxes.get_mut(box_))
                    .ok_or_else(|| {
                        broken(format!("frame {name} created in missing box {hive}.{box_}"))
                    })?;
                b.frames.insert(
                    name.clone(),
                    FrameRecord {
                        id: id.clone(),
                        location: location.clone(),
                        created_ms: at,
                    },
                );
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

    fn remember_dropped(&mut self, prefix: &str, frames: BTreeMap<String, FrameRecord>, at: i64) {
        for (n, f) in frames {
            self.dropped.push(DroppedFrame {
                name: format!("{prefix}.{n}"),
                id: f.id,
                location: f.location,
                dropped_ms: at,
            });
        }
    }
}
