//! `vip-agent manifest pod | rbac | daemonset`: the static-pod manifest for
//! one control-plane node (like `kube-vip manifest pod`), the RBAC for agents
//! that use their own credentials, and a DaemonSet on the control-plane nodes
//! with its ServiceAccount (like `kube-vip manifest daemonset`). Both are built as typed k8s-openapi objects
//! and printed as YAML; `deploy/README.md` explains every choice made here.
//!
//! The pod takes exactly the flags of `run` (flattened [`RunArgs`], validated
//! with [`RunArgs::validate`]), so a manifest never carries a value `run`
//! would refuse at start-up.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use clap::CommandFactory;
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, EnvVar, EnvVarSource, HTTPGetAction,
    HostPathVolumeSource, ObjectFieldSelector, Pod, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SecurityContext, ServiceAccount, Toleration, Volume, VolumeMount,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::cli::{Cli, RunArgs};
pub use crate::cli::{
    DEFAULT_IMAGE, DEFAULT_RBAC_USER, ManifestKind, ManifestPodArgs, ManifestRbacArgs,
};
use crate::config::ConfigError;
use crate::dataplane::BPFFS;

/// Where the host's kubeconfig is mounted in the container, whatever its host
/// path.
pub const CONTAINER_KUBECONFIG: &str = "/etc/vip-agent/kubeconfig";
/// Volume of the directory holding `--super-admin-kubeconfig` (mounted
/// read-only at the same path in the container). A directory, not the file:
/// kubeadm writes super-admin.conf on the `kubeadm init` node only, so on a
/// join node the file is missing; a `File` hostPath would keep the pod from
/// starting there, and `FileOrCreate` would leave an empty super-admin.conf
/// in /etc/kubernetes for kubeadm to trip over (and a file mount would keep
/// showing a super-admin.conf the operator has deleted).
pub const SUPER_ADMIN_VOLUME: &str = "super-admin-dir";
/// Static pod name (the mirror pod is `vip-agent-<node name>`).
pub const POD_NAME: &str = "vip-agent";
/// Namespace of the mirror pod (the Lease namespace is `--lease-namespace`).
pub const POD_NAMESPACE: &str = "kube-system";
/// Role and RoleBinding name.
pub const RBAC_NAME: &str = "vip-agent-leases";
/// Lower bound of the pod's grace period: the graceful stop (fence off,
/// address removed, Lease released) takes well under a second normally.
pub const MIN_GRACE_PERIOD: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error(transparent)]
    Run(#[from] ConfigError),
    #[error(
        "--interface must not be empty; fix: name the interface that carries the VIP, e.g. --interface eth0"
    )]
    EmptyInterface,
    #[error(
        "--image must not be empty or contain spaces ({0:?}); fix: give an image reference such as {DEFAULT_IMAGE}"
    )]
    BadImage(String),
    #[error(
        "--kubeconfig {0:?} must be an absolute path on the host; fix: e.g. /etc/kubernetes/admin.conf"
    )]
    RelativeKubeconfig(String),
    #[error(
        "--super-admin-kubeconfig {0:?} must be an absolute path to a file in a directory other \
         than / on the host; fix: e.g. /etc/kubernetes/super-admin.conf, or empty for no fallback"
    )]
    BadSuperAdminKubeconfig(String),
    #[error(
        "--pin-dir {0:?} is outside {BPFFS}: only {BPFFS} is mounted from the host, so pins elsewhere \
         die with the container and the fence with them; fix: drop --pin-dir or give a directory under {BPFFS}/"
    )]
    PinDirOutsideBpffs(String),
    #[error(
        "--metrics-addr {0:?} is not IP:PORT; fix: e.g. 0.0.0.0:2112 (or empty for no metrics and no liveness probe)"
    )]
    MetricsAddr(String),
    #[error(
        "--lease-namespace {0:?} is not a valid namespace name; fix: lower-case letters, digits and '-', e.g. kube-system"
    )]
    Namespace(String),
    #[error(
        "--user must not be empty; fix: the CN of the agent's client certificate, e.g. {DEFAULT_RBAC_USER}"
    )]
    EmptyUser,
    #[error("writing YAML: {0}")]
    Yaml(#[from] serde_saphyr::SerializeError),
}

