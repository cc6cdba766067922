//! The wiring of [`Selector`](super::credentials::Selector): a
//! [`LeaseStore`] that sends each request with the kubeconfig in force,
//! falls back to super-admin on a 403 from admin, and an admin probe that
//! switches back. See `credentials.rs` for the why and the safety argument.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use tokio::sync::watch;
use tracing::{debug, info, warn};
use vip_common::events;

use super::client::{ClientOptions, build_client};
use super::credentials::{Answer, Kubeconfig, Selector, Step};
use super::kube_store::KubeLeaseStore;
use super::store::{LeaseEvents, LeaseStore, StoreError};

/// Where the super-admin store comes from.
pub trait SuperAdmin<S>: Send + Sync {
    /// The store with super-admin credentials; `Err(why)` when there is none
    /// (no file: a join node, or a cluster older than kubeadm 1.29).
    fn load(&self) -> impl Future<Output = Result<S, String>> + Send;
}

/// `--super-admin-kubeconfig`: a kube client built from that file when it
/// is needed (the file may appear after the agent started), with the same
/// API server URL, TLS name and User-Agent as the admin client.
pub struct KubeSuperAdmin {
    pub options: ClientOptions,
    pub namespace: String,
    pub name: String,
}

impl SuperAdmin<KubeLeaseStore> for KubeSuperAdmin {
    async fn load(&self) -> Result<KubeLeaseStore, String> {
        let path = &self.options.kubeconfig;
        if !path.exists() {
            return Err(format!("{} does not exist", path.display()));
        }
        let client = build_client(&self.options)
            .await
            .map_err(|e| e.to_string())?;
        Ok(KubeLeaseStore::new(client, &self.namespace, &self.name))
    }
}

/// The Lease through admin credentials, or super-admin while admin is
/// forbidden. `L` is `None` when `--super-admin-kubeconfig` is empty.
pub struct FallbackStore<S, L> {
    admin: S,
    admin_path: PathBuf,
    super_admin: Option<(L, PathBuf)>,
    /// The super-admin store once loaded (kept: the file may go away later,
    /// the credentials it held stay valid until admin works again).
    loaded: Mutex<Option<S>>,
    selector: Mutex<Selector>,
    current: watch::Sender<Kubeconfig>,
    on_switch: Box<dyn Fn(Kubeconfig) + Send + Sync>,
}

impl<S: LeaseStore + Clone, L: SuperAdmin<S>> FallbackStore<S, L> {
    /// `on_switch` is called with the kubeconfig in force now and after every
    /// switch (the metric).
    pub fn new(
        admin: S,
        admin_path: &Path,
        super_admin: Option<(L, PathBuf)>,
        on_switch: impl Fn(Kubeconfig) + Send + Sync + 'static,
    ) -> Self {
        on_switch(Kubeconfig::Admin);
        Self {
            admin,
            admin_path: admin_path.to_owned(),
            super_admin,
            loaded: Mutex::new(None),
            selector: Mutex::new(Selector::new()),
            current: watch::channel(Kubeconfig::Admin).0,
            on_switch: Box::new(on_switch),
        }
    }

    /// The kubeconfig in force.
    pub fn using(&self) -> Kubeconfig {
        *self.current.borrow()
    }

    fn selector(&self) -> std::sync::MutexGuard<'_, Selector> {
        self.selector
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn switched(&self, to: Kubeconfig) {
        self.current.send_replace(to);
        (self.on_switch)(to);
    }

    fn super_admin_path(&self) -> String {
        self.super_admin
            .as_ref()
            .map(|(_, p)| p.display().to_string())
            .unwrap_or_default()
    }

    /// The loaded super-admin store, loading it if needed.
    async fn super_admin_store(&self) -> Result<S, String> {
        let loaded = self
            .loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some(s) = loaded {
            return Ok(s);
        }
        let Some((loader, _)) = &self.super_admin else {
            return Err("--super-admin-kubeconfig is empty (off)".to_owned());
        };
        let s = loader.load().await?;
        *self
            .loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(s.clone());
        Ok(s)
    }

    /// The 403 the election sees when nothing else can be tried: names the
    /// fix (the binding, or the super-admin kubeconfig).
    fn refused(&self, message: String, why: &str) -> StoreError {
        StoreError::Forbidden(format!(
            "{message} (with --kubeconfig {}; no fallback: {why}). On the first control-plane \
             node of kubeadm >= 1.29, admin.conf has rights only once kubeadm's \
             kubeadm:cluster-admins ClusterRoleBinding exists: create it, or give the agent \
             kubeadm's super-admin.conf with --super-admin-kubeconfig (default \
             /etc/kubernetes/super-admin.conf) to use until then",
            self.admin_path.display()
        ))
    }

