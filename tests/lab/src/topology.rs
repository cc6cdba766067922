//! Multi-node topologies built from network namespaces on one machine.
//!
//! * [`Pair`]: two namespaces joined by one veth pair.
//! * [`Lan`]: N node namespaces and one client namespace, each joined by a
//!   veth to a Linux bridge that lives in its own "switch" namespace.
//!
//! Nothing is created in the root namespace. Everything is removed on drop,
//! also when a test panics (the namespaces' own drops run while unwinding).
//! Links are waited for by polling their netlink state with a bounded timeout.
//!
//! XDP note (see the platform notes): on veth, frames an XDP program sends
//! back with `XDP_TX` in NATIVE mode are lost unless the PEER veth also has an
//! XDP program (an `XDP_PASS` one is enough). For a [`Pair`] the peer is the
//! other side; for a [`Lan`] node it is the bridge port, see
//! [`Lan::node_port`].

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use crate::netns::{self, NetNs, bridge_port_forwarding, link_oper_up};
use crate::packet_socket::{self, IfInfo};

/// Errors while building or changing a topology.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Netns(#[from] netns::Error),
    #[error("reading interface {ifname} in {ns}: {source}")]
    Interface {
        ifname: String,
        ns: String,
        #[source]
        source: packet_socket::Error,
    },
    #[error("bad topology: {0}")]
    Config(String),
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Default bound on every wait for a link state.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// An address with its prefix length, as given to `ip addr add`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfAddr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IfAddr {
    pub fn v4(addr: Ipv4Addr, prefix: u8) -> Self {
        Self {
            addr: addr.into(),
            prefix,
        }
    }

    pub fn v6(addr: Ipv6Addr, prefix: u8) -> Self {
        Self {
            addr: addr.into(),
            prefix,
        }
    }
}

impl fmt::Display for IfAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// One interface of a topology, with the namespace it lives in.
#[derive(Debug)]
pub struct Endpoint {
    ns: NetNs,
    ifname: String,
    info: IfInfo,
    addrs: Vec<IfAddr>,
}

impl Endpoint {
    /// The namespace of this interface.
    pub fn ns(&self) -> &NetNs {
        &self.ns
    }

    /// Interface name inside [`Self::ns`].
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Interface index inside [`Self::ns`].
    pub fn ifindex(&self) -> u32 {
        self.info.index
    }

