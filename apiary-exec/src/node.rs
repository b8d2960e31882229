//! What this node has: cores, memory, and how they are split into bees.
//!
//! Detection respects container limits: the cgroup v2 `memory.max` / `cpu.max`, else the cgroup v1
//! `memory.limit_in_bytes` / `cpu.cfs_quota_us`, else `/proc/meminfo` and the available
//! parallelism. Every value can be overridden, in code or from the environment:
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `APIARY_BEES` | number of bees | the detected cores |
//! | `APIARY_MEMORY` | memory of the node (`4G`, `512M`, bytes) | detected |
//! | `APIARY_MEMORY_FRACTION` | share of it the bees may use | `0.8` |
//! | `APIARY_SCRATCH` | folder for the bees' spill files | `$TMPDIR/apiary-scratch` |
//! | `APIARY_QUEUE` | tasks that may wait for bees before new ones are refused | `64` |
//! | `APIARY_SCRATCH_LIMIT` | spill space all bees share (`10G`) | DataFusion's, per chamber |
//! | `APIARY_MEMORY_POOL` | how a chamber shares its budget: `fair` or `greedy` | `fair` |
//!
//! `memory_per_bee = memory × fraction / bees`: on a 4 GiB, 4-core board each bee gets 0.8 GiB,
//! and the rest is left to the OS, caches and Apiary's own bookkeeping.

use std::path::PathBuf;

use crate::error::{ExecError, Result};

/// The default share of the node's memory the bees may use.
pub const DEFAULT_MEMORY_FRACTION: f64 = 0.8;
/// The default number of tasks that may wait for bees.
pub const DEFAULT_QUEUE: usize = 64;

/// The resources of one node and their split into bees.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeConfig {
    /// Cores detected (or set).
    pub cores: usize,
    /// Memory of the node in bytes, detected (or set).
    pub memory: u64,
    /// Share of `memory` all bees together may use.
    pub memory_fraction: f64,
    /// Number of bees; one per core unless set.
    pub bees: usize,
    /// Where bees spill; each bee gets `bee-{n}/` below it.
    pub scratch: PathBuf,
    /// Tasks that may wait for bees; more are refused (retryably).
    pub queue_capacity: usize,
    /// Spill space all bees share, in bytes; a chamber of k of the n bees may fill k/n of it.
    /// `None`: DataFusion's default limit for each chamber.
    pub scratch_limit: Option<u64>,
    /// How a chamber shares its budget among the operators of its task.
    pub memory_pool: MemoryPoolKind,
}

/// DataFusion's memory pools, as datafusion-cli's `--mem-pool-type` names them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MemoryPoolKind {
    /// `FairSpillPool`: spilling operators get equal shares of what the others leave.
    #[default]
    Fair,
    /// `GreedyMemoryPool`: first come, first served.
    Greedy,
}

impl std::str::FromStr for MemoryPoolKind {
    type Err = ExecError;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "fair" => Ok(MemoryPoolKind::Fair),
            "greedy" => Ok(MemoryPoolKind::Greedy),
            other => Err(ExecError::InvalidSetting {
                name: "memory pool".into(),
                reason: format!("{other:?} is not fair or greedy"),
            }),
        }
    }
}

impl std::fmt::Display for MemoryPoolKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MemoryPoolKind::Fair => "fair",
            MemoryPoolKind::Greedy => "greedy",
        })
    }
}

impl NodeConfig {
    /// Detects cores and memory, then applies the `APIARY_*` environment overrides.
    pub fn detect() -> Result<Self> {
        let cores = detect_cores();
        let mut config = Self {
            cores,
            memory: detect_memory(),
            memory_fraction: DEFAULT_MEMORY_FRACTION,
            bees: cores,
            scratch: std::env::temp_dir().join("apiary-scratch"),
            queue_capacity: DEFAULT_QUEUE,
            scratch_limit: None,
            memory_pool: MemoryPoolKind::default(),
        };
        config.apply_env(|k| std::env::var(k).ok())?;
        config.validate()?;
        Ok(config)
    }

