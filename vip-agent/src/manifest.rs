//! `vip-agent manifest pod | rbac`: the static-pod manifest for one
//! control-plane node (like `kube-vip manifest pod`) and the RBAC for agents
//! that use their own credentials. Both are built as typed k8s-openapi objects
//! and printed as YAML; `deploy/README.md` explains every choice made here.
//!
//! The pod takes exactly the flags of `run` (flattened [`RunArgs`], validated
//! with [`RunArgs::validate`]), so a manifest never carries a value `run`
//! would refuse at start-up.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use clap::{Args, CommandFactory, Subcommand};
use k8s_openapi::api::core::v1::{
    Container, EnvVar, HTTPGetAction, HostPathVolumeSource, Pod, PodSpec, Probe,
    ResourceRequirements, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::config::{ConfigError, RunArgs};
use crate::dataplane::BPFFS;

/// Default image: what `cargo xtask image` builds. Nodes must have it already
/// (imported or baked into the node image); pass `--image` for a registry.
pub const DEFAULT_IMAGE: &str = concat!("localhost/vip-agent:", env!("CARGO_PKG_VERSION"));
/// Where the host's kubeconfig is mounted in the container, whatever its host
/// path: switching admin.conf <-> super-admin.conf only changes the hostPath.
pub const CONTAINER_KUBECONFIG: &str = "/etc/vip-agent/kubeconfig";
/// Static pod name (the mirror pod is `vip-agent-<node name>`).
pub const POD_NAME: &str = "vip-agent";
/// Namespace of the mirror pod (the Lease namespace is `--lease-namespace`).
pub const POD_NAMESPACE: &str = "kube-system";
/// User the RBAC binds by default (`kubeadm kubeconfig user --client-name vip-agent`).
pub const DEFAULT_RBAC_USER: &str = "vip-agent";
/// Role and RoleBinding name.
pub const RBAC_NAME: &str = "vip-agent-leases";
/// Lower bound of the pod's grace period: the graceful stop (fence off,
/// address removed, Lease released) takes well under a second normally.
pub const MIN_GRACE_PERIOD: Duration = Duration::from_secs(10);

/// Which manifest to print.
#[derive(Debug, Subcommand)]
pub enum ManifestKind {
    /// The static pod for one control-plane node, for /etc/kubernetes/manifests/
    /// (takes the flags of `run`; --kubeconfig is the path ON THE HOST).
    Pod(Box<ManifestPodArgs>),
    /// Role + RoleBinding for the Lease, for agents with their own credentials.
    Rbac(ManifestRbacArgs),
}

/// `vip-agent manifest pod`: every `run` flag plus the pod's own.
///
/// `--kubeconfig` names the file on the host; it is mounted read-only at
/// [`CONTAINER_KUBECONFIG`]. kubeadm >= 1.29: on the FIRST control-plane node
/// during `kubeadm init`, admin.conf has no rights until kubeadm creates the
/// `kubeadm:cluster-admins` binding (which needs the API server, which needs
/// the VIP...), so pass `--kubeconfig /etc/kubernetes/super-admin.conf` there
/// and switch back to admin.conf after init (deploy/README.md).
#[derive(Debug, Clone, Args)]
pub struct ManifestPodArgs {
    #[command(flatten)]
    pub run: RunArgs,

    /// Container image [default: what `cargo xtask image` builds; pass your registry's].
    #[arg(long, env = "VIP_IMAGE", default_value = DEFAULT_IMAGE)]
    pub image: String,

    /// RUST_LOG of the agent in the pod.
    #[arg(long, env = "VIP_LOG", default_value = "info")]
    pub log: String,
}

/// `vip-agent manifest rbac`.
#[derive(Debug, Clone, Args)]
pub struct ManifestRbacArgs {
    /// Namespace of the Lease (the agent's --lease-namespace).
    #[arg(long, default_value = crate::election::DEFAULT_NAMESPACE)]
    pub lease_namespace: String,

    /// User name the agent's client certificate carries (its CN).
    #[arg(long, default_value = DEFAULT_RBAC_USER)]
    pub user: String,
}

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
    Yaml(#[from] serde_yaml::Error),
}

/// Renders either manifest (what `vip-agent manifest ...` prints).
pub fn render(kind: &ManifestKind) -> Result<String, ManifestError> {
    match kind {
        ManifestKind::Pod(args) => render_pod(args),
        ManifestKind::Rbac(args) => render_rbac(args),
    }
}

/// The static pod as YAML (a header comment, then the Pod; ends with a newline).
pub fn render_pod(args: &ManifestPodArgs) -> Result<String, ManifestError> {
    let pod = pod(args)?;
    Ok(format!(
        "# Generated by `vip-agent manifest pod` (vip-agent {}); regenerate it rather than edit it.\n{}",
        env!("CARGO_PKG_VERSION"),
        serde_yaml::to_string(&pod)?
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
        volume_mounts: Some(vec![
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
        ]),
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
            volumes: Some(vec![
                host_path("kubeconfig", &run.kubeconfig.display().to_string(), "File"),
                host_path("bpffs", BPFFS, "DirectoryOrCreate"),
            ]),
            ..Default::default()
        }),
        status: None,
    })
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
    always(&mut out, "retry-period", duration(run.retry_period));
    always(&mut out, "lease-name", run.lease_name.clone());
    always(&mut out, "lease-namespace", run.lease_namespace.clone());
    always(&mut out, "kubeconfig", CONTAINER_KUBECONFIG.to_owned());
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
    if let Some(dir) = &run.pin_dir {
        out.push(format!("--pin-dir={}", dir.display()));
    }
    let xdp_mode = clap::ValueEnum::to_possible_value(&run.xdp_mode)
        .map(|v| v.get_name().to_owned())
        .unwrap_or_default();
    let optional = [
        ("api-server-tls-name", run.api_server_tls_name.clone()),
        ("xdp-mode", xdp_mode),
        ("announce-burst", run.announce_burst.to_string()),
        ("announce-repeats", run.announce_repeats.to_string()),
        ("announce-interval", duration(run.announce_interval)),
        ("announce-refresh", duration(run.announce_refresh)),
    ];
    for (flag, value) in optional {
        if run_default(flag).as_deref() != Some(value.as_str()) {
            out.push(format!("--{flag}={value}"));
        }
    }
    out
}

