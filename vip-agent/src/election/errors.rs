//! The election's errors: bad settings, and the fatal ones that end it.

use std::time::Duration;

use super::WALL_CLOCK_SKEW_ENV;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{flag} must be greater than zero")]
    Zero { flag: &'static str },
    #[error("--node-name (the election identity) must not be empty")]
    EmptyIdentity,
    #[error("the lease name and namespace must not be empty (--lease-name, --lease-namespace)")]
    EmptyLeaseName,
    #[error("--lease-duration must be below 2^31 seconds")]
    TooLong,
    #[error(
        "--retry-period ({retry:?}) must be shorter than --renew-deadline ({renew:?}): \
         lower --retry-period (e.g. renew-deadline / 3) or raise --renew-deadline"
    )]
    RetryNotBelowRenew { retry: Duration, renew: Duration },
    #[error(
        "--renew-deadline ({renew:?}) + safety margin ({margin:?}) must be shorter than \
         --lease-duration ({lease:?}), otherwise an old leader could still answer when a \
         follower takes over: lower --renew-deadline or raise --lease-duration"
    )]
    RenewNotBelowLease {
        renew: Duration,
        margin: Duration,
        lease: Duration,
    },
    #[error("{WALL_CLOCK_SKEW_ENV}={value:?} is not a number of seconds")]
    BadSkew { value: String },
}

#[derive(Debug, thiserror::Error)]
pub enum ElectionError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "forbidden to {verb} Lease {namespace}/{name} as {identity}: {message}. This node will \
         not lead. Fix: grant the agent's user an RBAC Role in {namespace} with apiGroups \
         [\"coordination.k8s.io\"], resources [\"leases\"], verbs [\"get\", \"list\", \"watch\", \
         \"create\", \"update\"] (see deploy/ RBAC manifests)"
    )]
    Forbidden {
        verb: &'static str,
        namespace: String,
        name: String,
        identity: String,
        message: String,
    },
    #[error("fence.follow() failed on stop, the lease was NOT released: {0:#}")]
    Fence(anyhow::Error),
}
