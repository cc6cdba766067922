//! `/metrics` of a live agent, in network namespaces: `vip-agent run
//! --no-election` on one end of a veth pair, scraped over HTTP inside its
//! namespace. The exposition passes `promtool check metrics`, keeps every
//! family the alerts and dashboards use, has the histograms and
//! `vip_agent_build_info`; the XDP counters are read at scrape time (an ARP
//! request sent between two scrapes shows at once); the probes, status codes
//! and bounds of the HTTP endpoint hold. Then, with the election on the
//! embedded Lease server: the leader's renew-latency and takeover histograms
//! are filled.
//!
//! Needs root (namespaces, XDP, bpffs) and promtool (Debian package
//! prometheus); skips with a reason otherwise. `VIP_METRICS_CAPTURE` and
//! `VIP_METRICS_CAPTURE_ELECTION` name files to save the last scrape of each
//! test in (the README's captures).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vip_lab::agent::{Agent, PinDirGuard};
use vip_lab::lab::{ControlPlaneKind, Implementation, Lab, LabConfig};
use vip_lab::netns::NetNs;
use vip_lab::packet_socket::{EtherType, PacketSocket, parse_arp};
use vip_lab::topology::{Endpoint, Pair};

const VIP4: [u8; 4] = [192, 0, 2, 100];
const METRICS: &str = "127.0.0.1:2112";

/// Every family exposed before the move to prometheus-client (a scrape of
/// the hand-written exposition, with the election's credentials family):
/// `# TYPE` name and type. deploy/prometheus/alerts.yaml and the dashboard
/// depend on them.
const FAMILIES_BEFORE: &[(&str, &str)] = &[
    ("vip_agent_leader", "gauge"),
    ("vip_agent_lease_holder_info", "gauge"),
    ("vip_agent_fence_remaining_seconds", "gauge"),
    ("vip_agent_healthy", "gauge"),
    ("vip_agent_lease_transitions", "gauge"),
    ("vip_agent_acquisitions_total", "counter"),
    ("vip_agent_renewals_total", "counter"),
    ("vip_agent_renew_failures_total", "counter"),
    ("vip_agent_api_requests_total", "counter"),
    ("vip_agent_watch_starts_total", "counter"),
    ("vip_agent_announcements_total", "counter"),
    ("vip_agent_repairs_total", "counter"),
    ("vip_agent_xdp_info", "gauge"),
    ("vip_agent_vip_info", "gauge"),
    ("vip_xdp_requests_total", "counter"),
    ("vip_xdp_answered_total", "counter"),
    ("vip_xdp_fenced_total", "counter"),
    ("vip_xdp_refused_total", "counter"),
    ("vip_xdp_claims_total", "counter"),
    ("vip_xdp_too_deep_total", "counter"),
    ("vip_xdp_passed_total", "counter"),
];

/// One HTTP exchange: the status code, the response head, the body. The
/// server closes the connection after one response (read to the end).
fn http(ns: &NetNs, request: &[u8]) -> (u16, String, String) {
    ns.run(|| {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut s = loop {
            match TcpStream::connect(METRICS) {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("metrics endpoint not up yet: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("metrics endpoint {METRICS}: {e}"),
            }
        };
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(request).unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)
            .expect("the server closes the connection after one response");
        let raw = String::from_utf8(raw).expect("UTF-8 response");
        let (head, body) = raw.split_once("\r\n\r\n").expect("HTTP response head");
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("status line in {head:?}"));
        (code, head.to_owned(), body.to_owned())
    })
}

fn get(ns: &NetNs, path: &str) -> (u16, String, String) {
    http(
        ns,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    )
}

fn scrape(ns: &NetNs) -> String {
    let (code, head, body) = get(ns, "/metrics");
    assert_eq!(code, 200, "{head}\n{body}");
    body
}

/// The value of the sample `series` (name with labels) in `text`.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{series} missing:\n{text}"))
}

/// `promtool check metrics` on `text`: its verdict and what it said.
fn promtool(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// `# TYPE` lines: (family, type).
fn families(text: &str) -> BTreeSet<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.strip_prefix("# TYPE ")?.split(' ');
            Some((w.next()?.to_owned(), w.next()?.to_owned()))
        })
        .collect()
}

/// Every series (name and labels, label order ignored) of `text`; the values
/// of the host-dependent labels (`identity`, `holder`) replaced by `*`.
fn series(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let series = l.rsplit_once(' ')?.0;
            let Some((name, labels)) = series.split_once('{') else {
                return Some(series.to_owned());
            };
            let mut pairs: Vec<String> = labels
                .trim_end_matches('}')
                .split(',')
                .map(|kv| match kv.split_once('=') {
                    Some((k @ ("identity" | "holder"), _)) => format!("{k}=*"),
                    _ => kv.to_owned(),
                })
                .collect();
            pairs.sort_unstable();
            Some(format!("{name}{{{}}}", pairs.join(",")))
        })
        .collect()
}

