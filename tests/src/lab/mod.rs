//! The lab: N control-plane nodes and a client in network namespaces on a
//! bridge, the embedded Lease server, real agents (or keepalived), a TCP
//! service on the VIP, and continuous probes from the client.

pub mod record;
