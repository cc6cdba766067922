//! The peer-channel faults ([`vip_lab::lab::peer_faults`]) on their own,
//! between two namespaces: a cut drops only the peer port and only one way,
//! random loss drops about the share asked, and every rule goes away with
//! its guard (or with its namespace). Needs root and iptables.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use vip_lab::lab::peer_faults::{
    PEER_PORT, PeerRules, capture_peer_frame, forge, replay, send_frame,
};
use vip_lab::netns::NetNs;
use vip_lab::topology::{Endpoint, Pair};

/// Another UDP port (must stay untouched by the rules).
const OTHER_PORT: u16 = 7474;
/// Bound on the wait for a datagram that should arrive.
const ARRIVES: Duration = Duration::from_millis(500);
/// How long to listen to conclude that nothing more arrives.
const SILENCE: Duration = Duration::from_millis(100);

fn ip(e: &Endpoint) -> Ipv4Addr {
    e.v4().expect("IPv4 address")
}

fn bind(e: &Endpoint, port: u16) -> UdpSocket {
    let addr = SocketAddr::from((ip(e), port));
    let s = e
        .ns()
        .run(|| UdpSocket::bind(addr))
        .expect("bind in the namespace");
    s.set_read_timeout(Some(ARRIVES)).expect("timeout");
    s
}

/// Send `n` datagrams from `from` to `to` (in batches that fit the receive
/// buffer) and count those that arrive.
fn delivered(from: &UdpSocket, to: &UdpSocket, n: usize) -> usize {
    let dest = to.local_addr().expect("address");
    let mut got = 0;
    let mut buf = [0u8; 64];
    for batch in (0..n).collect::<Vec<_>>().chunks(50) {
        for k in batch {
            from.send_to(&k.to_le_bytes(), dest).expect("send");
        }
        // The first datagram may take a moment (neighbour resolution); the
        // rest follow at once: a short silence ends the batch.
        to.set_read_timeout(Some(ARRIVES)).expect("timeout");
        while to.recv_from(&mut buf).is_ok() {
            got += 1;
            to.set_read_timeout(Some(SILENCE)).expect("timeout");
        }
    }
    got
}