    /// MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.info.mac
    }

    /// Every configured address.
    pub fn addrs(&self) -> &[IfAddr] {
        &self.addrs
    }

    /// The first IPv4 address.
    pub fn v4(&self) -> Option<Ipv4Addr> {
        self.addrs.iter().find_map(|a| match a.addr {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
    }

    /// The first IPv6 address.
    pub fn v6(&self) -> Option<Ipv6Addr> {
        self.addrs.iter().find_map(|a| match a.addr {
            IpAddr::V6(v6) => Some(v6),
            IpAddr::V4(_) => None,
        })
    }

    /// Open a raw socket on this interface (created inside its namespace).
    pub fn packet_socket(
        &self,
        ethertype: packet_socket::EtherType,
    ) -> Result<packet_socket::PacketSocket> {
        self.ns
            .try_run(|| packet_socket::PacketSocket::open(&self.ifname, ethertype))?
            .map_err(|source| self.iface_error(source))
    }

    fn iface_error(&self, source: packet_socket::Error) -> Error {
        Error::Interface {
            ifname: self.ifname.clone(),
            ns: self.ns.name().to_owned(),
            source,
        }
    }

    /// Build: set the link up, add addresses (IPv6 with `nodad`), read its info.
    fn configure(ns: NetNs, ifname: &str, addrs: Vec<IfAddr>) -> Result<Self> {
        ns.sysctl(&format!("net/ipv6/conf/{ifname}/disable_ipv6"), "0")?;
        ns.exec_ok(&["link", "set", "dev", ifname, "up"])?;
        for a in &addrs {
            let cidr = a.to_string();
            let mut args = vec!["addr", "add", &cidr, "dev", ifname];
            if a.addr.is_ipv6() {
                args.push("nodad");
            }
            ns.exec_ok(&args)?;
        }
        let info = read_info(&ns, ifname)?;
        Ok(Self {
            ns,
            ifname: ifname.to_owned(),
            info,
            addrs,
        })
    }

    fn refresh_info(&mut self) -> Result<()> {
        self.info = read_info(&self.ns, &self.ifname)?;
        Ok(())
    }
}

fn read_info(ns: &NetNs, ifname: &str) -> Result<IfInfo> {
    ns.try_run(|| packet_socket::interface_info(ifname))?
        .map_err(|source| Error::Interface {
            ifname: ifname.to_owned(),
            ns: ns.name().to_owned(),
            source,
        })
}

/// A namespace for hosts: IPv6 on, DAD off by default.
fn host_ns(tag: &str) -> Result<NetNs> {
    let ns = NetNs::new(tag)?;
    for key in ["all", "default"] {
        ns.sysctl(&format!("net/ipv6/conf/{key}/disable_ipv6"), "0")?;
        ns.sysctl(&format!("net/ipv6/conf/{key}/accept_dad"), "0")?;
    }
    Ok(ns)
}

fn check_ifname(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', '\0']) {
        return Err(Error::Config(format!("bad interface name {name:?}")));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Pair

/// How to build a [`Pair`].
#[derive(Debug, Clone)]
pub struct PairConfig {
    pub a_ifname: String,
    pub b_ifname: String,
    pub a_addrs: Vec<IfAddr>,
    pub b_addrs: Vec<IfAddr>,
    /// Bound on the wait for the links to come up.
    pub timeout: Duration,
}

impl Default for PairConfig {
    /// `va0` 192.0.2.1/24 2001:db8::1/64 <-> `vb0` 192.0.2.2/24 2001:db8::2/64.
    fn default() -> Self {
        Self {
            a_ifname: "va0".into(),
            b_ifname: "vb0".into(),
            a_addrs: vec![
                IfAddr::v4(Ipv4Addr::new(192, 0, 2, 1), 24),
                IfAddr::v6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1), 64),
            ],
            b_addrs: vec![
                IfAddr::v4(Ipv4Addr::new(192, 0, 2, 2), 24),
                IfAddr::v6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2), 64),
            ],
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// Two namespaces `a` and `b` joined by one veth pair, both ends up.
#[derive(Debug)]
pub struct Pair {
    a: Endpoint,
    b: Endpoint,
}

impl Pair {
    /// A pair with [`PairConfig::default`].
    pub fn new() -> Result<Self> {
        Self::with_config(PairConfig::default())
    }

    /// A pair as configured. On error, whatever was created is removed.
    pub fn with_config(cfg: PairConfig) -> Result<Self> {
        check_ifname(&cfg.a_ifname)?;
        check_ifname(&cfg.b_ifname)?;
        let ns_a = host_ns("a")?;
        let ns_b = host_ns("b")?;
        ns_a.exec_ok(&[
            "link",
            "add",
            &cfg.a_ifname,
            "type",
            "veth",
            "peer",
            "name",
            &cfg.b_ifname,
            "netns",
            ns_b.name(),
        ])?;
        let a = Endpoint::configure(ns_a, &cfg.a_ifname, cfg.a_addrs)?;
        let b = Endpoint::configure(ns_b, &cfg.b_ifname, cfg.b_addrs)?;
        a.ns.wait_oper_up(&a.ifname, cfg.timeout)?;
        b.ns.wait_oper_up(&b.ifname, cfg.timeout)?;
        Ok(Self { a, b })
    }

    /// Side `a`.
    pub fn a(&self) -> &Endpoint {
        &self.a
    }

    /// Side `b`.
    pub fn b(&self) -> &Endpoint {
        &self.b
    }

    /// Names of both namespaces (e.g. to check they are gone after drop).
    pub fn namespace_names(&self) -> [String; 2] {
        [self.a.ns.name().to_owned(), self.b.ns.name().to_owned()]
    }
}

// ---------------------------------------------------------------------------
// Lan

/// The address plan of a [`Lan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LabSubnet {
    /// 192.0.2.0/24 and 2001:db8::/64.
    #[default]
    TestNet1,
    /// 198.51.100.0/24 and 2001:db8:1::/64.
    TestNet2,
}

impl LabSubnet {
    fn v4(self, host: u8) -> Ipv4Addr {
        match self {
            Self::TestNet1 => Ipv4Addr::new(192, 0, 2, host),
            Self::TestNet2 => Ipv4Addr::new(198, 51, 100, host),
        }
    }

    fn v6(self, host: u8) -> Ipv6Addr {
        // The host part reads like the IPv4 one: host 11 -> 2001:db8::11.
        let h = u16::from(host);
        let readable = (h / 100) << 8 | ((h / 10) % 10) << 4 | (h % 10);
        let sub = match self {
            Self::TestNet1 => 0,
            Self::TestNet2 => 1,
        };
        Ipv6Addr::new(0x2001, 0xdb8, sub, 0, 0, 0, 0, readable)
    }
}

/// How to build a [`Lan`].
#[derive(Debug, Clone)]
pub struct LanConfig {
    /// Number of node namespaces (1 to 50).
    pub nodes: usize,
    pub subnet: LabSubnet,
    /// Bound on each wait for link state.
    pub timeout: Duration,
}

