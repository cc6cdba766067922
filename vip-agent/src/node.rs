//! The node's hold on the VIP: the one owner of the data plane, the VIP
//! addresses and the announcer, so the safety order lives in one place:
//!
//! - take over: entry active (with its deadline) -> address added -> announce;
//! - give up:   entry inactive -> address removed (-> caller releases the lease).

use std::net::IpAddr;

use tokio::sync::{Mutex, watch};
use tracing::info;

use crate::addr::Addresses;
use crate::clock::MonoTime;
use crate::dataplane::{Counters, Dataplane, DataplaneError};

struct Inner {
    dataplane: Dataplane,
    addresses: Addresses,
    leading: bool,
}

pub struct Node {
    inner: Mutex<Inner>,
    vips: Vec<IpAddr>,
    announce: watch::Sender<bool>,
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
                info!(%ip, "removed a stale VIP address before competing");
            }
        }
        let mut dataplane = dataplane;
        dataplane.forget_unconfigured()?;
        Ok(Self {
            inner: Mutex::new(Inner {
                dataplane,
                addresses,
                leading: false,
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
            info!(vips = ?self.vips, "leading: answering for the VIP");
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
            info!(vips = ?self.vips, "following: VIP fenced and removed");
        }
        inner.leading = false;
        Ok(())
    }

    pub async fn counters(&self) -> Result<Counters, DataplaneError> {
        self.inner.lock().await.dataplane.counters()
    }

    /// Graceful end: fenced, addresses removed, program detached and unpinned.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.follow().await?;
        let inner = self.inner.into_inner();
        inner.dataplane.shutdown()?;
        Ok(())
    }
}
