//! Migration from a real kube-vip manifest: the static pod kube-vip v1.0.0's
//! own `manifest pod` prints for ARP control-plane mode, with image and
//! command swapped as a user would (env kept as is), run through the real
//! binary's `run --check-config` (checks and prints the settings in force,
//! touches nothing). The agent takes the manifest's settings in kube-vip's
//! units (timers in whole seconds), names each setting at start-up, warns
//! about the ones it ignores and refuses what would silently differ.
//!
//! The fixture `fixtures/kube-vip-v1.0.0-arp-controlplane.yaml` was printed
//! by the kube-vip v1.0.0 binary `cargo xtask setup` builds from
//! `tests/kube-vip/` (target/kube-vip/<key>/kube-vip), with exactly:
//!
//! ```sh
//! kube-vip manifest pod --interface eth0 --address 192.0.2.10 --controlplane --arp --leaderElection
//! ```
//!
//! [`generated_by_the_kube_vip_build_itself`] runs that binary afresh (other
//! timers), under the one skip helper: under `cargo xtask test` a missing
//! binary fails.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use k8s_openapi::api::core::v1::{Container, Pod};

const FIXTURE: &str = include_str!("fixtures/kube-vip-v1.0.0-arp-controlplane.yaml");
const NODE: &str = "cp1";

fn parse(yaml: &str) -> Pod {
    serde_saphyr::from_str(yaml).expect("kube-vip's manifest parses as a Pod")
}

/// The container as a user swaps it: our image and command, the env untouched.
fn swapped(pod: &Pod) -> Container {
    let spec = pod.spec.as_ref().expect("pod spec");
    assert_eq!(spec.containers.len(), 1);
    let mut c = spec.containers[0].clone();
    assert_eq!(c.args.as_deref(), Some(&["manager".to_owned()][..]));
    c.image = Some("localhost/vip-agent:test".to_owned());
    c.command = Some(vec!["/vip-agent".to_owned()]);
    c.args = Some(vec!["run".to_owned()]);
    c
}

/// The environment kubelet gives that container (`spec.nodeName` -> [`NODE`]).
fn kubelet_env(c: &Container) -> BTreeMap<String, String> {
    c.env
        .iter()
        .flatten()
        .map(|e| {
            let value = match (&e.value, &e.value_from) {
                (Some(v), _) => v.clone(),
                (None, Some(from)) => {
                    let field = from
                        .field_ref
                        .as_ref()
                        .expect("only fieldRef in kube-vip's env");
                    assert_eq!(field.field_path, "spec.nodeName");
                    NODE.to_owned()
                }
                (None, None) => String::new(),
            };
            (e.name.clone(), value)
        })
        .collect()
}

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The value of `name: value` in the printed settings.
    fn setting(&self, name: &str) -> &str {
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} in {}", self.stdout))
    }

    fn warnings(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| l.starts_with("warning:"))
            .collect()
    }
}

