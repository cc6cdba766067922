//! Names of the agent's lifecycle log events.
//!
//! Every lifecycle log line of `vip-agent` carries a field `event` whose value
//! is one of these constants, so a reader (the lab's timeline, a log query)
//! matches on a stable name instead of the human text, which may change.
//! With `--log-format json` each line is one JSON object with that field.
//! The values are snake_case and never contain the human text of another
//! event.

/// `vip-agent run` is starting (before anything is checked or touched).
pub const AGENT_STARTING: &str = "agent_starting";
/// The agent stops on an error (the line carries the error).
pub const AGENT_FAILED: &str = "agent_failed";
/// `--no-election`: the node answers for the VIPs without leader election.
pub const NO_ELECTION: &str = "no_election";
/// The pinned fence of an earlier agent was found and adopted.
pub const ADOPTED_PINS: &str = "adopted_pins";
/// A VIP address left on the node was removed before competing.
pub const STALE_VIP_REMOVED: &str = "stale_vip_removed";
/// The XDP program is attached to the interface (loaded or adopted).
pub const XDP_ATTACHED: &str = "xdp_attached";
/// The interface lost its carrier or was set down.
pub const INTERFACE_DOWN: &str = "interface_down";
/// The interface is up again: link and addresses checked, announcing again.
pub const INTERFACE_UP: &str = "interface_up";
/// Leader election starts (settings checked).
pub const ELECTION_STARTING: &str = "election_starting";
/// This node acquired (or created) the Lease.
pub const LEASE_ACQUIRED: &str = "lease_acquired";
/// Fence active, VIP address added: the node answers for the VIPs.
pub const LEADING: &str = "leading";
/// A renew failed (the leader retries until the fence deadline).
pub const RENEW_FAILED: &str = "renew_failed";
/// The leader could not renew before its fence deadline: it is silent.
pub const RENEW_DEADLINE_MISSED: &str = "renew_deadline_missed";
/// Another node holds the Lease now.
pub const LEASE_LOST: &str = "lease_lost";
/// The leader gives the VIP up (the line carries the reason).
pub const STEPPING_DOWN: &str = "stepping_down";
/// The Lease was released (holder cleared) after stepping down.
pub const LEASE_RELEASED: &str = "lease_released";
/// Fence inactive, VIP address removed: the node is a follower.
pub const FOLLOWING: &str = "following";
/// A follower's watch on the Lease is open (a release is seen at once).
pub const WATCH_OPENED: &str = "watch_opened";
/// A 403 Forbidden on the Lease: not leading, retrying.
pub const FORBIDDEN: &str = "forbidden";
/// The health check failed often enough: the node is unhealthy.
pub const HEALTH_FAILING: &str = "health_failing";
/// The health check passes again: the node is healthy.
pub const HEALTH_PASSING: &str = "health_passing";
/// SIGTERM received: graceful stop.
pub const SIGTERM_STOPPING: &str = "sigterm_stopping";
/// SIGINT received: graceful stop.
pub const SIGINT_STOPPING: &str = "sigint_stopping";
/// Something broken was repaired (the line carries `kind`).
pub const REPAIRED: &str = "repaired";
/// Another host announces a VIP while this node answers for it.
pub const CONFLICTING_CLAIM: &str = "conflicting_claim";
/// `--kubeconfig` is forbidden on the Lease: the election uses
/// `--super-admin-kubeconfig` until it is allowed (kubeadm >= 1.29, first
/// control-plane node, before kubeadm's `kubeadm:cluster-admins` binding).
pub const CREDENTIALS_SUPER_ADMIN: &str = "credentials_super_admin";
/// `--kubeconfig` is allowed on the Lease again: back to it from super-admin.
pub const CREDENTIALS_ADMIN: &str = "credentials_admin";
/// Fast path: the peer key is loaded; heartbeats can be sent and verified.
pub const PEER_KEY_READY: &str = "peer_key_ready";
/// Fast path: a member that stopped hearing the holder took the Lease over
/// by CAS (docs/peer-promises.md, rule 4).
pub const FAST_TAKEOVER: &str = "fast_takeover";
/// Fast path: the leader added a member (it acked a heartbeat).
pub const PEER_MEMBER_ADDED: &str = "peer_member_added";
/// Fast path: the leader removed a member whose acks stopped.
pub const PEER_MEMBER_REMOVED: &str = "peer_member_removed";
/// Fast path: the leader's fence ran out waiting for a member's ack.
pub const FENCE_WAITING_FOR_ACKS: &str = "fence_waiting_for_acks";

/// Every event name, for readers that check they know them all.
pub const ALL: &[&str] = &[
    AGENT_STARTING,
    AGENT_FAILED,
    NO_ELECTION,
    ADOPTED_PINS,
    STALE_VIP_REMOVED,
    XDP_ATTACHED,
    INTERFACE_DOWN,
    INTERFACE_UP,
    ELECTION_STARTING,
    LEASE_ACQUIRED,
    LEADING,
    RENEW_FAILED,
    RENEW_DEADLINE_MISSED,
    LEASE_LOST,
    STEPPING_DOWN,
    LEASE_RELEASED,
    FOLLOWING,
    WATCH_OPENED,
    FORBIDDEN,
    HEALTH_FAILING,
    HEALTH_PASSING,
    SIGTERM_STOPPING,
    SIGINT_STOPPING,
    REPAIRED,
    CONFLICTING_CLAIM,
    CREDENTIALS_SUPER_ADMIN,
    CREDENTIALS_ADMIN,
    PEER_KEY_READY,
    FAST_TAKEOVER,
    PEER_MEMBER_ADDED,
    PEER_MEMBER_REMOVED,
    FENCE_WAITING_FOR_ACKS,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_snake_case() {
        for (i, a) in ALL.iter().enumerate() {
            assert!(!a.is_empty());
            assert!(
                a.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{a}"
            );
            assert!(!ALL[..i].contains(a), "{a} twice");
        }
    }
}
