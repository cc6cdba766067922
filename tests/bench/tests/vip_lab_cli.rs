//! The `vip-lab` command: `vip-lab lease-server` runs, writes a kubeconfig a
//! kube-rs client works with, and stops on SIGTERM.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff;
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

const LIMIT: Duration = Duration::from_secs(30);

fn new_lease(name: &str, holder: &str) -> Lease {
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

fn holder(l: &Lease) -> Option<&str> {
    l.spec.as_ref()?.holder_identity.as_deref()
}

async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("test finished within its time limit")
}

#[tokio::test]
async fn binary_runs_writes_kubeconfig_and_stops_on_sigterm() {
    use tokio::io::AsyncBufReadExt as _;
    bounded(async {
        let kubeconfig =
            std::env::temp_dir().join(format!("vip-lab-bin-kubeconfig-{}", std::process::id()));
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_vip-lab"))
            .args(["lease-server", "--listen", "127.0.0.1:0", "--kubeconfig"])
            .arg(&kubeconfig)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = lines.next_line().await.unwrap().expect("a ready line");
        assert!(
            ready.contains("ready") && ready.contains(&kubeconfig.display().to_string()),
            "{ready}"
        );

        let kc = Kubeconfig::read_from(&kubeconfig).unwrap();
        let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .unwrap();
        let api: Api<Lease> = Api::default_namespaced(Client::try_from(cfg).unwrap());
        api.create(&PostParams::default(), &new_lease("vip", "a"))
            .await
            .unwrap();
        assert_eq!(holder(&api.get("vip").await.unwrap()), Some("a"));

        let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let status = child.wait().await.unwrap();
        assert!(status.success(), "{status:?}");
        let _ = std::fs::remove_file(&kubeconfig);
    })
    .await;
}
