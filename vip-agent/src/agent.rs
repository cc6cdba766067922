//! `vip-agent run`: wires the data plane, the node's hold on the VIP, the
//! announcer and (unless `--no-election`) the leader election.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use vip_common::events;

use crate::addr::Addresses;
use crate::announce::{AnnounceConfig, Announcer};
use crate::cli::RunArgs;
use crate::clock::MonoTime;
use crate::dataplane::{self, Dataplane, DataplaneConfig, Repair};
use crate::election::events::{EventSink, KubeEvents, Reporter};
use crate::election::fallback::{FallbackStore, KubeSuperAdmin};
use crate::election::health::{KubeProbe, run_checker};
use crate::election::kube_store::KubeLeaseStore;
use crate::election::{self, Role, Status};
use crate::metrics::{self, Metrics, XdpCounters};
use crate::node::Node;
use crate::peer::{self, Peers, key::KeySource};

/// Bound on posting the Events still queued when the election ends.
const EVENTS_DRAIN: Duration = Duration::from_secs(2);

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    info!(
        version = env!("CARGO_PKG_VERSION"),
        vips = ?args.addresses,
        event = events::AGENT_STARTING,
        "vip-agent starting"
    );
    args.validate()?;
    let identity = args.identity()?;
    // Everything that can fail on bad input is checked before the system is
    // touched: the metrics port, and the kubeconfig (read and parsed here).
    let metrics_listener = metrics::bind(&args.metrics_addr).await?;
    let client = if args.no_election {
        None
    } else {
        Some(election::client::build_client(&args.client_options()?).await?)
    };
    let pin_dir = args
        .pin_dir
        .clone()
        .unwrap_or_else(|| dataplane::default_pin_dir(&args.interface));
    let dp_cfg = DataplaneConfig {
        ifname: args.interface.clone(),
        mode: args.xdp_mode,
        pin_dir,
        vips: args.addresses.clone(),
    };
    dataplane::if_index(&args.interface)?;
    crate::kernel_guard::ensure(&args.interface).with_context(|| {
        format!(
            "guarding --interface {} against kernel ARP answers",
            args.interface
        )
    })?;
    let (dataplane, adopted) = Dataplane::open(&dp_cfg)
        .with_context(|| format!("setting up XDP on --interface {}", args.interface))?;
    if adopted.link {
        info!(stale_vips = ?adopted.vips, event = events::ADOPTED_PINS, "found the pinned fence of an earlier agent; adopted it");
    }
    for r in &adopted.repairs {
        warn!(
            kind = r.kind.label(),
            event = events::REPAIRED,
            "repaired: {}",
            r.detail
        );
    }
    let ifindex = dataplane.ifindex();
    let mac = dataplane.mac();
    let xdp_mode = dataplane.mode().as_str();
    let addresses = Addresses::new(ifindex)?;
    let addresses_for_peers = match (args.fast_path, args.peer_address) {
        (true, None) => addresses
            .node_address(&args.addresses)
            .await
            .with_context(|| format!("listing the addresses of --interface {}", args.interface))?,
        (_, a) => a,
    };
    let (announce_tx, _) = watch::channel(false);
    let announcer = Announcer::new(ifindex, mac, &args.addresses)
        .context("opening the AF_PACKET socket for announcements")?;
    let announce_cfg = AnnounceConfig {
        burst: args.announce_burst,
        repeats: args.announce_repeats,
        repeat_interval: args.announce_interval,
        refresh_interval: args.announce_refresh,
    };
    for ip in &args.addresses {
        if !addresses.on_link(*ip).await.unwrap_or(true) {
            warn!(
                vip = %ip,
                interface = %args.interface,
                "the VIP is not inside any subnet configured on the interface: clients on this segment \
                 will not ARP/NS for it unless they route it here; check --address and --interface"
            );
        }
    }
    let node = Arc::new(
        Node::new(
            dataplane,
            addresses,
            args.addresses.clone(),
            &adopted.vips,
            announce_tx,
        )
        .await?,
    );

    let shutdown = CancellationToken::new();
    let signals = tokio::spawn(wait_for_signal(shutdown.clone()));
    let (status_tx, status_rx) = watch::channel(Status::default());
    let (ready_tx, ready_rx) = watch::channel(true);
    // The XDP counters are read from the pinned map at each scrape.
    let xdp_counters = metrics_listener.as_ref().and_then(|_| {
        XdpCounters::open(&dp_cfg.pin_dir)
            .inspect_err(|e| {
                warn!(error = %e, "cannot open the XDP counters map: /metrics will lack the vip_xdp_* families")
            })
            .ok()
    });
    let metrics = Metrics::new(
        identity.clone(),
        xdp_mode,
        args.addresses.iter().map(ToString::to_string).collect(),
        status_rx,
        xdp_counters,
        ready_rx,
    );
    for r in &adopted.repairs {
        metrics.add_repair(r.kind);
    }
    let (restart_tx, restart_rx) = watch::channel(0u64);
    let announce_task = tokio::spawn(announce_loop(
        node.clone(),
        announcer,
        args.addresses.clone(),
        announce_cfg,
        metrics.clone(),
        restart_rx,
    ));
    let metrics_task = metrics_listener.map(|l| {
        info!(addr = %args.metrics_addr, "serving /metrics, /healthz, /readyz");
        tokio::spawn(metrics::serve(l, metrics.clone(), shutdown.clone()))
    });
    let supervise_task = tokio::spawn(supervise(
        node.clone(),
        metrics.clone(),
        restart_tx,
        shutdown.clone(),
    ));

    let peers = match (&client, args.fast_path) {
        (Some(client), true) => Some(
            start_fast_path(&args, &identity, &addresses_for_peers, client, &shutdown)
                .await
                .context("starting the fast path (--fast-path)")?,
        ),
        _ => None,
    };
    if let Some((p, _)) = &peers {
        metrics.set_peer_stats(p.clone());
    }
    let result = match client {
        None => run_without_election(&node, &args, &shutdown, &status_tx).await,
        Some(client) => {
            run_election(
                &node,
                &args,
                client,
                &metrics,
                shutdown.clone(),
                status_tx,
                peers.as_ref().map(|(p, _)| p.clone()),
            )
            .await
        }
    };
    if let Some((_, tasks)) = peers {
        for t in tasks {
            t.abort();
            let _ = t.await;
        }
    }
    if let Err(e) = &result {
        warn!(error = %format!("{e:#}"), "stopping after an error");
    }
    ready_tx.send_replace(false);
    shutdown.cancel();
    // Whatever happened: fence, remove addresses, detach.
    supervise_task.abort();
    let _ = supervise_task.await;
    // The announcer holds the node too (to follow the interface).
    announce_task.abort();
    let _ = announce_task.await;
    let stop = match Arc::try_unwrap(node) {
        Ok(node) => node.shutdown().await,
        Err(node) => node.follow().await.and(Err(anyhow::anyhow!(
            "data plane still shared at shutdown; left pinned"
        ))),
    };
    signals.abort();
    if let Some(t) = metrics_task {
        t.abort();
    }
    result.and(stop)
}