/// Sends one ARP request for the VIP and waits for the answer.
fn ask_arp(sock: &PacketSocket, me: &Endpoint) {
    let req =
        vip_common::frame::craft::arp_request(me.mac(), me.v4().unwrap().octets(), VIP4, None);
    sock.drain().unwrap();
    sock.send(&req).unwrap();
    let reply = sock
        .recv_matching(Instant::now() + Duration::from_secs(1), |f| {
            parse_arp(f).is_some_and(|a| a.op == 2 && a.sender_ip == Ipv4Addr::from(VIP4))
        })
        .unwrap();
    assert!(reply.is_some(), "the agent answers ARP for the VIP");
}

#[test]
fn live_exposition_passes_promtool_and_reads_xdp_counters_at_scrape_time() {
    vip_lab::require_root!();
    vip_lab::require_tool!("promtool", package = "prometheus");
    let pair = Pair::new().expect("veth pair");
    let (node, client) = (pair.a(), pair.b());
    let pins = PinDirGuard::new("metrics");
    let args: Vec<String> = [
        "run",
        "--interface",
        node.ifname(),
        "--address",
        "192.0.2.100",
        "--address",
        "2001:db8::100",
        "--no-election",
        "--xdp-mode",
        "skb",
        "--pin-dir",
        &pins.path().display().to_string(),
        "--renew-deadline",
        "1s",
        "--retry-period",
        "200ms",
        "--metrics-addr",
        METRICS,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let bin = Path::new(env!("CARGO_BIN_EXE_vip-agent"));
    let mut agent = Agent::spawn("metrics", node.ns(), bin, &args).expect("spawn agent");
    agent
        .wait_for_log("leading", Duration::from_secs(10))
        .expect("leading");

    let (code, head, text) = get(node.ns(), "/metrics");
    assert_eq!(code, 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "Prometheus text format 0.0.4:\n{head}"
    );
    let (ok, said) = promtool(&text);
    assert!(ok, "promtool check metrics failed:\n{said}\n{text}");
    eprintln!(
        "promtool check metrics: ok ({} lines)",
        text.lines().count()
    );

    // Every series of the hand-written exposition, scraped from it with the
    // same arguments, is still there with the same labels.
    let before = series(include_str!("fixtures/metrics-before.txt"));
    let now = series(&text);
    let missing: Vec<_> = before.difference(&now).collect();
    assert!(missing.is_empty(), "series gone: {missing:#?}\n{text}");
    // Every metric the shipped alerts use is exposed.
    let alerts = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus/alerts.yaml"),
    )
    .expect("deploy/prometheus/alerts.yaml");
    let used: BTreeSet<&str> = alerts
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("vip_"))
        .collect();
    assert!(used.len() >= 4, "alerts.yaml uses {used:?}");
    for name in used {
        assert!(
            now.iter().any(|s| s.split('{').next() == Some(name)),
            "alerts.yaml uses {name}, not exposed:\n{text}"
        );
    }
    // Names: every family of before, with its type; the new ones.
    let have = families(&text);
    for (name, kind) in FAMILIES_BEFORE {
        assert!(
            have.contains(&(name.to_string(), kind.to_string())),
            "# TYPE {name} {kind} missing:\n{text}"
        );
    }
    for (name, kind) in [
        ("vip_agent_renew_latency_seconds", "histogram"),
        ("vip_agent_takeover_seconds", "histogram"),
        ("vip_agent_build_info", "gauge"),
    ] {
        assert!(
            have.contains(&(name.to_string(), kind.to_string())),
            "# TYPE {name} {kind} missing:\n{text}"
        );
    }
    let version = format!(
        "vip_agent_build_info{{version=\"{}\",revision=\"",
        env!("CARGO_PKG_VERSION")
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with(&version) && l.ends_with("} 1")),
        "{version}...}} 1 missing:\n{text}"
    );
    for h in [
        "vip_agent_renew_latency_seconds",
        "vip_agent_takeover_seconds",
    ] {
        // No election: nothing observed, every bucket present.
        assert_eq!(sample(&text, &format!("{h}_bucket{{le=\"+Inf\"}}")), 0.0);
        assert_eq!(sample(&text, &format!("{h}_count")), 0.0);
    }
    assert_eq!(
        sample(&text, "vip_agent_xdp_info{mode=\"skb\"}"),
        1.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "vip_agent_vip_info{vip=\"192.0.2.100\"}"),
        1.0
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("vip_agent_leader{identity=") && l.ends_with("} 1")),
        "leading:\n{text}"
    );

    // The XDP counters are read when /metrics is asked: an answered request
    // shows in the very next scrape, three times in a row within well under
    // the second a refreshed copy would lag.
    let sock = client.packet_socket(EtherType::Arp).unwrap();
    let requests = "vip_xdp_requests_total{proto=\"arp\"}";
    let answered = "vip_xdp_answered_total{proto=\"arp\"}";
    let started = Instant::now();
    let mut before = scrape(node.ns());
    for _ in 0..3 {
        ask_arp(&sock, client);
        let after = scrape(node.ns());
        assert_eq!(
            sample(&after, requests),
            sample(&before, requests) + 1.0,
            "{requests}"
        );
        assert_eq!(
            sample(&after, answered),
            sample(&before, answered) + 1.0,
            "{answered}"
        );
        before = after;
    }
    eprintln!(
        "three ARP requests, each seen by the next scrape, in {:?}",
        started.elapsed()
    );
    let capture = std::env::var_os("VIP_METRICS_CAPTURE").map(PathBuf::from);
    if let Some(path) = capture {
        std::fs::write(&path, &before).expect("writing the capture");
    }

    // Routes and status codes as before.
    let (code, _, body) = get(node.ns(), "/healthz");
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    let (code, _, body) = get(node.ns(), "/livez");
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    let (code, _, body) = get(node.ns(), "/readyz");
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    let (code, _, _) = get(node.ns(), "/metrics?x=1");
    assert_eq!(code, 200, "the query is ignored");
    let (code, _, _) = get(node.ns(), "/nothing");
    assert_eq!(code, 404);
    let (code, _, _) = http(
        node.ns(),
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(code, 405);
    // Bounded: an oversized request head is refused, not buffered.
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let (code, head, _) = http(node.ns(), huge.as_bytes());
    assert_eq!(code, 431, "{head}");
    assert!(
        scrape(node.ns()).contains("vip_agent_leader"),
        "still serving"
    );

    let status = agent.stop(Duration::from_secs(5)).expect("agent exits");
    assert!(status.success(), "exit status {status}: {}", agent.tail(10));
}

