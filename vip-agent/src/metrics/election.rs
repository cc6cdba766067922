//! The election's families, read from the [`Status`] watch when /metrics is
//! asked (a [`Collector`]): the election only publishes its status.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use tokio::sync::watch;

use super::families::{labelled, single};
use crate::clock::MonoTime;
use crate::election::{Role, Status};

#[derive(Debug)]
pub(super) struct ElectionCollector {
    pub(super) identity: String,
    pub(super) status: watch::Receiver<Status>,
}

impl Collector for ElectionCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let st = self.status.borrow().clone();
        let leading = matches!(st.role, Role::Leading);
        labelled(
            &mut enc,
            "vip_agent_leader",
            "1 while this node holds the Lease and answers for the VIP.",
            [(
                [("identity", self.identity.as_str())],
                ConstGauge::new(i64::from(leading)),
            )],
        )?;
        let holder = match &st.role {
            Role::Leading => self.identity.as_str(),
            Role::Following { holder } => holder.as_deref().unwrap_or_default(),
        };
        labelled(
            &mut enc,
            "vip_agent_lease_holder_info",
            "The Lease holder as this node last saw it.",
            [([("holder", holder)], ConstGauge::new(1i64))],
        )?;
        let remaining = st.fence_deadline.map_or(0.0, |d| {
            d.saturating_duration_since(MonoTime::now()).as_secs_f64()
        });
        single(
            &mut enc,
            "vip_agent_fence_remaining_seconds",
            "Time until the data plane stops answering by itself unless the Lease is renewed.",
            ConstGauge::new(remaining),
        )?;
        single(
            &mut enc,
            "vip_agent_healthy",
            "Health gate (1: may lead).",
            ConstGauge::new(i64::from(st.healthy)),
        )?;
        single(
            &mut enc,
            "vip_agent_lease_transitions",
            "leaseTransitions of the Lease as last seen.",
            ConstGauge::new(i64::from(st.lease_transitions)),
        )?;
        for (name, help, value) in [
            (
                "vip_agent_acquisitions",
                "Times this node became leader.",
                st.acquisitions,
            ),
            (
                "vip_agent_renewals",
                "Successful Lease renewals.",
                st.renewals,
            ),
            (
                "vip_agent_renew_failures",
                "Failed Lease renewals.",
                st.renew_failures,
            ),
            (
                "vip_agent_api_requests",
                "Requests made to the Kubernetes API (each watch counts once).",
                st.api_requests,
            ),
            (
                "vip_agent_watch_starts",
                "Lease watches opened.",
                st.watch_starts,
            ),
        ] {
            single(&mut enc, name, help, ConstCounter::new(value))?;
        }
        Ok(())
    }
}
