//! Agent log lines as timeline events: which lines matter and what they say.
//!
//! The one entry point is [`log_event`]; it matches the agent's text log
//! lines (the matching moves to the agent's JSON `event` field later).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// An interesting log line: when the line says it happened (`None`: the line
/// has no parsable timestamp, as keepalived's) and what happened.
pub(super) struct LogEvent {
    pub(super) at: Option<Duration>,
    pub(super) what: String,
}

/// The event of `node`'s log `line`, or `None` for an uninteresting line;
/// times are since `wall0`.
pub(super) fn log_event(node: &str, line: &str, wall0: SystemTime) -> Option<LogEvent> {
    let what = describe_log(node, line)?;
    Some(LogEvent {
        at: log_time(line, wall0),
        what,
    })
}

/// Time of an agent log line (tracing's RFC 3339 prefix) since `wall0`.
fn log_time(line: &str, wall0: SystemTime) -> Option<Duration> {
    let ts: k8s_openapi::jiff::Timestamp = line.split_whitespace().next()?.parse().ok()?;
    let t = ts.as_nanosecond();
    let t0 = i128::try_from(wall0.duration_since(UNIX_EPOCH).ok()?.as_nanos()).ok()?;
    let d = u64::try_from(t - t0).ok()?;
    Some(Duration::from_nanos(d))
}

/// A short description of an interesting agent log line.
fn describe_log(node: &str, line: &str) -> Option<String> {
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|t| t.strip_prefix(key))
            .map(|v| v.trim_matches('"').to_owned())
    };
    let what = if line.contains("acquired the lease") {
        format!(
            "acquired the Lease (previous holder {:?})",
            field("previous_holder=").unwrap_or_default()
        )
    } else if line.contains("leading: answering for the VIP") {
        "fence active, VIP address added: answering".into()
    } else if line.contains("could not renew the lease before the fence deadline") {
        "fence deadline passed: silent".into()
    } else if line.contains("stepping down") {
        format!(
            "stepping down ({})",
            field("reason=").unwrap_or_else(|| "?".into())
        )
    } else if line.contains("lease released") {
        "Lease released".into()
    } else if line.contains("following: VIP fenced and removed") {
        "VIP fenced, address removed".into()
    } else if line.contains("health check failing") {
        "health check failing: unhealthy".into()
    } else if line.contains("health check passing again") {
        "health check passing again".into()
    } else if line.contains("SIGTERM: stopping") {
        "SIGTERM received".into()
    } else if line.contains("adopted it") {
        "adopted the pinned fence of the earlier agent".into()
    } else if line.contains("removed a stale VIP address") {
        format!(
            "removed the stale VIP address {}",
            field("ip=").unwrap_or_default()
        )
    } else if line.contains("renew failed") {
        "renew failed".into()
    } else if line.contains("lost the lease") {
        "lost the Lease".into()
    } else if line.contains("leader election starting") {
        "started, competing".into()
    } else {
        return None;
    };
    Some(format!("{node}: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_log_lines() {
        let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let line = "2023-11-14T22:13:20.250000Z  INFO vip_agent::election: acquired the lease identity=node1 previous_holder=\"node0\"";
        assert_eq!(log_time(line, wall), Some(Duration::from_millis(250)));
        assert_eq!(
            describe_log("node1", line).as_deref(),
            Some("node1: acquired the Lease (previous holder \"node0\")")
        );
        assert_eq!(describe_log("n", "x renewed"), None);
    }
}
