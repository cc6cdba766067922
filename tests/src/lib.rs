//! The lab: namespace topologies, an embedded Lease API server, probes.
