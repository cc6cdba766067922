//! `vip-agent manifest pod | rbac`: the YAML is a valid Pod (typed round trip,
//! and kubectl's own Go types when kubectl is installed), it carries the
//! flags given and `run` accepts its arguments back, bad input names the
//! flag, and the committed deploy/ files equal what the command prints.
//! No root needed.
//!
//! `VIP_BLESS_DEPLOY=1 cargo test -p vip-agent --test manifest` rewrites
//! deploy/static-pod.yaml and deploy/rbac.yaml after an intended change.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use clap::Parser;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;
use vip_agent::cli;
use vip_agent::manifest::{self, CONTAINER_KUBECONFIG, ManifestKind};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    kind: ManifestKind,
}

/// The flags deploy/static-pod.yaml is generated with (also in deploy/README.md).
const EXAMPLE: &[&str] = &[
    "--interface",
    "eth0",
    "--address",
    "192.0.2.10",
    "--health-check",
];

fn render(args: &[&str]) -> Result<String, String> {
    let mut v = vec!["manifest"];
    v.extend_from_slice(args);
    let cli = Cli::try_parse_from(v).map_err(|e| e.to_string())?;
    manifest::render(&cli.kind).map_err(|e| e.to_string())
}

fn pod_yaml(extra: &[&str]) -> Result<String, String> {
    let mut v = vec!["pod"];
    v.extend_from_slice(extra);
    render(&v)
}

fn parse_pod(yaml: &str) -> Pod {
    serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("not a Pod: {e}\n{yaml}"))
}

fn container_args(pod: &Pod) -> Vec<String> {
    pod.spec.as_ref().unwrap().containers[0]
        .args
        .clone()
        .unwrap()
}

/// `run` as the container will start it (the same flattened `RunArgs` the
/// `run` subcommand parses).
fn run_args_of(pod: &Pod) -> cli::RunArgs {
    #[derive(Parser)]
    struct Run {
        #[command(flatten)]
        run: cli::RunArgs,
    }
    let args = container_args(pod);
    assert_eq!(args.first().map(String::as_str), Some("run"), "{args:?}");
    let argv = std::iter::once("vip-agent").chain(args[1..].iter().map(String::as_str));
    Run::try_parse_from(argv)
        .unwrap_or_else(|e| panic!("run refuses the manifest's arguments {args:?}: {e}"))
        .run
}

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Every key the YAML has survives the typed round trip: nothing was an
/// unknown field the Pod schema (k8s-openapi, v1.33) would drop.
fn assert_typed_round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(yaml: &str) {
    for value in serde_saphyr::from_multiple::<Value>(yaml).unwrap() {
        let typed: T = serde_json::from_value(value.clone()).unwrap();
        let back = serde_json::to_value(&typed).unwrap();
        assert_eq!(value, back, "a field did not survive the typed round trip");
    }
}

