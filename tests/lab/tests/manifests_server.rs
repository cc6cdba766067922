//! The manifests `vip-agent manifest pod | rbac | daemonset` prints pass the
//! API server's own validation and admission: `kubectl apply
//! --dry-run=server` against the lab's real kube-apiserver (super-admin),
//! nothing persisted. Needs root, kubectl and the control plane binaries.

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use vip_lab::controlplane::{ControlPlane, Identity, NodeSpec};
use vip_lab::netns::NetNs;
use vip_lab::topology::Lan;

const READY: Duration = Duration::from_secs(120);

fn manifest(bin: &Path, args: &[&str]) -> String {
    let out = Command::new(bin)
        .arg("manifest")
        .args(args)
        .output()
        .expect("run vip-agent manifest");
    assert!(
        out.status.success(),
        "vip-agent manifest {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// `kubectl apply --dry-run=server -f -` in the node's namespace (its
/// 127.0.0.1:6443 is its API server); kubectl's stdout lines.
fn apply_dry_run(ns: &NetNs, kubeconfig: &Path, yaml: &str) -> Vec<String> {
    let mut child = ns
        .command("kubectl")
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(["apply", "--dry-run=server", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(yaml.as_bytes())
        .expect("write manifest");
    let out = child.wait_with_output().expect("kubectl runs");
    assert!(
        out.status.success(),
        "the API server refused the manifest: {}\n{yaml}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn pod_rbac_and_daemonset_pass_server_side_dry_run() {
    vip_lab::require_root!();
    vip_lab::require_controlplane!();
    vip_lab::require_tool!("kubectl", package = "kubernetes-client");
    let bin = vip_lab::agent::agent_bin().expect("vip-agent binary (VIP_AGENT_BIN)");
    let lan = Lan::new(1).expect("lan");
    let node = lan.node(0);
    let ip = node.v4().expect("node address");
    let vip = IpAddr::V4(lan.vip_v4(0));
    let cp = ControlPlane::start(&[NodeSpec { ns: node.ns(), ip }], vip, READY)
        .expect("control plane starts");
    let kubeconfig = cp.kubeconfig_as(0, Identity::SuperAdmin);
    // The lab runs no kube-controller-manager, whose ServiceAccount
    // controller creates `default` in every namespace; the Pod's admission
    // looks it up, so create it as that controller would.
    let out = node
        .ns()
        .command("kubectl")
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(["-n", "kube-system", "create", "serviceaccount", "default"])
        .output()
        .expect("kubectl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let flags = [
        "--interface",
        "eth0",
        "--address",
        "192.0.2.10",
        "--health-check",
    ];
    let mut pod = vec!["pod"];
    pod.extend(flags);
    let mut daemonset = vec!["daemonset"];
    daemonset.extend(flags);

    let cases: [(&[&str], &[&str]); 3] = [
        (&pod, &["pod/vip-agent"]),
        (
            &["rbac"],
            &[
                "role.rbac.authorization.k8s.io/vip-agent-leases",
                "rolebinding.rbac.authorization.k8s.io/vip-agent-leases",
            ],
        ),
        (
            &daemonset,
            &[
                "serviceaccount/vip-agent",
                "role.rbac.authorization.k8s.io/vip-agent-leases",
                "rolebinding.rbac.authorization.k8s.io/vip-agent-leases",
                "configmap/vip-agent-kubeconfig",
                "daemonset.apps/vip-agent",
            ],
        ),
    ];
    for (args, objects) in cases {
        let yaml = manifest(&bin, args);
        let lines = apply_dry_run(node.ns(), kubeconfig, &yaml);
        eprintln!("manifest {}: {}", args[0], lines.join("; "));
        assert_eq!(lines.len(), objects.len(), "{lines:?}");
        for (line, object) in lines.iter().zip(objects) {
            assert!(
                line.starts_with(&format!("{object} ")) && line.ends_with("(server dry run)"),
                "{line:?} for {object}"
            );
        }
    }
    // A manifest the server must refuse is refused (the check has teeth):
    // an invalid toleration operator.
    let yaml = manifest(&bin, &daemonset).replace("operator: Exists", "operator: Sometimes");
    let out = node
        .ns()
        .command("kubectl")
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(["apply", "--dry-run=server", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().expect("stdin").write_all(yaml.as_bytes())?;
            c.wait_with_output()
        })
        .expect("kubectl");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("operator"), "{err}");
}
