//! The lab: namespace topologies, an embedded Lease API server, probes.
pub mod agent;
pub mod bench;
pub mod keepalived;
pub mod lab;
pub mod lease_server;
pub mod netns;
pub mod packet_socket;
pub mod topology;
pub mod upgrade;
