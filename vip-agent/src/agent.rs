//! `vip-agent run`: wires the data plane, the node's hold on the VIP, the
//! announcer and (unless `--no-election`) the leader election.

use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::addr::Addresses;
use crate::announce::{AnnounceConfig, Announcer};
use crate::clock::MonoTime;
use crate::config::RunArgs;
use crate::dataplane::{self, Dataplane, DataplaneConfig};
use crate::node::Node;

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    args.validate()?;
    let pin_dir = args.pin_dir.clone().unwrap_or_else(|| dataplane::default_pin_dir(&args.interface));
    let dp_cfg = DataplaneConfig {
        ifname: args.interface.clone(),
        mode: args.xdp_mode,
        pin_dir,
        vips: args.addresses.clone(),
    };
    let (dataplane, adopted) = Dataplane::open(&dp_cfg).with_context(|| format!("setting up XDP on --interface {}", args.interface))?;
    if adopted.link {
        info!(stale_vips = ?adopted.vips, "found the pinned fence of an earlier agent; adopted it");
    }
    let ifindex = dataplane.ifindex();
    let mac = dataplane.mac();
    let addresses = Addresses::new(ifindex)?;
    let (announce_tx, announce_rx) = watch::channel(false);
    let announcer = Announcer::new(ifindex, mac, &args.addresses).context("opening the AF_PACKET socket for announcements")?;
    let announce_cfg = AnnounceConfig {
        burst: args.announce_burst,
        repeats: args.announce_repeats,
        repeat_interval: args.announce_interval,
        refresh_interval: args.announce_refresh,
    };
    let announce_task = tokio::spawn(announcer.run(announce_cfg, announce_rx, |_| {}));
    let node = Node::new(dataplane, addresses, args.addresses.clone(), &adopted.vips, announce_tx).await?;

    let shutdown = CancellationToken::new();
    let signals = tokio::spawn(wait_for_signal(shutdown.clone()));

    let result = if args.no_election {
        run_without_election(&node, &args, &shutdown).await
    } else {
        Err(anyhow::anyhow!("leader election is not available in this build yet; pass --no-election"))
    };
    if let Err(e) = &result {
        warn!(error = %format!("{e:#}"), "stopping after an error");
    }
    // Whatever happened: fence, remove addresses, detach.
    let stop = node.shutdown().await;
    announce_task.abort();
    signals.abort();
    result.and(stop)
}

/// `--no-election`: lead for ever, pushing the fence deadline forward every
/// retry period (deadline = now + renew deadline), so a frozen agent still
/// falls silent by itself.
async fn run_without_election(node: &Node, args: &RunArgs, shutdown: &CancellationToken) -> anyhow::Result<()> {
    info!(vips = ?args.addresses, "no election: this node answers for the VIPs");
    let mut tick = tokio::time::interval(args.retry_period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {
                let deadline = MonoTime::now().saturating_add(args.renew_deadline);
                node.lead(deadline).await?;
            }
        }
    }
}

async fn wait_for_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        warn!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: stopping"),
        _ = int.recv() => info!("SIGINT: stopping"),
    }
    shutdown.cancel();
    // A second signal while stopping: give up on the graceful path.
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    warn!("second signal: exiting at once");
    tokio::time::sleep(Duration::from_millis(0)).await;
    std::process::exit(130);
}
