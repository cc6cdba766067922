//! The data plane survives what happens to it, at start and at run time
//! (namespaces, root): `vip-agent run --no-election` on a veth pair, probed
//! with crafted ARP from the peer, repairs scraped from /metrics.
//!
//! - started with `ip netns exec` (private mount namespace): refused, with
//!   the fix named, nothing left behind;
//! - run time: XDP link detached (`bpftool link detach`), VIP address
//!   removed, interface down/up, interface deleted and recreated;
//! - start: a severed pinned link (interface recreated after SIGKILL), and
//!   pinned maps of another layout (plus the pinned link of a first run).
//!
//! Every wait is on an event (a log line, a metric value, a reply) with a
//! deadline. Needs root; skips with a reason otherwise.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aya::maps::{Map, MapData, MapInfo, PerCpuArray};
use vip_agent::dataplane::LINK_PIN;
use vip_common::frame::craft::arp_request;
use vip_common::maps::{COUNTERS_LEN, COUNTERS_MAP, Counter, VIPS_MAP};
use vip_lab::agent::{Agent, PinDirGuard};
use vip_lab::netns::{NetNs, run_checked};
use vip_lab::packet_socket::{self, EtherType, PacketSocket, parse_arp};
use vip_lab::topology::{Endpoint, Pair};

const VIP: &str = "192.0.2.100";
const VIP4: [u8; 4] = [192, 0, 2, 100];
const METRICS: &str = "127.0.0.1:2112";
const WAIT: Duration = Duration::from_secs(10);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_vip-agent"))
}

