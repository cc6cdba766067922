//! Namespace topologies and raw packet I/O. Every test needs root and skips
//! (with the reason printed) otherwise.

use std::net::Ipv4Addr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::Command;
use std::time::{Duration, Instant};

use vip_common::frame::craft::arp_request;
use vip_lab::netns::{self, NetNs, cleanup_stale};
use vip_lab::packet_socket::{ArpPacket, EtherType, PacketSocket, parse_arp};
use vip_lab::topology::{Endpoint, Lan, Pair};

/// How long to wait for an answer that should come.
const ANSWER: Duration = Duration::from_secs(2);
/// How long to wait to conclude that no answer comes.
const SILENCE: Duration = Duration::from_millis(300);

fn ip_stdout(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn netns_listed(name: &str) -> bool {
    ip_stdout(&["netns", "list"])
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

fn assert_gone(names: &[String], interfaces: &[&str]) {
    for name in names {
        assert!(!netns_listed(name), "namespace {name} left behind");
        assert!(
            !std::path::Path::new("/run/netns").join(name).exists(),
            "/run/netns/{name} left behind"
        );
        assert!(
            !netns::registered_namespaces().contains(name),
            "{name} still registered"
        );
    }
    // Nothing of ours ever lived in the root namespace.
    let root_links = ip_stdout(&["-o", "link", "show"]);
    let prefix = format!("vl{}-", std::process::id());
    for line in root_links.lines() {
        let ifname = line.split(": ").nth(1).unwrap_or("");
        assert!(
            !ifname.starts_with(&prefix),
            "root link {ifname} left behind"
        );
        for i in interfaces {
            assert!(
                ifname.split('@').next() != Some(i),
                "root link {ifname} appeared"
            );
        }
    }
}

/// Send an ARP request for `target` from `from` and wait for the reply from
/// `target`, returning it parsed.
fn arp_probe(
    from: &Endpoint,
    sock: &PacketSocket,
    target: Ipv4Addr,
    wait: Duration,
) -> Option<ArpPacket> {
    let spa = from.v4().expect("sender has IPv4").octets();
    sock.drain().expect("drain");
    sock.send(&arp_request(from.mac(), spa, target.octets(), None))
        .expect("send ARP");
    let frame = sock
        .recv_matching(Instant::now() + wait, |f| {
            parse_arp(f).is_some_and(|a| a.op == 2 && a.sender_ip == target)
        })
        .expect("recv");
    frame.map(|f| parse_arp(&f).expect("parsed above"))
}

fn assert_reply(reply: &ArpPacket, asker: &Endpoint, answerer: &Endpoint) {
    assert_eq!(reply.op, 2, "op");
    assert_eq!(reply.sender_mac, answerer.mac(), "sender MAC");
    assert_eq!(reply.eth_src, answerer.mac(), "Ethernet source");
    assert_eq!(Some(reply.sender_ip), answerer.v4(), "sender IP");
    assert_eq!(reply.target_mac, asker.mac(), "target MAC");
    assert_eq!(Some(reply.target_ip), asker.v4(), "target IP");
    assert_eq!(reply.eth_dst, asker.mac(), "Ethernet destination");
}

#[test]
fn pair_builds_and_is_removed() {
    vip_lab::require_root!();
    let pair = Pair::new().expect("pair");
    let names = pair.namespace_names().to_vec();
    for n in &names {
        assert!(netns_listed(n), "{n} missing");
    }
    for side in [pair.a(), pair.b()] {
        let link = side.ns().link_json(side.ifname()).expect("link");
        assert_eq!(link["operstate"], "UP");
        assert_eq!(link["ifindex"].as_u64(), Some(u64::from(side.ifindex())));
        let mac = vip_lab::packet_socket::format_mac(&side.mac());
        assert_eq!(link["address"], mac.as_str());
        let addrs = side
            .ns()
            .exec_ok(&["-o", "addr", "show", "dev", side.ifname()])
            .expect("addr");
        for a in side.addrs() {
            assert!(addrs.contains(&a.to_string()), "{a} missing in {addrs}");
        }
        assert!(!addrs.contains("tentative"), "nodad not applied: {addrs}");
    }
    assert_eq!(pair.a().v4(), Some(Ipv4Addr::new(192, 0, 2, 1)));
    assert_eq!(
        pair.b().v6().map(|a| a.to_string()).as_deref(),
        Some("2001:db8::2")
    );
    drop(pair);
    assert_gone(&names, &["va0", "vb0"]);
}

#[test]
fn pair_is_removed_when_the_body_panics() {
    vip_lab::require_root!();
    let mut names = Vec::new();
    let result = catch_unwind(AssertUnwindSafe(|| {
        let pair = Pair::new().expect("pair");
        names.extend(pair.namespace_names());
        panic!("deliberate panic inside the test body");
    }));
    assert!(result.is_err(), "the body should have panicked");
    assert_eq!(names.len(), 2);
    assert_gone(&names, &["va0", "vb0"]);
}

#[test]
fn netns_run_enters_the_namespace() {
    vip_lab::require_root!();
    let pair = Pair::new().expect("pair");
    let ino = |p: &str| {
        std::fs::metadata(p)
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .expect("stat")
    };
    let outside = ino("/proc/thread-self/ns/net");
    let inside = pair.a().ns().run(|| ino("/proc/thread-self/ns/net"));
    assert_ne!(outside, inside);
    assert_eq!(inside, ino(&pair.a().ns().path().to_string_lossy()));
    // A command started through the namespace sees its interface.
    let out = pair
        .b()
        .ns()
        .command("ip")
        .args(["-o", "link"])
        .output()
        .expect("ip");
    assert!(String::from_utf8_lossy(&out.stdout).contains("vb0"));
    // Errors carry the command and stderr.
    let err = pair
        .a()
        .ns()
        .exec_ok(&["link", "show", "dev", "nosuchif"])
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("nosuchif") && msg.contains("does not exist"),
        "{msg}"
    );
}

#[test]
fn kernel_of_the_peer_answers_a_crafted_arp_request() {
    vip_lab::require_root!();
    let pair = Pair::new().expect("pair");
    let (a, b) = (pair.a(), pair.b());
    let sock = a.packet_socket(EtherType::Arp).expect("socket");
    assert_eq!(sock.ifindex(), a.ifindex());
    assert_eq!(sock.mac(), a.mac());
    let target = b.v4().expect("b has IPv4");
    let reply = arp_probe(a, &sock, target, ANSWER).expect("no ARP reply from the peer's kernel");
    assert_reply(&reply, a, b);
    // An address nobody has gets no answer.
    assert!(arp_probe(a, &sock, Ipv4Addr::new(192, 0, 2, 99), SILENCE).is_none());
}

#[test]
fn ignore_outgoing_hides_own_frames() {
    vip_lab::require_root!();
    let pair = Pair::new().expect("pair");
    let a = pair.a();
    let open = |ignore_outgoing| {
        let opts = vip_lab::packet_socket::Options {
            ethertype: EtherType::All,
            ignore_outgoing,
            promiscuous: false,
        };
        a.ns()
            .run(|| PacketSocket::open_with(a.ifname(), opts))
            .expect("socket")
    };
    let quiet = open(true);
    let tap = open(false);
    quiet.drain().expect("drain");
    tap.drain().expect("drain");
    // An ARP request for an address nobody has: the only frame is ours.
    let frame = arp_request(a.mac(), [192, 0, 2, 1], [192, 0, 2, 98], None);
    quiet.send(&frame).expect("send");
    let mine = |f: &[u8]| f == frame.as_slice();
    assert!(
        tap.recv_matching(Instant::now() + ANSWER, mine)
            .expect("recv")
            .is_some(),
        "tap misses outgoing"
    );
    assert!(
        quiet
            .recv_matching(Instant::now() + SILENCE, mine)
            .expect("recv")
            .is_none(),
        "own frame seen"
    );
}

#[test]
fn lan_nodes_answer_and_a_cut_link_silences_one() {
    vip_lab::require_root!();
    let lan = Lan::new(3).expect("lan");
    assert_eq!(lan.len(), 3);
    let client = lan.client();
    let sock = client.packet_socket(EtherType::Arp).expect("socket");

    for (i, node) in lan.nodes().enumerate() {
        let target = node.v4().expect("node IPv4");
        let reply =
            arp_probe(client, &sock, target, ANSWER).unwrap_or_else(|| panic!("node {i} silent"));
        assert_reply(&reply, client, node);
        let (sw, port) = lan.node_port(i);
        assert_eq!(sw.name(), lan.switch().name());
        assert!(sw.link_json(port).is_ok());
    }

    let victim = 1;
    lan.cut(victim).expect("cut");
    let target = lan.node(victim).v4().expect("IPv4");
    assert!(
        arp_probe(client, &sock, target, SILENCE).is_none(),
        "cut node still answers"
    );
    // The others are unaffected.
    for i in [0, 2] {
        let t = lan.node(i).v4().expect("IPv4");
        assert!(
            arp_probe(client, &sock, t, ANSWER).is_some(),
            "node {i} silent after cutting {victim}"
        );
    }

    lan.restore(victim).expect("restore");
    let reply = arp_probe(client, &sock, target, ANSWER).expect("restored node silent");
    assert_reply(&reply, client, lan.node(victim));

    // The switch has IPv6 off (no link-local noise), the hosts have it on.
    let sysctl = |ns: &NetNs| {
        let out = ns
            .command("sysctl")
            .args(["-n", "net.ipv6.conf.all.disable_ipv6"])
            .output();
        String::from_utf8_lossy(&out.expect("sysctl").stdout)
            .trim()
            .to_owned()
    };
    assert_eq!(sysctl(lan.switch()), "1");
    assert_eq!(sysctl(lan.node(0).ns()), "0");

    let names = lan.namespace_names();
    assert_eq!(names.len(), 5);
    drop(sock);
    drop(lan);
    assert_gone(&names, &["br0", "n0", "n1", "n2", "cl"]);
}

#[test]
fn cleanup_stale_removes_leftovers_of_dead_pids() {
    vip_lab::require_root!();
    // Above the kernel's largest possible pid_max (2^22), so never alive.
    let dead_pid = 4_194_304 + 12_345;
    let stale = format!("vl{dead_pid}-0-stale");
    let stale_link = format!("vl{dead_pid}-r"); // 11 bytes: a valid ifname
    let _ = Command::new("ip")
        .args(["netns", "delete", &stale])
        .output();
    ip_stdout(&["netns", "add", &stale]);
    // A leftover veth inside, and one whose end sits in the root namespace
    // (down, no address: it carries no traffic). Its peer lives in the stale
    // namespace, so deleting that namespace removes it in any case.
    ip_stdout(&[
        "-n", &stale, "link", "add", "x0", "type", "veth", "peer", "name", "x1",
    ]);
    ip_stdout(&[
        "-n",
        &stale,
        "link",
        "add",
        "x2",
        "type",
        "veth",
        "peer",
        "name",
        &stale_link,
        "netns",
        "1",
    ]);
    let mine = NetNs::new("live").expect("own namespace");

    let report = cleanup_stale();
    let leftover = netns_listed(&stale);
    if leftover {
        let _ = Command::new("ip")
            .args(["netns", "delete", &stale])
            .output();
    }
    let report = report.expect("cleanup_stale");
    assert!(!leftover, "stale namespace survived");
    assert!(report.namespaces.contains(&stale), "{report:?}");
    assert!(report.root_links.contains(&stale_link), "{report:?}");
    assert!(
        !ip_stdout(&["-o", "link", "show"]).contains(&stale_link),
        "stale root link survived"
    );
    assert!(
        netns_listed(mine.name()),
        "cleanup_stale removed a live namespace"
    );
    assert!(!report.namespaces.iter().any(|n| n == mine.name()));
}

const SIGNAL_CHILD_ENV: &str = "VIP_LAB_SIGNAL_CHILD";

/// Child half of `sigterm_tears_everything_down`: does nothing unless started
/// by it. Builds a Pair, prints its namespace names, then waits (bounded) for
/// the signal.
#[test]
fn signal_child_helper() {
    if std::env::var_os(SIGNAL_CHILD_ENV).is_none() {
        return;
    }
    netns::install_signal_cleanup().expect("install handler");
    let pair = Pair::new().expect("pair");
    let [a, b] = pair.namespace_names();
    println!("NAMES {a} {b}");
    std::io::Write::flush(&mut std::io::stdout()).expect("flush");
    // The parent kills us long before this bound; `forget` keeps the drops
    // from cleaning up, so only the signal handler can have done it.
    std::mem::forget(pair);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        std::thread::park_timeout(Duration::from_millis(100));
    }
}

