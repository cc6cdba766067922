//! The node's hold on the VIP: the one owner of the data plane, the VIP
//! addresses and the announcer, so the safety order lives in one place:
//!
//! - take over: entry active (with its deadline) -> address added -> announce;
//! - give up:   entry inactive -> address removed (-> caller releases the lease).
//!
//! [`Node::maintain`] repairs what others broke at run time under the same
//! lock, so a repair never interleaves with a takeover or a give-up: the XDP
//! link follows the interface (detached, or interface recreated), and while
//! leading every VIP address is present. A repair never activates an entry:
//! only [`Node::lead`] does, so it never makes a fenced node answer.

use std::net::IpAddr;

use tokio::sync::{Mutex, watch};
use tracing::{info, warn};
use vip_common::events;

use crate::addr::Addresses;
use crate::clock::MonoTime;
use crate::dataplane::{self, Counters, Dataplane, DataplaneError, Repair, RepairKind};

struct Inner {
    dataplane: Dataplane,
    addresses: Addresses,
    leading: bool,
    /// Interface up with carrier at the last check.
    link_up: Option<bool>,
    /// The last maintenance error, logged once until it changes.
    last_error: Option<String>,
}

pub struct Node {
    inner: Mutex<Inner>,
    vips: Vec<IpAddr>,
    announce: watch::Sender<bool>,
}

/// What one [`Node::maintain`] round did.
#[derive(Debug, Default)]
pub struct Maintenance {
    /// Each to be logged (one warn line) and counted by the caller.
    pub repairs: Vec<Repair>,
    /// The announcer must start over (interface replaced, address re-added,
    /// interface back up): it is re-created on the interface's current
    /// ifindex and MAC and, while leading, announces at once.
    pub reannounce: bool,
}

impl Node {
    /// Wraps an opened data plane. Removes stale VIP addresses (left by an
    /// earlier agent, or configured by hand) so that nothing answers for the
    /// VIP until this node leads.
    pub async fn new(
        dataplane: Dataplane,
        addresses: Addresses,
        vips: Vec<IpAddr>,
        stale: &[IpAddr],
        announce: watch::Sender<bool>,
    ) -> anyhow::Result<Self> {
        let mut all: Vec<IpAddr> = vips.clone();
        all.extend(stale.iter().filter(|ip| !vips.contains(ip)));
        for ip in &all {
            if addresses.remove(*ip).await? {
                info!(%ip, event = events::STALE_VIP_REMOVED, "removed a stale VIP address before competing");
            }
        }
        let mut dataplane = dataplane;
        dataplane.forget_unconfigured()?;
        let link_up = dataplane::if_running(dataplane.ifname());
        Ok(Self {
            inner: Mutex::new(Inner {
                dataplane,
                addresses,
                leading: false,
                link_up,
                last_error: None,
            }),
            vips,
            announce,
        })
    }

    /// Answer until `deadline`; on the first call after following, also add
    /// the addresses and start the announcements.
    pub async fn lead(&self, deadline: MonoTime) -> anyhow::Result<()> {
        let mut inner = self.inner.lock().await;
        inner.dataplane.lead(deadline)?;
        if !inner.leading {
            for ip in &self.vips {
                inner.addresses.add(*ip).await?;
            }
            inner.leading = true;
            self.announce.send_replace(true);
            info!(vips = ?self.vips, event = events::LEADING, "leading: answering for the VIP");
        }
        Ok(())
    }

    /// Stop answering: entry fenced first, then addresses removed.
    pub async fn follow(&self) -> anyhow::Result<()> {
        let mut inner = self.inner.lock().await;
        inner.dataplane.fence()?;
        self.announce.send_replace(false);
        for ip in &self.vips {
            inner.addresses.remove(*ip).await?;
        }
        if inner.leading {
            info!(vips = ?self.vips, event = events::FOLLOWING, "following: VIP fenced and removed");
        }
        inner.leading = false;
        Ok(())
    }

