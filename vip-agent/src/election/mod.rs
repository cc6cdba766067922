//! Kubernetes Lease leader election, fenced by a CLOCK_MONOTONIC deadline.
//!
//! Safety (docs/design.md#the-fence-timeline-invariant-1): a leader whose
//! acquire/renew request `k` was SENT at `S_k` tells the data plane to answer
//! until `S_k + renew_deadline`, never longer. A follower records `observed` = the local monotonic time at which it
//! first saw the current record (which is after that record was committed, so
//! after `S_k`) and may take over only after `observed + lease_duration`.
//! Because `renew_deadline + margin < lease_duration`, the old leader is silent
//! before anyone can acquire, whatever happens to its process. Wall-clock
//! fields in the Lease are written for humans only and never compared.
//!
//! Takeover is a compare-and-swap on `resourceVersion`, so only one node can
//! win a given record; loss of the Lease, renew failures up to the deadline,
//! ill health and shutdown all call [`Fence::follow`] before anything else
//! (and the Lease is released only after `follow()` succeeded).
//!
//! Layout: [`ElectionConfig`] and its rules (`config`), the errors
//! (`errors`), what the data plane must do ([`Fence`]), what is published
//! ([`Status`]), the clocks read ([`Clock`]), and the elector itself
//! (`elector`: its follower half in `elector/follow.rs`, its leader half in
//! `elector/lead.rs`). `lease` holds the pure record logic, `store` the
//! Lease API seen by the elector (`kube_store` for the API server).

pub mod client;
pub mod credentials;
pub mod events;
pub mod fallback;
pub mod health;
pub mod kube_store;
pub mod lease;
pub mod store;

mod clock;
mod config;
mod elector;
mod errors;
mod fence;
mod status;

#[cfg(test)]
mod memory;
#[cfg(test)]
mod tests;

pub use clock::{Clock, SystemClock, WALL_CLOCK_SKEW_ENV};
pub use config::{
    DEFAULT_LEASE_DURATION, DEFAULT_LEASE_NAME, DEFAULT_NAMESPACE, DEFAULT_RENEW_DEADLINE,
    DEFAULT_RETRY_PERIOD, ElectionConfig,
};
pub use elector::{
    Links, RELEASE_TIMEOUT, WATCH_TIMEOUT_SECS, run, run_with_clock, run_with_links,
};
pub use errors::{ConfigError, ElectionError};
pub use fence::Fence;
pub use lease::Observation;
pub use status::{Role, Status};
pub use store::{LeaseEvents, LeaseStore, StoreError};
