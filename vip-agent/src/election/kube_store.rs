//! [`LeaseStore`] on the Kubernetes API (`coordination.k8s.io/v1` Lease).

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams, WatchParams};

use super::WATCH_TIMEOUT_SECS;
use super::store::{LeaseEvents, LeaseStore, StoreError};

/// One Lease (`namespace/name`) through a `kube::Client`.
#[derive(Clone)]
pub struct KubeLeaseStore {
    api: Api<Lease>,
    name: String,
}

impl KubeLeaseStore {
    pub fn new(client: kube::Client, namespace: &str, name: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
        }
    }
}

/// Classify a kube error for the election.
pub fn classify(e: kube::Error) -> StoreError {
    match e {
        kube::Error::Api(st) => match st.code {
            404 => StoreError::NotFound,
            409 if st.reason == "AlreadyExists" => StoreError::AlreadyExists,
            409 => StoreError::Conflict,
            410 => StoreError::Gone,
            403 => StoreError::Forbidden(st.message.clone()),
            401 => StoreError::Other(format!(
                "401 Unauthorized ({}): the kubeconfig's credentials were rejected (expired client certificate or token?)",
                st.message
            )),
            code => StoreError::Other(format!("API error {code} {}: {}", st.reason, st.message)),
        },
        other => StoreError::Other(other.to_string()),
    }
}

impl LeaseStore for KubeLeaseStore {
    async fn get(&self) -> Result<Option<Lease>, StoreError> {
        self.api.get_opt(&self.name).await.map_err(classify)
    }

    async fn create(&self, lease: &Lease) -> Result<Lease, StoreError> {
        self.api
            .create(&PostParams::default(), lease)
            .await
            .map_err(classify)
    }

    async fn replace(&self, lease: &Lease) -> Result<Lease, StoreError> {
        self.api
            .replace(&self.name, &PostParams::default(), lease)
            .await
            .map_err(classify)
    }

    async fn watch(&self, resource_version: &str) -> Result<LeaseEvents, StoreError> {
        let wp = WatchParams::default()
            .fields(&format!("metadata.name={}", self.name))
            .timeout(WATCH_TIMEOUT_SECS);
        // `WatchParams::default()` already asks for bookmarks.
        debug_assert!(wp.bookmarks);
        let stream = self
            .api
            .watch(&wp, resource_version)
            .await
            .map_err(classify)?;
        Ok(stream.map_err(classify).boxed())
    }
}