    /// Sends `op` with the kubeconfig in force; on a 403 from admin, falls
    /// back (if it can) and sends it again with super-admin.
    async fn request<T, Fut>(
        &self,
        verb: &'static str,
        op: impl Fn(S) -> Fut,
    ) -> Result<T, StoreError>
    where
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let sent_with = self.selector().using();
        let store = match sent_with {
            Kubeconfig::Admin => self.admin.clone(),
            Kubeconfig::SuperAdmin => match self.super_admin_store().await {
                Ok(s) => s,
                // Loaded before the switch, so this cannot happen; be safe.
                Err(why) => return Err(StoreError::Other(why)),
            },
        };
        let r = op(store).await;
        let answer = Answer::of(&r);
        let Err(StoreError::Forbidden(message)) = r else {
            let step = self.selector().on_answer(sent_with, answer, false);
            if step == Step::Restore {
                self.restored(verb);
            }
            return r;
        };
        if sent_with == Kubeconfig::SuperAdmin {
            self.selector().on_answer(sent_with, answer, true);
            return Err(StoreError::Forbidden(format!(
                "{message} (with --super-admin-kubeconfig {} too)",
                self.super_admin_path()
            )));
        }
        let super_admin = self.super_admin_store().await;
        let step = self
            .selector()
            .on_answer(sent_with, answer, super_admin.is_ok());
        match (step, super_admin) {
            (Step::FallBack | Step::Retry, Ok(s)) => {
                if step == Step::FallBack {
                    warn!(
                        verb,
                        kubeconfig = %self.admin_path.display(),
                        super_admin_kubeconfig = %self.super_admin_path(),
                        %message,
                        event = events::CREDENTIALS_SUPER_ADMIN,
                        "--kubeconfig is forbidden on the Lease: using --super-admin-kubeconfig until it \
                         is allowed (kubeadm >= 1.29, first control-plane node: admin.conf has rights \
                         once kubeadm creates the kubeadm:cluster-admins binding)"
                    );
                    self.switched(Kubeconfig::SuperAdmin);
                }
                let r = op(s).await;
                match r {
                    Err(StoreError::Forbidden(m)) => Err(StoreError::Forbidden(format!(
                        "{m} (with --super-admin-kubeconfig {} too)",
                        self.super_admin_path()
                    ))),
                    r => r,
                }
            }
            (_, Err(why)) => Err(self.refused(message, &why)),
            // Not produced by the selector for an admin 403 with a
            // super-admin at hand; the 403 stands if it ever were.
            (_, Ok(_)) => Err(self.refused(message, "not switched")),
        }
    }

    fn restored(&self, how: &str) {
        info!(
            kubeconfig = %self.admin_path.display(),
            by = how,
            event = events::CREDENTIALS_ADMIN,
            "--kubeconfig is allowed on the Lease: back to it, super-admin credentials no longer used"
        );
        self.switched(Kubeconfig::Admin);
    }

    /// While on super-admin: every `period`, GET the Lease with admin (bounded
    /// by `timeout`); the first authorized answer switches back. Read-only,
    /// so it never competes with the election's writes. Runs until dropped.
    pub async fn probe_admin(&self, period: Duration, timeout: Duration) {
        let mut rx = self.current.subscribe();
        loop {
            if rx.wait_for(|k| *k == Kubeconfig::SuperAdmin).await.is_err() {
                return std::future::pending().await;
            }
            tokio::time::sleep(period).await;
            let r = match tokio::time::timeout(timeout, self.admin.get()).await {
                Ok(r) => r,
                Err(_) => Err(StoreError::Timeout),
            };
            let answer = Answer::of(&r);
            if self.selector().on_probe(answer) == Step::Restore {
                self.restored("probe");
            } else {
                debug!(?answer, "admin probe: still on super-admin");
            }
        }
    }
}

impl<S: LeaseStore + Clone, L: SuperAdmin<S>> LeaseStore for FallbackStore<S, L> {
    async fn get(&self) -> Result<Option<Lease>, StoreError> {
        self.request("get", |s| async move { s.get().await }).await
    }

    async fn create(&self, lease: &Lease) -> Result<Lease, StoreError> {
        self.request("create", |s| async move { s.create(lease).await })
            .await
    }

    async fn replace(&self, lease: &Lease) -> Result<Lease, StoreError> {
        self.request("update", |s| async move { s.replace(lease).await })
            .await
    }

    async fn watch(&self, resource_version: &str) -> Result<LeaseEvents, StoreError> {
        self.request("watch", |s| async move { s.watch(resource_version).await })
            .await
    }
}