#[test]
fn example_pod_parses_back_and_carries_every_choice() {
    let yaml = pod_yaml(EXAMPLE).unwrap();
    assert_typed_round_trip::<Pod>(&yaml);
    let pod = parse_pod(&yaml);
    assert_eq!(pod.metadata.name.as_deref(), Some("vip-agent"));
    assert_eq!(pod.metadata.namespace.as_deref(), Some("kube-system"));
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.host_network, Some(true));
    assert_eq!(
        spec.priority_class_name.as_deref(),
        Some("system-node-critical")
    );
    assert!(spec.termination_grace_period_seconds.unwrap() >= 10);
    let c = &spec.containers[0];
    assert_eq!(c.image.as_deref(), Some(manifest::DEFAULT_IMAGE));
    assert!(manifest::DEFAULT_IMAGE.ends_with(env!("CARGO_PKG_VERSION")));
    assert_eq!(c.security_context.as_ref().unwrap().privileged, Some(true));
    let probe = c
        .liveness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(
        (probe.path.as_deref(), &probe.port, probe.host.as_deref()),
        (Some("/healthz"), &IntOrString::Int(2112), None)
    );
    let requests = c.resources.as_ref().unwrap().requests.as_ref().unwrap();
    assert!(requests.contains_key("cpu") && requests.contains_key("memory"));
    let env: Vec<_> = c
        .env
        .as_ref()
        .unwrap()
        .iter()
        .map(|e| (e.name.as_str(), e.value.as_deref()))
        .collect();
    assert!(env.contains(&("RUST_LOG", Some("info"))), "{env:?}");

    // Volumes: the kubeconfig read-only as a File, bpffs from the host with
    // Bidirectional propagation (the pins must outlive the container).
    let volumes = spec.volumes.as_ref().unwrap();
    let hp = |name: &str| {
        volumes
            .iter()
            .find(|v| v.name == name)
            .and_then(|v| v.host_path.clone())
            .unwrap()
    };
    assert_eq!(hp("kubeconfig").path, "/etc/kubernetes/admin.conf");
    assert_eq!(hp("kubeconfig").type_.as_deref(), Some("File"));
    assert_eq!(hp("bpffs").path, "/sys/fs/bpf");
    // super-admin.conf's directory, so a join node (no such file) starts too.
    assert_eq!(hp(manifest::SUPER_ADMIN_VOLUME).path, "/etc/kubernetes");
    assert_eq!(
        hp(manifest::SUPER_ADMIN_VOLUME).type_.as_deref(),
        Some("Directory")
    );
    let mounts = c.volume_mounts.as_ref().unwrap();
    let m = |name: &str| mounts.iter().find(|m| m.name == name).unwrap().clone();
    assert_eq!(m("kubeconfig").mount_path, CONTAINER_KUBECONFIG);
    assert_eq!(m("kubeconfig").read_only, Some(true));
    assert_eq!(m("bpffs").mount_path, "/sys/fs/bpf");
    assert_eq!(
        m(manifest::SUPER_ADMIN_VOLUME).mount_path,
        "/etc/kubernetes"
    );
    assert_eq!(m(manifest::SUPER_ADMIN_VOLUME).read_only, Some(true));
    assert_eq!(
        m("bpffs").mount_propagation.as_deref(),
        Some("Bidirectional")
    );

    // The arguments are a `run` the agent accepts, with the given values.
    let args = container_args(&pod);
    assert_eq!(args[0], "run");
    assert!(args.contains(&"--interface=eth0".to_owned()), "{args:?}");
    assert!(args.contains(&"--health-check".to_owned()), "{args:?}");
    assert!(
        !args.iter().any(|a| a.starts_with("--node-name")),
        "node name must default to the host name: {args:?}"
    );
    let run = run_args_of(&pod);
    run.validate().unwrap();
    assert_eq!(
        run.addresses,
        vec!["192.0.2.10".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(run.kubeconfig, PathBuf::from(CONTAINER_KUBECONFIG));
    assert_eq!(
        run.super_admin_kubeconfig,
        "/etc/kubernetes/super-admin.conf"
    );
    assert!(run.health_check);
    assert_eq!(run.metrics_addr, "0.0.0.0:2112");
}

#[test]
fn given_flags_reach_the_pod() {
    let yaml = pod_yaml(&[
        "--interface",
        "bond0.42",
        "--address",
        "192.0.2.10,2001:db8::10",
        "--lease-duration",
        "15s",
        "--renew-deadline",
        "10s",
        "--retry-period",
        "2s",
        "--lease-name",
        "cp-vip",
        "--lease-namespace",
        "vip",
        "--node-name",
        "cp-1",
        "--kubeconfig",
        "/etc/kubernetes/super-admin.conf",
        "--api-server",
        "",
        "--metrics-addr",
        "127.0.0.1:9100",
        "--image",
        "registry.example.com/vip-agent:1.2.3",
        "--log",
        "debug",
        "--xdp-mode",
        "skb",
        "--announce-refresh",
        "0s",
        "--pin-dir",
        "/sys/fs/bpf/vip",
        "--log-format",
        "json",
    ])
    .unwrap();
    assert_typed_round_trip::<Pod>(&yaml);
    let pod = parse_pod(&yaml);
    let spec = pod.spec.as_ref().unwrap();
    let c = &spec.containers[0];
    assert_eq!(
        c.image.as_deref(),
        Some("registry.example.com/vip-agent:1.2.3")
    );
    let probe = c
        .liveness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(
        (probe.host.as_deref(), &probe.port),
        (Some("127.0.0.1"), &IntOrString::Int(9100))
    );
    let kubeconfig = spec
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == "kubeconfig")
        .unwrap();
    assert_eq!(
        kubeconfig.host_path.as_ref().unwrap().path,
        "/etc/kubernetes/super-admin.conf"
    );
    // Grace period follows a long renew deadline (the release may take that long).
    assert_eq!(spec.termination_grace_period_seconds, Some(20));

    let run = run_args_of(&pod);
    assert_eq!(run.interface, "bond0.42");
    assert_eq!(run.addresses.len(), 2);
    assert_eq!(run.lease_duration, Duration::from_secs(15));
    assert_eq!(run.renew_deadline, Duration::from_secs(10));
    assert_eq!(run.retry_period(), Duration::from_secs(2));
    assert_eq!(
        (run.lease_name.as_str(), run.lease_namespace.as_str()),
        ("cp-vip", "vip")
    );
    assert_eq!(run.node_name.as_deref(), Some("cp-1"));
    assert_eq!(run.api_server, "");
    assert_eq!(run.metrics_addr, "127.0.0.1:9100");
    assert_eq!(run.announce_refresh, Duration::ZERO);
    assert_eq!(run.pin_dir, Some(PathBuf::from("/sys/fs/bpf/vip")));
    assert!(!run.health_check);
    assert_eq!(run.log_format, cli::LogFormat::Json);
    let args = container_args(&pod);
    assert!(args.contains(&"--xdp-mode=skb".to_owned()), "{args:?}");
    assert!(args.contains(&"--log-format=json".to_owned()), "{args:?}");
    // Values equal to run's defaults are not repeated.
    assert!(
        !args.iter().any(|a| a.starts_with("--announce-burst")),
        "{args:?}"
    );
}

