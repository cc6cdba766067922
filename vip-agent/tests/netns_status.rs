//! `vip-agent status` against a real agent: `run --no-election` in a network
//! namespace (default pin directory), ARP requests from a peer namespace, then
//! `status` in the node's namespace, as text and as JSON: answering, fence
//! left, XDP mode, counters, the Lease holder unknown (no API). After SIGTERM
//! (pins removed) `status` fails naming the fix. Native mode and SIGKILL:
//! the lapsed fence is reported, and reading changes nothing.
//!
//! Needs root (namespaces, XDP, bpffs); skips with a reason otherwise.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use vip_agent::dataplane::OBJECT;
use vip_common::frame::craft::arp_request;
use vip_lab::agent::{Agent, PinDirGuard, attach_pass_program};
use vip_lab::netns::NetNs;
use vip_lab::packet_socket::{EtherType, parse_arp};
use vip_lab::topology::Pair;

const VIP4: [u8; 4] = [192, 0, 2, 100];
const BIN: &str = env!("CARGO_BIN_EXE_vip-agent");

/// `vip-agent status` in `ns`'s network namespace only, like the agent
/// (`ip netns exec` would remount /sys, without bpffs).
fn status(ns: &NetNs, ifname: &str, extra: &[&str]) -> Output {
    std::process::Command::new("nsenter")
        .arg(format!("--net={}", ns.path().display()))
        .args(["--", BIN, "status", "--interface", ifname])
        .args(["--kubeconfig", "/nonexistent/vip-agent-status.conf"])
        .args(extra)
        .output()
        .expect("run vip-agent status")
}

fn stdout_ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "status failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout.clone()).expect("utf-8")
}

/// The agent's default pin directory in `ns` (what `status` finds by itself).
fn default_pin_dir(ns: &NetNs, ifname: &str) -> PathBuf {
    let ino = std::fs::metadata(ns.path()).expect("netns file").ino();
    Path::new("/sys/fs/bpf/vip-agent").join(format!("netns{ino}-{ifname}"))
}

