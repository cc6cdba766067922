//! Helpers of the Lease API server tests: a server, a kube-rs client built from
//! the kubeconfig it writes, Lease values, a time bound.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use http::header::{HeaderValue, USER_AGENT};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use vip_lease_server::{LeaseServer, LeaseServerHandle, LeaseServerOptions};

pub const NS: &str = "kube-system";
pub const LIMIT: Duration = Duration::from_secs(30);

pub static SEQ: AtomicU32 = AtomicU32::new(0);

pub async fn start() -> LeaseServerHandle {
    start_with(LeaseServerOptions {
        bookmark_interval: Duration::from_millis(200),
        ..LeaseServerOptions::default()
    })
    .await
}

pub async fn start_with(opts: LeaseServerOptions) -> LeaseServerHandle {
    LeaseServer::start(opts).await.expect("lease server starts")
}

pub fn temp_path(what: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "vip-lab-{what}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ))
}

/// A kube client built from the kubeconfig the server writes, announcing `identity`.
pub async fn client(h: &LeaseServerHandle, identity: Option<&str>) -> Client {
    let path = temp_path("kubeconfig");
    h.write_kubeconfig(&path).expect("kubeconfig written");
    let kc = Kubeconfig::read_from(&path).expect("kubeconfig parses");
    std::fs::remove_file(&path).expect("kubeconfig removed");
    let mut cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config from kubeconfig");
    assert_eq!(cfg.default_namespace, NS);
    if let Some(id) = identity {
        let ua = HeaderValue::from_str(&format!("vip-agent/0.1.0 identity/{id}")).unwrap();
        cfg.headers.push((USER_AGENT, ua));
    }
    Client::try_from(cfg).expect("client")
}

pub async fn leases(h: &LeaseServerHandle, identity: Option<&str>) -> Api<Lease> {
    Api::namespaced(client(h, identity).await, NS)
}

pub fn new_lease(name: &str, holder: &str) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.to_owned()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(jiff::Timestamp::now())),
            ..LeaseSpec::default()
        }),
    }
}

pub fn api_status(r: Result<impl std::fmt::Debug, kube::Error>) -> kube::core::Status {
    match r {
        Err(kube::Error::Api(s)) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

pub fn holder(l: &Lease) -> Option<&str> {
    l.spec.as_ref()?.holder_identity.as_deref()
}

pub async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("test finished within its time limit")
}