    pub async fn counters(&self) -> Result<Counters, DataplaneError> {
        self.inner.lock().await.dataplane.counters()
    }

    /// Conflicting claims the program recorded, per VIP.
    pub async fn claims(&self) -> Vec<(IpAddr, vip_common::ClaimRecord)> {
        self.inner.lock().await.dataplane.claims()
    }

    /// The interface's ifindex and MAC as the data plane last saw them.
    pub async fn interface(&self) -> (u32, [u8; 6]) {
        let inner = self.inner.lock().await;
        (inner.dataplane.ifindex(), inner.dataplane.mac())
    }

    /// The announcer's switch (for a re-created announcer to subscribe to).
    pub fn announce_switch(&self) -> &watch::Sender<bool> {
        &self.announce
    }

    /// One repair round (the agent runs it every second): the XDP link on the
    /// interface's current ifindex, the interface's up/down transitions, and
    /// while leading, every VIP address.
    pub async fn maintain(&self) -> Maintenance {
        let mut inner = self.inner.lock().await;
        let mut out = Maintenance::default();
        let mut errors = Vec::new();
        match inner.dataplane.check_attachment() {
            Ok(Some(repair)) => {
                if repair.kind == RepairKind::InterfaceReplaced {
                    match Addresses::new(inner.dataplane.ifindex()) {
                        Ok(a) => inner.addresses = a,
                        Err(e) => errors.push(format!("addresses on the new interface: {e}")),
                    }
                }
                out.reannounce = true;
                out.repairs.push(repair);
            }
            Ok(None) => {}
            Err(e) => errors.push(format!("re-attaching XDP: {e}")),
        }
        let ifname = inner.dataplane.ifname().to_owned();
        let up = dataplane::if_running(&ifname);
        if up != inner.link_up {
            match up {
                Some(true) => {
                    out.reannounce = true;
                    warn!(
                        interface = %ifname,
                        ifindex = inner.dataplane.ifindex(),
                        leading = inner.leading,
                        event = events::INTERFACE_UP,
                        "interface came back up: XDP link checked, addresses checked, announcing again"
                    );
                }
                Some(false) => {
                    warn!(interface = %ifname, event = events::INTERFACE_DOWN, "interface is down")
                }
                None => {
                    warn!(interface = %ifname, "interface is gone; waiting for it to come back")
                }
            }
            inner.link_up = up;
        }
        if inner.leading {
            for ip in &self.vips {
                match inner.addresses.has(*ip).await {
                    Ok(true) => {}
                    Ok(false) => match inner.addresses.add(*ip).await {
                        Ok(()) => {
                            out.reannounce = true;
                            out.repairs.push(Repair {
                                kind: RepairKind::AddressMissing,
                                detail: format!(
                                    "VIP address {ip} was missing while leading (removed by someone else, or gone with its \
                                     interface); added it again and announcing"
                                ),
                            });
                        }
                        Err(e) => errors.push(format!("re-adding {ip}: {e}")),
                    },
                    Err(e) => errors.push(format!("checking {ip}: {e}")),
                }
            }
        }
        let error = (!errors.is_empty()).then(|| errors.join("; "));
        if error != inner.last_error {
            if let Some(e) = &error {
                warn!(error = %e, "repair failed; retrying every second");
            }
            inner.last_error = error;
        }
        out
    }

    /// Graceful end: fenced, addresses removed, program detached and unpinned.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.follow().await?;
        let inner = self.inner.into_inner();
        inner.dataplane.shutdown()?;
        Ok(())
    }
}

/// The election drives the node through this: [`Node::lead`] and
/// [`Node::follow`] keep the safety order above.
impl crate::election::Fence for Node {
    async fn lead(&self, deadline: MonoTime) -> anyhow::Result<()> {
        Node::lead(self, deadline).await
    }

    async fn follow(&self) -> anyhow::Result<()> {
        Node::follow(self).await
    }
}
