//! "The kernel is never an answerer" (docs/design.md), end to end: every
//! request form a Linux kernel answers for an address it holds
//! (`vip_common::frame::variants::kernel_accepted`) is sent from a peer
//! namespace to a node running `vip-agent run --no-election`:
//!
//! 1. control: with the VIP on the interface and nothing else, the kernel
//!    answers every form (so the forms are real, and the test could fail);
//! 2. active agent: exactly one reply (from XDP) for the forms it answers,
//!    none for the forms it drops (never the kernel's);
//! 3. agent frozen (SIGSTOP) past its deadline: no reply to any form;
//! 4. agent killed (SIGKILL), VIP left on lo, pins left: no reply to any form;
//! 5. program detached by someone else (the pinned link removed): still no
//!    reply to any form: the VIP lives on lo and arp_ignore is 1, so the
//!    kernel cannot answer either;
//! 6. each mechanism's effect: with arp_ignore back at 0 (VIP still on lo)
//!    the kernel answers ARP again but still not NS.
//!
//! Needs root; skips with a reason otherwise.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use vip_agent::dataplane::{LINK_PIN, OBJECT};
use vip_common::frame::variants::{Variant, kernel_accepted};
use vip_lab::agent::{Agent, PinDirGuard, attach_pass_program};
use vip_lab::packet_socket::{EtherType, PacketSocket};
use vip_lab::topology::{Endpoint, Pair};

const VIP4: [u8; 4] = [192, 0, 2, 100];
const VIP6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00,
];
const RENEW_DEADLINE: Duration = Duration::from_millis(600);
/// How long to collect replies to one request.
const LISTEN: Duration = Duration::from_millis(150);

/// Offset of the L3 header after any VLAN tags, and its EtherType.
fn l3(frame: &[u8]) -> Option<(usize, u16)> {
    let mut off = 12;
    loop {
        let et = u16::from_be_bytes(frame.get(off..off + 2)?.try_into().ok()?);
        if et == 0x8100 || et == 0x88a8 {
            off += 4;
        } else {
            return Some((off + 2, et));
        }
    }
}

/// Whether `frame` answers the client's request for the VIP: an ARP reply
/// from VIP4 to the client's MAC, or a solicited neighbour advertisement for
/// VIP6 (the agent's own announcements are unsolicited and not counted).
fn is_answer(frame: &[u8], client: [u8; 6]) -> bool {
    match l3(frame) {
        Some((o, 0x0806)) => {
            frame.len() >= o + 28
                && frame[o + 6..o + 8] == [0, 2]
                && frame[o + 14..o + 18] == VIP4
                && frame[o + 18..o + 24] == client
        }
        Some((o, 0x86dd)) => {
            frame.len() >= o + 64
                && frame[o + 6] == 58
                && frame[o + 40] == 136
                && frame[o + 44] & 0x40 != 0
                && frame[o + 48..o + 64] == VIP6
        }
        _ => false,
    }
}

/// Sends `frame` and counts the answers for the VIP that come back.
fn answers(sock: &PacketSocket, frame: &[u8]) -> usize {
    sock.drain().unwrap();
    sock.send(frame).unwrap();
    let deadline = Instant::now() + LISTEN;
    let client = sock.mac();
    let mut n = 0;
    while sock
        .recv_matching(deadline, |f| is_answer(f, client))
        .unwrap()
        .is_some()
    {
        n += 1;
    }
    n
}

/// Every variant, with the number of answers it got.
fn ask_all(sock: &PacketSocket, variants: &[Variant]) -> Vec<(&'static str, usize)> {
    variants
        .iter()
        .map(|v| (v.name, answers(sock, &v.frame)))
        .collect()
}