#[test]
fn status_reports_answering_fence_mode_counters_then_nothing_pinned() {
    vip_lab::require_root!();
    let pair = Pair::new().expect("veth pair");
    let (node, client) = (pair.a(), pair.b());
    // Removes the default pin directory if the test fails before SIGTERM.
    let _pins = PinDirGuard(default_pin_dir(node.ns(), node.ifname()));
    let args: Vec<String> = [
        "run",
        "--interface",
        node.ifname(),
        "--address",
        "192.0.2.100",
        "--no-election",
        "--xdp-mode",
        "skb",
        "--renew-deadline",
        "2s",
        "--retry-period",
        "200ms",
        "--metrics-addr",
        "",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut agent = Agent::spawn("status", node.ns(), Path::new(BIN), &args).expect("spawn agent");
    agent
        .wait_for_log("leading", Duration::from_secs(10))
        .expect("leading");

    // Three answered requests, so the counters have something to show.
    let sock = client.packet_socket(EtherType::Arp).unwrap();
    for _ in 0..3 {
        let req = arp_request(client.mac(), client.v4().unwrap().octets(), VIP4, None);
        sock.drain().unwrap();
        sock.send(&req).unwrap();
        let reply = sock
            .recv_matching(Instant::now() + Duration::from_secs(1), |f| {
                parse_arp(f).is_some_and(|a| a.op == 2)
            })
            .unwrap();
        assert!(reply.is_some(), "the agent answers");
    }

    let text = stdout_ok(&status(node.ns(), node.ifname(), &[]));
    eprintln!("--- status (text) ---\n{text}");
    let vip_line = text
        .lines()
        .find(|l| l.contains("192.0.2.100"))
        .unwrap_or_else(|| panic!("a line for the VIP:\n{text}"));
    assert!(vip_line.contains("ANSWERING"), "{text}");
    let left: f64 = vip_line
        .split("fence ")
        .nth(1)
        .and_then(|r| r.split('s').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("fence left in {vip_line:?}"));
    assert!(
        left > 0.0 && left <= 2.0,
        "fence left {left}s, renew deadline 2s"
    );
    assert!(text.contains("mode skb"), "{text}");
    assert!(text.contains("arp: requests 3 answered 3"), "{text}");
    assert!(
        text.contains("holder unknown (API: cannot read kubeconfig /nonexistent/"),
        "{text}"
    );

    let out = status(node.ns(), node.ifname(), &["--output", "json"]);
    let json: serde_json::Value = serde_json::from_str(&stdout_ok(&out)).expect("JSON");
    eprintln!("--- status (json) ---\n{json:#}");
    let vips = json["vips"].as_array().expect("vips");
    assert_eq!(vips.len(), 1, "{json:#}");
    assert_eq!(vips[0]["address"], "192.0.2.100");
    assert_eq!(vips[0]["answering"], true);
    let left_ms = vips[0]["fence_left_ms"].as_u64().expect("fence_left_ms");
    assert!(left_ms > 0 && left_ms <= 2000, "{left_ms}");
    assert_eq!(json["xdp"]["mode"], "skb");
    assert!(json["xdp"]["link_id"].as_u64().is_some());
    assert_eq!(json["counters"]["arp_requests"], 3);
    assert_eq!(json["counters"]["arp_answered"], 3);
    assert_eq!(json["lease"]["holder"], serde_json::Value::Null);
    assert!(
        json["lease"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("kubeconfig")),
        "{json:#}"
    );
    // Read-only: the agent still answers (nothing was fenced or unpinned).
    assert!(
        default_pin_dir(node.ns(), node.ifname())
            .join("link")
            .exists()
    );

    assert!(agent.stop(Duration::from_secs(5)).unwrap().success());
    let out = status(node.ns(), node.ifname(), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("--- status after SIGTERM ---\n{err}");
    assert!(!out.status.success(), "fails when nothing is pinned");
    assert!(err.contains("nothing pinned at"), "{err}");
    assert!(err.contains(&format!("no vip-agent runs on interface {}", node.ifname())));
    assert!(err.contains("Fix: start the agent"), "{err}");
    assert!(err.contains("--pin-dir"), "{err}");
}

/// Native XDP, then SIGKILL: the pins stay (the fence outlives the agent);
/// `status` reports the mode from the kernel, then the lapsed fence once the
/// deadline passes, and reading changes nothing (the same entry twice).
#[test]
fn status_after_a_crash_reports_the_lapsed_fence_read_only() {
    vip_lab::require_root!();
    let pair = Pair::new().expect("veth pair");
    let (node, client) = (pair.a(), pair.b());
    // Native XDP_TX on a veth needs a program on the peer (platform notes).
    let _peer_prog = attach_pass_program(client.ns(), client.ifindex(), OBJECT)
        .expect("native XDP on the peer veth");
    let pins = PinDirGuard::new("status-crash");
    let pin_dir = pins.path().display().to_string();
    let args: Vec<String> = [
        "run",
        "--interface",
        node.ifname(),
        "--address",
        "192.0.2.100",
        "--no-election",
        "--xdp-mode",
        "native",
        "--pin-dir",
        &pin_dir,
        "--renew-deadline",
        "1s",
        "--retry-period",
        "200ms",
        "--metrics-addr",
        "",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut agent = Agent::spawn("status-crash", node.ns(), Path::new(BIN), &args).expect("spawn");
    agent
        .wait_for_log("leading", Duration::from_secs(10))
        .expect("leading");
    let with_pins = |extra: &[&str]| {
        let mut a = vec!["--pin-dir", pin_dir.as_str()];
        a.extend_from_slice(extra);
        status(node.ns(), node.ifname(), &a)
    };
    let text = stdout_ok(&with_pins(&[]));
    assert!(
        text.contains("mode native") && text.contains("ANSWERING"),
        "{text}"
    );

    agent.kill();
    let killed = Instant::now();
    // The fence lapses by itself within the renew deadline.
    let lapsed = loop {
        let out = stdout_ok(&with_pins(&["--output", "json"]));
        let json: serde_json::Value = serde_json::from_str(&out).expect("JSON");
        if json["vips"][0]["answering"] == false {
            break json;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(3),
            "still answering 3 s after SIGKILL (renew deadline 1 s):\n{json:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!(
        "fence lapsed {:?} after SIGKILL:\n{lapsed:#}",
        killed.elapsed()
    );
    assert_eq!(lapsed["vips"][0]["active"], true);
    assert_eq!(lapsed["vips"][0]["fence_left_ms"], 0);
    assert_eq!(
        lapsed["xdp"]["mode"], "native",
        "the pinned link stays attached"
    );
    let text = stdout_ok(&with_pins(&[]));
    assert!(text.contains("fenced (deadline passed"), "{text}");
    // Read-only: nobody writes the map any more, so two reads agree.
    let again: serde_json::Value =
        serde_json::from_str(&stdout_ok(&with_pins(&["--output", "json"]))).expect("JSON");
    assert_eq!(again["vips"], lapsed["vips"]);
    assert_eq!(again["counters"], lapsed["counters"]);
    assert!(pins.path().join("link").exists() && pins.path().join("VIPS").exists());
}