#[test]
fn defaults_give_a_valid_manifest_and_no_metrics_means_no_probe() {
    let pod = parse_pod(&pod_yaml(&["--interface", "eth0", "--address", "192.0.2.10"]).unwrap());
    let run = run_args_of(&pod);
    run.validate().unwrap();
    assert_eq!(run.lease_duration, Duration::from_secs(3));
    assert_eq!(
        pod.spec.as_ref().unwrap().termination_grace_period_seconds,
        Some(10)
    );

    let pod = parse_pod(
        &pod_yaml(&[
            "--interface",
            "eth0",
            "--address",
            "192.0.2.10",
            "--metrics-addr",
            "",
        ])
        .unwrap(),
    );
    assert!(
        pod.spec.as_ref().unwrap().containers[0]
            .liveness_probe
            .is_none()
    );
    assert_eq!(run_args_of(&pod).metrics_addr, "");
}

/// `--super-admin-kubeconfig`: its directory mounted at the same path; empty
/// turns the fallback off and mounts nothing.
#[test]
fn super_admin_kubeconfig_mounts_its_directory_or_nothing() {
    let dir_of = |yaml: &str| {
        let pod = parse_pod(yaml);
        let spec = pod.spec.as_ref().unwrap();
        let mount = spec.containers[0]
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == manifest::SUPER_ADMIN_VOLUME)
            .map(|m| m.mount_path.clone());
        let host = spec
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == manifest::SUPER_ADMIN_VOLUME)
            .map(|v| v.host_path.clone().unwrap().path);
        assert_eq!(mount, host, "mounted at the same path");
        (run_args_of(&pod).super_admin_kubeconfig, host)
    };
    let yaml = pod_yaml(&[
        "--interface",
        "eth0",
        "--address",
        "192.0.2.10",
        "--super-admin-kubeconfig",
        "/srv/kubeadm/break-glass.conf",
    ])
    .unwrap();
    assert_eq!(
        dir_of(&yaml),
        (
            "/srv/kubeadm/break-glass.conf".to_owned(),
            Some("/srv/kubeadm".to_owned())
        )
    );
    let yaml = pod_yaml(&[
        "--interface",
        "eth0",
        "--address",
        "192.0.2.10",
        "--super-admin-kubeconfig",
        "",
    ])
    .unwrap();
    assert_eq!(dir_of(&yaml), (String::new(), None));
}