fn rules_in(ns: &NetNs) -> String {
    let out = ns
        .command("iptables")
        .args(["-S", "INPUT"])
        .output()
        .expect("iptables -S");
    assert!(out.status.success(), "iptables -S failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_one_way_cut_drops_only_peer_packets_from_that_node() {
    vip_lab::require_root!();
    vip_lab::require_tool!("iptables", package = "iptables");
    let pair = Pair::new().expect("pair");
    let (a, b) = (pair.a(), pair.b());
    let (pa, pb) = (bind(a, PEER_PORT), bind(b, PEER_PORT));
    let (oa, ob) = (bind(a, OTHER_PORT), bind(b, OTHER_PORT));
    assert_eq!(delivered(&pa, &pb, 10), 10, "before the cut");

    let mut rules = PeerRules::new();
    rules
        .add_drop_from(b.ns(), ip(a), PEER_PORT)
        .expect("cut a -> b");
    eprintln!("rules: {:?}", rules.specs());
    assert!(rules_in(b.ns()).contains("vip-lab-peer-fault"));
    assert_eq!(
        delivered(&pa, &pb, 10),
        0,
        "a -> b peer packets pass the cut"
    );
    assert_eq!(delivered(&pb, &pa, 10), 10, "b -> a must still flow");
    assert_eq!(
        delivered(&oa, &ob, 10),
        10,
        "another port must be untouched"
    );
    // A packet to another port but from the peer port matches too (acks
    // may come from the peer socket to any port).
    assert_eq!(delivered(&pa, &ob, 10), 0, "from the peer port");

    rules.remove().expect("remove");
    assert!(!rules_in(b.ns()).contains("vip-lab-peer-fault"));
    assert_eq!(delivered(&pa, &pb, 10), 10, "after the cut");
}

#[test]
fn random_loss_drops_about_the_share_asked_and_goes_on_drop() {
    vip_lab::require_root!();
    vip_lab::require_tool!("iptables", package = "iptables");
    let pair = Pair::new().expect("pair");
    let (a, b) = (pair.a(), pair.b());
    let (pa, pb) = (bind(a, PEER_PORT), bind(b, PEER_PORT));
    let (oa, ob) = (bind(a, OTHER_PORT), bind(b, OTHER_PORT));
    {
        let mut rules = PeerRules::new();
        rules.add_loss(b.ns(), PEER_PORT, 30.0).expect("loss");
        let n = 1000;
        let got = delivered(&pa, &pb, n);
        let lost = 100.0 * (n - got) as f64 / n as f64;
        eprintln!("30 % loss asked: {lost:.1} % lost of {n}");
        // Binomial(1000, 0.3): sd 1.45 %; +-7 % is ~5 sd.
        assert!((23.0..=37.0).contains(&lost), "lost {lost} %");
        assert_eq!(delivered(&oa, &ob, 200), 200, "another port lost packets");
        assert_eq!(
            delivered(&pb, &pa, 200),
            200,
            "the other direction lost packets"
        );
        assert!(rules.add_loss(b.ns(), PEER_PORT, 0.0).is_err());
        assert!(rules.add_loss(b.ns(), PEER_PORT, 101.0).is_err());
    }
    assert!(
        !rules_in(b.ns()).contains("vip-lab-peer-fault"),
        "the guard's drop left a rule"
    );
    assert_eq!(
        delivered(&pa, &pb, 200),
        200,
        "loss after the guard dropped"
    );
}

#[test]
fn rules_outlived_by_their_namespace_remove_cleanly() {
    vip_lab::require_root!();
    vip_lab::require_tool!("iptables", package = "iptables");
    let pair = Pair::new().expect("pair");
    let mut rules = PeerRules::new();
    rules
        .add_drop_from(pair.b().ns(), ip(pair.a()), PEER_PORT)
        .expect("cut");
    rules.add_loss(pair.a().ns(), PEER_PORT, 1.0).expect("loss");
    drop(pair);
    // The namespaces took their rules with them: nothing left to fail on.
    rules
        .remove()
        .expect("remove after the namespaces are gone");
}

#[test]
fn a_captured_peer_frame_replays_and_forges() {
    vip_lab::require_root!();
    let pair = Pair::new().expect("pair");
    let (a, b) = (pair.a(), pair.b());
    let (pa, pb) = (bind(a, PEER_PORT), bind(b, PEER_PORT));
    let dest = pb.local_addr().expect("address");
    let payload = b"heartbeat 1 with a tag at the end";
    let frame = std::thread::scope(|s| {
        let capture = s.spawn(|| capture_peer_frame(b, ip(a), Duration::from_secs(2)));
        // Until the capture socket is open, datagrams go by uncaptured.
        let mut buf = [0u8; 64];
        while !capture.is_finished() {
            pa.send_to(payload, dest).expect("send");
            let _ = pb.recv_from(&mut buf);
            std::thread::sleep(Duration::from_millis(20));
        }
        capture.join().expect("capture thread")
    })
    .expect("captured");
    while pb.recv_from(&mut [0u8; 64]).is_ok() {}
    let mut buf = [0u8; 64];
    send_frame(a, &replay(&frame)).expect("replay");
    let (n, from) = pb.recv_from(&mut buf).expect("the replay arrives");
    assert_eq!(
        (&buf[..n], from),
        (&payload[..], pa.local_addr().expect("a"))
    );
    send_frame(a, &forge(&frame)).expect("forge");
    let (n, _) = pb.recv_from(&mut buf).expect("the forgery arrives");
    let mut flipped = payload.to_vec();
    *flipped.last_mut().expect("non-empty") ^= 1;
    assert_eq!(&buf[..n], &flipped[..], "only the last byte differs");
}