/// The container's command (args + `--check-config`) with exactly its env.
fn run(c: &Container, env: &BTreeMap<String, String>) -> Run {
    let mut args = c.args.clone().unwrap_or_default();
    args.push("--check-config".to_owned());
    let out = Command::new(env!("CARGO_BIN_EXE_vip-agent"))
        .args(&args)
        .env_clear()
        .envs(env)
        .output()
        .expect("run vip-agent");
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Asserts what every manifest of that command must give; returns the run.
fn check_manifest(yaml: &str) -> Run {
    let pod = parse(yaml);
    let c = swapped(&pod);
    let env = kubelet_env(&c);
    for (k, v) in [
        ("vip_arp", "true"),
        ("cp_enable", "true"),
        ("vip_leaderelection", "true"),
    ] {
        assert_eq!(
            env.get(k).map(String::as_str),
            Some(v),
            "kube-vip's manifest: {env:?}"
        );
    }
    let r = run(&c, &env);
    assert!(r.ok, "{}", r.stderr);
    for (k, v) in [
        ("vip_leaseduration", "lease-duration"),
        ("vip_renewdeadline", "renew-deadline"),
        ("vip_retryperiod", "retry-period"),
    ] {
        assert_eq!(r.setting(v), format!("{}s", env[k]), "{k} is in seconds");
    }
    assert_eq!(r.setting("interface"), "eth0");
    assert_eq!(r.setting("addresses"), "192.0.2.10");
    assert_eq!(r.setting("node-name"), NODE);
    assert_eq!(
        r.setting("lease"),
        format!("{}/{}", env["cp_namespace"], env["vip_leasename"])
    );
    assert_eq!(r.setting("election"), "on");
    assert_eq!(
        r.setting("api-server"),
        format!("https://127.0.0.1:{} (TLS name kubernetes)", env["port"])
    );
    assert_eq!(r.setting("metrics-addr"), "0.0.0.0:2112");
    // Each non-empty setting of the manifest is named at start-up.
    for (k, v) in env.iter().filter(|(_, v)| !v.is_empty()) {
        assert!(
            r.stderr.contains(&format!("{k}={v}")),
            "{k} not named: {}",
            r.stderr
        );
    }
    // An ARP control-plane manifest holds nothing the agent ignores.
    assert!(r.warnings().is_empty(), "{}", r.stderr);
    r
}

#[test]
fn the_manifest_settings_are_taken_in_kube_vips_units() {
    check_manifest(FIXTURE);
}

#[test]
fn fast_timers_are_seconds() {
    let c = swapped(&parse(FIXTURE));
    let mut env = kubelet_env(&c);
    for (k, v) in [
        ("vip_leaseduration", "5"),
        ("vip_renewdeadline", "3"),
        ("vip_retryperiod", "1"),
    ] {
        env.insert(k.to_owned(), v.to_owned());
    }
    let r = run(&c, &env);
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(r.setting("lease-duration"), "5s");
    assert_eq!(r.setting("renew-deadline"), "3s");
    assert_eq!(r.setting("retry-period"), "1s");
}

#[test]
fn ours_win_over_kube_vips() {
    let c = swapped(&parse(FIXTURE));
    let mut env = kubelet_env(&c);
    env.insert("VIP_LEASE_DURATION".to_owned(), "30s".to_owned());
    let r = run(&c, &env);
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(r.setting("lease-duration"), "30s");
    assert!(
        r.stderr.contains("VIP_LEASE_DURATION is set and wins"),
        "{}",
        r.stderr
    );
}

#[test]
fn bgp_and_services_are_refused_by_name() {
    let c = swapped(&parse(FIXTURE));
    for (k, v) in [
        ("bgp_enable", "true"),
        ("svc_enable", "true"),
        ("vip_arp", "false"),
    ] {
        let mut env = kubelet_env(&c);
        env.insert(k.to_owned(), v.to_owned());
        let r = run(&c, &env);
        assert!(!r.ok, "{k}={v} accepted: {}", r.stdout);
        assert!(r.stdout.is_empty(), "{}", r.stdout);
        assert!(
            r.stderr.contains(&format!("{k}={v} is refused")),
            "{}",
            r.stderr
        );
    }
}

#[test]
fn ignored_settings_are_warned_by_name() {
    let c = swapped(&parse(FIXTURE));
    let mut env = kubelet_env(&c);
    for (k, v) in [
        ("lb_enable", "true"),
        ("lb_port", "6443"),
        ("vip_leaderelection", "false"),
    ] {
        env.insert(k.to_owned(), v.to_owned());
    }
    let r = run(&c, &env);
    assert!(r.ok, "{}", r.stderr);
    let w = r.warnings();
    assert_eq!(w.len(), 3, "{}", r.stderr);
    for k in ["lb_enable=true", "lb_port=6443", "vip_leaderelection=false"] {
        assert!(w.iter().any(|l| l.contains(k)), "{k}: {w:?}");
    }
    assert_eq!(r.setting("election"), "on");
}

#[test]
fn a_bad_timer_names_the_variable_and_the_fix() {
    let c = swapped(&parse(FIXTURE));
    let mut env = kubelet_env(&c);
    env.insert("vip_leaseduration".to_owned(), "abc".to_owned());
    let r = run(&c, &env);
    assert!(!r.ok);
    assert!(
        r.stderr.contains("vip_leaseduration=abc") && r.stderr.contains("whole number of seconds"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_real_start_logs_each_setting_before_anything_else() {
    // Not --check-config: the agent starts for real and stops at the
    // kubeconfig, which it reads before touching the system.
    let mut c = swapped(&parse(FIXTURE));
    c.args = Some(vec!["run".to_owned()]);
    let mut env = kubelet_env(&c);
    env.insert("lb_enable".to_owned(), "true".to_owned());
    env.insert(
        "VIP_KUBECONFIG".to_owned(),
        "/nonexistent/admin.conf".to_owned(),
    );
    env.insert("VIP_METRICS_ADDR".to_owned(), "127.0.0.1:0".to_owned());
    env.insert("VIP_LOG_FORMAT".to_owned(), "json".to_owned());
    let out = Command::new(env!("CARGO_BIN_EXE_vip-agent"))
        .args(c.args.as_deref().unwrap_or_default())
        .env_clear()
        .envs(&env)
        .output()
        .expect("run vip-agent");
    assert!(!out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let level_of = |name: &str| {
        lines
            .iter()
            .find(|l| l["kube_vip_setting"] == name)
            .map(|l| l["level"].as_str().unwrap_or_default().to_owned())
    };
    assert_eq!(
        level_of("vip_leaseduration").as_deref(),
        Some("INFO"),
        "{lines:?}"
    );
    assert_eq!(level_of("lb_enable").as_deref(), Some("WARN"), "{lines:?}");
    let last = lines.last().expect("a log line");
    assert!(
        last["message"]
            .as_str()
            .unwrap_or_default()
            .contains("/nonexistent/admin.conf"),
        "{last}"
    );
}

/// The kube-vip binary `cargo xtask setup` builds: `VIP_KUBE_VIP_BIN`, or
/// `<target>/kube-vip/<key>/kube-vip` with the key of tests/kube-vip's
/// go.mod and go.sum (the same FNV-1a as xtask/src/kube_vip.rs).
fn kube_vip_bin() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("VIP_KUBE_VIP_BIN") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("VIP_KUBE_VIP_BIN={} is not a file", p.display()))
        };
    }
    let module = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/kube-vip");
    let mut bytes = Vec::new();
    for f in ["go.mod", "go.sum"] {
        bytes.extend(std::fs::read(module.join(f)).map_err(|e| format!("{f}: {e}"))?);
    }
    let key = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    // target/<profile>/vip-agent -> target
    let target = PathBuf::from(env!("CARGO_BIN_EXE_vip-agent"))
        .ancestors()
        .nth(2)
        .expect("target dir")
        .to_path_buf();
    let bin = target.join(format!("kube-vip/{key:016x}/kube-vip"));
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!("no kube-vip build at {}", bin.display()))
    }
}