#[test]
fn bad_input_names_the_flag_and_the_fix() {
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--interface", "eth0", "--address", "192.0.2.300"],
            &["--address"],
        ),
        (
            &["--interface", "eth0", "--address", "224.0.0.1"],
            &["--address", "fix"],
        ),
        (&["--interface", "eth0"], &["--address"]),
        (
            &[
                "--interface",
                "eth0",
                "--address",
                "192.0.2.10",
                "--renew-deadline",
                "3s",
            ],
            &["--renew-deadline", "--lease-duration"],
        ),
        (
            &[
                "--interface",
                "eth0",
                "--address",
                "192.0.2.10",
                "--retry-period",
                "2s",
            ],
            &["--retry-period"],
        ),
        (
            &[
                "--interface",
                "eth0",
                "--address",
                "192.0.2.10",
                "--lease-duration",
                "soon",
            ],
            &["--lease-duration", "500ms"],
        ),
        (
            &["--interface", "", "--address", "192.0.2.10"],
            &["--interface", "fix"],
        ),
        (
            &[
                "--interface",
                "eth0",
                "--address",
                "192.0.2.10",
                "--image",
                "",
            ],
            &["--image", "fix"],
        ),
        (
            &[
                "--interface",
                "eth0",
                "--address",
                "192.0.2.10",
                "--kubeconfig",
                "admin.conf",
            ],
            &["--kubeconfig", "absolute"],
        ),
        (
            &[
                "--interface",
                "eth0",
                "--address",
                "192.0.2.10",
                "--super-admin-kubeconfig",
                "super-admin.conf",
            ],
            &["--super-admin-kubeconfig", "absolute", "fix"],
        ),
        (
            &[
                "--interface",
                "eth0",
                "--address",
                "192.0.2.10",
                "--super-admin-kubeconfig",
                "/super-admin.conf",
            ],
            &[
                "--super-admin-kubeconfig",
                "/etc/kubernetes/super-admin.conf",
            ],
        ),
        (
            &[
                "--interface",
                "eth0",
                "--address",
                "192.0.2.10",
                "--metrics-addr",
                "localhost",
            ],
            &["--metrics-addr", "0.0.0.0:2112"],
        ),
        (
            &[
                "--interface",
                "eth0",
                "--address",
                "192.0.2.10",
                "--pin-dir",
                "/run/vip",
            ],
            &["--pin-dir", "/sys/fs/bpf"],
        ),
        (
            &[
                "--interface",
                "eth0",
                "--address",
                "192.0.2.10",
                "--health-path",
                "readyz",
            ],
            &["--health-path"],
        ),
    ];
    for (args, needles) in cases {
        let e = pod_yaml(args).expect_err(&format!("{args:?} must be refused"));
        for n in *needles {
            assert!(e.contains(n), "{args:?}: error {e:?} lacks {n:?}");
        }
    }
    let e = render(&["rbac", "--lease-namespace", "Kube_System"]).unwrap_err();
    assert!(e.contains("--lease-namespace"), "{e}");
}

