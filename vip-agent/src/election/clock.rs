//! The two clocks the election reads, and the lab's wall-clock skew knob.

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use tracing::warn;

use super::ConfigError;
use crate::clock::MonoTime;

/// Lab knob: shift the wall clock this node WRITES into `acquireTime` /
/// `renewTime` by this many seconds (may be negative, fractional). It exists
/// so tests can show that wall-clock skew changes no decision. Never set it in
/// production.
pub const WALL_CLOCK_SKEW_ENV: &str = "VIP_AGENT_WALL_CLOCK_SKEW_SECS";

/// The two clocks the election reads. Monotonic for every decision; wall only
/// for the human-readable Lease fields.
pub trait Clock: Send + Sync {
    fn mono(&self) -> MonoTime;
    fn wall(&self) -> Timestamp;
}

/// CLOCK_MONOTONIC + the system wall clock shifted by the lab skew knob.
#[derive(Clone, Debug, Default)]
pub struct SystemClock {
    skew: SignedDuration,
}

impl SystemClock {
    /// Reads [`WALL_CLOCK_SKEW_ENV`] (absent: no skew).
    pub fn from_env() -> Result<Self, ConfigError> {
        let skew = match std::env::var(WALL_CLOCK_SKEW_ENV) {
            Ok(v) if !v.trim().is_empty() => {
                let secs: f64 = v
                    .trim()
                    .parse()
                    .map_err(|_| ConfigError::BadSkew { value: v.clone() })?;
                SignedDuration::try_from_secs_f64(secs)
                    .map_err(|_| ConfigError::BadSkew { value: v.clone() })?
            }
            _ => SignedDuration::ZERO,
        };
        if !skew.is_zero() {
            warn!(
                skew_secs = skew.as_secs_f64(),
                "lab knob {WALL_CLOCK_SKEW_ENV} set: wall clock written into the Lease is skewed"
            );
        }
        Ok(Self { skew })
    }
}

impl Clock for SystemClock {
    fn mono(&self) -> MonoTime {
        MonoTime::now()
    }
    fn wall(&self) -> Timestamp {
        Timestamp::now()
            .checked_add(self.skew)
            .unwrap_or_else(|_| Timestamp::now())
    }
}