#[test]
fn generated_by_the_kube_vip_build_itself() {
    let bin = match kube_vip_bin() {
        Ok(b) => b,
        Err(reason) => {
            vip_lab::skip::skip(
                &vip_lab::skip::test_name(),
                &vip_lab::skip::Missing {
                    reason,
                    fix: "run `cargo xtask setup` (builds kube-vip v1.0.0 from tests/kube-vip/)"
                        .to_owned(),
                },
            );
            return;
        }
    };
    let manifest = |extra: &[&str]| {
        let out = Command::new(&bin)
            .args([
                "manifest",
                "pod",
                "--interface",
                "eth0",
                "--address",
                "192.0.2.10",
            ])
            .args(["--controlplane", "--arp", "--leaderElection"])
            .args(extra)
            .output()
            .expect("run kube-vip");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    };
    // The fixture's command gives the fixture's env (the image tag carries
    // the build's version, so only the env is compared).
    let env_of = |yaml: &str| kubelet_env(&swapped(&parse(yaml)));
    assert_eq!(env_of(&manifest(&[])), env_of(FIXTURE));
    // kube-vip's documented defaults, 15 s / 10 s / 2 s.
    let r = check_manifest(&manifest(&[
        "--leaseDuration",
        "15",
        "--leaseRenewDuration",
        "10",
        "--leaseRetry",
        "2",
    ]));
    assert_eq!(r.setting("lease-duration"), "15s");
    assert_eq!(r.setting("renew-deadline"), "10s");
    assert_eq!(r.setting("retry-period"), "2s");
}
