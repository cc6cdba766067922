//! The agent's metrics, exposed with the official `prometheus-client` crate
//! in the Prometheus text format 0.0.4 (what every Prometheus 2.x scrapes and
//! `promtool check metrics` reads), and its probes: `/metrics`, `/healthz`,
//! `/readyz`.
//!
//! Layout: this file owns the registry and what the agent counts;
//! `election` reads the election's [`Status`] watch and `xdp` the XDP
//! program's per-CPU counters map, both when /metrics is asked;
//! [`crate::timing`] holds the renew-latency and takeover histograms; `http`
//! serves it all.
//!
//! Every name and label is part of the interface (deploy/prometheus/
//! alerts.yaml, the dashboards): counters are registered without the
//! `_total` the encoder appends.

mod election;
mod events;
mod families;
mod http;
mod peer;
mod xdp;

use std::sync::{Arc, OnceLock};

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

pub use http::{bind, serve};
pub use xdp::XdpCounters;

use crate::dataplane::RepairKind;
use crate::election::Status;
use crate::election::credentials::Kubeconfig;
use crate::election::events::EventStats;
use crate::timing;

/// The revision in `vip_agent_build_info`: `VIP_AGENT_REVISION` at build time.
pub const REVISION: &str = match option_env!("VIP_AGENT_REVISION") {
    Some(r) => r,
    None => "unknown",
};

type Label = [(&'static str, &'static str); 1];

/// Everything the exposition reads. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    announcements: Counter,
    repairs: Family<Label, Counter>,
    /// Empty (no family at all) without an election.
    credentials: Family<Label, Gauge>,
    ready: watch::Receiver<bool>,
    /// The election's Event counters, once it runs.
    events: Arc<OnceLock<Arc<EventStats>>>,
    /// The fast path's counters, when it is on.
    peers: Arc<OnceLock<crate::peer::Peers>>,
}

impl Metrics {
    /// `xdp`: the counters map (None: no `vip_xdp_*` families).
    pub fn new(
        identity: String,
        xdp_mode: &'static str,
        vips: Vec<String>,
        status: watch::Receiver<Status>,
        xdp: Option<XdpCounters>,
        ready: watch::Receiver<bool>,
    ) -> Self {
        let mut registry = Registry::default();
        let announcements = Counter::default();
        registry.register(
            "vip_agent_announcements",
            "Gratuitous ARP / unsolicited NA frames sent",
            announcements.clone(),
        );
        let credentials = Family::<Label, Gauge>::default();
        registry.register(
            "vip_agent_credentials",
            "1 for the kubeconfig the election uses: admin (--kubeconfig) or super-admin \
             (--super-admin-kubeconfig, while --kubeconfig is forbidden on the Lease)",
            credentials.clone(),
        );
        let repairs = Family::<Label, Counter>::default();
        for k in RepairKind::ALL {
            // Every kind exposed from the start, at 0.
            let _ = repairs.get_or_create(&[("kind", k.label())]);
        }
        registry.register(
            "vip_agent_repairs",
            "Things found broken and repaired: XDP link detached or its interface replaced, VIP \
             address missing while leading, stale pinned link or maps of another version at start",
            repairs.clone(),
        );
        registry.register(
            "vip_agent_xdp",
            "XDP attach mode",
            Info::new([("mode", xdp_mode)]),
        );
        let vip_info = Family::<[(&'static str, String); 1], Gauge>::default();
        for v in vips {
            vip_info.get_or_create(&[("vip", v)]).set(1);
        }
        registry.register("vip_agent_vip_info", "VIPs this agent serves", vip_info);
        registry.register(
            "vip_agent_build",
            "The agent's version (and VIP_AGENT_REVISION at build time)",
            Info::new([
                ("version", env!("CARGO_PKG_VERSION")),
                ("revision", REVISION),
            ]),
        );
        registry.register(
            "vip_agent_renew_latency_seconds",
            "Lease renew requests, from sent to answered (successful or not)",
            timing::TIMINGS.renew.clone(),
        );
        registry.register(
            "vip_agent_takeover_seconds",
            "From acquiring the Lease to the first gratuitous ARP / unsolicited NA sent",
            timing::TIMINGS.takeover.clone(),
        );
        registry.register_collector(Box::new(election::ElectionCollector { identity, status }));
        if let Some(xdp) = xdp {
            registry.register_collector(Box::new(xdp));
        }
        let events = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(events::EventsCollector(events.clone())));
        let peers = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(peer::PeerCollector(peers.clone())));
        Self {
            inner: Arc::new(Inner {
                registry,
                announcements,
                repairs,
                credentials,
                ready,
                events,
                peers,
            }),
        }
    }