/// Renders either manifest (what `vip-agent manifest ...` prints).
pub fn render(kind: &ManifestKind) -> Result<String, ManifestError> {
    match kind {
        ManifestKind::Pod(args) => render_pod(args),
        ManifestKind::Rbac(args) => render_rbac(args),
        ManifestKind::Daemonset(args) => render_daemonset(args),
    }
}

/// The static pod as YAML (a header comment, then the Pod; ends with a newline).
pub fn render_pod(args: &ManifestPodArgs) -> Result<String, ManifestError> {
    let pod = pod(args)?;
    Ok(format!(
        "# Generated by `vip-agent manifest pod` (vip-agent {}); regenerate it rather than edit it.\n{}",
        env!("CARGO_PKG_VERSION"),
        serde_saphyr::to_string(&pod)?
    ))
}

/// The typed Pod behind [`render_pod`].
pub fn pod(args: &ManifestPodArgs) -> Result<Pod, ManifestError> {
    let run = &args.run;
    run.validate()?;
    if run.interface.trim().is_empty() {
        return Err(ManifestError::EmptyInterface);
    }
    if args.image.is_empty() || args.image.chars().any(char::is_whitespace) {
        return Err(ManifestError::BadImage(args.image.clone()));
    }
    if !run.kubeconfig.is_absolute() {
        return Err(ManifestError::RelativeKubeconfig(
            run.kubeconfig.display().to_string(),
        ));
    }
    let super_admin_dir = super_admin_dir(&run.super_admin_kubeconfig)?;
    if let Some(dir) = &run.pin_dir
        && (!dir.starts_with(BPFFS) || dir == Path::new(BPFFS))
    {
        return Err(ManifestError::PinDirOutsideBpffs(dir.display().to_string()));
    }
    let metrics: Option<SocketAddr> = if run.metrics_addr.is_empty() {
        None
    } else {
        Some(
            run.metrics_addr
                .parse()
                .map_err(|_| ManifestError::MetricsAddr(run.metrics_addr.clone()))?,
        )
    };

    let liveness = metrics.map(|sa| Probe {
        http_get: Some(HTTPGetAction {
            // hostNetwork: without a host the kubelet probes the node's IP,
            // which a wildcard listener serves; a specific address is probed as is.
            host: (!sa.ip().is_unspecified()).then(|| sa.ip().to_string()),
            path: Some("/healthz".into()),
            port: IntOrString::Int(i32::from(sa.port())),
            scheme: Some("HTTP".into()),
            ..Default::default()
        }),
        period_seconds: Some(10),
        timeout_seconds: Some(2),
        failure_threshold: Some(3),
        ..Default::default()
    });

    let container = Container {
        name: POD_NAME.into(),
        image: Some(args.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(run_command_line(run)),
        env: Some(vec![env("RUST_LOG", &args.log), env("NO_COLOR", "1")]),
        security_context: Some(SecurityContext {
            // XDP attach + BPF maps/links (NET_ADMIN, BPF, PERFMON, SYS_ADMIN for
            // the bpffs mount), raw sockets for announcements (NET_RAW) and a
            // Bidirectional mount: privileged says all of it honestly.
            privileged: Some(true),
            ..Default::default()
        }),
        liveness_probe: liveness,
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_owned(), Quantity("10m".into())),
                ("memory".to_owned(), Quantity("32Mi".into())),
            ])),
            ..Default::default()
        }),
        volume_mounts: Some(
            [
                VolumeMount {
                    name: "kubeconfig".into(),
                    mount_path: CONTAINER_KUBECONFIG.into(),
                    read_only: Some(true),
                    ..Default::default()
                },
                VolumeMount {
                    name: "bpffs".into(),
                    mount_path: BPFFS.into(),
                    // If the host has no bpffs there yet, the agent mounts one; it
                    // must reach the host so the pins outlive the container.
                    mount_propagation: Some("Bidirectional".into()),
                    ..Default::default()
                },
            ]
            .into_iter()
            .chain(super_admin_dir.as_ref().map(|dir| VolumeMount {
                name: SUPER_ADMIN_VOLUME.into(),
                mount_path: dir.clone(),
                read_only: Some(true),
                ..Default::default()
            }))
            .collect(),
        ),
        ..Default::default()
    };

    let grace = MIN_GRACE_PERIOD
        .max(run.renew_deadline * 2)
        .as_secs()
        .max(1);
    Ok(Pod {
        metadata: ObjectMeta {
            name: Some(POD_NAME.into()),
            namespace: Some(POD_NAMESPACE.into()),
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/name".to_owned(), POD_NAME.to_owned()),
                (
                    "app.kubernetes.io/component".to_owned(),
                    "control-plane-vip".to_owned(),
                ),
                (
                    "app.kubernetes.io/version".to_owned(),
                    env!("CARGO_PKG_VERSION").to_owned(),
                ),
            ])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            host_network: Some(true),
            priority_class_name: Some("system-node-critical".into()),
            termination_grace_period_seconds: Some(i64::try_from(grace).unwrap_or(i64::MAX)),
            containers: vec![container],
            volumes: Some(
                [
                    host_path("kubeconfig", &run.kubeconfig.display().to_string(), "File"),
                    host_path("bpffs", BPFFS, "DirectoryOrCreate"),
                ]
                .into_iter()
                .chain(
                    super_admin_dir
                        .as_ref()
                        .map(|dir| host_path(SUPER_ADMIN_VOLUME, dir, "Directory")),
                )
                .collect(),
            ),
            ..Default::default()
        }),
        status: None,
    })
}