impl Default for LanConfig {
    fn default() -> Self {
        Self {
            nodes: 3,
            subnet: LabSubnet::TestNet1,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// A host of a [`Lan`] and the bridge port it is plugged into.
#[derive(Debug)]
pub struct LanMember {
    host: Endpoint,
    port: String,
    port_ifindex: u32,
}

impl LanMember {
    /// The host side (its namespace, `eth0`, addresses).
    pub fn host(&self) -> &Endpoint {
        &self.host
    }

    /// Name of the bridge-side veth in the switch namespace.
    pub fn port(&self) -> &str {
        &self.port
    }

    /// Index of the bridge-side veth in the switch namespace.
    pub fn port_ifindex(&self) -> u32 {
        self.port_ifindex
    }
}

/// Host interface name in every node and client namespace.
pub const LAN_IFNAME: &str = "eth0";
/// Bridge name in the switch namespace.
pub const BRIDGE: &str = "br0";

/// N nodes and a client on one bridge in a separate switch namespace.
///
/// Addresses (for [`LabSubnet::TestNet1`]): node `i` has 192.0.2.(11+i)/24 and
/// 2001:db8::(11+i)/64, the client 192.0.2.100 and 2001:db8::100;
/// 192.0.2.200+ and 2001:db8::200+ are left free for VIPs ([`Lan::vip_v4`]).
#[derive(Debug)]
pub struct Lan {
    // Field order is drop order: hosts first, the switch last.
    nodes: Vec<LanMember>,
    client: LanMember,
    switch: NetNs,
    cfg: LanConfig,
}

impl Lan {
    /// A LAN of `nodes` nodes with the default address plan.
    pub fn new(nodes: usize) -> Result<Self> {
        Self::with_config(LanConfig {
            nodes,
            ..LanConfig::default()
        })
    }

    /// A LAN as configured. On error, whatever was created is removed.
    pub fn with_config(cfg: LanConfig) -> Result<Self> {
        if !(1..=50).contains(&cfg.nodes) {
            return Err(Error::Config(format!("{} nodes: use 1 to 50", cfg.nodes)));
        }
        let switch = NetNs::new("sw")?;
        // The switch has no addresses: keep IPv6 (link-local, MLD, RS) quiet there.
        for key in ["all", "default"] {
            switch.sysctl(&format!("net/ipv6/conf/{key}/disable_ipv6"), "1")?;
        }
        switch.exec_ok(&[
            "link",
            "add",
            BRIDGE,
            "type",
            "bridge",
            "forward_delay",
            "0",
            "stp_state",
            "0",
            "mcast_snooping",
            "0",
        ])?;
        switch.exec_ok(&["link", "set", "dev", BRIDGE, "up"])?;

        let mut nodes = Vec::with_capacity(cfg.nodes);
        for i in 0..cfg.nodes {
            let host = 11 + u8::try_from(i).map_err(|_| Error::Config("too many nodes".into()))?;
            nodes.push(Self::plug(&switch, &format!("n{i}"), host, &cfg)?);
        }
        let client = Self::plug(&switch, "cl", 100, &cfg)?;
        switch.wait_oper_up(BRIDGE, cfg.timeout)?;
        Ok(Self {
            nodes,
            client,
            switch,
            cfg,
        })
    }

    /// Create a host namespace `tag`, its veth `eth0` <-> bridge port `tag`,
    /// and wait until both ends are up and the port forwards.
    fn plug(switch: &NetNs, tag: &str, host: u8, cfg: &LanConfig) -> Result<LanMember> {
        let ns = host_ns(tag)?;
        switch.exec_ok(&[
            "link",
            "add",
            tag,
            "type",
            "veth",
            "peer",
            "name",
            LAN_IFNAME,
            "netns",
            ns.name(),
        ])?;
        switch.exec_ok(&["link", "set", "dev", tag, "master", BRIDGE])?;
        switch.exec_ok(&["link", "set", "dev", tag, "up"])?;
        let addrs = vec![
            IfAddr::v4(cfg.subnet.v4(host), 24),
            IfAddr::v6(cfg.subnet.v6(host), 64),
        ];
        let endpoint = Endpoint::configure(ns, LAN_IFNAME, addrs)?;
        let member = LanMember {
            port: tag.to_owned(),
            port_ifindex: read_info(switch, tag)?.index,
            host: endpoint,
        };
        wait_member_up(switch, &member, cfg.timeout)?;
        Ok(member)
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Never true (a LAN has at least one node); for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i` (panics if out of range).
    pub fn node(&self, i: usize) -> &Endpoint {
        &self.nodes[i].host
    }

    /// Node `i` with its bridge port.
    pub fn member(&self, i: usize) -> &LanMember {
        &self.nodes[i]
    }

    /// Every node.
    pub fn nodes(&self) -> impl ExactSizeIterator<Item = &Endpoint> {
        self.nodes.iter().map(|m| &m.host)
    }

    /// The client host.
    pub fn client(&self) -> &Endpoint {
        &self.client.host
    }

    /// The client with its bridge port.
    pub fn client_member(&self) -> &LanMember {
        &self.client
    }

    /// The switch namespace holding the bridge [`BRIDGE`] and every port.
    pub fn switch(&self) -> &NetNs {
        &self.switch
    }

    /// Namespace and name of the bridge-side peer of node `i`'s veth: where to
    /// attach an `XDP_PASS` program so that native-mode `XDP_TX` on the node
    /// side is delivered (see the module notes).
    pub fn node_port(&self, i: usize) -> (&NetNs, &str) {
        (&self.switch, &self.nodes[i].port)
    }

    /// A free IPv4 address of the LAN's subnet for a VIP (`k` < 50).
    pub fn vip_v4(&self, k: u8) -> Ipv4Addr {
        self.cfg.subnet.v4(200 + k.min(49))
    }

    /// A free IPv6 address of the LAN's subnet for a VIP (`k` < 50).
    pub fn vip_v6(&self, k: u8) -> Ipv6Addr {
        self.cfg.subnet.v6(200 + k.min(49))
    }

    /// Names of every namespace of the LAN (nodes, client, switch).
    pub fn namespace_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.nodes().map(|n| n.ns().name().to_owned()).collect();
        names.push(self.client().ns().name().to_owned());
        names.push(self.switch.name().to_owned());
        names
    }

    /// Cut node `i` off the LAN: set its bridge-side veth down and wait until
    /// the node sees its carrier go away. The node's own link stays
    /// administratively up, as with a pulled cable.
    pub fn cut(&self, i: usize) -> Result<()> {
        let m = self.checked_member(i)?;
        self.switch
            .exec_ok(&["link", "set", "dev", &m.port, "down"])?;
        m.host
            .ns
            .wait_link(&m.host.ifname, "carrier loss", self.cfg.timeout, |l| {
                !link_oper_up(l)
            })?;
        Ok(())
    }

    /// Undo [`Self::cut`]: set the port up and wait until both ends are up and
    /// the bridge port forwards.
    pub fn restore(&self, i: usize) -> Result<()> {
        let m = self.checked_member(i)?;
        self.switch
            .exec_ok(&["link", "set", "dev", &m.port, "up"])?;
        wait_member_up(&self.switch, m, self.cfg.timeout)
    }

    /// Refresh the cached MAC/ifindex of node `i` (after the caller changed them).
    pub fn refresh_node(&mut self, i: usize) -> Result<()> {
        self.checked_member(i)?;
        self.nodes[i].host.refresh_info()
    }

    fn checked_member(&self, i: usize) -> Result<&LanMember> {
        self.nodes
            .get(i)
            .ok_or_else(|| Error::Config(format!("no node {i} (LAN of {})", self.nodes.len())))
    }
}

fn wait_member_up(switch: &NetNs, m: &LanMember, timeout: Duration) -> Result<()> {
    m.host.ns.wait_oper_up(&m.host.ifname, timeout)?;
    switch.wait_oper_up(&m.port, timeout)?;
    switch.wait_link(
        &m.port,
        "bridge port forwarding",
        timeout,
        bridge_port_forwarding,
    )?;
    Ok(())
}

impl Drop for Lan {
    fn drop(&mut self) {
        // Hosts first (their namespaces take their veths along), the switch
        // last (fields drop in declaration order after this).
        self.nodes.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_plan() {
        assert_eq!(LabSubnet::TestNet1.v4(11), Ipv4Addr::new(192, 0, 2, 11));
        assert_eq!(
            LabSubnet::TestNet2.v4(100),
            Ipv4Addr::new(198, 51, 100, 100)
        );
        assert_eq!(LabSubnet::TestNet1.v6(11).to_string(), "2001:db8::11");
        assert_eq!(LabSubnet::TestNet1.v6(100).to_string(), "2001:db8::100");
        assert_eq!(LabSubnet::TestNet2.v6(249).to_string(), "2001:db8:1::249");
    }

    #[test]
    fn ifaddr_display() {
        assert_eq!(
            IfAddr::v4(Ipv4Addr::new(192, 0, 2, 1), 24).to_string(),
            "192.0.2.1/24"
        );
        assert_eq!(IfAddr::v6(Ipv6Addr::LOCALHOST, 128).to_string(), "::1/128");
    }
}
