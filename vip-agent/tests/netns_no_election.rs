//! End to end, in network namespaces: `vip-agent run --no-election` in one
//! namespace, ARP requests and neighbour solicitations crafted by the test
//! sent from a peer namespace over a veth pair, replies checked field by
//! field; the fence holds when the agent is frozen; a stopped agent leaves
//! nothing behind. Native and skb XDP modes.
//!
//! Needs root (namespaces, XDP, bpffs); skips with a reason otherwise.

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use aya::maps::{Map, MapData, PerCpuArray};
use nix::sys::signal::Signal;
use vip_agent::dataplane::{LINK_PIN, OBJECT};
use vip_common::checksum::nd_checksum_ok;
use vip_common::frame::craft::{arp_request, neighbour_solicitation};
use vip_common::headers::{NdMsg, NdOpt};
use vip_common::maps::{COUNTERS_LEN, COUNTERS_MAP, Counter, VIPS_MAP};
use vip_lab::agent::{Agent, PinDirGuard, attach_pass_program};
use vip_lab::packet_socket::{EtherType, PacketSocket, parse_arp};
use vip_lab::topology::{Endpoint, Pair};

const VIP4: [u8; 4] = [192, 0, 2, 100];
const VIP6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00,
];
const RENEW_DEADLINE: Duration = Duration::from_millis(1000);

fn counters(pin_dir: &Path) -> [u64; COUNTERS_LEN as usize] {
    let md = MapData::from_pin(pin_dir.join(COUNTERS_MAP)).expect("pinned COUNTERS map");
    let arr: PerCpuArray<MapData, u64> =
        PerCpuArray::try_from(Map::PerCpuArray(md)).expect("per-cpu array");
    let mut v = [0u64; COUNTERS_LEN as usize];
    for (i, c) in v.iter_mut().enumerate() {
        *c = arr.get(&(i as u32), 0).expect("counter").iter().sum();
    }
    v
}

/// Sends an ARP request for the VIP and returns the replies seen within `wait`.
fn ask_arp(sock: &PacketSocket, me: &Endpoint, wait: Duration) -> Vec<Vec<u8>> {
    let req = arp_request(me.mac(), me.v4().unwrap().octets(), VIP4, None);
    sock.drain().unwrap();
    sock.send(&req).unwrap();
    let deadline = Instant::now() + wait;
    let mut replies = Vec::new();
    while let Some(f) = sock
        .recv_matching(deadline, |f| {
            parse_arp(f).is_some_and(|a| a.op == 2 && a.sender_ip == std::net::Ipv4Addr::from(VIP4))
        })
        .unwrap()
    {
        replies.push(f);
    }
    replies
}

fn ask_ns(sock: &PacketSocket, me: &Endpoint, wait: Duration) -> Option<Vec<u8>> {
    let req = neighbour_solicitation(me.mac(), me.v6().unwrap().octets(), VIP6, true, false, None);
    sock.drain().unwrap();
    sock.send(&req).unwrap();
    sock.recv_matching(Instant::now() + wait, |f| {
        f.len() >= 86 && f[12..14] == [0x86, 0xdd] && f[54] == 136 && f[62..78] == VIP6
    })
    .unwrap()
}

/// Whether the VIP is configured anywhere in the node's namespace (the
/// agent puts it on lo; older agents put it on the interface).
fn has_address(ep: &Endpoint, ip: &str) -> bool {
    ep.ns()
        .exec_ok(&["-o", "addr", "show"])
        .unwrap()
        .contains(&format!(" {ip}/"))
}

fn has_xdp(ep: &Endpoint) -> bool {
    let j = ep.ns().link_json(ep.ifname()).unwrap();
    j.get("xdp").is_some()
}

