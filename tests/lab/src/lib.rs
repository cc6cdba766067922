//! The lab: namespace topologies, agents, keepalived and kube-vip in namespaces, probes,
//! scenarios; the Lease API server is the `vip-lease-server` crate, the
//! benchmarks and the `vip-lab` command are `vip-bench`.
pub mod agent;
pub mod agent_log;
pub mod contract;
pub mod controlplane;
pub mod keepalived;
pub mod kube_vip;
pub mod lab;
pub mod netns;
pub mod packet_socket;
pub mod podman;
pub mod prometheus;
pub mod skip;
pub mod topology;
pub mod upgrade;
