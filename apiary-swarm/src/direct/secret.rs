//! The swarm secret: a random token in the meadow (`_swarm/secret.json`), created by the first
//! node that listens. Every direct-path request carries it, so only holders of the meadow's
//! credentials — the swarm — can send a worker a plan.

use std::sync::Arc;

use apiary_catalog::Created;
use apiary_catalog::Meadow;
use bytes::Bytes;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::error::{Result, SwarmError};

/// Where the secret lives, relative to the meadow's root.
pub const SECRET: &str = "_swarm/secret.json";

#[derive(Serialize, Deserialize)]
struct SecretFile {
    token: String,
    created_ms: i64,
}

/// The swarm's current token, shared by a node's server (which checks it) and its clients (which
/// send it); [`SwarmToken::refresh`] picks up a rotation.
#[derive(Clone, Default)]
pub struct SwarmToken(Arc<RwLock<String>>);

impl std::fmt::Debug for SwarmToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SwarmToken(…)")
    }
}

impl SwarmToken {
    /// The meadow's token, created if the meadow has none yet (one racing creator wins).
    pub async fn load_or_create(meadow: &Meadow) -> Result<SwarmToken> {
        let token = SwarmToken::default();
        if !token.refresh(meadow).await? {
            let file = new_secret();
            if meadow.create(SECRET, encode(&file)?).await? == Created::Yes {
                token.set(file.token);
            } else if !token.refresh(meadow).await? {
                return Err(SwarmError::corrupt(
                    SECRET,
                    "created by another node, then gone",
                ));
            }
        }
        Ok(token)
    }

    /// Reads the meadow's token again; `false` if there is none.
    pub async fn refresh(&self, meadow: &Meadow) -> Result<bool> {
        match meadow.get(SECRET).await? {
            Some(bytes) => {
                let file: SecretFile =
                    serde_json::from_slice(&bytes).map_err(|e| SwarmError::corrupt(SECRET, e))?;
                self.set(file.token);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Replaces the meadow's token with a new one: requests with the old one are refused once
    /// the nodes have read it again (within a few of their view intervals).
    pub async fn rotate(meadow: &Meadow) -> Result<()> {
        meadow.put(SECRET, encode(&new_secret())?).await?;
        Ok(())
    }

    /// Whether the meadow's token has been read (a node that does not listen finds none
    /// until the first node that listens creates it).
    pub fn is_known(&self) -> bool {
        !self.read().is_empty()
    }

    /// The `authorization` header value requests carry.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.read())
    }

    /// Whether `header` (an `authorization` value) carries the current token, compared in time
    /// independent of where they differ.
    pub fn admits(&self, header: &[u8]) -> bool {
        if !self.is_known() {
            return false;
        }
        let expected = self.bearer();
        let expected = expected.as_bytes();
        expected.len() == header.len()
            && expected
                .iter()
                .zip(header)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    fn read(&self) -> String {
        self.0.read().clone()
    }

    fn set(&self, token: String) {
        *self.0.write() = token;
    }
}

fn new_secret() -> SecretFile {
    // Two v4 UUIDs: 244 random bits from the OS's generator.
    let token = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    SecretFile {
        token,
        created_ms: chrono::Utc::now().timestamp_millis(),
    }
}

fn encode(file: &SecretFile) -> Result<Bytes> {
    serde_json::to_vec(file)
        .map(Bytes::from)
        .map_err(|e| SwarmError::corrupt(SECRET, e))
}