#[test]
fn rbac_allows_what_the_agent_does() {
    let yaml = render(&["rbac"]).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&yaml).unwrap();
    assert_eq!(docs.len(), 2);
    let role: Role = serde_json::from_value(docs[0].clone()).unwrap();
    let binding: RoleBinding = serde_json::from_value(docs[1].clone()).unwrap();
    assert_eq!(role.metadata.namespace.as_deref(), Some("kube-system"));
    let rule = &role.rules.as_ref().unwrap()[0];
    assert_eq!(
        rule.api_groups.as_deref(),
        Some(&["coordination.k8s.io".to_owned()][..])
    );
    assert_eq!(rule.verbs, ["get", "list", "watch", "create", "update"]);
    // Kubernetes Events about the Lease, in its namespace only.
    let events = &role.rules.as_ref().unwrap()[1];
    assert_eq!(
        events.api_groups.as_deref(),
        Some(&["".to_owned(), "events.k8s.io".to_owned()][..])
    );
    assert_eq!(
        events.resources.as_deref(),
        Some(&["events".to_owned()][..])
    );
    assert_eq!(events.verbs, ["create"]);
    // --fast-path: get the peer key Secret by name, create it; nothing else.
    let secrets = &role.rules.as_ref().unwrap()[2..];
    assert_eq!(secrets.len(), 2);
    for s in secrets {
        assert_eq!(s.api_groups.as_deref(), Some(&["".to_owned()][..]));
        assert_eq!(s.resources.as_deref(), Some(&["secrets".to_owned()][..]));
    }
    assert_eq!(secrets[0].verbs, ["get"]);
    assert_eq!(
        secrets[0].resource_names.as_deref(),
        Some(&["vip-agent-peer-key".to_owned()][..])
    );
    assert_eq!(secrets[1].verbs, ["create"]);
    assert_eq!(role.rules.as_ref().unwrap().len(), 4);
    assert_eq!(binding.role_ref.name, role.metadata.name.clone().unwrap());
    assert_eq!(binding.subjects.as_ref().unwrap()[0].name, "vip-agent");
}

/// The committed deploy/ files are exactly what the command prints.
#[test]
fn committed_deploy_files_do_not_drift() {
    let files = [
        ("static-pod.yaml", pod_yaml(EXAMPLE).unwrap()),
        ("rbac.yaml", render(&["rbac"]).unwrap()),
    ];
    let bless = std::env::var_os("VIP_BLESS_DEPLOY").is_some_and(|v| v == "1");
    for (name, want) in files {
        let path = deploy_dir().join(name);
        if bless {
            std::fs::write(&path, &want).unwrap();
            eprintln!("wrote {}", path.display());
            continue;
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "deploy/{name} differs from the command's output; regenerate: \
             VIP_BLESS_DEPLOY=1 cargo test -p vip-agent --test manifest\n--- want\n{want}"
        );
    }
}

fn kubectl(args: &[&str], stdin: &str) -> Option<std::process::Output> {
    let mut child = Command::new("kubectl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    Some(child.wait_with_output().unwrap())
}

/// Every leaf of `ours` is in `theirs` with the same value (kubectl adds
/// empty defaults such as `status: {}` and drops fields it does not know).
fn assert_subset(ours: &Value, theirs: &Value, at: &str) {
    match (ours, theirs) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let key = k.as_str();
                let other = b
                    .get(k)
                    .unwrap_or_else(|| panic!("kubectl dropped {at}.{key}: not in the Pod schema"));
                assert_subset(v, other, &format!("{at}.{key}"));
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len(), "{at}");
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                assert_subset(x, y, &format!("{at}[{i}]"));
            }
        }
        _ => assert_eq!(ours, theirs, "{at}"),
    }
}