/// `run`'s declared default for `--flag` (from clap, not the environment).
fn run_default(flag: &str) -> Option<String> {
    let cmd = crate::config::Cli::command();
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

/// Role + RoleBinding letting `user` do what the agent does with Leases in
/// `namespace`: get, list, watch (one Lease, by field selector), create, update.
pub fn lease_rbac(namespace: &str, user: &str) -> Result<(Role, RoleBinding), ManifestError> {
    if !valid_namespace(namespace) {
        return Err(ManifestError::Namespace(namespace.to_owned()));
    }
    if user.trim().is_empty() {
        return Err(ManifestError::EmptyUser);
    }
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
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["coordination.k8s.io".into()]),
            resources: Some(vec!["leases".into()]),
            verbs: ["get", "list", "watch", "create", "update"]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        }]),
    };
    let binding = RoleBinding {
        metadata: meta(),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: RBAC_NAME.into(),
        },
        subjects: Some(vec![Subject {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "User".into(),
            name: user.into(),
            namespace: None,
        }]),
    };
    Ok((role, binding))
}

/// [`lease_rbac`] as a two-document YAML stream.
pub fn render_rbac(args: &ManifestRbacArgs) -> Result<String, ManifestError> {
    let (role, binding) = lease_rbac(&args.lease_namespace, &args.user)?;
    Ok(format!(
        "# Generated by `vip-agent manifest rbac` (vip-agent {}): the Lease rights of an agent\n\
         # that uses its own credentials instead of admin.conf.\n{}---\n{}",
        env!("CARGO_PKG_VERSION"),
        serde_yaml::to_string(&role)?,
        serde_yaml::to_string(&binding)?
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
            assert_eq!(crate::config::parse_duration(&duration(d)).unwrap(), d);
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