/// The host directory of `--super-admin-kubeconfig` (mounted at the same
/// path), `None` when the flag is empty (no fallback, no mount).
fn super_admin_dir(path: &str) -> Result<Option<String>, ManifestError> {
    if path.is_empty() {
        return Ok(None);
    }
    let p = Path::new(path);
    let bad = || ManifestError::BadSuperAdminKubeconfig(path.to_owned());
    if !p.is_absolute() || p.file_name().is_none() {
        return Err(bad());
    }
    match p.parent() {
        Some(dir) if dir != Path::new("/") => Ok(Some(dir.display().to_string())),
        _ => Err(bad()),
    }
}

/// The container's arguments: `run` with the core settings always spelled
/// out and the rest only when they differ from `run`'s own defaults.
pub fn run_command_line(run: &RunArgs) -> Vec<String> {
    let mut out = vec!["run".to_owned()];
    let always =
        |out: &mut Vec<String>, flag: &str, value: String| out.push(format!("--{flag}={value}"));
    always(&mut out, "interface", run.interface.clone());
    always(
        &mut out,
        "address",
        run.addresses
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
    );
    always(&mut out, "lease-duration", duration(run.lease_duration));
    always(&mut out, "renew-deadline", duration(run.renew_deadline));
    always(&mut out, "retry-period", duration(run.retry_period()));
    always(&mut out, "lease-name", run.lease_name.clone());
    always(&mut out, "lease-namespace", run.lease_namespace.clone());
    always(&mut out, "kubeconfig", CONTAINER_KUBECONFIG.to_owned());
    // Same path in the container (its directory is mounted there); empty: off.
    always(
        &mut out,
        "super-admin-kubeconfig",
        run.super_admin_kubeconfig.clone(),
    );
    always(&mut out, "api-server", run.api_server.clone());
    always(&mut out, "metrics-addr", run.metrics_addr.clone());
    if let Some(n) = &run.node_name {
        always(&mut out, "node-name", n.clone());
    }
    if run.health_check {
        out.push("--health-check".to_owned());
        always(&mut out, "health-path", run.health_path.clone());
        always(&mut out, "health-interval", duration(run.health_interval));
        always(&mut out, "health-failures", run.health_failures.to_string());
    }
    if run.no_election {
        out.push("--no-election".to_owned());
    }
    if run.fast_path {
        out.push("--fast-path".to_owned());
        always(&mut out, "peer-port", run.peer_port.to_string());
        if let Some(a) = run.peer_address {
            always(&mut out, "peer-address", a.to_string());
        }
        if let Some(f) = &run.peer_key_file {
            always(&mut out, "peer-key-file", f.display().to_string());
        }
        always(&mut out, "peer-key-secret", run.peer_key_secret.clone());
        always(
            &mut out,
            "heartbeat-interval",
            duration(run.heartbeat_interval),
        );
        always(&mut out, "takeover-silence", duration(run.takeover_silence));
        always(&mut out, "promise", duration(run.promise));
        always(&mut out, "promise-margin", duration(run.promise_margin));
    }
    if let Some(dir) = &run.pin_dir {
        out.push(format!("--pin-dir={}", dir.display()));
    }
    let xdp_mode = value_name(&run.xdp_mode);
    let optional = [
        ("api-server-tls-name", run.api_server_tls_name.clone()),
        ("xdp-mode", xdp_mode),
        ("announce-burst", run.announce_burst.to_string()),
        ("announce-repeats", run.announce_repeats.to_string()),
        ("announce-interval", duration(run.announce_interval)),
        ("announce-refresh", duration(run.announce_refresh)),
        ("log-format", value_name(&run.log_format)),
    ];
    for (flag, value) in optional {
        if run_default(flag).as_deref() != Some(value.as_str()) {
            out.push(format!("--{flag}={value}"));
        }
    }
    out
}