async fn run_election(
    node: &Arc<Node>,
    args: &RunArgs,
    client: kube::Client,
    metrics: &Metrics,
    shutdown: CancellationToken,
    status: watch::Sender<Status>,
    peers: Option<Peers>,
) -> anyhow::Result<()> {
    let cfg = args.election_config()?;
    // admin.conf, or super-admin.conf while admin.conf is forbidden.
    let super_admin = args.super_admin_client_options()?.map(|options| {
        let path = options.kubeconfig.clone();
        let source = KubeSuperAdmin {
            options,
            namespace: cfg.namespace.clone(),
            name: cfg.lease_name.clone(),
        };
        (source, path)
    });
    let m = metrics.clone();
    let store = FallbackStore::new(
        KubeLeaseStore::new(client.clone(), &cfg.namespace, &cfg.lease_name),
        &args.kubeconfig,
        super_admin,
        move |k| m.set_credentials(k),
    );
    let (health_tx, health_rx) = watch::channel(true);
    let probe = KubeProbe {
        client: client.clone(),
        path: args.health_path.clone(),
    };
    let (events, events_rx) = EventSink::channel(election::events::CHANNEL_CAPACITY);
    metrics.set_event_stats(events.stats());
    let events_task = tokio::spawn(election::events::post_events(
        KubeEvents::new(client, &cfg.namespace),
        Reporter {
            namespace: cfg.namespace.clone(),
            lease_name: cfg.lease_name.clone(),
            identity: cfg.identity.clone(),
        },
        events_rx,
        events.stats(),
        election::events::POST_TIMEOUT,
    ));
    let health_cfg = args.health_config();
    let health_shutdown = shutdown.clone();
    let health_task =
        tokio::spawn(
            async move { run_checker(&probe, &health_cfg, health_tx, health_shutdown).await },
        );
    // election::run logs "leader election starting" once the settings are checked.
    let links = election::Links {
        health: health_rx,
        shutdown,
        status,
        events,
        peers,
    };
    let r = tokio::select! {
        biased;
        r = election::run_with_links(&store, &cfg, node.as_ref(), links) => r,
        () = store.probe_admin(cfg.retry_period, cfg.request_timeout()) => {
            unreachable!("the admin probe runs until dropped")
        }
    };
    health_task.abort();
    // The last Events (a step-down, the release) go out before exiting;
    // the election's sender is gone, so the poster ends once it is done.
    if tokio::time::timeout(EVENTS_DRAIN, events_task)
        .await
        .is_err()
    {
        warn!("the last Kubernetes Events were not posted in time");
    }
    Ok(r?)
}

