//! `vip-agent manifest daemonset`: five typed documents (ServiceAccount,
//! Role, RoleBinding, ConfigMap, DaemonSet); the DaemonSet runs the pod of
//! `manifest pod` (same args and env, `run` accepts them back) on
//! control-plane nodes only, tolerating their taint, as the ServiceAccount
//! the RoleBinding names, with an in-cluster kubeconfig kube-rs accepts;
//! kubectl's own Go types decode it (offline). The server-side check
//! (`kubectl apply --dry-run=server` against the lab's kube-apiserver) is
//! tests/lab/tests/manifests_server.rs. No root needed.

use std::io::Write;
use std::process::{Command, Stdio};

use clap::Parser;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use serde_json::Value;
use vip_agent::cli;
use vip_agent::manifest::{self, CONTAINER_KUBECONFIG, ManifestKind};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    kind: ManifestKind,
}

const FLAGS: &[&str] = &[
    "--interface",
    "eth0",
    "--address",
    "192.0.2.10",
    "--health-check",
];

fn render(kind: &str, flags: &[&str]) -> Result<String, String> {
    let mut v = vec!["manifest", kind];
    v.extend_from_slice(flags);
    let cli = Cli::try_parse_from(v).map_err(|e| e.to_string())?;
    manifest::render(&cli.kind).map_err(|e| e.to_string())
}

/// The YAML stream split into its documents (after the header comment).
fn documents(yaml: &str) -> Vec<String> {
    yaml.split("\n---\n").map(str::to_owned).collect()
}

struct Docs {
    sa: ServiceAccount,
    role: Role,
    binding: RoleBinding,
    kubeconfig: ConfigMap,
    ds: DaemonSet,
}

fn parse(yaml: &str) -> Docs {
    let docs = documents(yaml);
    assert_eq!(docs.len(), 5, "{yaml}");
    let de = |i: usize| -> Value {
        serde_saphyr::from_str(&docs[i]).unwrap_or_else(|e| panic!("doc {i}: {e}\n{}", docs[i]))
    };
    let kinds: Vec<Value> = (0..5).map(|i| de(i)["kind"].clone()).collect();
    assert_eq!(
        kinds,
        [
            "ServiceAccount",
            "Role",
            "RoleBinding",
            "ConfigMap",
            "DaemonSet"
        ]
        .map(Value::from)
    );
    Docs {
        sa: serde_json::from_value(de(0)).unwrap(),
        role: serde_json::from_value(de(1)).unwrap(),
        binding: serde_json::from_value(de(2)).unwrap(),
        kubeconfig: serde_json::from_value(de(3)).unwrap(),
        ds: serde_json::from_value(de(4)).unwrap(),
    }
}

