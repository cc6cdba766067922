//! Bad input through the real binary: each mistake gives a clear error that
//! names the flag or file and the fix, exits non-zero, and leaves nothing
//! behind (no XDP program, no pins). No root needed for these.

use std::process::Command;

fn agent(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vip-agent"))
        .args(args)
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .output()
        .expect("run vip-agent");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn run_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "run",
        "--interface",
        "lo",
        "--address",
        "192.0.2.10",
        "--metrics-addr",
        "",
        "--node-name",
        "t",
    ];
    v.extend_from_slice(extra);
    v
}

#[test]
fn invalid_duration_names_the_flag_and_the_format() {
    let (ok, err) = agent(&run_args(&["--lease-duration", "three"]));
    assert!(!ok);
    assert!(
        err.contains("--lease-duration") && err.contains("500ms"),
        "{err}"
    );
}

#[test]
fn durations_in_the_wrong_order_are_refused_with_the_fix() {
    let (ok, err) = agent(&run_args(&[
        "--lease-duration",
        "2s",
        "--renew-deadline",
        "2s",
    ]));
    assert!(!ok);
    assert!(
        err.contains("--renew-deadline")
            && err.contains("--lease-duration")
            && err.contains("raise"),
        "{err}"
    );
    let (ok, err) = agent(&run_args(&["--retry-period", "3s"]));
    assert!(!ok);
    assert!(err.contains("--retry-period"), "{err}");
}

#[test]
fn bad_vip_and_missing_address() {
    let (ok, err) = agent(&["run", "--interface", "lo", "--metrics-addr", ""]);
    assert!(!ok);
    assert!(err.contains("--address"), "{err}");
    let (ok, err) = agent(&[
        "run",
        "--interface",
        "lo",
        "--address",
        "192.0.2.300",
        "--metrics-addr",
        "",
    ]);
    assert!(!ok);
    assert!(
        err.contains("--address") && err.contains("192.0.2.300"),
        "{err}"
    );
    let (ok, err) = agent(&run_args(&["--address", "239.1.1.1"]));
    assert!(!ok);
    assert!(
        err.contains("239.1.1.1") && err.contains("unicast"),
        "{err}"
    );
}

#[test]
fn unreadable_kubeconfig_names_the_file_before_touching_the_system() {
    let (ok, err) = agent(&[
        "run",
        "--interface",
        "vip-no-such-if",
        "--address",
        "192.0.2.10",
        "--metrics-addr",
        "",
        "--node-name",
        "t",
        "--kubeconfig",
        "/nonexistent/admin.conf",
    ]);
    assert!(!ok);
    assert!(
        err.contains("/nonexistent/admin.conf") && err.contains("--kubeconfig"),
        "{err}"
    );
    // It failed on the kubeconfig, before looking at the interface.
    assert!(!err.contains("vip-no-such-if"), "{err}");
}

#[test]
fn unknown_interface_is_named() {
    let (ok, err) = agent(&[
        "run",
        "--interface",
        "vip-no-such-if",
        "--address",
        "192.0.2.10",
        "--no-election",
        "--metrics-addr",
        "",
    ]);
    assert!(!ok);
    assert!(
        err.contains("vip-no-such-if") && err.contains("--interface"),
        "{err}"
    );
}

#[test]
fn bad_metrics_address_is_named() {
    let (ok, err) = agent(&[
        "run",
        "--interface",
        "lo",
        "--address",
        "192.0.2.10",
        "--no-election",
        "--metrics-addr",
        "localhost",
    ]);
    assert!(!ok);
    assert!(err.contains("--metrics-addr"), "{err}");
}

#[test]
fn kube_vip_environment_names_are_understood() {
    let out = Command::new(env!("CARGO_BIN_EXE_vip-agent"))
        .args(["run", "--no-election", "--metrics-addr", ""])
        .env("vip_interface", "vip-no-such-if")
        .env("address", "192.0.2.10")
        .env_remove("VIP_INTERFACE")
        .env_remove("VIP_ADDRESS")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    // It got as far as looking the interface up: both settings were taken from kube-vip's names.
    assert!(err.contains("vip-no-such-if"), "{err}");
}

#[test]
fn manifest_pod_through_the_binary() {
    let out = Command::new(env!("CARGO_BIN_EXE_vip-agent"))
        .args([
            "manifest",
            "pod",
            "--interface",
            "eth0",
            "--address",
            "192.0.2.10",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8_lossy(&out.stdout);
    assert!(
        yaml.contains("kind: Pod") && yaml.contains("192.0.2.10") && yaml.contains("/sys/fs/bpf"),
        "{yaml}"
    );
    let (ok, err) = agent(&[
        "manifest",
        "pod",
        "--interface",
        "eth0",
        "--address",
        "192.0.2.10",
        "--renew-deadline",
        "5s",
    ]);
    assert!(!ok);
    assert!(err.contains("--renew-deadline"), "{err}");
}

/// `--log-format json`: every line on stderr is one JSON object; the
/// lifecycle lines carry `event` (a `vip_common::events` name), here the
/// start-up line and the fatal error of a run that stops on a missing
/// interface (no root needed, nothing touched).
#[test]
fn json_log_lines_parse_and_carry_the_event() {
    let args = [
        "run",
        "--interface",
        "vip-no-such-if",
        "--address",
        "192.0.2.10",
        "--no-election",
        "--metrics-addr",
        "",
    ];
    let check = |cmd: &mut Command, how: &str| {
        let out = cmd.env_remove("RUST_LOG").output().expect("run vip-agent");
        assert!(!out.status.success(), "{how}");
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<serde_json::Value> = err
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("{how}: not a JSON line ({e}): {l:?}\n{err}"))
            })
            .collect();
        let event = |name: &str| {
            lines
                .iter()
                .find(|l| l["event"] == name)
                .unwrap_or_else(|| panic!("{how}: no event {name:?} in\n{err}"))
        };
        let start = event(vip_common::events::AGENT_STARTING);
        assert_eq!(start["level"], "INFO", "{start}");
        assert_eq!(start["version"], env!("CARGO_PKG_VERSION"), "{start}");
        assert!(start["timestamp"].is_string(), "{start}");
        let failed = event(vip_common::events::AGENT_FAILED);
        assert_eq!(failed["level"], "ERROR", "{failed}");
        assert!(
            failed["message"]
                .as_str()
                .is_some_and(|m| m.contains("vip-no-such-if")),
            "{failed}"
        );
    };
    let mut flag = Command::new(env!("CARGO_BIN_EXE_vip-agent"));
    flag.args(args).args(["--log-format", "json"]);
    check(&mut flag, "--log-format json");
    let mut env = Command::new(env!("CARGO_BIN_EXE_vip-agent"));
    env.args(args).env("VIP_LOG_FORMAT", "json");
    check(&mut env, "VIP_LOG_FORMAT=json");

    // Text (the default) keeps the human lines, with the event as a field.
    let (ok, err) = agent(&args);
    assert!(!ok);
    assert!(
        err.contains("vip-agent starting") && err.contains("event=\"agent_starting\""),
        "{err}"
    );
}

#[test]
fn bad_log_format_is_refused_naming_the_values() {
    let (ok, err) = agent(&run_args(&["--log-format", "xml"]));
    assert!(!ok);
    assert!(
        err.contains("--log-format") && err.contains("text") && err.contains("json"),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_vip-agent"))
        .args(run_args(&[]))
        .env("VIP_LOG_FORMAT", "yaml")
        .output()
        .expect("run vip-agent");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("--log-format") && err.contains("text") && err.contains("json"),
        "{err}"
    );
}
