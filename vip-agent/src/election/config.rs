//! [`ElectionConfig`]: the election's settings, their defaults and the rules
//! that keep the fence safe (docs/design.md#the-fence-timeline-invariant-1).

use std::time::Duration;

use super::ConfigError;

/// Election settings. See [`ElectionConfig::validate`] for the rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElectionConfig {
    /// Lease name (default `vip-control-plane`).
    pub lease_name: String,
    /// Lease namespace (default `kube-system`).
    pub namespace: String,
    /// This node's identity, written as `holderIdentity` (the node name).
    pub identity: String,
    /// How long followers wait, from first seeing a record, before taking over.
    pub lease_duration: Duration,
    /// How long the leader answers after SENDING its last successful renew.
    pub renew_deadline: Duration,
    /// Interval between renews (leader) / retries after a failed request.
    pub retry_period: Duration,
}

/// Proposed defaults; see the module docs / report.
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(3);
pub const DEFAULT_RENEW_DEADLINE: Duration = Duration::from_secs(2);
pub const DEFAULT_RETRY_PERIOD: Duration = Duration::from_millis(500);
pub const DEFAULT_LEASE_NAME: &str = "vip-control-plane";
pub const DEFAULT_NAMESPACE: &str = "kube-system";

impl ElectionConfig {
    /// Defaults for everything but the identity.
    pub fn new(identity: impl Into<String>) -> Self {
        Self {
            lease_name: DEFAULT_LEASE_NAME.to_owned(),
            namespace: DEFAULT_NAMESPACE.to_owned(),
            identity: identity.into(),
            lease_duration: DEFAULT_LEASE_DURATION,
            renew_deadline: DEFAULT_RENEW_DEADLINE,
            retry_period: DEFAULT_RETRY_PERIOD,
        }
    }

    /// Required slack between the leader going silent and a follower taking
    /// over: `max(250 ms, lease_duration / 10)`. It absorbs clock-rate
    /// differences between nodes and frames already queued at the deadline.
    pub fn margin(&self) -> Duration {
        Duration::from_millis(250).max(self.lease_duration / 10)
    }

    /// Timeout of each non-renew API request (GET, POST, acquire PUT, watch
    /// open): `renew_deadline / 2`. A renew's timeout is additionally capped by
    /// the time left until the current fence deadline.
    pub fn request_timeout(&self) -> Duration {
        self.renew_deadline / 2
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let named = [
            ("--lease-duration", self.lease_duration),
            ("--renew-deadline", self.renew_deadline),
            ("--retry-period", self.retry_period),
        ];
        for (flag, d) in named {
            if d.is_zero() {
                return Err(ConfigError::Zero { flag });
            }
        }
        if self.identity.is_empty() {
            return Err(ConfigError::EmptyIdentity);
        }
        if self.lease_name.is_empty() || self.namespace.is_empty() {
            return Err(ConfigError::EmptyLeaseName);
        }
        if self.lease_duration > Duration::from_secs(i32::MAX as u64) {
            return Err(ConfigError::TooLong);
        }
        if self.retry_period >= self.renew_deadline {
            return Err(ConfigError::RetryNotBelowRenew {
                retry: self.retry_period,
                renew: self.renew_deadline,
            });
        }
        let margin = self.margin();
        if self.renew_deadline + margin >= self.lease_duration {
            return Err(ConfigError::RenewNotBelowLease {
                renew: self.renew_deadline,
                margin,
                lease: self.lease_duration,
            });
        }
        Ok(())
    }
}