/// With the election (the embedded Lease server, aggressive timers): the
/// leader's takeover was observed once and its renews keep filling the
/// renew-latency histogram.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_observes_takeover_and_renew_latency() {
    vip_lab::require_root!();
    vip_lab::require_tool!("promtool", package = "prometheus");
    let cfg = LabConfig {
        nodes: 2,
        implementation: Implementation::agent_aggressive(),
        control_plane: ControlPlaneKind::Embedded,
        ..LabConfig::default()
    };
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_vip-agent"));
    let lab = Lab::start_with_agent_bin(cfg, Some(bin))
        .await
        .expect("lab");
    let leader = lab
        .wait_for_leader(Duration::from_secs(10))
        .await
        .expect("a leader");
    let ns = lab.lan().node(leader).ns();
    let count = |text: &str, h: &str| sample(text, &format!("{h}_count"));
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = tokio::task::block_in_place(|| scrape(ns));
        if count(&text, "vip_agent_renew_latency_seconds") >= 5.0 {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than 5 renews observed in 10 s:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let renews =
        sample(&text, "vip_agent_renewals_total") + sample(&text, "vip_agent_renew_failures_total");
    let observed = count(&text, "vip_agent_renew_latency_seconds");
    assert!(
        observed >= renews,
        "every renew is observed: {observed} < {renews}\n{text}"
    );
    assert_eq!(count(&text, "vip_agent_takeover_seconds"), 1.0, "{text}");
    let takeover = sample(&text, "vip_agent_takeover_seconds_sum");
    assert!(
        takeover > 0.0 && takeover < 1.0,
        "takeover {takeover} s:\n{text}"
    );
    let renew_mean = sample(&text, "vip_agent_renew_latency_seconds_sum") / observed;
    eprintln!(
        "leader node{leader}: takeover {:.3} ms, {observed} renews, mean renew latency {:.3} ms",
        takeover * 1e3,
        renew_mean * 1e3
    );
    let (ok, said) = promtool(&text);
    assert!(ok, "promtool check metrics failed:\n{said}\n{text}");
    if let Some(path) = std::env::var_os("VIP_METRICS_CAPTURE_ELECTION") {
        std::fs::write(PathBuf::from(path), &text).expect("writing the capture");
    }
    lab.shutdown().await.expect("lab shutdown");
}
