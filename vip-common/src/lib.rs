//! Types and packet logic shared by the XDP program (`vip-ebpf`) and the agent.
//!
//! Everything here is `no_std` and free of allocation so that the very same
//! decision code runs inside the kernel and in host tests and fuzzers.
//! Multi-byte packet fields are kept as byte arrays and converted with explicit
//! `from_be_bytes`/`to_be_bytes`, so byte order is visible at every field.
#![no_std]

#[cfg(any(test, feature = "host"))]
extern crate std;

pub mod checksum;
pub mod counters;
pub mod events;
pub mod headers;
pub mod maps;
pub mod process;

#[cfg(any(test, feature = "host"))]
pub mod frame;

pub use counters::ProtoCounter;
pub use maps::{ClaimRecord, Counter, PassReason, RefuseReason, VipEntry, VipKey};
pub use process::{Clock, Outcome, Packet, Proto, VipTable, process};
