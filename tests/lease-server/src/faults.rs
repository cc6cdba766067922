//! Fault injection: what the server does to requests before (or instead of) answering.
//!
//! The current [`Faults`] live in a `tokio::sync::watch` channel so that requests held by a
//! partition wake up the moment the partition is healed.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Who a fault applies to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// The identity a client announces in its `User-Agent` (`... identity/<IDENTITY>`).
    Identity(String),
    /// The source IP address of the client's TCP connection.
    Ip(IpAddr),
}

impl Target {
    /// Whether a request from `identity` (if any) at `ip` is targeted.
    pub fn matches(&self, identity: Option<&str>, ip: IpAddr) -> bool {
        match self {
            Target::Identity(id) => identity == Some(id.as_str()),
            Target::Ip(addr) => canonical(*addr) == canonical(ip),
        }
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// What a partition does to the requests (and watch streams) of its target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartitionMode {
    /// Requests hang (and watch streams stall) until healed, then proceed as if the packets
    /// had been delayed: a held write commits after the heal.
    #[default]
    Hang,
    /// Requests hang until healed, then the connection is closed without an answer: a held
    /// request never commits.
    Blackhole,
    /// The connection is closed at once without an answer.
    Refuse,
}

/// One partitioned client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    /// Who is cut off.
    pub target: Target,
    /// How.
    #[serde(default)]
    pub mode: PartitionMode,
}

/// The set of faults in force. `Faults::default()` is a healthy server.
///
/// Latency and partitions apply to every request (including `/version` and health
/// endpoints); drops, injected errors and `forbidden` apply to Lease API requests only.
/// Watch events already streaming are not delayed by `latency` (only the watch request is),
/// but they are stalled by a partition.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Added to every request before it is processed.
    #[serde(with = "duration_ms")]
    pub latency: Duration,
    /// Added (on top of `latency`) to requests from these identities.
    #[serde(with = "duration_ms_map")]
    pub latency_by_identity: BTreeMap<String, Duration>,
    /// Probability (0..=1) of closing the connection without answering an API request.
    pub drop_probability: f64,
    /// If true, a dropped request is processed (and committed) first and only its answer is
    /// lost; otherwise it is dropped before processing.
    pub drop_after_commit: bool,
    /// Who drops apply to; empty = everyone.
    pub drop_targets: Vec<Target>,
    /// Probability (0..=1) of answering an API request with `error_code`.
    pub error_probability: f64,
    /// The status code of injected errors (500, 503, 429, 504; 0 = 503).
    pub error_code: u16,
    /// Who injected errors apply to; empty = everyone.
    pub error_targets: Vec<Target>,
    /// Partitioned clients.
    pub partitions: Vec<Partition>,
    /// Identities denied by "RBAC": every Lease request from them gets 403 Forbidden.
    pub forbidden: Vec<String>,
    /// Identities whose health requests (`/readyz`, `/livez`, `/healthz`) get 500: the
    /// "local API server is unhealthy" fault for agents running with `--health-check`.
    pub unhealthy: Vec<String>,
}

impl Faults {
    /// The partition affecting a request from `identity` at `ip`, if any.
    pub fn partition_for(&self, identity: Option<&str>, ip: IpAddr) -> Option<PartitionMode> {
        self.partitions
            .iter()
            .find(|p| p.target.matches(identity, ip))
            .map(|p| p.mode)
    }

    /// Total latency to add to a request from `identity`.
    pub fn latency_for(&self, identity: Option<&str>) -> Duration {
        let extra = identity
            .and_then(|id| self.latency_by_identity.get(id))
            .copied()
            .unwrap_or_default();
        self.latency + extra
    }

    pub(crate) fn drop_applies(&self, identity: Option<&str>, ip: IpAddr) -> bool {
        self.drop_probability > 0.0 && applies(&self.drop_targets, identity, ip)
    }

    pub(crate) fn error_applies(&self, identity: Option<&str>, ip: IpAddr) -> bool {
        self.error_probability > 0.0 && applies(&self.error_targets, identity, ip)
    }

    /// Whether health requests from `identity` must fail.
    pub fn is_unhealthy(&self, identity: Option<&str>) -> bool {
        identity.is_some_and(|id| self.unhealthy.iter().any(|u| u == id))
    }

    pub(crate) fn is_forbidden(&self, identity: Option<&str>) -> bool {
        identity.is_some_and(|id| self.forbidden.iter().any(|f| f == id))
    }
}

fn applies(targets: &[Target], identity: Option<&str>, ip: IpAddr) -> bool {
    targets.is_empty() || targets.iter().any(|t| t.matches(identity, ip))
}

/// Parses the identity out of a `User-Agent` of the form `vip-agent/<version> identity/<ID>`.
pub fn identity_from_user_agent(user_agent: &str) -> Option<&str> {
    user_agent
        .split_ascii_whitespace()
        .find_map(|token| token.strip_prefix("identity/"))
        .filter(|id| !id.is_empty())
}

mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64() * 1000.0)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ms = f64::deserialize(d)?;
        Duration::try_from_secs_f64(ms / 1000.0).map_err(serde::de::Error::custom)
    }
}

mod duration_ms_map {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        m: &BTreeMap<String, Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(m.iter().map(|(k, v)| (k, v.as_secs_f64() * 1000.0)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Duration>, D::Error> {
        BTreeMap::<String, f64>::deserialize(d)?
            .into_iter()
            .map(|(k, ms)| {
                Duration::try_from_secs_f64(ms / 1000.0)
                    .map(|d| (k, d))
                    .map_err(serde::de::Error::custom)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_identity() {
        assert_eq!(
            identity_from_user_agent("vip-agent/0.1.0 identity/node-a"),
            Some("node-a")
        );
        assert_eq!(identity_from_user_agent("kube-rs/5.0"), None);
        assert_eq!(identity_from_user_agent("x identity/"), None);
    }

    #[test]
    fn faults_json_round_trip() {
        let json = r#"{"latency":5,"latency_by_identity":{"a":1.5},
            "partitions":[{"target":{"identity":"a"},"mode":"refuse"},{"target":{"ip":"10.0.0.1"}}]}"#;
        let f: Faults = serde_json::from_str(json).unwrap();
        assert_eq!(f.latency, Duration::from_millis(5));
        assert_eq!(f.latency_for(Some("a")), Duration::from_micros(6500));
        assert_eq!(
            f.partition_for(Some("a"), "1.1.1.1".parse().unwrap()),
            Some(PartitionMode::Refuse)
        );
        assert_eq!(
            f.partition_for(None, "::ffff:10.0.0.1".parse().unwrap()),
            Some(PartitionMode::Hang)
        );
        let back: Faults = serde_json::from_str(&serde_json::to_string(&f).unwrap()).unwrap();
        assert_eq!(back, f);
    }
}