#[test]
fn daemonset_runs_the_pod_on_control_plane_nodes_as_its_service_account() {
    let yaml = render("daemonset", FLAGS).unwrap();
    let d = parse(&yaml);
    let ds_spec = d.ds.spec.as_ref().unwrap();
    let pod = ds_spec.template.spec.as_ref().unwrap();
    assert_eq!(d.ds.metadata.namespace.as_deref(), Some("kube-system"));
    // The selector selects the template.
    let template_labels = ds_spec.template.metadata.as_ref().unwrap().labels.as_ref();
    for (k, v) in ds_spec.selector.match_labels.as_ref().unwrap() {
        assert_eq!(template_labels.and_then(|l| l.get(k)), Some(v));
    }
    assert_eq!(
        pod.node_selector.as_ref().unwrap()["node-role.kubernetes.io/control-plane"],
        ""
    );
    let t = &pod.tolerations.as_ref().unwrap()[0];
    assert_eq!(
        t.key.as_deref(),
        Some("node-role.kubernetes.io/control-plane")
    );
    assert_eq!(t.operator.as_deref(), Some("Exists"));
    assert_eq!(t.effect.as_deref(), Some("NoSchedule"));
    assert_eq!(pod.host_network, Some(true));
    let c = &pod.containers[0];
    assert_eq!(c.security_context.as_ref().unwrap().privileged, Some(true));

    // ServiceAccount <- RoleBinding -> Role.
    let sa_name = d.sa.metadata.name.clone().unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some(sa_name.as_str()));
    let subject = &d.binding.subjects.as_ref().unwrap()[0];
    assert_eq!(subject.kind, "ServiceAccount");
    assert_eq!(subject.name, sa_name);
    assert_eq!(subject.namespace, d.sa.metadata.namespace);
    assert_eq!(
        d.binding.role_ref.name,
        d.role.metadata.name.clone().unwrap()
    );
    // The same Lease rights as `manifest rbac`.
    let rbac = render("rbac", &[]).unwrap();
    let rbac_role: Value = serde_saphyr::from_str(documents(&rbac)[0].as_str()).unwrap();
    assert_eq!(
        serde_json::to_value(&d.role).unwrap()["rules"],
        rbac_role["rules"]
    );

    // Same args as the static pod but the host kubeconfig files; run accepts them.
    let static_pod: k8s_openapi::api::core::v1::Pod =
        serde_saphyr::from_str(&render("pod", FLAGS).unwrap()).unwrap();
    let pod_args = static_pod.spec.unwrap().containers[0].args.clone().unwrap();
    let args = c.args.clone().unwrap();
    let differ: Vec<_> = args.iter().filter(|a| !pod_args.contains(a)).collect();
    assert_eq!(differ, ["--super-admin-kubeconfig="], "{args:?}");
    assert!(args.contains(&format!("--kubeconfig={CONTAINER_KUBECONFIG}")));
    let mut argv = vec!["vip-agent".to_owned()];
    argv.extend(args);
    let parsed = cli::Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{e}"));
    match parsed.command {
        cli::Command::Run(r) => r.validate().unwrap(),
        _ => panic!("not run"),
    }
    // The node's name from the downward API.
    let env = c.env.as_ref().unwrap();
    let node = env.iter().find(|e| e.name == "VIP_NODE_NAME").unwrap();
    let field = node
        .value_from
        .as_ref()
        .unwrap()
        .field_ref
        .as_ref()
        .unwrap();
    assert_eq!(field.field_path, "spec.nodeName");

    // The kubeconfig comes from the ConfigMap, at the path --kubeconfig names.
    let mount = c
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.mount_path == CONTAINER_KUBECONFIG)
        .unwrap();
    let volume = pod
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == mount.name)
        .unwrap();
    assert!(volume.host_path.is_none());
    let cm = volume.config_map.as_ref().unwrap();
    assert_eq!(Some(cm.name.clone()), d.kubeconfig.metadata.name);
    let key = mount.sub_path.clone().unwrap();
    let text = &d.kubeconfig.data.as_ref().unwrap()[&key];
    let kc = kube::config::Kubeconfig::from_yaml(text).unwrap();
    let user = kc.auth_infos[0].auth_info.as_ref().unwrap();
    assert_eq!(
        user.token_file.as_deref(),
        Some("/var/run/secrets/kubernetes.io/serviceaccount/token")
    );
    // No hostPath of /etc/kubernetes: no super-admin mount.
    assert!(
        pod.volumes
            .as_ref()
            .unwrap()
            .iter()
            .all(|v| v.host_path.as_ref().is_none_or(|h| h.path == "/sys/fs/bpf")),
        "{yaml}"
    );
}

#[test]
fn daemonset_names_bad_flags_like_the_pod() {
    let e = render(
        "daemonset",
        &["--interface", "eth0", "--address", "127.0.0.1"],
    )
    .unwrap_err();
    assert!(e.contains("--address 127.0.0.1"), "{e}");
    let e = render(
        "daemonset",
        &[
            "--interface",
            "eth0",
            "--address",
            "192.0.2.10",
            "--lease-namespace",
            "Bad",
        ],
    )
    .unwrap_err();
    assert!(e.contains("--lease-namespace"), "{e}");
    // The node name given wins over the downward API.
    let yaml = render(
        "daemonset",
        &[
            "--interface",
            "eth0",
            "--address",
            "192.0.2.10",
            "--node-name",
            "cp-1",
        ],
    )
    .unwrap();
    assert!(yaml.contains("- --node-name=cp-1\n") && !yaml.contains("spec.nodeName"));
}

/// kubectl's own Go types decode the DaemonSet (offline: `set image --local`).
#[test]
fn kubectl_decodes_the_daemonset() {
    vip_lab::require_tool!("kubectl", package = "kubernetes-client");
    let yaml = render("daemonset", FLAGS).unwrap();
    let ds = documents(&yaml).pop().unwrap();
    const OTHER: &str = "registry.invalid/kubectl-check:1";
    let mut child = Command::new("kubectl")
        .args([
            "set",
            "image",
            "--local",
            "--dry-run=client",
            "-f",
            "-",
            "-o",
            "json",
        ])
        .arg(format!("vip-agent={OTHER}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(ds.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kubectl refused the DaemonSet: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: DaemonSet = serde_json::from_slice(&out.stdout).unwrap();
    let ours: DaemonSet =
        serde_saphyr::from_str(&ds.replace(manifest::DEFAULT_IMAGE, OTHER)).unwrap();
    // kubectl adds an empty updateStrategy; the rest must survive as is.
    let (theirs, ours) = (theirs.spec.unwrap(), ours.spec.unwrap());
    assert_eq!(theirs.selector, ours.selector);
    assert_eq!(
        serde_json::to_value(theirs.template).unwrap(),
        serde_json::to_value(ours.template).unwrap(),
        "kubectl kept every field of the pod template"
    );
}