/// How clap spells a value of a `value_enum` flag.
fn value_name(v: &impl clap::ValueEnum) -> String {
    v.to_possible_value()
        .map(|v| v.get_name().to_owned())
        .unwrap_or_default()
}

/// `run`'s declared default for `--flag` (from clap, not the environment).
fn run_default(flag: &str) -> Option<String> {
    let cmd = Cli::command();
    let run = cmd.find_subcommand("run")?;
    let arg = run.get_arguments().find(|a| a.get_long() == Some(flag))?;
    arg.get_default_values()
        .first()
        .map(|v| v.to_string_lossy().into_owned())
}

fn duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_owned();
    }
    humantime::format_duration(d).to_string().replace(' ', "")
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

fn host_path(name: &str, path: &str, type_: &str) -> Volume {
    Volume {
        name: name.into(),
        host_path: Some(HostPathVolumeSource {
            path: path.into(),
            type_: Some(type_.into()),
        }),
        ..Default::default()
    }
}

fn valid_namespace(ns: &str) -> bool {
    !ns.is_empty()
        && ns.len() <= 63
        && ns
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !ns.starts_with('-')
        && !ns.ends_with('-')
}

/// Role + RoleBinding letting `user` do what the agent does in `namespace`:
/// get, list, watch (one Lease, by field selector), create, update Leases;
/// create (and patch, for series of repeated events) Events, in both API
/// groups that serve them (`""` and `events.k8s.io`), in that namespace only.
pub fn lease_rbac(namespace: &str, user: &str) -> Result<(Role, RoleBinding), ManifestError> {
    if !valid_namespace(namespace) {
        return Err(ManifestError::Namespace(namespace.to_owned()));
    }
    if user.trim().is_empty() {
        return Err(ManifestError::EmptyUser);
    }
    let subject = Subject {
        api_group: Some("rbac.authorization.k8s.io".into()),
        kind: "User".into(),
        name: user.into(),
        namespace: None,
    };
    Ok(lease_role_and_binding(namespace, subject))
}

/// The Lease Role in `namespace` and its RoleBinding to `subject`.
fn lease_role_and_binding(namespace: &str, subject: Subject) -> (Role, RoleBinding) {
    let meta = || ObjectMeta {
        name: Some(RBAC_NAME.into()),
        namespace: Some(namespace.into()),
        labels: Some(BTreeMap::from([(
            "app.kubernetes.io/name".to_owned(),
            POD_NAME.to_owned(),
        )])),
        ..Default::default()
    };
    let role = Role {
        metadata: meta(),
        rules: Some(vec![
            PolicyRule {
                api_groups: Some(vec!["coordination.k8s.io".into()]),
                resources: Some(vec!["leases".into()]),
                verbs: ["get", "list", "watch", "create", "update"]
                    .map(String::from)
                    .to_vec(),
                ..Default::default()
            },
            PolicyRule {
                api_groups: Some(vec![String::new(), "events.k8s.io".into()]),
                resources: Some(vec!["events".into()]),
                verbs: vec!["create".into()],
                ..Default::default()
            },
            // --fast-path: read the peer key, and no other Secret.
            PolicyRule {
                api_groups: Some(vec![String::new()]),
                resources: Some(vec!["secrets".into()]),
                resource_names: Some(vec![crate::peer::key::DEFAULT_SECRET.into()]),
                verbs: vec!["get".into()],
                ..Default::default()
            },
            // The first agent creates it (RBAC cannot limit create by name).
            PolicyRule {
                api_groups: Some(vec![String::new()]),
                resources: Some(vec!["secrets".into()]),
                verbs: vec!["create".into()],
                ..Default::default()
            },
        ]),
    };
    let binding = RoleBinding {
        metadata: meta(),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: RBAC_NAME.into(),
        },
        subjects: Some(vec![subject]),
    };
    (role, binding)
}

