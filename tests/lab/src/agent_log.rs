//! The agent's log lines as events: the name from `vip_common::events` and
//! the line's fields.
//!
//! Agents started by the lab log JSON (`--log-format json`): one object per
//! line whose `event` field names the lifecycle event, so the lab matches
//! names the agent shares with it, never the human text. The one exception is
//! an agent that predates `--log-format` (the upgrade test's old build,
//! frozen at a fixed commit): its text lines are mapped through
//! [`LEGACY_TEXT`], the texts that build printed, which can no longer change.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use vip_common::events;

/// One event of an agent's log.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentEvent {
    /// The event's name, one of `vip_common::events`.
    pub name: String,
    /// When the agent logged it (`None`: no parsable timestamp).
    pub timestamp: Option<SystemTime>,
    /// The line's other fields (strings as logged; Debug-formatted values
    /// keep their quotes).
    pub fields: Map<String, Value>,
}

impl AgentEvent {
    /// The string value of field `key`, quotes of a Debug-formatted string
    /// removed.
    pub fn field(&self, key: &str) -> Option<String> {
        match self.fields.get(key)? {
            Value::String(s) => Some(s.trim_matches('"').to_owned()),
            other => Some(other.to_string()),
        }
    }

    /// Time since `wall0`, if the line had a timestamp after it.
    pub fn since(&self, wall0: SystemTime) -> Option<Duration> {
        self.timestamp?.duration_since(wall0).ok()
    }
}

/// Event names and the text the pre-`--log-format` agent build logged for
/// them (see the module docs). Only lines that are not JSON are matched.
pub const LEGACY_TEXT: &[(&str, &str)] = &[
    (events::LEASE_ACQUIRED, "acquired the lease"),
    (events::LEADING, "leading: answering for the VIP"),
    (
        events::RENEW_DEADLINE_MISSED,
        "could not renew the lease before the fence deadline",
    ),
    (events::STEPPING_DOWN, "stepping down"),
    (events::LEASE_RELEASED, "lease released"),
    (events::FOLLOWING, "following: VIP fenced and removed"),
    (events::HEALTH_FAILING, "health check failing"),
    (events::HEALTH_PASSING, "health check passing again"),
    (events::SIGTERM_STOPPING, "SIGTERM: stopping"),
    (events::ADOPTED_PINS, "adopted it"),
    (events::STALE_VIP_REMOVED, "removed a stale VIP address"),
    (events::RENEW_FAILED, "renew failed"),
    (events::LEASE_LOST, "lost the lease"),
    (events::ELECTION_STARTING, "leader election starting"),
    (events::XDP_ATTACHED, "XDP responder attached"),
];

/// The event of one log line, or `None` for a line without one.
pub fn parse(line: &str) -> Option<AgentEvent> {
    if line.trim_start().starts_with('{') {
        parse_json(line)
    } else {
        parse_legacy(line)
    }
}

fn parse_json(line: &str) -> Option<AgentEvent> {
    let Value::Object(mut fields) = serde_json::from_str::<Value>(line).ok()? else {
        return None;
    };
    let Some(Value::String(name)) = fields.remove("event") else {
        return None;
    };
    let timestamp = match fields.get("timestamp") {
        Some(Value::String(ts)) => parse_time(ts),
        _ => None,
    };
    Some(AgentEvent {
        name,
        timestamp,
        fields,
    })
}

fn parse_legacy(line: &str) -> Option<AgentEvent> {
    let (name, _) = LEGACY_TEXT.iter().find(|(_, text)| line.contains(text))?;
    let mut fields = Map::new();
    for token in line.split_whitespace() {
        if let Some((k, v)) = token.split_once('=') {
            fields.insert(k.to_owned(), Value::String(v.to_owned()));
        }
    }
    Some(AgentEvent {
        name: (*name).to_owned(),
        timestamp: line.split_whitespace().next().and_then(parse_time),
        fields,
    })
}

/// tracing's RFC 3339 timestamp.
fn parse_time(ts: &str) -> Option<SystemTime> {
    let ts: k8s_openapi::jiff::Timestamp = ts.parse().ok()?;
    let nanos = u64::try_from(ts.as_nanosecond()).ok()?;
    Some(UNIX_EPOCH + Duration::from_nanos(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_carry_name_time_and_fields() {
        let line = r#"{"timestamp":"2023-11-14T22:13:20.250000Z","level":"INFO","message":"acquired the lease","identity":"node1","previous_holder":"node0","event":"lease_acquired","target":"vip_agent::election"}"#;
        let ev = parse(line).expect("an event");
        assert_eq!(ev.name, events::LEASE_ACQUIRED);
        assert_eq!(ev.field("previous_holder").as_deref(), Some("node0"));
        let wall0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(ev.since(wall0), Some(Duration::from_millis(250)));
        // The human text alone is not an event; neither is a line without one.
        assert_eq!(
            parse(r#"{"message":"acquired the lease","level":"INFO"}"#),
            None
        );
        assert_eq!(parse("{not json"), None);
    }

    #[test]
    fn legacy_text_lines_map_to_names() {
        let line = "2023-11-14T22:13:20.250000Z  INFO vip_agent::election: stepping down identity=node1 reason=\"health\"";
        let ev = parse(line).expect("an event");
        assert_eq!(ev.name, events::STEPPING_DOWN);
        assert_eq!(ev.field("reason").as_deref(), Some("health"));
        assert!(ev.timestamp.is_some());
        assert_eq!(parse("2023-11-14T22:13:20Z INFO renewed"), None);
        for (name, _) in LEGACY_TEXT {
            assert!(events::ALL.contains(name), "{name} is not an event name");
        }
    }
}
