//! Prometheus text exposition and probes: `/metrics`, `/healthz`, `/readyz`.
//!
//! A deliberately small HTTP/1.1 responder (one request per connection,
//! bounded request size): the agent must not depend on anything heavier to
//! report on itself while the cluster is being built.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use vip_common::maps::Counter;
use vip_common::{PassReason, Proto, ProtoCounter, RefuseReason};

use crate::clock::MonoTime;
use crate::dataplane::{Counters, RepairKind};
use crate::election::credentials::Kubeconfig;
use crate::election::{Role, Status};

/// Everything the exposition reads. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    identity: String,
    xdp_mode: &'static str,
    vips: Vec<String>,
    status: watch::Receiver<Status>,
    counters: watch::Receiver<Option<Counters>>,
    announcements: AtomicU64,
    repairs: [AtomicU64; RepairKind::ALL.len()],
    /// 0: no election (no kubeconfig); else 1 + the index in [`Kubeconfig::ALL`].
    credentials: AtomicU8,
    ready: watch::Receiver<bool>,
}

impl Metrics {
    pub fn new(
        identity: String,
        xdp_mode: &'static str,
        vips: Vec<String>,
        status: watch::Receiver<Status>,
        counters: watch::Receiver<Option<Counters>>,
        ready: watch::Receiver<bool>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                identity,
                xdp_mode,
                vips,
                status,
                counters,
                announcements: AtomicU64::new(0),
                repairs: Default::default(),
                credentials: AtomicU8::new(0),
                ready,
            }),
        }
    }

    pub fn add_announcements(&self, n: usize) {
        self.inner
            .announcements
            .fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn add_repair(&self, kind: RepairKind) {
        self.inner.repairs[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The kubeconfig the election uses now.
    pub fn set_credentials(&self, k: Kubeconfig) {
        let i = Kubeconfig::ALL.iter().position(|x| *x == k).unwrap_or(0);
        self.inner
            .credentials
            .store(u8::try_from(i + 1).unwrap_or(1), Ordering::Relaxed);
    }

    /// The text exposition (Prometheus format 0.0.4).
    pub fn render(&self) -> String {
        let i = &self.inner;
        let st = i.status.borrow().clone();
        let mut out = String::with_capacity(4096);
        let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, String)]| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let id = format!("{{identity=\"{}\"}}", escape(&i.identity));
        let leading = matches!(st.role, Role::Leading);
        family(
            "vip_agent_leader",
            "gauge",
            "1 while this node holds the Lease and answers for the VIP.",
            &[(id.clone(), u8::from(leading).to_string())],
        );
        let holder = match &st.role {
            Role::Leading => i.identity.clone(),
            Role::Following { holder } => holder.clone().unwrap_or_default(),
        };
        family(
            "vip_agent_lease_holder_info",
            "gauge",
            "The Lease holder as this node last saw it.",
            &[(format!("{{holder=\"{}\"}}", escape(&holder)), "1".into())],
        );
        let remaining = st
            .fence_deadline
            .map(|d| d.as_nanos().saturating_sub(MonoTime::now().as_nanos()) as f64 / 1e9)
            .unwrap_or(0.0);
        family(
            "vip_agent_fence_remaining_seconds",
            "gauge",
            "Time until the data plane stops answering by itself unless the Lease is renewed.",
            &[(String::new(), format!("{remaining:.6}"))],
        );
        family(
            "vip_agent_healthy",
            "gauge",
            "Health gate (1: may lead).",
            &[(String::new(), u8::from(st.healthy).to_string())],
        );
        family(
            "vip_agent_lease_transitions",
            "gauge",
            "leaseTransitions of the Lease as last seen.",
            &[(String::new(), st.lease_transitions.to_string())],
        );
        family(
            "vip_agent_acquisitions_total",
            "counter",
            "Times this node became leader.",
            &[(String::new(), st.acquisitions.to_string())],
        );
        family(
            "vip_agent_renewals_total",
            "counter",
            "Successful Lease renewals.",
            &[(String::new(), st.renewals.to_string())],
        );
        family(
            "vip_agent_renew_failures_total",
            "counter",
            "Failed Lease renewals.",
            &[(String::new(), st.renew_failures.to_string())],
        );
        family(
            "vip_agent_api_requests_total",
            "counter",
            "Requests made to the Kubernetes API (each watch counts once).",
            &[(String::new(), st.api_requests.to_string())],
        );
        family(
            "vip_agent_watch_starts_total",
            "counter",
            "Lease watches opened.",
            &[(String::new(), st.watch_starts.to_string())],
        );
        family(
            "vip_agent_announcements_total",
            "counter",
            "Gratuitous ARP / unsolicited NA frames sent.",
            &[(
                String::new(),
                i.announcements.load(Ordering::Relaxed).to_string(),
            )],
        );
        let credentials = i.credentials.load(Ordering::Relaxed);
        if credentials > 0 {
            let samples: Vec<_> = Kubeconfig::ALL
                .iter()
                .enumerate()
                .map(|(n, k)| {
                    (
                        format!("{{kubeconfig=\"{}\"}}", k.label()),
                        u8::from(usize::from(credentials) == n + 1).to_string(),
                    )
                })
                .collect();
            family(
                "vip_agent_credentials",
                "gauge",
                "1 for the kubeconfig the election uses: admin (--kubeconfig) or super-admin \
                 (--super-admin-kubeconfig, while --kubeconfig is forbidden on the Lease).",
                &samples,
            );
        }
        let repairs: Vec<_> = RepairKind::ALL
            .iter()
            .map(|k| {
                (
                    format!("{{kind=\"{}\"}}", k.label()),
                    i.repairs[*k as usize].load(Ordering::Relaxed).to_string(),
                )
            })
            .collect();
        family(
            "vip_agent_repairs_total",
            "counter",
            "Things found broken and repaired: XDP link detached or its interface replaced, VIP \
             address missing while leading, stale pinned link or maps of another version at start.",
            &repairs,
        );
        family(
            "vip_agent_xdp_info",
            "gauge",
            "XDP attach mode.",
            &[(format!("{{mode=\"{}\"}}", i.xdp_mode), "1".into())],
        );
        let vip_samples: Vec<_> = i
            .vips
            .iter()
            .map(|v| (format!("{{vip=\"{}\"}}", escape(v)), "1".to_string()))
            .collect();
        family(
            "vip_agent_vip_info",
            "gauge",
            "VIPs this agent serves.",
            &vip_samples,
        );
        if let Some(c) = i.counters.borrow().as_ref() {
            let proto = |k: ProtoCounter| {
                Proto::ALL
                    .iter()
                    .map(|p| {
                        (
                            format!("{{proto=\"{}\"}}", p.label()),
                            c.get(k.of(*p)).to_string(),
                        )
                    })
                    .collect::<Vec<_>>()
            };
            family(
                "vip_xdp_requests_total",
                "counter",
                "ARP requests / neighbour solicitations for the VIP seen by the XDP program.",
                &proto(ProtoCounter::Requests),
            );
            family(
                "vip_xdp_answered_total",
                "counter",
                "Requests for the VIP answered in XDP.",
                &proto(ProtoCounter::Answered),
            );
            family(
                "vip_xdp_fenced_total",
                "counter",
                "Requests for the VIP dropped because this node may not answer.",
                &proto(ProtoCounter::Fenced),
            );
            family(
                "vip_xdp_refused_total",
                "counter",
                "Requests for the VIP dropped because of their form (never left to the kernel), by reason.",
                &RefuseReason::ALL
                    .iter()
                    .map(|r| {
                        (
                            format!("{{reason=\"{}\"}}", r.label()),
                            c.refused(*r).to_string(),
                        )
                    })
                    .collect::<Vec<_>>(),
            );
            family(
                "vip_xdp_claims_total",
                "counter",
                "Conflicting claims: another MAC announced the VIP while this node answered for it.",
                &proto(ProtoCounter::Claims),
            );
            family(
                "vip_xdp_too_deep_total",
                "counter",
                "Frames dropped because they nest more VLAN tags or IPv6 extension headers than the program follows.",
                &[(String::new(), c.get(Counter::TooDeep).to_string())],
            );
            let passed: Vec<_> = PassReason::ALL
                .iter()
                .map(|r| {
                    (
                        format!("{{reason=\"{}\"}}", r.label()),
                        c.passed(*r).to_string(),
                    )
                })
                .collect();
            family(
                "vip_xdp_passed_total",
                "counter",
                "Frames passed to the kernel untouched, by reason.",
                &passed,
            );
        }
        out
    }

    pub fn ready(&self) -> bool {
        *self.inner.ready.borrow()
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Serves until `shutdown`.
pub async fn serve(listener: TcpListener, metrics: Metrics, shutdown: CancellationToken) {
    loop {
        let (mut sock, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => { warn!(error = %e, "metrics accept"); continue; }
            },
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            let mut n = 0;
            // Read the request head, bounded in size and time.
            let read = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                while n < buf.len() {
                    let m = sock.read(&mut buf[n..]).await?;
                    if m == 0 {
                        break;
                    }
                    n += m;
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                Ok::<_, std::io::Error>(())
            })
            .await;
            if !matches!(read, Ok(Ok(()))) {
                return;
            }
            let head = String::from_utf8_lossy(&buf[..n]);
            let mut parts = head.split_whitespace();
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            debug!(%peer, method, path, "metrics request");
            let (code, ctype, body) = match (method, path.split('?').next().unwrap_or("")) {
                ("GET", "/metrics") => (
                    200,
                    "text/plain; version=0.0.4; charset=utf-8",
                    metrics.render(),
                ),
                ("GET", "/healthz") | ("GET", "/livez") => (200, "text/plain", "ok\n".to_string()),
                ("GET", "/readyz") if metrics.ready() => (200, "text/plain", "ok\n".to_string()),
                ("GET", "/readyz") => (
                    503,
                    "text/plain",
                    "not ready: XDP responder not attached yet\n".to_string(),
                ),
                ("GET", _) => (404, "text/plain", "not found\n".to_string()),
                _ => (405, "text/plain", "method not allowed\n".to_string()),
            };
            let reason = match code {
                200 => "OK",
                404 => "Not Found",
                405 => "Method Not Allowed",
                _ => "Service Unavailable",
            };
            let resp = format!(
                "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}

/// Binds `addr` ("" = disabled).
pub async fn bind(addr: &str) -> anyhow::Result<Option<TcpListener>> {
    if addr.is_empty() {
        return Ok(None);
    }
    let sa: SocketAddr = addr
        .parse()
        .map_err(|e| anyhow::anyhow!("--metrics-addr {addr:?}: {e}; fix: give IP:PORT such as 0.0.0.0:2112, or an empty value to disable"))?;
    let l = TcpListener::bind(sa)
        .await
        .map_err(|e| anyhow::anyhow!("--metrics-addr {addr}: cannot listen: {e}"))?;
    Ok(Some(l))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_every_family_with_help_and_type() {
        let (_s_tx, s_rx) = watch::channel(Status::default());
        let (_c_tx, c_rx) =
            watch::channel(Some(Counters([3; vip_common::maps::COUNTERS_LEN as usize])));
        let (_r_tx, r_rx) = watch::channel(true);
        let m = Metrics::new(
            "cp\"1".into(),
            "skb",
            vec!["192.0.2.10".into()],
            s_rx,
            c_rx,
            r_rx,
        );
        m.add_announcements(4);
        m.add_repair(RepairKind::StaleLink);
        m.add_repair(RepairKind::StaleLink);
        assert!(!m.render().contains("vip_agent_credentials"), "no election");
        m.set_credentials(Kubeconfig::SuperAdmin);
        let text = m.render();
        assert!(text.contains("vip_agent_credentials{kubeconfig=\"super-admin\"} 1"));
        assert!(text.contains("vip_agent_credentials{kubeconfig=\"admin\"} 0"));
        m.set_credentials(Kubeconfig::Admin);
        assert!(
            m.render()
                .contains("vip_agent_credentials{kubeconfig=\"admin\"} 1")
        );
        for fam in [
            "vip_agent_leader",
            "vip_xdp_answered_total",
            "vip_xdp_passed_total",
            "vip_agent_announcements_total",
        ] {
            assert!(
                text.contains(&format!("# TYPE {fam} ")),
                "{fam} missing:\n{text}"
            );
        }
        assert!(
            text.contains("vip_agent_leader{identity=\"cp\\\"1\"} 0"),
            "{text}"
        );
        assert!(text.contains("vip_agent_announcements_total 4"));
        assert!(text.contains("vip_agent_repairs_total{kind=\"stale_link\"} 2"));
        assert!(text.contains("vip_agent_repairs_total{kind=\"xdp_detached\"} 0"));
        assert!(text.contains("vip_xdp_passed_total{reason=\"not_vip\"} 3"));
        // Every sample line: name{labels} value, value parses as a float.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let v = line.rsplit(' ').next().unwrap();
            v.parse::<f64>()
                .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        }
    }
}
