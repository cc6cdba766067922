//! The lab's view of the Lease on the real control plane: from the "api"
//! namespace (an observer on the LAN), one watch per node's API server (at
//! the node address), so that a node cut off or an API server that hangs does
//! not blind the lab. Every committed change has one resourceVersion; the
//! first watch to report it records it (the others' copies are dropped).

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, WatchEvent, WatchParams};
use vip_lease_server::EventType;

use super::{LEASE_NS, LeaseChange};
use crate::netns::NetNs;

/// Server-side timeout of one watch request (then it is reopened).
const WATCH_TIMEOUT_S: u32 = 30;
/// Wait before reopening a watch that failed.
const RETRY: Duration = Duration::from_millis(200);

/// The running watches; stopped on drop.
pub(super) struct LeaseWatch {
    stop: tokio::sync::watch::Sender<bool>,
    threads: Vec<JoinHandle<()>>,
}

impl LeaseWatch {
    /// Watch the lab's Lease `name` through each API server of `nodes`
    /// (addresses), from `ns`, with the credentials of `kubeconfig` (its
    /// server replaced by each node's address); changes go to `log`.
    pub(super) fn start(
        ns: &NetNs,
        nodes: &[Ipv4Addr],
        kubeconfig: &Path,
        name: &'static str,
        log: Arc<Mutex<Vec<LeaseChange>>>,
    ) -> anyhow::Result<Self> {
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let seen = Arc::new(Mutex::new(HashSet::new()));
        let mut threads = Vec::new();
        for ip in nodes {
            let url = format!("https://{ip}:6443");
            let kubeconfig = kubeconfig.to_owned();
            let (log, seen, mut stop_rx) = (log.clone(), seen.clone(), stop_rx.clone());
            let file = ns.open_file()?;
            threads.push(
                std::thread::Builder::new()
                    .name(format!("lease-watch-{ip}"))
                    .spawn(move || {
                        if let Err(e) =
                            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                        {
                            eprintln!("vip-lab: lease watch: setns failed: {e}");
                            return;
                        }
                        drop(file);
                        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                        else {
                            return;
                        };
                        rt.block_on(async move {
                            tokio::select! {
                                () = watch_loop(&url, &kubeconfig, name, &log, &seen) => {}
                                _ = stop_rx.wait_for(|s| *s) => {}
                            }
                        });
                    })?,
            );
        }
        Ok(Self { stop, threads })
    }
}

impl Drop for LeaseWatch {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

pub(super) async fn leases(url: &str, kubeconfig: &Path) -> anyhow::Result<Api<Lease>> {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    let kc = Kubeconfig::read_from(kubeconfig)?;
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    cfg.cluster_url = url.parse()?;
    cfg.tls_server_name = Some("kubernetes".into());
    cfg.connect_timeout = Some(Duration::from_secs(1));
    cfg.read_timeout = Some(Duration::from_secs(u64::from(WATCH_TIMEOUT_S) + 5));
    let client = kube::Client::try_from(cfg)?;
    Ok(Api::namespaced(client, LEASE_NS))
}

/// Watch forever (until the caller's select ends it): list to get a version,
/// watch from it, record each change once; on any error start over.
async fn watch_loop(
    url: &str,
    kubeconfig: &Path,
    name: &str,
    log: &Mutex<Vec<LeaseChange>>,
    seen: &Mutex<HashSet<String>>,
) {
    loop {
        if let Err(e) = watch_once(url, kubeconfig, name, log, seen).await {
            tracing::debug!(%url, error = %e, "lease watch ended");
        }
        tokio::time::sleep(RETRY).await;
    }
}

async fn watch_once(
    url: &str,
    kubeconfig: &Path,
    name: &str,
    log: &Mutex<Vec<LeaseChange>>,
    seen: &Mutex<HashSet<String>>,
) -> anyhow::Result<()> {
    let api = leases(url, kubeconfig).await?;
    let list = api
        .list_metadata(&kube::api::ListParams::default().fields(&format!("metadata.name={name}")))
        .await?;
    let mut rv = list.metadata.resource_version.unwrap_or_default();
    loop {
        let wp = WatchParams::default()
            .fields(&format!("metadata.name={name}"))
            .timeout(WATCH_TIMEOUT_S);
        let mut stream = api.watch(&wp, &rv).await?.boxed();
        while let Some(ev) = stream.try_next().await? {
            let (kind, lease) = match ev {
                WatchEvent::Added(l) => (EventType::Added, l),
                WatchEvent::Modified(l) => (EventType::Modified, l),
                WatchEvent::Deleted(l) => (EventType::Deleted, l),
                WatchEvent::Bookmark(b) => {
                    rv = b.metadata.resource_version;
                    continue;
                }
                WatchEvent::Error(e) => anyhow::bail!("watch error: {e:?}"),
            };
            let at = Instant::now();
            let version = lease.metadata.resource_version.clone().unwrap_or_default();
            rv.clone_from(&version);
            let first = seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(version);
            if !first {
                continue;
            }
            let holder = lease
                .spec
                .as_ref()
                .and_then(|s| s.holder_identity.clone())
                .filter(|h| !h.is_empty() && kind != EventType::Deleted);
            log.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(LeaseChange {
                    at,
                    holder,
                    kind,
                    members: super::peers::members_of(&lease),
                });
        }
    }
}
