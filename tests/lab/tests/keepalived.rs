//! keepalived (Debian's 2.2.7) as a VRRP peer in lab namespaces: one node
//! becomes MASTER and answers ARP for the VIP; after a SIGKILL of the master
//! the other one takes over. Needs root and keepalived; skips otherwise.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use vip_common::frame::craft::arp_request;
use vip_lab::keepalived::{KEEPALIVED_BIN, Keepalived};
use vip_lab::packet_socket::{EtherType, PacketSocket, parse_arp};
use vip_lab::topology::{Endpoint, LAN_IFNAME, Lan};

const ADVERT: Duration = Duration::from_millis(100);
/// keepalived needs master-down interval (3 adverts + skew) plus start-up.
const ELECT: Duration = Duration::from_secs(10);

/// The MACs that answer one ARP request for `target` within `wait`.
fn arp_answerers(
    from: &Endpoint,
    sock: &PacketSocket,
    target: Ipv4Addr,
    wait: Duration,
) -> Vec<[u8; 6]> {
    let spa = from.v4().expect("client has IPv4").octets();
    sock.drain().expect("drain");
    sock.send(&arp_request(from.mac(), spa, target.octets(), None))
        .expect("send ARP");
    let deadline = Instant::now() + wait;
    let mut macs = Vec::new();
    while let Some(frame) = sock
        .recv_matching(deadline, |f| {
            parse_arp(f).is_some_and(|a| a.op == 2 && a.sender_ip == target)
        })
        .expect("recv")
    {
        let mac = parse_arp(&frame).expect("parsed above").sender_mac;
        if !macs.contains(&mac) {
            macs.push(mac);
        }
    }
    macs
}

/// Live keepalived processes (zombies waiting for init to reap them excluded).
fn keepalived_pids() -> Vec<String> {
    let out = Command::new("ps")
        .args(["-eo", "pid=,stat=,comm="])
        .output()
        .expect("ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (pid, stat, comm) = (f.next()?, f.next()?, f.next()?);
            (comm == "keepalived" && !stat.starts_with('Z')).then(|| pid.to_owned())
        })
        .collect()
}

#[test]
fn keepalived_master_answers_and_fails_over_on_sigkill() {
    vip_lab::require_root!();
    vip_lab::require_tool!(KEEPALIVED_BIN, package = "keepalived");
    let before = keepalived_pids();
    let workdir =
        std::env::temp_dir().join(format!("vip-lab-keepalived-test-{}", std::process::id()));
    let lan = Lan::new(2).expect("lan");
    let vip = lan.vip_v4(0);
    // Start n0 and let it become MASTER, then n1, which hears n0's adverts and
    // stays BACKUP. (Started at the same instant, both may time out together
    // and be MASTER for a moment until VRRP settles the tie.)
    let spawn = |i: usize| {
        Keepalived::spawn(
            &format!("n{i}"),
            lan.node(i).ns(),
            LAN_IFNAME,
            vip,
            100,
            ADVERT,
            &workdir,
        )
        .expect("spawn keepalived")
    };
    let mut kas = vec![spawn(0)];
    kas[0]
        .wait_for_state("MASTER", ELECT)
        .expect("n0 becomes MASTER");
    kas.push(spawn(1));
    kas[1]
        .wait_for_state("BACKUP", ELECT)
        .expect("n1 starts as BACKUP");
    let config = std::fs::read_to_string(kas[0].config_path()).expect("config written");
    assert!(
        config.contains("vrrp_version 3") && config.contains("advert_int 0.1"),
        "{config}"
    );
    let master = 0;
    let other = 1 - master;
    let client = lan.client();
    let sock = client.packet_socket(EtherType::Arp).expect("client socket");
    let answerers = arp_answerers(client, &sock, vip, Duration::from_millis(500));
    assert_eq!(
        answerers,
        vec![lan.node(master).mac()],
        "only the MASTER answers"
    );

    // Crash the master: the other takes over and answers.
    let killed_at = Instant::now();
    kas[master].signal(Signal::SIGKILL).expect("SIGKILL");
    kas[master].kill();
    assert_eq!(kas[master].pid(), None);
    kas[other]
        .wait_for_state("MASTER", ELECT)
        .expect("the other becomes MASTER");
    eprintln!(
        "keepalived took over {:?} after SIGKILL",
        killed_at.elapsed()
    );
    let answerers = arp_answerers(client, &sock, vip, Duration::from_millis(500));
    assert!(
        answerers.contains(&lan.node(other).mac()),
        "the new MASTER answers: {answerers:02x?}"
    );
    // The killed master's kernel still holds the VIP (keepalived has no fence):
    // that is what the benchmark's split-brain analysis is there to see.
    if answerers.len() > 1 {
        eprintln!("note: the killed master's kernel still answers for the VIP (no fence)");
    }

    // Clean-up: processes, files, namespaces.
    let files: Vec<_> = kas.iter().map(|k| k.config_path().to_owned()).collect();
    let names = lan.namespace_names();
    drop(kas);
    for f in &files {
        assert!(!f.exists(), "{} left behind", f.display());
    }
    drop(lan);
    let _ = std::fs::remove_dir(&workdir);
    let after = keepalived_pids();
    let leaked: Vec<_> = after.iter().filter(|p| !before.contains(p)).collect();
    assert!(leaked.is_empty(), "keepalived processes left: {leaked:?}");
    let list = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip")
            .stdout,
    )
    .into_owned();
    for n in names {
        assert!(!list.contains(&n), "namespace {n} left behind");
    }
}