fn args(node: &Endpoint, pins: &PinDirGuard) -> Vec<String> {
    [
        "run",
        "--interface",
        node.ifname(),
        "--address",
        VIP,
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
    .collect()
}

fn start(name: &str, node: &Endpoint, pins: &PinDirGuard) -> Agent {
    let mut agent = Agent::spawn(name, node.ns(), bin(), &args(node, pins)).expect("spawn agent");
    agent.wait_for_log("leading", WAIT).expect("leading");
    agent
}

/// One ARP request from `sock` for the VIP; the reply's sender MAC, if any
/// arrives within `wait`.
fn ask(sock: &PacketSocket, me: Ipv4Addr, wait: Duration) -> Option<[u8; 6]> {
    let req = arp_request(sock.mac(), me.octets(), VIP4, None);
    sock.drain().unwrap();
    sock.send(&req).unwrap();
    sock.recv_matching(Instant::now() + wait, |f| {
        parse_arp(f).is_some_and(|a| a.op == 2 && a.sender_ip == Ipv4Addr::from(VIP4))
    })
    .unwrap()
    .map(|f| parse_arp(&f).unwrap().sender_mac)
}

fn xdp_answered(pins: &PinDirGuard) -> u64 {
    let md = MapData::from_pin(pins.path().join(COUNTERS_MAP)).expect("pinned COUNTERS");
    let arr: PerCpuArray<MapData, u64> =
        PerCpuArray::try_from(Map::PerCpuArray(md)).expect("per-cpu array");
    arr.get(&(Counter::ArpAnswered as u32), 0)
        .expect("counter")
        .iter()
        .sum()
}

/// The agent answers ARP for the VIP with `mac`, from XDP (its counter moves),
/// within `WAIT`.
fn answered_by_agent(sock: &PacketSocket, me: Ipv4Addr, mac: [u8; 6], pins: &PinDirGuard) {
    let deadline = Instant::now() + WAIT;
    loop {
        let before = xdp_answered(pins);
        if ask(sock, me, Duration::from_millis(200)) == Some(mac) && xdp_answered(pins) > before {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no ARP reply from the agent's XDP program with MAC {mac:02x?}"
        );
    }
}

fn scrape(ns: &NetNs) -> String {
    ns.run(|| {
        let mut s = TcpStream::connect(METRICS).expect("metrics endpoint");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body
    })
}

fn repairs(ns: &NetNs, kind: &str) -> u64 {
    let needle = format!("vip_agent_repairs_total{{kind=\"{kind}\"}} ");
    let text = scrape(ns);
    text.lines()
        .find_map(|l| l.strip_prefix(&needle))
        .unwrap_or_else(|| panic!("{needle} missing:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// Polls /metrics until the repair counter of `kind` reaches `want`.
fn await_repairs(ns: &NetNs, kind: &str, want: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let n = repairs(ns, kind);
        if n >= want {
            assert_eq!(n, want, "{kind} counted more often than expected");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{kind}: {n} repairs, want {want}"
        );
        std::thread::sleep(Duration::from_millis(100)); // poll interval
    }
}

fn bpftool_json(args: &[&str]) -> serde_json::Value {
    let out = run_checked(Command::new("bpftool").arg("-j").args(args)).expect("bpftool");
    serde_json::from_slice(&out.stdout).expect("bpftool json")
}

/// (link id, program id) of the pinned link, as bpftool shows it (its JSON
/// has no ifindex for XDP links; see [`xdp_prog`]).
fn pinned_link(pins: &PinDirGuard) -> (u64, u64) {
    let p = pins.path().join(LINK_PIN).display().to_string();
    let j = bpftool_json(&["link", "show", "pinned", &p]);
    (
        j["id"].as_u64().expect("link id"),
        j["prog_id"].as_u64().expect("prog id"),
    )
}

/// The id of the XDP program attached to the interface, as netlink shows it.
fn xdp_prog(ep: &Endpoint) -> Option<u64> {
    let link = ep.ns().link_json(ep.ifname()).unwrap();
    link["xdp"]["prog"]["id"].as_u64()
}

/// The pinned link is the one attached to the interface.
fn assert_pinned_link_on(ep: &Endpoint, pins: &PinDirGuard) {
    let (id, prog) = pinned_link(pins);
    assert_eq!(
        xdp_prog(ep),
        Some(prog),
        "pinned link {id} (program {prog}) is not the one attached to {}",
        ep.ifname()
    );
}

fn has_vip(ns: &NetNs) -> bool {
    ns.exec_ok(&["-o", "addr", "show"]).unwrap().contains(VIP)
}

/// The interface and the namespace of `node` are left clean after a stop.
fn assert_clean(node: &Endpoint, pins: &PinDirGuard) {
    let link = node.ns().link_json(node.ifname()).unwrap();
    assert!(link.get("xdp").is_none(), "XDP left attached: {link}");
    assert!(!has_vip(node.ns()), "VIP address left behind");
    assert!(
        !pins.path().exists(),
        "pins left in {}",
        pins.path().display()
    );
}

fn stop(mut agent: Agent) {
    let status = agent.stop(WAIT).expect("agent exits");
    assert!(status.success(), "exit {status}: {}", agent.tail(20));
}

/// Deletes the node's veth (both ends go) and creates it again under the
/// same names and addresses: new ifindex, new MACs.
fn recreate(node: &Endpoint, client: &Endpoint) {
    let (a, b) = (node.ifname(), client.ifname());
    node.ns().exec_ok(&["link", "del", "dev", a]).unwrap();
    node.ns()
        .exec_ok(&[
            "link",
            "add",
            a,
            "type",
            "veth",
            "peer",
            "name",
            b,
            "netns",
            client.ns().name(),
        ])
        .unwrap();
    for (ep, ifname) in [(node, a), (client, b)] {
        for addr in ep.addrs().iter().filter(|x| x.addr.is_ipv4()) {
            ep.ns()
                .exec_ok(&["addr", "add", &addr.to_string(), "dev", ifname])
                .unwrap();
        }
        ep.ns()
            .exec_ok(&["link", "set", "dev", ifname, "up"])
            .unwrap();
    }
    node.ns().wait_oper_up(a, WAIT).unwrap();
    client.ns().wait_oper_up(b, WAIT).unwrap();
}

fn mac_of(ep: &Endpoint) -> [u8; 6] {
    let ifname = ep.ifname().to_owned();
    ep.ns()
        .run(move || packet_socket::mac_address(&ifname))
        .unwrap()
}

#[test]
fn ip_netns_exec_is_refused_and_leaves_nothing() {
    vip_lab::require_root!();
    let pair = Pair::new().expect("veth pair");
    let node = pair.a();
    let pins = PinDirGuard::new("netnsexec");
    let mut child = node
        .ns()
        .command(bin())
        .args(args(node, &pins))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ip netns exec vip-agent");
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the agent did not refuse to start under ip netns exec");
        }
        std::thread::sleep(Duration::from_millis(20)); // polling a child's exit
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!status.success(), "must exit non-zero:\n{stderr}");
    for fix in ["private mount namespace", "hostPath", "nsenter --net"] {
        assert!(
            stderr.contains(fix),
            "the error must name {fix:?}:\n{stderr}"
        );
    }
    assert_clean(node, &pins);
}

#[test]
fn detached_link_is_reattached() {
    vip_lab::require_root!();
    let pair = Pair::new().expect("veth pair");
    let (node, client) = (pair.a(), pair.b());
    let pins = PinDirGuard::new("detach");
    let mut agent = start("detach", node, &pins);
    let sock = client.packet_socket(EtherType::Arp).unwrap();
    let me = client.v4().unwrap();
    answered_by_agent(&sock, me, node.mac(), &pins);
    let (old_id, _) = pinned_link(&pins);
    assert_pinned_link_on(node, &pins);

    run_checked(Command::new("bpftool").args(["link", "detach", "id", &old_id.to_string()]))
        .expect("bpftool link detach");
    let line = agent
        .wait_for_log("kind=\"xdp_detached\"", WAIT)
        .expect("repair logged");
    assert!(line.contains("detached by someone else"), "{line}");
    await_repairs(node.ns(), "xdp_detached", 1);
    answered_by_agent(&sock, me, node.mac(), &pins);
    assert_ne!(pinned_link(&pins).0, old_id, "a new link is pinned");
    assert_pinned_link_on(node, &pins);
    stop(agent);
    assert_clean(node, &pins);
}

#[test]
fn removed_address_is_added_again() {
    vip_lab::require_root!();
    let pair = Pair::new().expect("veth pair");
    let (node, client) = (pair.a(), pair.b());
    let pins = PinDirGuard::new("addr");
    let mut agent = start("addr", node, &pins);
    // Wherever the agent put it (the interface, or lo).
    let shown = node.ns().exec_ok(&["-o", "addr", "show"]).unwrap();
    let dev = shown
        .lines()
        .find(|l| l.contains(&format!("{VIP}/")))
        .and_then(|l| l.split_whitespace().nth(1))
        .expect("VIP address configured")
        .to_owned();
    node.ns()
        .exec_ok(&["addr", "del", &format!("{VIP}/32"), "dev", &dev])
        .unwrap();
    let line = agent
        .wait_for_log("kind=\"address_missing\"", WAIT)
        .expect("repair logged");
    assert!(
        line.contains(VIP) && line.contains("added it again"),
        "{line}"
    );
    await_repairs(node.ns(), "address_missing", 1);
    assert!(has_vip(node.ns()));
    let sock = client.packet_socket(EtherType::Arp).unwrap();
    answered_by_agent(&sock, client.v4().unwrap(), node.mac(), &pins);
    stop(agent);
    assert_clean(node, &pins);
}

#[test]
fn interface_down_up_keeps_the_link() {
    vip_lab::require_root!();
    let pair = Pair::new().expect("veth pair");
    let (node, client) = (pair.a(), pair.b());
    let pins = PinDirGuard::new("downup");
    let mut agent = start("downup", node, &pins);
    let (id, _) = pinned_link(&pins);
    assert_pinned_link_on(node, &pins);
    node.ns()
        .exec_ok(&["link", "set", "dev", node.ifname(), "down"])
        .unwrap();
    agent
        .wait_for_log("interface is down", WAIT)
        .expect("down noticed");
    node.ns()
        .exec_ok(&["link", "set", "dev", node.ifname(), "up"])
        .unwrap();
    node.ns().wait_oper_up(node.ifname(), WAIT).unwrap();
    agent
        .wait_for_log("interface came back up", WAIT)
        .expect("up noticed");
    let sock = client.packet_socket(EtherType::Arp).unwrap();
    answered_by_agent(&sock, client.v4().unwrap(), node.mac(), &pins);
    assert_eq!(pinned_link(&pins).0, id, "the link survives down/up");
    assert_pinned_link_on(node, &pins);
    assert_eq!(repairs(node.ns(), "xdp_detached"), 0);
    assert_eq!(repairs(node.ns(), "interface_replaced"), 0);
    assert!(has_vip(node.ns()));
    stop(agent);
    assert_clean(node, &pins);
}

#[test]
fn recreated_interface_gets_a_new_link_and_mac() {
    vip_lab::require_root!();
    let pair = Pair::new().expect("veth pair");
    let (node, client) = (pair.a(), pair.b());
    let pins = PinDirGuard::new("recreate");
    let mut agent = start("recreate", node, &pins);
    let old_mac = node.mac();
    recreate(node, client);
    let new_mac = mac_of(node);
    assert_ne!(new_mac, old_mac);
    let line = agent
        .wait_for_log("kind=\"interface_replaced\"", WAIT)
        .expect("repair logged");
    assert!(line.contains("was replaced"), "{line}");
    await_repairs(node.ns(), "interface_replaced", 1);
    let sock = client
        .ns()
        .run(|| PacketSocket::open(client.ifname(), EtherType::Arp))
        .unwrap();
    answered_by_agent(&sock, client.v4().unwrap(), new_mac, &pins);
    assert_pinned_link_on(node, &pins);
    assert!(has_vip(node.ns()));
    stop(agent);
    assert_clean(node, &pins);
}

#[test]
fn severed_pinned_link_at_start_is_replaced() {
    vip_lab::require_root!();
    let pair = Pair::new().expect("veth pair");
    let (node, client) = (pair.a(), pair.b());
    let pins = PinDirGuard::new("severed");
    let mut first = start("first", node, &pins);
    first.kill();
    let (old_id, _) = pinned_link(&pins);
    // The case: pod killed, its interface recreated, same pin dir.
    recreate(node, client);
    assert_eq!(pinned_link(&pins).0, old_id, "the old link stays pinned");
    assert_eq!(
        xdp_prog(node),
        None,
        "...but severed: nothing on the new interface"
    );
    let new_mac = mac_of(node);
    let mut second = Agent::spawn("second", node.ns(), bin(), &args(node, &pins)).unwrap();
    let line = second
        .wait_for_log("kind=\"stale_link\"", WAIT)
        .expect("stale link logged");
    assert!(
        line.contains(&format!("XDP link {old_id} severed")),
        "{line}"
    );
    second.wait_for_log("leading", WAIT).expect("leading");
    await_repairs(node.ns(), "stale_link", 1);
    let sock = client
        .ns()
        .run(|| PacketSocket::open(client.ifname(), EtherType::Arp))
        .unwrap();
    answered_by_agent(&sock, client.v4().unwrap(), new_mac, &pins);
    assert_ne!(pinned_link(&pins).0, old_id);
    assert_pinned_link_on(node, &pins);
    stop(second);
    assert_clean(node, &pins);
}

#[test]
fn pinned_maps_of_another_layout_are_replaced_without_a_gap() {
    vip_lab::require_root!();
    let pair = Pair::new().expect("veth pair");
    let (node, client) = (pair.a(), pair.b());
    let pins = PinDirGuard::new("upgrade");
    let mut first = start("first", node, &pins);
    first.kill();
    let (link_id, _) = pinned_link(&pins);
    // An "older version": COUNTERS with fewer entries, VIPS with another value size.
    let p = |n: &str| pins.path().join(n).display().to_string();
    for (name, kind, key, value, entries) in [
        (COUNTERS_MAP, "percpu_array", "4", "8", "3"),
        (VIPS_MAP, "hash", "20", "24", "64"),
    ] {
        std::fs::remove_file(p(name)).unwrap();
        run_checked(Command::new("bpftool").args([
            "map",
            "create",
            &p(name),
            "type",
            kind,
            "key",
            key,
            "value",
            value,
            "entries",
            entries,
            "name",
            name,
        ]))
        .expect("bpftool map create");
    }
    let mut second = Agent::spawn("second", node.ns(), bin(), &args(node, &pins)).unwrap();
    let line = second
        .wait_for_log("kind=\"stale_maps\"", WAIT)
        .expect("stale maps logged");
    assert!(
        line.contains("pinned maps from another version")
            && line.contains(COUNTERS_MAP)
            && line.contains(VIPS_MAP),
        "{line}"
    );
    second.wait_for_log("leading", WAIT).expect("leading");
    await_repairs(node.ns(), "stale_maps", 1);
    assert_eq!(repairs(node.ns(), "stale_link"), 0);
    // The program was swapped inside the same link: never detached.
    assert_eq!(pinned_link(&pins).0, link_id);
    assert_pinned_link_on(node, &pins);
    let counters = MapInfo::from_pin(pins.path().join(COUNTERS_MAP)).unwrap();
    assert_eq!(counters.max_entries(), COUNTERS_LEN);
    let sock = client.packet_socket(EtherType::Arp).unwrap();
    answered_by_agent(&sock, client.v4().unwrap(), node.mac(), &pins);
    stop(second);
    assert_clean(node, &pins);
}

/// A host that is not an agent claims the VIP (a gratuitous ARP and an ARP
/// reply with its own MAC) while the agent answers: the program records it,
/// the agent logs the claimant's MAC and counts it, and keeps answering.
#[test]
fn conflicting_claims_are_logged_and_counted() {
    vip_lab::require_root!();
    let pair = Pair::new().expect("veth pair");
    let (node, client) = (pair.a(), pair.b());
    let pins = PinDirGuard::new("claim");
    let mut agent = start("claim", node, &pins);
    let sock = client.packet_socket(EtherType::Arp).unwrap();
    let garp = vip_common::frame::announce::gratuitous_arp(client.mac(), VIP4);
    let mut reply = garp.clone();
    reply[21] = 2; // the same claim as an ARP reply
    sock.send(&garp).unwrap();
    sock.send(&reply).unwrap();
    let line = agent
        .wait_for_log("conflicting claim", WAIT)
        .expect("claim logged");
    let mac = packet_socket::format_mac(&client.mac());
    assert!(line.contains(&mac) && line.contains(VIP), "{line}");
    let deadline = Instant::now() + WAIT;
    loop {
        let text = scrape(node.ns());
        let n: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("vip_xdp_claims_total{proto=\"arp\"} "))
            .unwrap_or_else(|| panic!("vip_xdp_claims_total missing:\n{text}"))
            .trim()
            .parse()
            .unwrap();
        if n == 2 {
            break;
        }
        assert!(n < 2 && Instant::now() < deadline, "claims counted: {n}");
        std::thread::sleep(Duration::from_millis(100)); // poll interval
    }
    answered_by_agent(&sock, client.v4().unwrap(), node.mac(), &pins);
    stop(agent);
    assert_clean(node, &pins);
}