    /// `n` announcement frames were sent (the first ones after an acquisition
    /// end the takeover).
    pub fn add_announcements(&self, n: usize) {
        if n > 0 {
            timing::announced();
        }
        self.inner.announcements.inc_by(n as u64);
    }

    pub fn add_repair(&self, kind: RepairKind) {
        self.inner
            .repairs
            .get_or_create(&[("kind", kind.label())])
            .inc();
    }

    /// The kubeconfig the election uses now.
    pub fn set_credentials(&self, used: Kubeconfig) {
        for k in Kubeconfig::ALL {
            self.inner
                .credentials
                .get_or_create(&[("kubeconfig", k.label())])
                .set(i64::from(k == used));
        }
    }

    /// The counters of the election's Kubernetes Events (set once).
    pub fn set_event_stats(&self, stats: Arc<EventStats>) {
        let _ = self.inner.events.set(stats);
    }

    /// The fast path's counters (set once, with `--fast-path`).
    pub fn set_peer_stats(&self, peers: crate::peer::Peers) {
        let _ = self.inner.peers.set(peers);
    }

    /// The text exposition (Prometheus format 0.0.4).
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(8192);
        prometheus_text::encode(&mut out, &self.inner.registry)?;
        Ok(out)
    }

    pub fn ready(&self) -> bool {
        *self.inner.ready.borrow()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::dataplane::Counters;
    use crate::timing::{lease_acquired, renew_answered};

    /// A live scrape of the hand-written exposition this module replaced
    /// (`--no-election`, so without the election's credentials family). The
    /// alerts and dashboards depend on its names, labels and types.
    const BEFORE: &str = include_str!("../../tests/fixtures/metrics-before.txt");

    fn metrics(counters: u64) -> Metrics {
        let (_s_tx, s_rx) = watch::channel(Status::default());
        let (_r_tx, r_rx) = watch::channel(true);
        Metrics::new(
            "cp\"1".into(),
            "skb",
            vec!["192.0.2.10".into()],
            s_rx,
            Some(XdpCounters::from_fn(move || {
                Ok(Counters(
                    [counters; vip_common::maps::COUNTERS_LEN as usize],
                ))
            })),
            r_rx,
        )
    }

    /// `name{sorted label names}` of every sample, and the `# TYPE` lines.
    fn shape(text: &str) -> std::collections::BTreeSet<String> {
        text.lines()
            .filter_map(|l| {
                if l.starts_with("# TYPE ") {
                    return Some(l.to_owned());
                }
                if l.starts_with('#') {
                    return None;
                }
                let series = l.rsplit_once(' ')?.0;
                let Some((name, labels)) = series.split_once('{') else {
                    return Some(series.to_owned());
                };
                let mut keys: Vec<&str> = labels
                    .split(',')
                    .filter_map(|kv| kv.split_once('=').map(|(k, _)| k))
                    .collect();
                keys.sort_unstable();
                Some(format!("{name}{{{}}}", keys.join(",")))
            })
            .collect()
    }

    #[test]
    fn every_series_of_before_is_exposed_with_the_same_name_labels_and_type() {
        let m = metrics(3);
        m.set_credentials(Kubeconfig::Admin);
        let now = shape(&m.render().unwrap());
        let mut before = shape(BEFORE);
        before.insert("# TYPE vip_agent_credentials gauge".into());
        before.insert("vip_agent_credentials{kubeconfig}".into());
        let missing: Vec<&String> = before.difference(&now).collect();
        assert!(missing.is_empty(), "missing: {missing:#?}\nnow: {now:#?}");
        let added: Vec<&String> = now.difference(&before).collect();
        for new in [
            "# TYPE vip_agent_renew_latency_seconds histogram",
            "vip_agent_renew_latency_seconds_bucket{le}",
            "vip_agent_renew_latency_seconds_sum",
            "vip_agent_renew_latency_seconds_count",
            "# TYPE vip_agent_takeover_seconds histogram",
            "vip_agent_takeover_seconds_bucket{le}",
            "vip_agent_takeover_seconds_sum",
            "vip_agent_takeover_seconds_count",
            "# TYPE vip_agent_build_info gauge",
            "vip_agent_build_info{revision,version}",
        ] {
            assert!(
                added.iter().any(|a| *a == new),
                "{new} not added: {added:#?}"
            );
        }
        assert_eq!(added.len(), 10, "nothing else is new: {added:#?}");
    }

    #[test]
    fn exposition_values() {
        let m = metrics(3);
        m.add_repair(RepairKind::StaleLink);
        m.add_repair(RepairKind::StaleLink);
        let text = m.render().unwrap();
        assert!(!text.contains("vip_agent_credentials"), "no election");
        m.set_credentials(Kubeconfig::SuperAdmin);
        let text2 = m.render().unwrap();
        assert!(text2.contains("vip_agent_credentials{kubeconfig=\"super-admin\"} 1"));
        assert!(text2.contains("vip_agent_credentials{kubeconfig=\"admin\"} 0"));
        m.set_credentials(Kubeconfig::Admin);
        assert!(
            m.render()
                .unwrap()
                .contains("vip_agent_credentials{kubeconfig=\"admin\"} 1")
        );
        assert!(
            text.contains("vip_agent_leader{identity=\"cp\\\"1\"} 0"),
            "{text}"
        );
        assert!(text.contains("vip_agent_repairs_total{kind=\"stale_link\"} 2"));
        assert!(text.contains("vip_agent_repairs_total{kind=\"xdp_detached\"} 0"));
        assert!(text.contains("vip_xdp_passed_total{reason=\"not_vip\"} 3"));
        assert!(text.contains("vip_xdp_too_deep_total 3"));
        assert!(text.contains("vip_agent_xdp_info{mode=\"skb\"} 1"));
        assert!(text.contains("vip_agent_vip_info{vip=\"192.0.2.10\"} 1"));
        assert!(text.contains(&format!(
            "vip_agent_build_info{{version=\"{}\",revision=\"{REVISION}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )));
        assert!(text.contains(
            "# HELP vip_agent_announcements_total Gratuitous ARP / unsolicited NA frames sent.\n"
        ));
        // Every sample line: name{labels} value, value parses as a float.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let v = line.rsplit(' ').next().unwrap();
            v.parse::<f64>()
                .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        }
    }

    #[test]
    fn event_counters_appear_once_the_election_runs() {
        use std::sync::atomic::Ordering;
        let m = metrics(0);
        assert!(!m.render().unwrap().contains("vip_agent_events"));
        let stats = Arc::new(EventStats::default());
        m.set_event_stats(stats.clone());
        stats.posted.fetch_add(3, Ordering::Relaxed);
        stats.dropped.fetch_add(1, Ordering::Relaxed);
        let text = m.render().unwrap();
        assert!(
            text.contains("# TYPE vip_agent_events_total counter"),
            "{text}"
        );
        assert!(
            text.contains("vip_agent_events_total{result=\"posted\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("vip_agent_events_total{result=\"dropped\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("vip_agent_events_total{result=\"failed\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn xdp_read_failure_leaves_the_families_out() {
        let (_s_tx, s_rx) = watch::channel(Status::default());
        let (_r_tx, r_rx) = watch::channel(true);
        let m = Metrics::new(
            "a".into(),
            "native",
            vec![],
            s_rx,
            Some(XdpCounters::from_fn(|| {
                Err(aya::maps::MapError::KeyNotFound)
            })),
            r_rx,
        );
        let text = m.render().unwrap();
        assert!(!text.contains("vip_xdp_"), "{text}");
        assert!(text.contains("vip_agent_leader"));
    }

    /// The process-wide histograms are exposed (their semantics: `timing`'s
    /// tests; the election's tests observe into them concurrently).
    #[test]
    fn announcements_end_the_takeover_and_renews_are_observed() {
        let m = metrics(0);
        let count = |h: &str| -> f64 {
            let text = m.render().unwrap();
            let series = format!("{h}_count ");
            text.lines()
                .find_map(|l| l.strip_prefix(&series)?.parse().ok())
                .unwrap_or_else(|| panic!("{series} missing:\n{text}"))
        };
        let takeovers = count("vip_agent_takeover_seconds");
        lease_acquired();
        m.add_announcements(0);
        m.add_announcements(2);
        m.add_announcements(2);
        assert!(count("vip_agent_takeover_seconds") >= takeovers + 1.0);
        assert!(
            m.render()
                .unwrap()
                .contains("vip_agent_announcements_total 4")
        );
        let renews = count("vip_agent_renew_latency_seconds");
        renew_answered(Duration::from_millis(3));
        assert!(count("vip_agent_renew_latency_seconds") >= renews + 1.0);
        let text = m.render().unwrap();
        for bucket in [
            "vip_agent_renew_latency_seconds_bucket{le=\"0.001\"}",
            "vip_agent_renew_latency_seconds_bucket{le=\"2\"}",
            "vip_agent_takeover_seconds_bucket{le=\"0.0001\"}",
            "vip_agent_takeover_seconds_bucket{le=\"1\"}",
            "vip_agent_takeover_seconds_bucket{le=\"+Inf\"}",
        ] {
            assert!(text.contains(bucket), "{bucket} missing:\n{text}");
        }
    }
}
