//! Objects the lab puts into the real API server as kubeadm and an operator
//! would: kubeadm's `kubeadm:cluster-admins` ClusterRoleBinding, and the RBAC
//! manifest of deploy/rbac.yaml (applied with server-side apply, so applying
//! twice is a no-op). Everything here is async and opens its connections in
//! the caller's network namespace: run it with [`in_ns`].

use std::future::Future;
use std::path::Path;

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use super::files::ADMINS_GROUP;
use crate::netns::NetNs;

/// The field manager of the lab's server-side applies.
const FIELD_MANAGER: &str = "vip-lab";

/// Errors of talking to the real API server.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        source: kube::config::KubeconfigError,
    },
    #[error("client: {0}")]
    Client(#[from] kube::Error),
    #[error("manifest document {index}: {message}")]
    Manifest { index: usize, message: String },
    #[error("applying {kind} {name}: {source}")]
    Apply {
        kind: String,
        name: String,
        source: kube::Error,
    },
    #[error(transparent)]
    Netns(#[from] crate::netns::Error),
    #[error("runtime: {0}")]
    Runtime(std::io::Error),
}

/// A client from a kubeconfig file.
pub async fn client(kubeconfig: &Path) -> Result<Client, ObjectError> {
    let bad = |source| ObjectError::Kubeconfig {
        path: kubeconfig.display().to_string(),
        source,
    };
    let kc = Kubeconfig::read_from(kubeconfig).map_err(bad)?;
    let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(bad)?;
    Ok(Client::try_from(cfg)?)
}

/// Run `fut` to completion on a fresh single-threaded runtime on a thread
/// inside `ns` (so every connection it opens is made there).
pub fn in_ns<T: Send>(
    ns: &NetNs,
    fut: impl Future<Output = Result<T, ObjectError>> + Send,
) -> Result<T, ObjectError> {
    ns.try_run(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ObjectError::Runtime)?
            .block_on(fut)
    })?
}

/// kubeadm's ClusterRoleBinding that gives the group of admin.conf
/// (`kubeadm:cluster-admins`) the `cluster-admin` role. kubeadm creates it
/// during `init`, through the control-plane endpoint.
pub fn cluster_admins_binding() -> ClusterRoleBinding {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": ADMINS_GROUP},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "cluster-admin",
        },
        "subjects": [{
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Group",
            "name": ADMINS_GROUP,
        }],
    }))
    .unwrap_or_else(|e| unreachable!("a literal ClusterRoleBinding: {e}"))
}

/// Create (or leave as is) kubeadm's `kubeadm:cluster-admins` binding.
pub async fn create_cluster_admins_binding(client: &Client) -> Result<(), ObjectError> {
    let api: Api<ClusterRoleBinding> = Api::all(client.clone());
    apply(&api, "ClusterRoleBinding", &cluster_admins_binding()).await
}

async fn apply<K>(api: &Api<K>, kind: &str, obj: &K) -> Result<(), ObjectError>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .map_err(|source| ObjectError::Apply {
        kind: kind.to_owned(),
        name,
        source,
    })?;
    Ok(())
}

/// Apply every RBAC object (Role, RoleBinding, ClusterRole,
/// ClusterRoleBinding) of a multi-document YAML manifest such as
/// deploy/rbac.yaml. Returns `kind/name` of each; any other kind is an error.
pub async fn apply_rbac_manifest(client: &Client, yaml: &str) -> Result<Vec<String>, ObjectError> {
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(yaml).map_err(|e| ObjectError::Manifest {
            index: 0,
            message: e.to_string(),
        })?;
    let mut applied = Vec::new();
    for (index, doc) in docs.into_iter().enumerate() {
        if doc.is_null() {
            continue;
        }
        let bad = |e: serde_json::Error| ObjectError::Manifest {
            index,
            message: e.to_string(),
        };
        let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
        let ns = doc["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_owned();
        let name = doc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        match kind.as_str() {
            "Role" => {
                let obj: Role = serde_json::from_value(doc).map_err(bad)?;
                apply(&Api::namespaced(client.clone(), &ns), &kind, &obj).await?;
            }
            "RoleBinding" => {
                let obj: RoleBinding = serde_json::from_value(doc).map_err(bad)?;
                apply(&Api::namespaced(client.clone(), &ns), &kind, &obj).await?;
            }
            "ClusterRole" => {
                let obj: ClusterRole = serde_json::from_value(doc).map_err(bad)?;
                apply(&Api::all(client.clone()), &kind, &obj).await?;
            }
            "ClusterRoleBinding" => {
                let obj: ClusterRoleBinding = serde_json::from_value(doc).map_err(bad)?;
                apply(&Api::all(client.clone()), &kind, &obj).await?;
            }
            other => {
                return Err(ObjectError::Manifest {
                    index,
                    message: format!(
                        "kind {other:?} is not an RBAC object (Role, RoleBinding, ClusterRole, ClusterRoleBinding)"
                    ),
                });
            }
        }
        applied.push(format!("{kind}/{name}"));
    }
    Ok(applied)
}

/// deploy/rbac.yaml of this repository.
pub fn deploy_rbac_yaml() -> std::io::Result<String> {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/rbac.yaml"))
}
