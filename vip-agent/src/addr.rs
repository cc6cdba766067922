//! VIP addresses, through rtnetlink.
//!
//! The VIP lives on `lo`, not on the interface that carries it: the kernel
//! then cannot answer ARP (with `arp_ignore` >= 1 on the interface, see
//! [`crate::kernel_guard`]) or neighbour solicitations (ndisc only answers for
//! addresses of the receiving device) for it, whatever happens to the XDP
//! program; the program is the only answerer
//! (docs/design.md#2-the-vip-lives-on-lo-and-arp_ignore-is-1-on-the-interface). Traffic to
//! the VIP is still delivered locally (Linux accepts any local address on any
//! interface).
//!
//! Added as /32 or /128 with a preferred lifetime of 0 (deprecated, so the
//! kernel never picks the VIP as a source address) and, for IPv6, `nodad`
//! (usable at once, no DAD delay). Removal also looks on the interface, where
//! agents before this layout (and people by hand) put the VIP.

use std::net::IpAddr;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressMessage, CacheInfo};
use tracing::{debug, info};

#[derive(Debug, thiserror::Error)]
pub enum AddrError {
    #[error("opening rtnetlink: {0}")]
    Connect(std::io::Error),
    #[error("{op} {ip} on ifindex {ifindex}: {source}")]
    Netlink {
        op: &'static str,
        ip: IpAddr,
        ifindex: u32,
        source: rtnetlink::Error,
    },
    #[error("listing addresses on ifindex {ifindex}: {source}")]
    List {
        ifindex: u32,
        source: rtnetlink::Error,
    },
}

pub struct Addresses {
    handle: rtnetlink::Handle,
    /// The interface that carries the VIP (for subnets and stale addresses).
    ifindex: u32,
    /// `lo`, where the VIP is configured.
    lo: u32,
    _conn: tokio::task::JoinHandle<()>,
}

const INFINITY: u32 = u32::MAX;

fn prefix_len(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

/// Whether `a` and `b` share their first `plen` bits (same family only).
pub fn same_prefix(a: IpAddr, b: IpAddr, plen: u8) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(plen.min(32)))
                .unwrap_or(0);
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(plen.min(128)))
                .unwrap_or(0);
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|c| -c.get()),
        _ => None,
    }
}

impl Addresses {
    pub fn new(ifindex: u32) -> Result<Self, AddrError> {
        let lo = nix::net::if_::if_nametoindex("lo").map_err(|e| AddrError::Connect(e.into()))?;
        let (conn, handle, _) = rtnetlink::new_connection().map_err(AddrError::Connect)?;
        Ok(Self {
            handle,
            ifindex,
            lo,
            _conn: tokio::spawn(conn),
        })
    }

    /// Adds `ip` on `lo` (idempotent: an existing address is replaced with
    /// our flags).
    pub async fn add(&self, ip: IpAddr) -> Result<(), AddrError> {
        let mut req = self
            .handle
            .address()
            .add(self.lo, ip, prefix_len(ip))
            .replace();
        let msg = req.message_mut();
        let mut cache = CacheInfo::default();
        cache.ifa_preferred = 0;
        cache.ifa_valid = INFINITY;
        msg.attributes.push(AddressAttribute::CacheInfo(cache));
        if ip.is_ipv6() {
            msg.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        req.execute().await.map_err(|source| AddrError::Netlink {
            op: "adding",
            ip,
            ifindex: self.lo,
            source,
        })?;
        info!(%ip, ifindex = self.lo, "VIP address added on lo");
        Ok(())
    }

    /// Removes `ip` from `lo` and from the interface, wherever it is.
    /// Returns whether it was found anywhere.
    pub async fn remove(&self, ip: IpAddr) -> Result<bool, AddrError> {
        let on_lo = self.remove_from(self.lo, ip).await?;
        let on_if = self.remove_from(self.ifindex, ip).await?;
        Ok(on_lo || on_if)
    }

    async fn remove_from(&self, ifindex: u32, ip: IpAddr) -> Result<bool, AddrError> {
        let Some(msg) = self.find(ifindex, ip).await? else {
            return Ok(false);
        };
        match self.handle.address().del(msg).execute().await {
            Ok(()) => {
                info!(%ip, ifindex, "VIP address removed");
                Ok(true)
            }
            // Gone in between: fine.
            Err(e) if errno(&e) == Some(libc::EADDRNOTAVAIL) || errno(&e) == Some(libc::ENOENT) => {
                Ok(false)
            }
            Err(source) => Err(AddrError::Netlink {
                op: "removing",
                ip,
                ifindex,
                source,
            }),
        }
    }

    /// Whether `ip` lies inside a subnet of an address configured on the
    /// interface (not counting a VIP's own /32 or /128).
    pub async fn on_link(&self, ip: IpAddr) -> Result<bool, AddrError> {
        let mut stream = self
            .handle
            .address()
            .get()
            .set_link_index_filter(self.ifindex)
            .execute();
        while let Some(msg) = stream.try_next().await.map_err(|source| AddrError::List {
            ifindex: self.ifindex,
            source,
        })? {
            let plen = msg.header.prefix_len;
            let full = if ip.is_ipv4() { 32 } else { 128 };
            if plen == full {
                continue;
            }
            for attr in &msg.attributes {
                if let AddressAttribute::Address(a) | AddressAttribute::Local(a) = attr
                    && same_prefix(*a, ip, plen)
                {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// The interface's own address for the fast path: the first IPv4 one
    /// that is not in `vips` and not link-local, else such an IPv6 one.
    pub async fn node_address(&self, vips: &[IpAddr]) -> Result<Option<IpAddr>, AddrError> {
        let mut stream = self
            .handle
            .address()
            .get()
            .set_link_index_filter(self.ifindex)
            .execute();
        let mut v6 = None;
        while let Some(msg) = stream.try_next().await.map_err(|source| AddrError::List {
            ifindex: self.ifindex,
            source,
        })? {
            for attr in &msg.attributes {
                if let AddressAttribute::Address(a) = attr
                    && !vips.contains(a)
                {
                    match a {
                        IpAddr::V4(v4) if !v4.is_link_local() => return Ok(Some(*a)),
                        IpAddr::V6(x) if !x.is_unicast_link_local() && v6.is_none() => {
                            v6 = Some(*a)
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(v6)
    }

    /// Whether `ip` is configured where the agent puts it (`lo`).
    pub async fn has(&self, ip: IpAddr) -> Result<bool, AddrError> {
        Ok(self.find(self.lo, ip).await?.is_some())
    }

    async fn find(&self, ifindex: u32, ip: IpAddr) -> Result<Option<AddressMessage>, AddrError> {
        let mut stream = self
            .handle
            .address()
            .get()
            .set_link_index_filter(ifindex)
            .set_address_filter(ip)
            .execute();
        let found = stream
            .try_next()
            .await
            .map_err(|source| AddrError::List { ifindex, source })?;
        debug!(%ip, ifindex, present = found.is_some(), "address lookup");
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(same_prefix(ip("192.0.2.1"), ip("192.0.2.100"), 24));
        assert!(!same_prefix(ip("192.0.2.1"), ip("198.51.100.1"), 24));
        assert!(same_prefix(ip("192.0.2.1"), ip("10.0.0.1"), 0));
        assert!(same_prefix(ip("2001:db8::1"), ip("2001:db8::100"), 64));
        assert!(!same_prefix(ip("2001:db8::1"), ip("2001:db8:1::1"), 64));
        assert!(!same_prefix(ip("2001:db8::1"), ip("192.0.2.1"), 0));
    }
}