/// [`lease_rbac`] as a two-document YAML stream.
pub fn render_rbac(args: &ManifestRbacArgs) -> Result<String, ManifestError> {
    let (role, binding) = lease_rbac(&args.lease_namespace, &args.user)?;
    Ok(format!(
        "# Generated by `vip-agent manifest rbac` (vip-agent {}): the Lease and Event rights of an agent\n\
         # that uses its own credentials instead of admin.conf.\n{}---\n{}",
        env!("CARGO_PKG_VERSION"),
        serde_saphyr::to_string(&role)?,
        serde_saphyr::to_string(&binding)?
    ))
}

/// ServiceAccount of the DaemonSet (in [`POD_NAMESPACE`]).
pub const SERVICE_ACCOUNT: &str = "vip-agent";
/// ConfigMap holding the DaemonSet's in-cluster kubeconfig.
pub const KUBECONFIG_CONFIGMAP: &str = "vip-agent-kubeconfig";
/// Where the kubelet projects the ServiceAccount's token and the cluster CA.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Label and taint of kubeadm's control-plane nodes.
pub const CONTROL_PLANE_ROLE: &str = "node-role.kubernetes.io/control-plane";

/// The in-cluster kubeconfig: the projected ServiceAccount token (kube-rs
/// re-reads `tokenFile` as the kubelet rotates it) and the cluster CA; the
/// server is overridden by `--api-server` (the local API server) anyway.
fn in_cluster_kubeconfig() -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: in-cluster\n  cluster:\n    \
         server: {api}\n    certificate-authority: {SERVICE_ACCOUNT_DIR}/ca.crt\n    \
         tls-server-name: {tls}\ncontexts:\n- name: {SERVICE_ACCOUNT}\n  context:\n    \
         cluster: in-cluster\n    user: {SERVICE_ACCOUNT}\ncurrent-context: {SERVICE_ACCOUNT}\n\
         users:\n- name: {SERVICE_ACCOUNT}\n  user:\n    tokenFile: {SERVICE_ACCOUNT_DIR}/token\n",
        api = crate::election::client::DEFAULT_API_SERVER,
        tls = crate::election::client::DEFAULT_TLS_SERVER_NAME,
    )
}

/// Everything `manifest daemonset` prints, typed.
#[derive(Clone, Debug)]
pub struct DaemonSetManifests {
    pub service_account: ServiceAccount,
    pub role: Role,
    pub binding: RoleBinding,
    pub kubeconfig: ConfigMap,
    pub daemonset: DaemonSet,
}