fn assert_none_answered(phase: &str, got: &[(&'static str, usize)]) {
    let answered: Vec<_> = got.iter().filter(|(_, n)| *n != 0).collect();
    assert!(
        answered.is_empty(),
        "{phase}: these forms were answered: {answered:?}"
    );
}

fn vip_on_lo(node: &Endpoint) -> bool {
    let out = node
        .ns()
        .exec_ok(&["-o", "addr", "show", "dev", "lo"])
        .unwrap();
    out.contains(" 192.0.2.100/32") && out.contains(" 2001:db8::100/128")
}

fn has_xdp(ep: &Endpoint) -> bool {
    ep.ns().link_json(ep.ifname()).unwrap().get("xdp").is_some()
}

fn sysctl_read(node: &Endpoint, key: &str) -> String {
    node.ns()
        .run(|| std::fs::read_to_string(format!("/proc/sys/{}", key.replace('.', "/"))))
        .unwrap()
        .trim()
        .to_owned()
}

/// Waits until a plain ARP request for the VIP is no longer answered.
fn wait_silent(sock: &PacketSocket, plain: &[u8], what: &str) -> Duration {
    let t0 = Instant::now();
    while answers(sock, plain) != 0 {
        assert!(
            t0.elapsed() < RENEW_DEADLINE * 4,
            "{what}: still answering {:?} after the fence deadline",
            t0.elapsed()
        );
    }
    t0.elapsed()
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
    let sock = client.packet_socket(EtherType::All).unwrap();
    let variants = kernel_accepted(
        client.mac(),
        client.v4().unwrap().octets(),
        client.v6().unwrap().octets(),
        VIP4,
        VIP6,
        node.mac(),
    );
    let plain = &variants[0].frame;

    // 1. Control: the kernel, holding the VIP on the interface, answers
    //    every form (arp_ignore 0, no program).
    assert_eq!(
        sysctl_read(node, &format!("net.ipv4.conf.{}.arp_ignore", node.ifname())),
        "0"
    );
    let ifname = node.ifname();
    node.ns()
        .exec_ok(&["addr", "add", "192.0.2.100/32", "dev", ifname])
        .unwrap();
    node.ns()
        .exec_ok(&["addr", "add", "2001:db8::100/128", "dev", ifname, "nodad"])
        .unwrap();
    let control = ask_all(&sock, &variants);
    for (name, n) in &control {
        assert_eq!(*n, 1, "control: the kernel should answer {name:?} once");
    }
    node.ns()
        .exec_ok(&["addr", "del", "192.0.2.100/32", "dev", ifname])
        .unwrap();
    node.ns()
        .exec_ok(&["addr", "del", "2001:db8::100/128", "dev", ifname])
        .unwrap();

    // 2. Active agent.
    let pins = PinDirGuard::new(&format!("kna-{mode}"));
    let args: Vec<String> = [
        "run",
        "--interface",
        ifname,
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
        "600ms",
        "--retry-period",
        "150ms",
        "--metrics-addr",
        "",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut agent = Agent::spawn(
        &format!("kna-{mode}"),
        node.ns(),
        Path::new(env!("CARGO_BIN_EXE_vip-agent")),
        &args,
    )
    .expect("spawn agent");
    agent
        .wait_for_log("leading", Duration::from_secs(10))
        .expect("leading");
    assert!(vip_on_lo(node), "the VIP is configured on lo");
    assert_eq!(
        sysctl_read(node, &format!("net.ipv4.conf.{ifname}.arp_ignore")),
        "1",
        "the agent set arp_ignore on its interface"
    );
    assert_eq!(
        sysctl_read(node, &format!("net.ipv4.conf.{ifname}.arp_announce")),
        "2"
    );
    for v in &variants {
        let want = usize::from(v.answered_when_active);
        assert_eq!(
            answers(&sock, &v.frame),
            want,
            "active agent, {:?}: want {want} answer(s) (from XDP only)",
            v.name
        );
    }

    // 3. Frozen past its deadline.
    agent.signal(Signal::SIGSTOP).unwrap();
    let silent = wait_silent(&sock, plain, "frozen");
    assert_none_answered("frozen agent", &ask_all(&sock, &variants));
    assert!(vip_on_lo(node), "the frozen agent's VIP stays configured");
    agent.signal(Signal::SIGCONT).unwrap();
    let t0 = Instant::now();
    while answers(&sock, plain) == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "thawed agent answers again"
        );
    }

    // 4. Killed: VIP left on lo, pins left behind.
    agent.kill();
    let killed_silent = wait_silent(&sock, plain, "killed");
    assert_none_answered("killed agent", &ask_all(&sock, &variants));
    assert!(vip_on_lo(node), "the killed agent's VIP is left on lo");
    assert!(has_xdp(node), "the pinned program stays attached");

    // 5. Detached by someone else: the pinned link removed.
    std::fs::remove_file(pins.path().join(LINK_PIN)).expect("remove the link pin");
    let t0 = Instant::now();
    while has_xdp(node) {
        assert!(t0.elapsed() < Duration::from_secs(5), "program detaches");
        std::thread::yield_now();
    }
    assert!(vip_on_lo(node));
    assert_none_answered("program detached", &ask_all(&sock, &variants));

    // 6. Each mechanism's effect: arp_ignore back to 0 with the VIP on lo:
    //    the kernel answers ARP (any local address) but not NS (ndisc only
    //    answers for addresses of the receiving device).
    node.ns()
        .sysctl(&format!("net.ipv4.conf.{ifname}.arp_ignore"), "0")
        .unwrap();
    let lo_only = ask_all(&sock, &variants);
    for (v, (name, n)) in variants.iter().zip(&lo_only) {
        let want = usize::from(v.arp);
        assert_eq!(*n, want, "VIP on lo, arp_ignore 0: {name:?}");
    }
    node.ns()
        .exec_ok(&["addr", "del", "192.0.2.100/32", "dev", "lo"])
        .unwrap();
    node.ns()
        .exec_ok(&["addr", "del", "2001:db8::100/128", "dev", "lo"])
        .unwrap();
    eprintln!(
        "{mode}: {} request forms; kernel alone answered all; active agent answered {} from XDP and \
         dropped {}; silent {silent:?} after SIGSTOP, {killed_silent:?} after SIGKILL (renew deadline \
         {RENEW_DEADLINE:?}); nothing answered after SIGSTOP, SIGKILL or detach",
        variants.len(),
        variants.iter().filter(|v| v.answered_when_active).count(),
        variants.iter().filter(|v| !v.answered_when_active).count(),
    );
}

#[test]
fn every_request_form_skb() {
    scenario("skb");
}

#[test]
fn every_request_form_native() {
    scenario("native");
}
