//! The responder under test, one mode after the other: the kernel, or a real
//! `vip-agent run --no-election` in native or skb mode.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use vip_common::events;

use super::counters::gen_stats;
use super::generator::Gen;
use super::{DataplaneOptions, Mode, RESP_IF, VIP4, VIP6};
use vip_lab::agent::{Agent, PinDirGuard};
use vip_lab::topology::Endpoint;

/// Time the agent gets to attach and lead.
pub(super) const AGENT_START: Duration = Duration::from_secs(15);

pub(super) struct Responder {
    pub(super) agent: Option<Agent>,
    pub(super) pins: Option<PinDirGuard>,
}

pub(super) fn start_responder(
    mode: Mode,
    resp: &Endpoint,
    opts: &DataplaneOptions,
) -> anyhow::Result<Responder> {
    let ns = resp.ns();
    match mode {
        Mode::Kernel => {
            for key in ["all", RESP_IF] {
                ns.sysctl(&format!("net/ipv4/conf/{key}/arp_ignore"), "0")?;
            }
            ns.exec_ok(&["addr", "add", &format!("{VIP4}/32"), "dev", RESP_IF])?;
            ns.exec_ok(&[
                "addr",
                "add",
                &format!("{VIP6}/128"),
                "dev",
                RESP_IF,
                "nodad",
            ])?;
            Ok(Responder {
                agent: None,
                pins: None,
            })
        }
        Mode::Native | Mode::Skb => {
            let pins = PinDirGuard::new(&format!("dp-{}", mode.name()));
            let args: Vec<String> = [
                "run",
                "--interface",
                RESP_IF,
                "--address",
                &VIP4.to_string(),
                "--address",
                &VIP6.to_string(),
                "--no-election",
                "--xdp-mode",
                mode.name(),
                "--pin-dir",
                &pins.path().display().to_string(),
                "--metrics-addr",
                "",
                "--log-format",
                "json",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let mut agent = Agent::spawn(
                &format!("agent-{}", mode.name()),
                ns,
                &opts.agent_bin,
                &args,
            )
            .context("starting vip-agent")?;
            let attached = agent
                .wait_for_event(events::XDP_ATTACHED, AGENT_START)
                .context("waiting for the agent to attach")?;
            anyhow::ensure!(
                attached.field("mode").as_deref() == Some(mode.name()),
                "agent attached in another mode than {}: {attached:?}",
                mode.name()
            );
            agent
                .wait_for_event(events::LEADING, AGENT_START)
                .context("waiting for the agent to lead")?;
            Ok(Responder {
                agent: Some(agent),
                pins: Some(pins),
            })
        }
    }
}

pub(super) fn stop_responder(mode: Mode, r: Responder, resp: &Endpoint) -> anyhow::Result<()> {
    match mode {
        Mode::Kernel => {
            let ns = resp.ns();
            ns.exec_ok(&["addr", "del", &format!("{VIP4}/32"), "dev", RESP_IF])?;
            ns.exec_ok(&["addr", "del", &format!("{VIP6}/128"), "dev", RESP_IF])?;
        }
        Mode::Native | Mode::Skb => {
            if let Some(mut agent) = r.agent {
                agent
                    .stop(Duration::from_secs(10))
                    .context("stopping the agent")?;
            }
            drop(r.pins);
        }
    }
    Ok(())
}

/// Waits until the reply counters stop moving (50 ms without change), at most 2 s.
pub(super) fn settle(generator: &Gen) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut last = gen_stats(&generator.stats)?;
    let mut still_since = Instant::now();
    while Instant::now() < deadline {
        // Polling an observable counter with a deadline.
        std::thread::sleep(Duration::from_millis(10));
        let now = gen_stats(&generator.stats)?;
        if now != last {
            last = now;
            still_since = Instant::now();
        } else if still_since.elapsed() >= Duration::from_millis(50) {
            break;
        }
    }
    Ok(())
}
