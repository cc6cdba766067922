//! [`Status`]: what the election publishes on every change (metrics, logs).

use crate::clock::MonoTime;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    Leading,
    Following { holder: Option<String> },
}

/// Published on every change, for metrics and logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub role: Role,
    /// Fence deadline last given to `lead()`, while leading.
    pub fence_deadline: Option<MonoTime>,
    /// Health gate as last seen.
    pub healthy: bool,
    /// `leaseTransitions` of the last record seen.
    pub lease_transitions: i32,
    /// Times this node became leader.
    pub acquisitions: u64,
    pub renewals: u64,
    pub renew_failures: u64,
    /// API requests made (each GET/POST/PUT and each watch opened).
    pub api_requests: u64,
    /// Watches opened.
    pub watch_starts: u64,
    /// 403 Forbidden answers on the Lease (each one: not leading, retry later).
    pub forbidden: u64,
    /// The last 403's explanation, with the fix.
    pub forbidden_message: Option<String>,
}

impl Default for Status {
    fn default() -> Self {
        Self {
            role: Role::Following { holder: None },
            fence_deadline: None,
            healthy: true,
            lease_transitions: 0,
            acquisitions: 0,
            renewals: 0,
            renew_failures: 0,
            api_requests: 0,
            watch_starts: 0,
            forbidden: 0,
            forbidden_message: None,
        }
    }
}
