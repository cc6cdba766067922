//! [`Fence`]: what the election asks of the data plane.

use std::future::Future;

use crate::clock::MonoTime;

/// What the data plane must do. Implemented by the agent's dataplane owner.
pub trait Fence: Send + Sync {
    /// Answer for the VIP until `deadline` (CLOCK_MONOTONIC). Called after every
    /// successful acquire/renew, with deadline = (moment that request was SENT)
    /// + renew_deadline. Must have taken effect when it returns.
    fn lead(&self, deadline: MonoTime) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Stop answering (entry inactive first, then address removed). Must have
    /// taken effect when it returns.
    fn follow(&self) -> impl Future<Output = anyhow::Result<()>> + Send;
}