/// kubectl's own Go types, offline with `set image --local` (decodes into the
/// typed Pod: a wrong type fails, an unknown field is dropped, which the
/// subset check catches).
#[test]
fn kubectl_accepts_the_manifests() {
    vip_lab::require_tool!("kubectl", package = "kubernetes-client");
    let yaml = pod_yaml(EXAMPLE).unwrap();
    // kubectl prints nothing when the image does not change: set another one.
    const OTHER: &str = "registry.invalid/kubectl-check:1";
    let out = kubectl(
        &[
            "set",
            "image",
            "--local",
            "--dry-run=client",
            "-f",
            "-",
            "-o",
            "yaml",
            &format!("vip-agent={OTHER}"),
        ],
        &yaml,
    )
    .unwrap();
    assert!(
        out.status.success(),
        "kubectl refused the Pod: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: Value = serde_saphyr::from_slice(&out.stdout).unwrap();
    let ours: Value =
        serde_saphyr::from_str(&yaml.replace(manifest::DEFAULT_IMAGE, OTHER)).unwrap();
    assert!(
        theirs.get("spec").is_some(),
        "kubectl printed no Pod: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_subset(&ours, &theirs, "pod");

    // The API server's own validation (`kubectl apply --dry-run=server`)
    // is tests/lab/tests/manifests_server.rs, against the lab's kube-apiserver.
}

fn yaml_file(rel: &str) -> Value {
    let path = deploy_dir().join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The kubeadm snippet's `manifest pod` flags are accepted, and nothing edits
/// the manifest afterwards: the pod itself falls back to super-admin.conf on
/// the first kubeadm >= 1.29 node (its directory mounted, the flag passed).
#[test]
fn kubeadm_snippet_flags_render_without_hand_edits() {
    let snippet = yaml_file("kubeadm/kubeadmcontrolplane-snippet.yaml");
    let spec = &snippet["spec"]["kubeadmConfigSpec"];
    let commands: Vec<&str> = spec["preKubeadmCommands"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    let generate = commands
        .iter()
        .find(|c| c.contains("/vip-agent manifest pod"))
        .expect("a manifest pod command");
    let flags: Vec<&str> = generate
        .split_once("/vip-agent manifest ")
        .unwrap()
        .1
        .split('>')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let yaml = render(&flags).unwrap_or_else(|e| panic!("{flags:?}: {e}"));
    assert!(
        generate.contains("> /etc/kubernetes/manifests/vip-agent.yaml"),
        "{generate}"
    );
    // The pulled image is the one the pod runs.
    let pulled = commands
        .iter()
        .find_map(|c| c.strip_prefix("ctr -n k8s.io image pull "))
        .unwrap()
        .trim();
    assert!(
        yaml.contains(&format!("image: {pulled}\n")),
        "pod does not run the pulled {pulled}"
    );
    assert!(
        yaml.contains("- --super-admin-kubeconfig=/etc/kubernetes/super-admin.conf\n"),
        "{yaml}"
    );
    assert!(yaml.contains("  - hostPath:\n      path: /etc/kubernetes\n      type: Directory\n"));
    for c in &commands {
        assert!(
            !c.contains("sed ") && !c.contains("super-admin"),
            "no manifest edits: {c}"
        );
    }
    assert!(
        spec.get("postKubeadmCommands").is_none(),
        "nothing to undo after kubeadm"
    );
}

/// prometheus.yml holds exactly scrape.yaml's job; promtool (Debian package
/// `prometheus`) checks the config, the rules and the rule unit tests.
#[test]
fn prometheus_files_agree_and_pass_promtool() {
    let scrape = yaml_file("prometheus/scrape.yaml");
    let full = yaml_file("prometheus/prometheus.yml");
    assert_eq!(
        full["scrape_configs"], scrape,
        "prometheus.yml's scrape_configs must equal scrape.yaml"
    );
    let rules = yaml_file("prometheus/alerts.yaml");
    let text = serde_saphyr::to_string(&rules).unwrap();
    for metric in [
        "vip_agent_leader",
        "vip_agent_renew_failures_total",
        "vip_xdp_fenced_total",
        "vip_xdp_answered_total",
    ] {
        assert!(text.contains(metric), "alerts.yaml does not use {metric}");
    }
    let dir = deploy_dir().join("prometheus");
    let checks: [&[&str]; 3] = [
        &["check", "config", "prometheus.yml"],
        &["check", "rules", "alerts.yaml"],
        &["test", "rules", "alerts_test.yaml"],
    ];
    vip_lab::require_tool!("promtool", package = "prometheus");
    for args in checks {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap_or_else(|e| panic!("promtool {}: {e}", args.join(" ")));
        assert!(
            out.status.success(),
            "promtool {} failed:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