/// The DaemonSet for the control-plane nodes and what it needs: the pod of
/// [`pod`] (same flags, checks, args and env) with the ServiceAccount's
/// in-cluster kubeconfig instead of the host's kubeconfig files.
pub fn daemonset(args: &ManifestPodArgs) -> Result<DaemonSetManifests, ManifestError> {
    let mut args = args.clone();
    // No host kubeconfig and no super-admin fallback: the ServiceAccount.
    args.run.super_admin_kubeconfig = String::new();
    let pod = pod(&args)?;
    let (role, binding) = lease_role_and_binding(
        &args.run.lease_namespace,
        Subject {
            api_group: None,
            kind: "ServiceAccount".into(),
            name: SERVICE_ACCOUNT.into(),
            namespace: Some(POD_NAMESPACE.into()),
        },
    );
    if !valid_namespace(&args.run.lease_namespace) {
        return Err(ManifestError::Namespace(args.run.lease_namespace.clone()));
    }
    let labels = BTreeMap::from([("app.kubernetes.io/name".to_owned(), POD_NAME.to_owned())]);
    let meta = |name: &str| ObjectMeta {
        name: Some(name.into()),
        namespace: Some(POD_NAMESPACE.into()),
        labels: Some(labels.clone()),
        ..Default::default()
    };
    let mut spec = pod.spec.expect("pod() sets a spec");
    spec.service_account_name = Some(SERVICE_ACCOUNT.into());
    spec.automount_service_account_token = Some(true);
    spec.node_selector = Some(BTreeMap::from([(
        CONTROL_PLANE_ROLE.to_owned(),
        String::new(),
    )]));
    spec.tolerations = Some(vec![Toleration {
        key: Some(CONTROL_PLANE_ROLE.into()),
        operator: Some("Exists".into()),
        effect: Some("NoSchedule".into()),
        ..Default::default()
    }]);
    // The host kubeconfig's hostPath becomes the ConfigMap, at the same path.
    for v in spec.volumes.iter_mut().flatten() {
        if v.name == "kubeconfig" {
            *v = Volume {
                name: "kubeconfig".into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: KUBECONFIG_CONFIGMAP.into(),
                    ..Default::default()
                }),
                ..Default::default()
            };
        }
    }
    let container = &mut spec.containers[0];
    for m in container.volume_mounts.iter_mut().flatten() {
        if m.name == "kubeconfig" {
            m.sub_path = Some("kubeconfig".into());
        }
    }
    if args.run.node_name.is_none() {
        // The Node's name, not the host name (they may differ).
        container.env.get_or_insert_default().push(EnvVar {
            name: "VIP_NODE_NAME".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "spec.nodeName".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let template_meta = ObjectMeta {
        labels: pod.metadata.labels,
        ..Default::default()
    };
    Ok(DaemonSetManifests {
        service_account: ServiceAccount {
            metadata: meta(SERVICE_ACCOUNT),
            ..Default::default()
        },
        role,
        binding,
        kubeconfig: ConfigMap {
            metadata: meta(KUBECONFIG_CONFIGMAP),
            data: Some(BTreeMap::from([(
                "kubeconfig".to_owned(),
                in_cluster_kubeconfig(),
            )])),
            ..Default::default()
        },
        daemonset: DaemonSet {
            metadata: meta(POD_NAME),
            spec: Some(DaemonSetSpec {
                selector: LabelSelector {
                    match_labels: Some(labels.clone()),
                    ..Default::default()
                },
                template: PodTemplateSpec {
                    metadata: Some(template_meta),
                    spec: Some(spec),
                },
                ..Default::default()
            }),
            status: None,
        },
    })
}

/// [`daemonset`] as a YAML stream: ServiceAccount, Role, RoleBinding,
/// ConfigMap, DaemonSet.
pub fn render_daemonset(args: &ManifestPodArgs) -> Result<String, ManifestError> {
    let m = daemonset(args)?;
    Ok(format!(
        "# Generated by `vip-agent manifest daemonset` (vip-agent {}); regenerate it rather than edit it.\n\
         # For a running cluster: the DaemonSet cannot bring up the VIP the first API server is\n\
         # reached through (use `manifest pod` for that).\n{}---\n{}---\n{}---\n{}---\n{}",
        env!("CARGO_PKG_VERSION"),
        serde_saphyr::to_string(&m.service_account)?,
        serde_saphyr::to_string(&m.role)?,
        serde_saphyr::to_string(&m.binding)?,
        serde_saphyr::to_string(&m.kubeconfig)?,
        serde_saphyr::to_string(&m.daemonset)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_render_as_run_parses_them() {
        assert_eq!(duration(Duration::from_millis(500)), "500ms");
        assert_eq!(duration(Duration::from_secs(2)), "2s");
        assert_eq!(duration(Duration::from_millis(1500)), "1s500ms");
        assert_eq!(duration(Duration::ZERO), "0s");
        for d in [Duration::from_millis(1500), Duration::from_secs(90)] {
            assert_eq!(crate::cli::parse_duration(&duration(d)).unwrap(), d);
        }
    }

    #[test]
    fn run_defaults_come_from_clap() {
        assert_eq!(run_default("xdp-mode").as_deref(), Some("auto"));
        assert_eq!(run_default("announce-interval").as_deref(), Some("200ms"));
        assert_eq!(run_default("no-such-flag"), None);
    }

    #[test]
    fn namespaces() {
        assert!(valid_namespace("kube-system"));
        assert!(!valid_namespace("Kube"));
        assert!(!valid_namespace("-a"));
        assert!(!valid_namespace(""));
    }
}
