//! vip-agent: a control-plane VIP for bare-metal Kubernetes. The XDP program
//! answers ARP/NS for the VIP only while this node holds the Lease and only
//! until the deadline its last successful renew allows.

pub mod addr;
pub mod agent;
pub mod announce;
pub mod cli;
pub mod clock;
pub mod config;
pub mod dataplane;
pub mod election;
pub mod kernel_guard;
pub mod kube_vip;
pub mod manifest;
pub mod metrics;
pub mod node;
pub mod peer;
pub mod status;
pub mod timing;