/// Once a second: logs new conflicting claims, and runs the node's repair
/// round ([`Node::maintain`]): each repair is logged (one warn
/// line naming what was found and what was done) and counted in
/// `vip_agent_repairs_total{kind}`; the announcer starts over when asked.
/// The fast path's socket and key: bound and started before the election,
/// so that a restarted agent that is still a member acks at once.
async fn start_fast_path(
    args: &RunArgs,
    identity: &str,
    address: &Option<std::net::IpAddr>,
    client: &kube::Client,
    shutdown: &CancellationToken,
) -> anyhow::Result<(Peers, Vec<tokio::task::JoinHandle<()>>)> {
    let Some(ip) = *address else {
        anyhow::bail!(
            "--interface {} has no address of its own to reach the other agents at; fix: pass --peer-address",
            args.interface
        );
    };
    let addr = std::net::SocketAddr::new(ip, args.peer_port);
    let peers = Peers::new(
        identity.to_owned(),
        addr,
        args.peer_timing(),
        crate::clock::MonoTime::now(),
    );
    let source = match &args.peer_key_file {
        Some(path) => KeySource::File(path.clone()),
        None => KeySource::Secret {
            client: client.clone(),
            namespace: args.lease_namespace.clone(),
            name: args.peer_key_secret.clone(),
        },
    };
    // The thread ends with `shutdown` (the agent's last step).
    peer::socket::spawn(addr, peers.clone(), shutdown.clone())
        .with_context(|| format!("binding UDP {addr} (--peer-address, --peer-port)"))?;
    info!(address = %addr, key = %source.describe(), "fast path: peer channel bound");
    let key_task = tokio::spawn(peer::key::load_into(
        source,
        peers.clone(),
        shutdown.clone(),
    ));
    Ok((peers, vec![key_task]))
}

async fn supervise(
    node: Arc<Node>,
    metrics: Metrics,
    restart_announcer: watch::Sender<u64>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut claims_seen: std::collections::HashMap<std::net::IpAddr, u64> = Default::default();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                for (vip, c) in node.claims().await {
                    let seen = claims_seen.insert(vip, c.count).unwrap_or(0);
                    if c.count > seen {
                        warn!(
                            %vip,
                            mac = %format_mac(&c.mac),
                            frames = c.count - seen,
                            event = events::CONFLICTING_CLAIM,
                            "conflicting claim: another host announces the VIP while this node answers \
                             for it (counted in vip_xdp_claims_total); find that host"
                        );
                    }
                }
                let m = node.maintain().await;
                for Repair { kind, detail } in &m.repairs {
                    warn!(kind = kind.label(), event = events::REPAIRED, "repaired: {detail}");
                    metrics.add_repair(*kind);
                }
                if m.reannounce {
                    restart_announcer.send_modify(|n| *n += 1);
                }
            }
        }
    }
}

/// Runs the announcer; starts it over, on the interface's current ifindex
/// and MAC, whenever `restart` changes (after a repair). A new subscription
/// to the node's switch sees "leading" at once, so a leader announces again.
async fn announce_loop(
    node: Arc<Node>,
    first: Announcer,
    vips: Vec<std::net::IpAddr>,
    cfg: AnnounceConfig,
    metrics: Metrics,
    mut restart: watch::Receiver<u64>,
) {
    let mut announcer = Some(first);
    loop {
        if let Some(a) = announcer.take() {
            let rx = node.announce_switch().subscribe();
            let m = metrics.clone();
            tokio::select! {
                _ = a.run(cfg.clone(), rx, move |n| m.add_announcements(n)) => return,
                r = restart.changed() => if r.is_err() { return },
            }
        } else if restart.changed().await.is_err() {
            return;
        }
        let (ifindex, mac) = node.interface().await;
        match Announcer::new(ifindex, mac, &vips) {
            Ok(a) => announcer = Some(a),
            Err(e) => {
                warn!(error = %e, "re-creating the announcer failed; retrying at the next repair")
            }
        }
    }
}

/// `--no-election`: lead for ever, pushing the fence deadline forward every
/// retry period (deadline = now + renew deadline), so a frozen agent still
/// falls silent by itself.
async fn run_without_election(
    node: &Node,
    args: &RunArgs,
    shutdown: &CancellationToken,
    status: &watch::Sender<Status>,
) -> anyhow::Result<()> {
    info!(vips = ?args.addresses, event = events::NO_ELECTION, "no election: this node answers for the VIPs");
    status.send_modify(|s| s.role = Role::Leading);
    let mut tick = tokio::time::interval(args.retry_period());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {
                let deadline = MonoTime::now().saturating_add(args.renew_deadline);
                node.lead(deadline).await?;
                status.send_modify(|s| s.fence_deadline = Some(deadline));
            }
        }
    }
}

async fn wait_for_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        warn!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => info!(event = events::SIGTERM_STOPPING, "SIGTERM: stopping"),
        _ = int.recv() => info!(event = events::SIGINT_STOPPING, "SIGINT: stopping"),
    }
    shutdown.cancel();
    // A second signal while stopping: give up on the graceful path.
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    warn!("second signal: exiting at once (the pinned fence stays and expires by itself)");
    std::process::exit(130);
}

fn format_mac(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}
