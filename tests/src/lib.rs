//! The lab: namespace topologies, an embedded Lease API server, probes.
pub mod netns;
pub mod packet_socket;
pub mod topology;
pub mod lease_server;
pub mod agent;
pub mod lab;
pub mod keepalived;
pub mod bench;
