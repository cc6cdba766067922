//! Agent log events on the lab's timeline: which events matter and what they
//! say. The one entry point is [`log_event`]; it reads the agent's structured
//! log ([`crate::agent_log`]: the JSON `event` field), never its human text.

use std::time::{Duration, SystemTime};

use vip_common::events;

use crate::agent_log::{self, AgentEvent};

/// An interesting log line: when the line says it happened (`None`: the line
/// has no parsable timestamp) and what happened.
pub(super) struct LogEvent {
    pub(super) at: Option<Duration>,
    pub(super) what: String,
}

/// The event of `node`'s log `line`, or `None` for an uninteresting line;
/// times are since `wall0`.
pub(super) fn log_event(node: &str, line: &str, wall0: SystemTime) -> Option<LogEvent> {
    let ev = agent_log::parse(line)?;
    let what = describe(&ev)?;
    Some(LogEvent {
        at: ev.since(wall0),
        what: format!("{node}: {what}"),
    })
}

/// A short description of an interesting agent event.
fn describe(ev: &AgentEvent) -> Option<String> {
    let field = |key: &str| ev.field(key).unwrap_or_default();
    Some(match ev.name.as_str() {
        events::LEASE_ACQUIRED => format!(
            "acquired the Lease (previous holder {:?})",
            field("previous_holder")
        ),
        events::LEADING => "fence active, VIP address added: answering".into(),
        events::RENEW_DEADLINE_MISSED => "fence deadline passed: silent".into(),
        events::STEPPING_DOWN => format!(
            "stepping down ({})",
            ev.field("reason").unwrap_or_else(|| "?".into())
        ),
        events::LEASE_RELEASED => "Lease released".into(),
        events::FOLLOWING => "VIP fenced, address removed".into(),
        events::HEALTH_FAILING => "health check failing: unhealthy".into(),
        events::HEALTH_PASSING => "health check passing again".into(),
        events::SIGTERM_STOPPING => "SIGTERM received".into(),
        events::ADOPTED_PINS => "adopted the pinned fence of the earlier agent".into(),
        events::STALE_VIP_REMOVED => format!("removed the stale VIP address {}", field("ip")),
        events::RENEW_FAILED => "renew failed".into(),
        events::LEASE_LOST => "lost the Lease".into(),
        events::ELECTION_STARTING => "started, competing".into(),
        events::REPAIRED => format!("repaired ({})", field("kind")),
        events::CONFLICTING_CLAIM => format!("conflicting claim from {}", field("mac")),
        events::FAST_TAKEOVER => format!(
            "fast takeover (the holder went silent; answers in {})",
            field("answer_in")
        ),
        events::PEER_MEMBER_ADDED => format!("fast path: member {} added", field("member")),
        events::PEER_MEMBER_REMOVED => {
            format!(
                "fast path: member {} removed (acks stopped)",
                field("member")
            )
        }
        events::FENCE_WAITING_FOR_ACKS => format!(
            "fast path: fence ran out waiting for acks of {}",
            field("waits_for")
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn describes_json_events() {
        let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let line = r#"{"timestamp":"2023-11-14T22:13:20.250000Z","level":"INFO","message":"acquired the lease","identity":"node1","previous_holder":"node0","event":"lease_acquired"}"#;
        let ev = log_event("node1", line, wall).expect("an event");
        assert_eq!(ev.at, Some(Duration::from_millis(250)));
        assert_eq!(
            ev.what,
            "node1: acquired the Lease (previous holder \"node0\")"
        );
        // A renewal is not on the timeline; the human text alone is no event.
        let renewed =
            r#"{"timestamp":"2023-11-14T22:13:20Z","message":"renewed","event":"renewed"}"#;
        assert!(log_event("n", renewed, wall).is_none());
        let text_only = r#"{"timestamp":"2023-11-14T22:13:20Z","message":"acquired the lease"}"#;
        assert!(log_event("n", text_only, wall).is_none());
    }
}
