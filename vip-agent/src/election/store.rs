//! The Lease store seen by the election state machine: a tiny trait with a
//! kube implementation (`kube_store.rs`) and an in-memory one for tests.

use std::future::Future;

use futures::stream::BoxStream;
use k8s_openapi::api::coordination::v1::Lease;
use kube::core::WatchEvent;

/// A stream of watch events for the one Lease this store is bound to.
pub type LeaseEvents = BoxStream<'static, Result<WatchEvent<Lease>, StoreError>>;

/// Errors of the Lease API, classified by what the election does about them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// 404: the Lease does not exist.
    #[error("lease not found")]
    NotFound,
    /// 409 AlreadyExists on create.
    #[error("lease already exists")]
    AlreadyExists,
    /// 409 Conflict on replace: the resourceVersion we sent is stale.
    #[error("conflict: lease was modified since it was read")]
    Conflict,
    /// 410 Gone on watch: the resourceVersion is too old, re-list.
    #[error("resource version too old (410 Gone)")]
    Gone,
    /// 403: RBAC denies the verb. The agent never leads in this state.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The request did not complete within its timeout.
    #[error("request timed out")]
    Timeout,
    /// Anything else (transport, 5xx, decoding): retried.
    #[error("{0}")]
    Other(String),
}

/// Get / create / replace / watch ONE Lease (namespace and name are fixed
/// when the store is built).
pub trait LeaseStore: Send + Sync {
    /// GET the Lease; `Ok(None)` when it does not exist.
    fn get(&self) -> impl Future<Output = Result<Option<Lease>, StoreError>> + Send;
    /// POST the Lease (`AlreadyExists` when it exists).
    fn create(&self, lease: &Lease) -> impl Future<Output = Result<Lease, StoreError>> + Send;
    /// PUT the Lease with optimistic concurrency: `lease.metadata.resource_version`
    /// must be the version last read; `Conflict` when the stored one differs.
    fn replace(&self, lease: &Lease) -> impl Future<Output = Result<Lease, StoreError>> + Send;
    /// WATCH the Lease from `resource_version` (empty: from now, with the
    /// current object as an `Added` event when it exists).
    fn watch(
        &self,
        resource_version: &str,
    ) -> impl Future<Output = Result<LeaseEvents, StoreError>> + Send;
}