    /// A fixed configuration (tests, small devices, explicit setups).
    pub fn fixed(bees: usize, memory_per_bee: u64, scratch: impl Into<PathBuf>) -> Self {
        Self {
            cores: bees,
            memory: memory_per_bee * bees as u64,
            memory_fraction: 1.0,
            bees,
            scratch: scratch.into(),
            queue_capacity: DEFAULT_QUEUE,
            scratch_limit: None,
            memory_pool: MemoryPoolKind::default(),
        }
    }

    /// Sets the number of bees (one per core by default).
    pub fn with_bees(mut self, bees: usize) -> Self {
        self.bees = bees;
        self
    }

    /// Sets the memory the bees share, in bytes.
    pub fn with_memory(mut self, memory: u64) -> Self {
        self.memory = memory;
        self
    }

    /// Sets the bees' memory as a fraction of the machine's (when no fixed memory is set).
    pub fn with_memory_fraction(mut self, fraction: f64) -> Self {
        self.memory_fraction = fraction;
        self
    }

    /// Sets the folder under which each bee has its scratch folder.
    pub fn with_scratch(mut self, scratch: impl Into<PathBuf>) -> Self {
        self.scratch = scratch.into();
        self
    }

    /// Sets how many tasks may wait for bees before more are refused.
    pub fn with_queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity;
        self
    }

    /// Bounds the bytes the bees may spill, together.
    pub fn with_scratch_limit(mut self, bytes: u64) -> Self {
        self.scratch_limit = Some(bytes);
        self
    }

    /// Sets the memory pool each chamber uses (fair, the default, or greedy).
    pub fn with_memory_pool(mut self, kind: MemoryPoolKind) -> Self {
        self.memory_pool = kind;
        self
    }

    /// Each bee's memory budget in bytes.
    pub fn memory_per_bee(&self) -> u64 {
        ((self.memory as f64 * self.memory_fraction) / self.bees.max(1) as f64) as u64
    }

    /// Applies overrides read through `get` (the environment, in [`NodeConfig::detect`]).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<()> {
        let bad = |name: &str, value: &str, what: &str| ExecError::InvalidSetting {
            name: name.into(),
            reason: format!("{value:?} is not {what}"),
        };
        if let Some(v) = get("APIARY_BEES") {
            self.bees = v
                .trim()
                .parse()
                .map_err(|_| bad("APIARY_BEES", &v, "a number"))?;
        }
        if let Some(v) = get("APIARY_MEMORY") {
            self.memory = parse_bytes(&v)
                .ok_or_else(|| bad("APIARY_MEMORY", &v, "a size like 4G or 512M"))?;
        }
        if let Some(v) = get("APIARY_MEMORY_FRACTION") {
            self.memory_fraction = v
                .trim()
                .parse()
                .map_err(|_| bad("APIARY_MEMORY_FRACTION", &v, "a fraction like 0.8"))?;
        }
        if let Some(v) = get("APIARY_SCRATCH") {
            self.scratch = PathBuf::from(v);
        }
        if let Some(v) = get("APIARY_QUEUE") {
            self.queue_capacity = v
                .trim()
                .parse()
                .map_err(|_| bad("APIARY_QUEUE", &v, "a number"))?;
        }
        if let Some(v) = get("APIARY_SCRATCH_LIMIT") {
            self.scratch_limit = Some(
                parse_bytes(&v)
                    .ok_or_else(|| bad("APIARY_SCRATCH_LIMIT", &v, "a size like 10G"))?,
            );
        }
        if let Some(v) = get("APIARY_MEMORY_POOL") {
            self.memory_pool = v.parse()?;
        }
        Ok(())
    }

    /// Checks every setting, naming the first that is wrong.
    pub fn validate(&self) -> Result<()> {
        let invalid = |name: &str, reason: String| {
            Err(ExecError::InvalidSetting {
                name: name.into(),
                reason,
            })
        };
        if self.bees == 0 {
            return invalid("bees", "a node needs at least one bee".into());
        }
        if !(self.memory_fraction > 0.0 && self.memory_fraction <= 1.0) {
            return invalid(
                "memory_fraction",
                format!("{} is not in (0, 1]", self.memory_fraction),
            );
        }
        if self.memory_per_bee() < 1024 * 1024 {
            return invalid(
                "memory",
                format!(
                    "{} bytes per bee is below the 1 MiB minimum",
                    self.memory_per_bee()
                ),
            );
        }
        Ok(())
    }
}