#[test]
fn sigterm_tears_everything_down() {
    use std::io::BufRead;
    vip_lab::require_root!();
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "signal_child_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(SIGNAL_CHILD_ENV, "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("stdout");
    let mut names = Vec::new();
    // Bounded: the child prints one NAMES line or exits (EOF).
    for line in std::io::BufReader::new(stdout).lines().take(100) {
        let line = line.expect("read");
        // libtest may print "test signal_child_helper ... " on the same line.
        if let Some((_, rest)) = line.split_once("NAMES ") {
            names = rest.split_whitespace().map(str::to_owned).collect();
            break;
        }
    }
    let created: Vec<bool> = names.iter().map(|n| netns_listed(n)).collect();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("kill");
    let status = child.wait().expect("wait");
    // Whatever happened, do not leave the child's namespaces behind.
    let survivors: Vec<&String> = names.iter().filter(|n| netns_listed(n)).collect();
    for n in &survivors {
        let _ = Command::new("ip").args(["netns", "delete", n]).output();
    }
    assert_eq!(names.len(), 2, "child printed no names");
    assert_eq!(created, [true, true], "child namespaces were not there");
    assert!(survivors.is_empty(), "SIGTERM left {survivors:?} behind");
    assert!(!status.success(), "child should die of SIGTERM: {status:?}");
}