fn scenario(mode: &str) {
    vip_lab::require_root!();
    let pair = Pair::new().expect("veth pair");
    let (node, client) = (pair.a(), pair.b());
    // Native XDP_TX on a veth needs a program on the peer (platform notes).
    let _peer_prog = (mode == "native").then(|| {
        attach_pass_program(client.ns(), client.ifindex(), OBJECT)
            .expect("native XDP on the peer veth")
    });
    let pins = PinDirGuard::new(&format!("noel-{mode}"));
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
        mode,
        "--pin-dir",
        &pins.path().display().to_string(),
        "--renew-deadline",
        "1s",
        "--retry-period",
        "200ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut agent = Agent::spawn(
        &format!("agent-{mode}"),
        node.ns(),
        Path::new(env!("CARGO_BIN_EXE_vip-agent")),
        &args,
    )
    .expect("spawn agent");
    let attached = agent
        .wait_for_log("XDP responder attached", Duration::from_secs(10))
        .expect("attached");
    assert!(attached.contains(&format!("mode=\"{mode}\"")), "{attached}");
    agent
        .wait_for_log("leading", Duration::from_secs(5))
        .expect("leading");

    let arp_sock = client.packet_socket(EtherType::Arp).unwrap();
    let v6_sock = client.packet_socket(EtherType::Ipv6).unwrap();
    let before = counters(pins.path());

    // ARP: exactly one reply (XDP answered; the kernel never saw the request).
    let replies = ask_arp(&arp_sock, client, Duration::from_millis(300));
    assert_eq!(
        replies.len(),
        1,
        "one ARP reply expected, got {}",
        replies.len()
    );
    let a = parse_arp(&replies[0]).unwrap();
    assert_eq!(a.op, 2);
    assert_eq!(a.eth_src, node.mac(), "Ethernet source = the node's MAC");
    assert_eq!(a.eth_dst, client.mac());
    assert_eq!(a.sender_mac, node.mac());
    assert_eq!(IpAddr::from(a.sender_ip), IpAddr::from(VIP4));
    assert_eq!(a.target_mac, client.mac());
    assert_eq!(
        IpAddr::from(a.target_ip),
        IpAddr::from(client.v4().unwrap())
    );

    // NS -> solicited NA with TLLA, hop limit 255, valid checksum.
    let na = ask_ns(&v6_sock, client, Duration::from_millis(500)).expect("neighbour advertisement");
    assert_eq!(&na[0..6], &client.mac());
    assert_eq!(&na[6..12], &node.mac());
    assert_eq!(na[21], 255, "hop limit");
    assert_eq!(&na[22..38], &VIP6, "source = VIP");
    assert_eq!(&na[38..54], &client.v6().unwrap().octets());
    assert_eq!(na[58], 0x60, "Solicited and Override set");
    assert_eq!(&na[78..80], &[2, 1], "target link-layer address option");
    assert_eq!(&na[80..86], &node.mac());
    let msg: NdMsg = read_struct(&na[54..78]);
    let opt: NdOpt = read_struct(&na[78..86]);
    let src: [u8; 16] = na[22..38].try_into().unwrap();
    let dst: [u8; 16] = na[38..54].try_into().unwrap();
    assert!(
        nd_checksum_ok(&src, &dst, &msg, Some(&opt)),
        "ICMPv6 checksum"
    );

    let after = counters(pins.path());
    assert!(after[Counter::ArpAnswered as usize] > before[Counter::ArpAnswered as usize]);
    assert!(after[Counter::NsAnswered as usize] > before[Counter::NsAnswered as usize]);

    // Frozen agent: silent once its deadline passes, address still configured.
    agent.signal(Signal::SIGSTOP).unwrap();
    let frozen_at = Instant::now();
    let mut silent_after = None;
    while frozen_at.elapsed() < RENEW_DEADLINE * 3 {
        if ask_arp(&arp_sock, client, Duration::from_millis(50)).is_empty() {
            silent_after = Some(frozen_at.elapsed());
            break;
        }
    }
    let silent_after = silent_after.expect("frozen agent must fall silent");
    assert!(
        silent_after <= RENEW_DEADLINE + Duration::from_millis(300),
        "silent after {silent_after:?}"
    );
    assert!(
        has_address(node, "192.0.2.100"),
        "address still configured while frozen"
    );
    for _ in 0..3 {
        assert!(
            ask_arp(&arp_sock, client, Duration::from_millis(100)).is_empty(),
            "fenced: neither XDP nor the kernel answers"
        );
    }
    assert!(
        ask_ns(&v6_sock, client, Duration::from_millis(200)).is_none(),
        "fenced NS"
    );
    let fenced = counters(pins.path());
    assert!(fenced[Counter::ArpFenced as usize] >= 3);
    eprintln!(
        "{mode}: frozen agent fell silent {silent_after:?} after SIGSTOP (renew deadline {RENEW_DEADLINE:?})"
    );

    // Thawed: answers again once it renews.
    agent.signal(Signal::SIGCONT).unwrap();
    let thawed = Instant::now();
    while ask_arp(&arp_sock, client, Duration::from_millis(50)).is_empty() {
        assert!(
            thawed.elapsed() < Duration::from_secs(3),
            "thawed agent must answer again"
        );
    }

    // Graceful stop: no reply, no address, no XDP program, no pins.
    let status = agent.stop(Duration::from_secs(5)).expect("agent exits");
    assert!(status.success(), "exit status {status}: {}", agent.tail(10));
    assert!(
        ask_arp(&arp_sock, client, Duration::from_millis(300)).is_empty(),
        "nothing answers after stop"
    );
    assert!(ask_ns(&v6_sock, client, Duration::from_millis(300)).is_none());
    assert!(!has_address(node, "192.0.2.100"));
    assert!(!has_address(node, "2001:db8::100"));
    assert!(!has_xdp(node), "XDP program left attached");
    assert!(
        !pins.path().exists(),
        "pins left behind in {}",
        pins.path().display()
    );
}

