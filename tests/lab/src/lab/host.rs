//! The lab's host plumbing: leftovers of earlier runs, the XDP_PASS programs
//! of native mode, the "api" namespace, and small guards.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use nix::sys::signal::Signal;

use crate::agent::{Agent, PinDirGuard};
use crate::netns::{self, NetNs};
use crate::topology::{BRIDGE, LAN_IFNAME, Lan};

/// A temporary directory removed (recursively) on drop.
pub(super) struct WorkDir(pub(super) PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Aborts a tokio task on drop.
pub(super) struct TaskGuard(pub(super) tokio::task::JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Remove the lab's leftovers of earlier runs whose process is gone: agents
/// still running with a pin dir `/sys/fs/bpf/vip-lab-<pid>-...`, then the pin dirs.
pub(super) fn cleanup_stale_pins_and_agents() {
    let stale = |name: &str| -> bool {
        let Some(rest) = name.strip_prefix("vip-lab-") else {
            return false;
        };
        let Some((pid, _)) = rest.split_once('-') else {
            return false;
        };
        let Ok(pid) = pid.parse::<i32>() else {
            return false;
        };
        pid != std::process::id() as i32 && !Path::new(&format!("/proc/{pid}")).exists()
    };
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for p in procs.flatten() {
            let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(p.path().join("cmdline")) else {
                continue;
            };
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let is_agent = args.first().is_some_and(|a| a.ends_with("vip-agent"));
            let stale_pin = args.windows(2).any(|w| {
                w[0] == "--pin-dir" && w[1].strip_prefix("/sys/fs/bpf/").is_some_and(&stale)
            });
            if is_agent && stale_pin {
                eprintln!("vip-lab: killing agent {pid} left by an earlier run");
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGCONT);
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
    if let Ok(dirs) = std::fs::read_dir("/sys/fs/bpf") {
        for d in dirs.flatten() {
            let name = d.file_name().to_string_lossy().into_owned();
            if stale(&name) {
                eprintln!("vip-lab: removing stale pins {}", d.path().display());
                drop(PinDirGuard(d.path()));
            }
        }
    }
    // Work directories (kubeconfig, keepalived configs) of killed runs.
    if let Ok(dirs) = std::fs::read_dir(std::env::temp_dir()) {
        for d in dirs.flatten() {
            let name = d.file_name().to_string_lossy().into_owned();
            if stale(&name) && d.path().is_dir() {
                eprintln!(
                    "vip-lab: removing stale work directory {}",
                    d.path().display()
                );
                let _ = std::fs::remove_dir_all(d.path());
            }
        }
    }
}

/// Remove everything earlier, killed runs left behind (namespaces, links,
/// pins, agents). Safe to call while other labs of this process run.
pub fn cleanup_stale() -> anyhow::Result<()> {
    cleanup_stale_pins_and_agents();
    let report = netns::cleanup_stale().context("removing stale namespaces")?;
    if !report.namespaces.is_empty() || !report.root_links.is_empty() {
        eprintln!(
            "vip-lab: removed leftovers of an earlier run: {:?} {:?}",
            report.namespaces, report.root_links
        );
    }
    Ok(())
}

/// Load the agent's XDP object and attach it (its VIP map empty: XDP_PASS for
/// everything) in native mode to the bridge-side port of every node.
pub(super) fn attach_pass_programs(lan: &Lan) -> anyhow::Result<Vec<aya::Ebpf>> {
    let object = ebpf_build::build(false).map_err(anyhow::Error::msg)?;
    let bytes = std::fs::read(&object).with_context(|| format!("reading {}", object.display()))?;
    let mut out = Vec::new();
    for i in 0..lan.len() {
        let (ns, port) = lan.node_port(i);
        let ifindex = lan.member(i).port_ifindex();
        let ebpf = crate::agent::attach_pass_program(ns, ifindex, &bytes)
            .with_context(|| format!("attaching the XDP_PASS program to port {port}"))?;
        out.push(ebpf);
    }
    Ok(out)
}

/// Plug the "api" namespace into the LAN's bridge with `ip`/24.
pub(super) fn plug_api(lan: &Lan, ip: Ipv4Addr) -> anyhow::Result<NetNs> {
    let api = NetNs::new("api")?;
    let sw = lan.switch();
    sw.exec_ok(&[
        "link",
        "add",
        "api",
        "type",
        "veth",
        "peer",
        "name",
        LAN_IFNAME,
        "netns",
        api.name(),
    ])?;
    sw.exec_ok(&["link", "set", "dev", "api", "master", BRIDGE])?;
    sw.exec_ok(&["link", "set", "dev", "api", "up"])?;
    api.exec_ok(&["addr", "add", &format!("{ip}/24"), "dev", LAN_IFNAME])?;
    api.exec_ok(&["link", "set", "dev", LAN_IFNAME, "up"])?;
    let t = Duration::from_secs(5);
    api.wait_oper_up(LAN_IFNAME, t)?;
    sw.wait_oper_up("api", t)?;
    sw.wait_link(
        "api",
        "bridge port forwarding",
        t,
        netns::bridge_port_forwarding,
    )?;
    Ok(api)
}

/// Run a blocking closure on the blocking pool with `agent` moved in and back.
pub(super) async fn with_agent<T: Send + 'static>(
    agent: Agent,
    f: impl FnOnce(&mut Agent) -> T + Send + 'static,
) -> anyhow::Result<(Agent, T)> {
    tokio::task::spawn_blocking(move || {
        let mut agent = agent;
        let r = f(&mut agent);
        (agent, r)
    })
    .await
    .map_err(|e| anyhow!("agent task: {e}"))
}
