//! Writes seed frames for the `process` fuzz target into the directory given
//! as the first argument (`cargo xtask fuzz` calls it).

use vip_common::frame::announce::{gratuitous_arp, unsolicited_na};
use vip_common::frame::craft::{arp_request, neighbour_solicitation};

fn main() -> std::io::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/corpus/process".into());
    std::fs::create_dir_all(&dir)?;
    let mac = [0x02, 0, 0, 0, 0, 0x02];
    let vip6 = [
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x64,
    ];
    let peer6 = [
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02,
    ];
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        (
            "arp",
            arp_request(mac, [192, 0, 2, 2], [192, 0, 2, 100], None),
        ),
        (
            "arp-vlan",
            arp_request(mac, [192, 0, 2, 2], [192, 0, 2, 100], Some(7)),
        ),
        (
            "ns",
            neighbour_solicitation(mac, peer6, vip6, true, false, None),
        ),
        (
            "ns-unicast",
            neighbour_solicitation(mac, peer6, vip6, false, true, None),
        ),
        (
            "ns-dad",
            neighbour_solicitation(mac, [0; 16], vip6, false, false, Some(9)),
        ),
        ("garp", gratuitous_arp(mac, [192, 0, 2, 100])),
        ("na", unsolicited_na(mac, vip6)),
    ];
    for (name, frame) in seeds {
        for sel in [0u8, 1, 2] {
            let mut data = vec![sel];
            data.extend_from_slice(&frame);
            std::fs::write(format!("{dir}/{name}-{sel}"), data)?;
        }
    }
    Ok(())
}