/// Copies a byte struct out of a slice of exactly its size.
fn read_struct<T: Copy>(bytes: &[u8]) -> T {
    use vip_common::Packet;
    vip_common::frame::Frame::new(bytes.to_vec())
        .load::<T>(0)
        .expect("size")
}

#[test]
fn no_election_skb_mode() {
    scenario("skb");
}

#[test]
fn no_election_native_mode() {
    scenario("native");
}

/// SIGKILL leaves the pinned fence behind: the program stays attached and
/// falls silent at its deadline although the address is still configured (the
/// kernel does not answer either). A restarted agent adopts the pins, removes
/// the stale address before it competes, and serves again.
#[test]
fn crash_leaves_the_fence_and_a_restart_adopts_it() {
    vip_lab::require_root!();
    let pair = Pair::new().expect("veth pair");
    let (node, client) = (pair.a(), pair.b());
    let pins = PinDirGuard::new("adopt");
    let args: Vec<String> = [
        "run",
        "--interface",
        node.ifname(),
        "--address",
        "192.0.2.100",
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
        "",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let bin = Path::new(env!("CARGO_BIN_EXE_vip-agent"));
    let mut first = Agent::spawn("first", node.ns(), bin, &args).expect("spawn");
    first
        .wait_for_log("leading", Duration::from_secs(10))
        .expect("leading");
    let sock = client.packet_socket(EtherType::Arp).unwrap();
    assert_eq!(ask_arp(&sock, client, Duration::from_millis(300)).len(), 1);

    first.kill();
    let killed = Instant::now();
    assert!(
        has_xdp(node),
        "the pinned link keeps the program attached after SIGKILL"
    );
    assert!(
        has_address(node, "192.0.2.100"),
        "a killed agent cannot remove its address"
    );
    assert!(pins.path().join(LINK_PIN).exists() && pins.path().join(VIPS_MAP).exists());
    let mut silent_after = None;
    while killed.elapsed() < Duration::from_secs(3) {
        if ask_arp(&sock, client, Duration::from_millis(50)).is_empty() {
            silent_after = Some(killed.elapsed());
            break;
        }
    }
    let silent_after = silent_after.expect("the fence expires by itself");
    assert!(
        silent_after <= Duration::from_millis(1300),
        "{silent_after:?}"
    );
    for _ in 0..3 {
        assert!(
            ask_arp(&sock, client, Duration::from_millis(100)).is_empty(),
            "stale address must stay silent"
        );
    }
    eprintln!(
        "killed agent's fence fell silent {silent_after:?} after SIGKILL (renew deadline 1s)"
    );

    let mut second = Agent::spawn("second", node.ns(), bin, &args).expect("respawn");
    second
        .wait_for_log("leading", Duration::from_secs(10))
        .expect("leading again");
    let log = second.log();
    let pos = |needle: &str| log.iter().position(|l| l.contains(needle));
    let adopted = pos("adopted").expect("adoption logged");
    let removed = pos("removed a stale VIP address").expect("stale address removal logged");
    let leading = pos("leading").unwrap();
    assert!(
        adopted < removed && removed < leading,
        "order: adopt, remove stale address, then lead:\n{}",
        log.join("\n")
    );
    assert_eq!(
        ask_arp(&sock, client, Duration::from_millis(300)).len(),
        1,
        "serves again"
    );
    assert!(second.stop(Duration::from_secs(5)).unwrap().success());
    assert!(!has_xdp(node) && !has_address(node, "192.0.2.100") && !pins.path().exists());
}