/// `4G`, `512M`, `64k`, `1.5GiB`, or plain bytes.
pub fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: f64 = number.trim().parse().ok()?;
    let factor: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    (number >= 0.0).then_some((number * factor) as u64)
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Cores: the scheduler's view (affinity, and cgroup quotas as Rust's std sees them), capped by
/// an explicit cgroup CPU quota.
fn detect_cores() -> usize {
    let parallelism = std::thread::available_parallelism().map_or(1, |n| n.get());
    let quota = cgroup_v2_cpus().or_else(cgroup_v1_cpus);
    quota.map_or(parallelism, |q| q.clamp(1, parallelism))
}

fn cgroup_v2_cpus() -> Option<usize> {
    let max = read("/sys/fs/cgroup/cpu.max")?;
    let mut parts = max.split_whitespace();
    let quota: f64 = parts.next()?.parse().ok()?; // "max" fails to parse: no limit
    let period: f64 = parts.next()?.parse().ok()?;
    Some((quota / period).ceil() as usize)
}

fn cgroup_v1_cpus() -> Option<usize> {
    let quota: f64 = read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")?.parse().ok()?;
    let period: f64 = read("/sys/fs/cgroup/cpu/cpu.cfs_period_us")?.parse().ok()?;
    (quota > 0.0).then(|| (quota / period).ceil() as usize)
}

/// Memory: the smallest of the machine's and the cgroup's limits.
fn detect_memory() -> u64 {
    let total = read("/proc/meminfo")
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(4 * 1024 * 1024 * 1024);
    let v2 = read("/sys/fs/cgroup/memory.max").and_then(|v| v.parse::<u64>().ok());
    let v1 =
        read("/sys/fs/cgroup/memory/memory.limit_in_bytes").and_then(|v| v.parse::<u64>().ok());
    [Some(total), v2, v1]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_bytes("4G"), Some(4 << 30));
        assert_eq!(parse_bytes("512 MiB"), Some(512 << 20));
        assert_eq!(parse_bytes("1.5g"), Some(3 << 29));
        assert_eq!(parse_bytes("1000"), Some(1000));
        assert_eq!(parse_bytes("lots"), None);
        assert_eq!(parse_bytes("4X"), None);
    }

    #[test]
    fn detection_finds_something_and_env_overrides_it() {
        let mut c = NodeConfig::detect().unwrap();
        assert!(c.cores >= 1 && c.memory > 0);
        let env = |k: &str| match k {
            "APIARY_BEES" => Some("4".to_string()),
            "APIARY_MEMORY" => Some("4G".to_string()),
            "APIARY_MEMORY_FRACTION" => Some("0.5".to_string()),
            "APIARY_SCRATCH_LIMIT" => Some("10G".to_string()),
            "APIARY_MEMORY_POOL" => Some("Greedy".to_string()),
            _ => None,
        };
        c.apply_env(env).unwrap();
        assert_eq!(c.bees, 4);
        assert_eq!(c.memory_per_bee(), 512 << 20);
        assert_eq!(c.scratch_limit, Some(10 << 30));
        assert_eq!(c.memory_pool, MemoryPoolKind::Greedy);
        let err = c
            .apply_env(|k| (k == "APIARY_MEMORY_POOL").then(|| "lazy".to_string()))
            .unwrap_err();
        assert!(err.to_string().contains("lazy"), "{err}");
        let err = c
            .apply_env(|k| (k == "APIARY_BEES").then(|| "many".to_string()))
            .unwrap_err();
        assert!(
            err.to_string().contains("APIARY_BEES") && err.to_string().contains("many"),
            "{err}"
        );
    }

    #[test]
    fn nonsense_is_refused() {
        assert!(NodeConfig::fixed(0, 1 << 30, "/tmp").validate().is_err());
        assert!(
            NodeConfig::fixed(2, 1 << 30, "/tmp")
                .with_memory_fraction(1.5)
                .validate()
                .is_err()
        );
        assert!(NodeConfig::fixed(2, 1000, "/tmp").validate().is_err());
        assert_eq!(
            NodeConfig::fixed(4, 1 << 30, "/tmp").memory_per_bee(),
            1 << 30
        );
    }
}
