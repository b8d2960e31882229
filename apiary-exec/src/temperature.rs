//! Colony temperature: how loaded the node is, measured from the pool's real state, and the
//! regulation of writes it drives.
//!
//! ```text
//! T = min(1, 0.5 · busy bees / bees  +  0.4 · reserved memory / total budget  +  0.3 · waiting tasks / queue capacity)
//! ```
//!
//! each share clamped to `[0, 1]`: every bee busy is half way (ideal); every bee busy with most of
//! the memory reserved (three quarters) is hot; tasks queueing on top of that are critical. Bands (defaults, configurable in [`Thresholds`]):
//! cold `T < 0.2`, ideal `< 0.6`, warm `< 0.8`, hot `< 0.95`, critical from `0.95`.
//! At hot a write waits `max_throttle × (T − hot) / (critical − hot)` before it starts; at critical
//! it is refused with a retryable error (both configurable in [`Regulation`]).

use std::fmt;
use std::time::Duration;

use apiary_catalog::WriteAdmission;
use async_trait::async_trait;

use crate::pool::BeePool;

/// Where the bands begin.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Where `Ideal` begins (the load below it is `Cold`).
    pub ideal: f64,
    /// Where `Warm` begins.
    pub warm: f64,
    /// Where `Hot` begins: writes are throttled.
    pub hot: f64,
    /// Where `Critical` begins: writes are throttled most, or refused.
    pub critical: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            ideal: 0.2,
            warm: 0.6,
            hot: 0.8,
            critical: 0.95,
        }
    }
}

/// The regulation band of a temperature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Band {
    /// Little load: writes run at once.
    Cold,
    /// The load the colony is made for.
    Ideal,
    /// Busy: writes still run at once.
    Warm,
    /// Writes wait, up to `max_throttle`, growing with the load.
    Hot,
    /// Writes wait `max_throttle`, or are refused (`refuse_at_critical`).
    Critical,
}

impl fmt::Display for Band {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Band::Cold => "cold",
            Band::Ideal => "ideal",
            Band::Warm => "warm",
            Band::Hot => "hot",
            Band::Critical => "critical",
        })
    }
}

impl std::str::FromStr for Band {
    type Err = String;

    /// The band a heartbeat names (its `Display` form).
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "cold" => Band::Cold,
            "ideal" => Band::Ideal,
            "warm" => Band::Warm,
            "hot" => Band::Hot,
            "critical" => Band::Critical,
            other => return Err(format!("unknown colony band {other:?}")),
        })
    }
}

/// One measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct Temperature {
    /// The temperature, 0 (idle) to 1: the shares of busy bees, reserved memory and waiting
    /// tasks weighed 0.5, 0.4 and 0.3, capped at 1.
    pub value: f64,
    /// The band the temperature falls in.
    pub band: Band,
    /// Bees held by a task.
    pub busy_bees: usize,
    /// Bees on the node.
    pub bees: usize,
    /// Bytes reserved by running tasks.
    pub reserved: usize,
    /// The bees' memory, together.
    pub budget: usize,
    /// Tasks waiting for bees.
    pub waiting: usize,
    /// How many tasks may wait.
    pub queue_capacity: usize,
}

impl Temperature {
    /// Measures `pool` now.
    pub fn measure(pool: &BeePool, thresholds: &Thresholds) -> Self {
        let s = pool.status();
        let budget = s.budget_per_bee * s.bees;
        let share = |part: f64, whole: f64| {
            if whole > 0.0 {
                (part / whole).clamp(0.0, 1.0)
            } else {
                0.0
            }
        };
        let value = (0.5 * share(s.busy as f64, s.bees as f64)
            + 0.4 * share(s.reserved as f64, budget as f64)
            + 0.3 * share(s.waiting as f64, s.queue_capacity as f64))
        .min(1.0);
        let band = if value >= thresholds.critical {
            Band::Critical
        } else if value >= thresholds.hot {
            Band::Hot
        } else if value >= thresholds.warm {
            Band::Warm
        } else if value >= thresholds.ideal {
            Band::Ideal
        } else {
            Band::Cold
        };
        Self {
            value,
            band,
            busy_bees: s.busy,
            bees: s.bees,
            reserved: s.reserved,
            budget,
            waiting: s.waiting,
            queue_capacity: s.queue_capacity,
        }
    }
}

/// How writes react to the temperature.
#[derive(Debug, Clone)]
pub struct Regulation {
    /// Where the bands begin.
    pub thresholds: Thresholds,
    /// The longest a write waits when the colony is hot.
    pub max_throttle: Duration,
    /// Whether writes are refused when the colony is critical (else only throttled).
    pub refuse_at_critical: bool,
}

impl Default for Regulation {
    fn default() -> Self {
        Self {
            thresholds: Thresholds::default(),
            max_throttle: Duration::from_secs(1),
            refuse_at_critical: true,
        }
    }
}

/// The colony: the pool and how it regulates writes. Installed as Apiary's write admission.
#[derive(Debug, Clone)]
pub struct Colony {
    pool: BeePool,
    regulation: Regulation,
}

impl Colony {
    /// A colony of `pool`'s bees, regulating writes by `regulation`.
    pub fn new(pool: BeePool, regulation: Regulation) -> Self {
        Self { pool, regulation }
    }

    /// The bees the colony measures.
    pub fn pool(&self) -> &BeePool {
        &self.pool
    }

    /// How writes react to the temperature.
    pub fn regulation(&self) -> &Regulation {
        &self.regulation
    }

    /// The temperature now.
    pub fn temperature(&self) -> Temperature {
        Temperature::measure(&self.pool, &self.regulation.thresholds)
    }

    /// What a write must do now: go ahead, wait, or be refused.
    pub fn verdict(&self) -> (Temperature, Option<Duration>, bool) {
        let t = self.temperature();
        let th = &self.regulation.thresholds;
        match t.band {
            Band::Critical if self.regulation.refuse_at_critical => (t, None, true),
            Band::Hot | Band::Critical => {
                let share = ((t.value - th.hot) / (th.critical - th.hot)).clamp(0.0, 1.0);
                let wait = self.regulation.max_throttle.mul_f64(share);
                (t, Some(wait), false)
            }
            _ => (t, None, false),
        }
    }
}

#[async_trait]
impl WriteAdmission for Colony {
    async fn admit(&self, frame: &str) -> apiary_catalog::Result<()> {
        let (t, wait, refuse) = self.verdict();
        if refuse {
            return Err(apiary_catalog::CatalogError::Backpressure {
                frame: frame.to_string(),
                reason: format!(
                    "the colony is critical (temperature {:.2}: {}/{} bees busy, {} tasks waiting); retry later",
                    t.value, t.busy_bees, t.bees, t.waiting
                ),
            });
        }
        if let Some(wait) = wait {
            log::info!(
                "throttling a write to {frame} by {wait:?}: colony temperature {:.2} ({})",
                t.value,
                t.band
            );
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }
}
