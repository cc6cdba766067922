//! The members of the lab (an agent, keepalived or kube-vip per node): their
//! command lines, starting, stopping, signalling, and their logs.

use std::path::Path;
use std::sync::PoisonError;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use nix::sys::signal::Signal;

use super::events;
use super::host::with_agent;
use super::timeline::Timeline;
use super::{HEALTH_FAILURES, HEALTH_INTERVAL, Implementation, Lab, Member};
use crate::agent::Agent;
use crate::controlplane::Identity;
use crate::keepalived::Keepalived;
use crate::kube_vip::{self, KubeVip};
use crate::topology::LAN_IFNAME;

impl Lab {
    pub(super) fn slot(&mut self, i: usize) -> &mut Member {
        self.nodes[i]
            .member
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn node_of_mac(&self, mac: [u8; 6]) -> Option<usize> {
        (0..self.nodes.len()).find(|i| self.lan.node(*i).mac() == mac)
    }

    pub(super) fn agent_args(&self, i: usize) -> Vec<String> {
        let Implementation::Agent {
            lease,
            renew,
            retry,
            xdp_mode,
            fast_path,
        } = &self.cfg.implementation
        else {
            return Vec::new();
        };
        let ms = |d: &Duration| format!("{}ms", d.as_millis());
        // Real control plane: node i's own API server (127.0.0.1:6443 in its
        // namespace) as the user vip-agent; embedded: the Lease server.
        let kubeconfig = match &self.cp {
            Some(cp) => cp.kubeconfig_as(i, Identity::Agent).to_owned(),
            None => self.kubeconfig.clone(),
        };
        [
            "run",
            "--interface",
            LAN_IFNAME,
            "--address",
            &self.vip4.to_string(),
            "--address",
            &self.vip6.to_string(),
            "--node-name",
            &self.nodes[i].name,
            "--kubeconfig",
            &kubeconfig.display().to_string(),
            "--api-server",
            "",
            "--xdp-mode",
            xdp_mode,
            "--pin-dir",
            &self.nodes[i].pins.path().display().to_string(),
            "--lease-duration",
            &ms(lease),
            "--renew-deadline",
            &ms(renew),
            "--retry-period",
            &ms(retry),
            "--health-check",
            "--health-interval",
            HEALTH_INTERVAL,
            "--health-failures",
            HEALTH_FAILURES,
            // All addresses: a Prometheus in the client namespace scrapes
            // every node (tests/lab/tests/prometheus.rs).
            "--metrics-addr",
            "0.0.0.0:2112",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .chain(if *fast_path {
            self.fast_path_args(i)
        } else {
            Vec::new()
        })
        .collect()
    }

    /// `--fast-path --peer-address <node address>`; with the embedded Lease
    /// server (no Secrets) also `--peer-key-file` (the lab's key, see
    /// [`Self::write_peer_key`]). On the real control plane the agents share
    /// the Secret `vip-agent-peer-key`, which the first of them creates.
    fn fast_path_args(&self, i: usize) -> Vec<String> {
        let mut args = vec!["--fast-path".to_owned()];
        if let Some(ip) = self.lan.node(i).v4() {
            args.extend(["--peer-address".to_owned(), ip.to_string()]);
        }
        if self.cp.is_none() {
            args.extend([
                "--peer-key-file".to_owned(),
                self.peer_key_path().display().to_string(),
            ]);
        }
        args
    }

    /// The HMAC key file of the embedded-server lab's fast path.
    pub(super) fn peer_key_path(&self) -> std::path::PathBuf {
        self.workdir.0.join("peer.key")
    }

    /// Write [`Self::peer_key_path`] (32 random bytes, mode 0600) unless it
    /// exists: every agent of the lab reads the same key.
    fn write_peer_key(&self) -> anyhow::Result<()> {
        use std::io::{Read as _, Write as _};
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = self.peer_key_path();
        if path.exists() {
            return Ok(());
        }
        let mut key = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut key))
            .context("reading /dev/urandom")?;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| f.write_all(&key))
            .with_context(|| format!("writing {}", path.display()))
    }

    pub(super) fn spawn_member(&mut self, i: usize) -> anyhow::Result<()> {
        match &self.cfg.implementation {
            Implementation::Agent { .. } => {
                let bin = self
                    .agent_bin
                    .clone()
                    .ok_or_else(|| anyhow!("no agent binary"))?;
                self.spawn_agent(i, &bin)
            }
            Implementation::Keepalived { advert } => {
                let member = Member::Keepalived(Keepalived::spawn(
                    &self.nodes[i].name,
                    self.lan.node(i).ns(),
                    LAN_IFNAME,
                    self.vip4,
                    100,
                    *advert,
                    &self.workdir.0,
                )?);
                *self.slot(i) = member;
                self.nodes[i].log_seen = 0;
                Ok(())
            }
            Implementation::KubeVip {
                lease,
                renew,
                retry,
            } => {
                let secs = |d: &Duration| {
                    u32::try_from(d.as_secs())
                        .ok()
                        .filter(|_| d.subsec_nanos() == 0)
                        .ok_or_else(|| anyhow!("kube-vip takes whole seconds, not {d:?}"))
                };
                let timers = kube_vip::Timers {
                    lease: secs(lease)?,
                    renew: secs(renew)?,
                    retry: secs(retry)?,
                };
                let cp = self
                    .cp
                    .as_ref()
                    .ok_or_else(|| anyhow!("kube-vip needs the real control plane"))?;
                // Its static pod mounts admin.conf (rights through kubeadm's
                // kubeadm:cluster-admins binding, created at start).
                let member = Member::KubeVip(KubeVip::spawn(
                    &self.nodes[i].name,
                    self.lan.node(i).ns(),
                    LAN_IFNAME,
                    self.vip4,
                    timers,
                    cp.kubeconfig_as(i, Identity::Admin),
                    &self.workdir.0,
                )?);
                *self.slot(i) = member;
                self.nodes[i].log_seen = 0;
                Ok(())
            }
        }
    }

    /// kube-vip exits when it loses the Lease (it panics, "restarting
    /// kube-vip"), e.g. after a freeze, a cut or a hung API server; its
    /// kubelet restarts the static pod. Do that for every kube-vip that
    /// exited or is exiting (bounded wait for its exit), at once.
    pub(super) async fn restart_exited_members(&mut self, tl: &mut Timeline) -> anyhow::Result<()> {
        for i in 0..self.nodes.len() {
            if !matches!(self.slot(i), Member::KubeVip(_)) {
                continue;
            }
            let Member::KubeVip(k) = std::mem::replace(self.slot(i), Member::Down) else {
                continue;
            };
            let (mut k, exited) = tokio::task::spawn_blocking(move || {
                let mut k = k;
                let exiting = k.log().iter().any(|l| l.contains(kube_vip::EXITING));
                let wait = if exiting {
                    Duration::from_secs(10)
                } else {
                    Duration::ZERO
                };
                let exited = k.wait_exit(wait).is_some();
                (k, exited)
            })
            .await?;
            if !exited {
                *self.slot(i) = Member::KubeVip(k);
                continue;
            }
            k.kill();
            *self.slot(i) = Member::KubeVip(k);
            self.collect_logs(tl);
            tl.push(format!(
                "{}: kube-vip exited; started again (as its kubelet would)",
                self.nodes[i].name
            ));
            // The old one goes first (its drop removes a VIP it left).
            *self.slot(i) = Member::Down;
            self.spawn_member(i)?;
            self.wait_member_started(i).await?;
        }
        Ok(())
    }

    /// Spawn node `i`'s agent from `bin` with the lab's arguments.
    pub(super) fn spawn_agent(&mut self, i: usize, bin: &Path) -> anyhow::Result<()> {
        if self.cfg.implementation.fast_path() && self.cp.is_none() {
            self.write_peer_key()?;
        }
        let mut args = self.agent_args(i);
        if crate::agent::logs_json(bin)? {
            args.extend(["--log-format".to_owned(), "json".to_owned()]);
        }
        let agent = Agent::spawn(&self.nodes[i].name, self.lan.node(i).ns(), bin, &args)?;
        *self.slot(i) = Member::Agent(agent);
        self.nodes[i].log_seen = 0;
        Ok(())
    }

    /// Wait until node `i`'s member runs (agent: XDP attached and competing).
    pub(super) async fn wait_member_started(&mut self, i: usize) -> anyhow::Result<()> {
        match std::mem::replace(self.slot(i), Member::Down) {
            Member::Agent(agent) => {
                let (agent, r) = with_agent(agent, |a| {
                    a.wait_for_event(
                        vip_common::events::ELECTION_STARTING,
                        Duration::from_secs(20),
                    )
                })
                .await?;
                *self.slot(i) = Member::Agent(agent);
                r?;
            }
            Member::Keepalived(mut k) => {
                let (k, r) = tokio::task::spawn_blocking(move || {
                    let r = k.wait_for_state("BACKUP", Duration::from_secs(20));
                    (k, r)
                })
                .await?;
                *self.slot(i) = Member::Keepalived(k);
                // A node may go straight to MASTER; only a start-up failure matters.
                if let Err(e) = r
                    && !matches!(&*self.slot(i), Member::Keepalived(k) if k.last_state() == Some("MASTER"))
                {
                    return Err(e);
                }
            }
            Member::KubeVip(mut k) => {
                let (k, r) = tokio::task::spawn_blocking(move || {
                    let r = k.wait_for_line(
                        "attempting to acquire leader lease",
                        Duration::from_secs(20),
                    );
                    (k, r)
                })
                .await?;
                *self.slot(i) = Member::KubeVip(k);
                r?;
            }
            Member::Down => bail!("{} is not running", self.nodes[i].name),
        }
        Ok(())
    }

    /// Drain the queued log lines of node `i`'s agent (so a later wait_for_log
    /// only sees new lines).
    pub(super) async fn drain_log(&mut self, i: usize) -> anyhow::Result<()> {
        match std::mem::replace(self.slot(i), Member::Down) {
            Member::Agent(agent) => {
                let (agent, ()) = with_agent(agent, |a| a.drain_log()).await?;
                *self.slot(i) = Member::Agent(agent);
            }
            // keepalived (or a node that is down): nothing to drain; put it back.
            other => *self.slot(i) = other,
        }
        Ok(())
    }

    /// Wait for the event `name` (one of `vip_common::events`) in the log of
    /// node `i`'s agent (after the last drain).
    pub(super) async fn wait_event(
        &mut self,
        i: usize,
        name: &'static str,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        match std::mem::replace(self.slot(i), Member::Down) {
            Member::Agent(agent) => {
                let (agent, r) =
                    with_agent(agent, move |a| a.wait_for_event(name, timeout)).await?;
                *self.slot(i) = Member::Agent(agent);
                r?;
                Ok(())
            }
            other => {
                *self.slot(i) = other;
                Ok(())
            }
        }
    }

    /// Move the agent's new log lines into the timeline.
    pub(super) fn collect_logs(&mut self, tl: &mut Timeline) {
        for n in &mut self.nodes {
            let lines = match n.member.get_mut().unwrap_or_else(PoisonError::into_inner) {
                Member::Agent(a) => a.log(),
                Member::Keepalived(k) => k.log(),
                Member::KubeVip(k) => {
                    // Its lines at the moment they were read (its own
                    // timestamps have one-second resolution).
                    let lines = k.log_timed();
                    for (at, line) in lines.iter().skip(n.log_seen) {
                        if self.cfg.echo_logs {
                            eprintln!("[{}] {line}", n.name);
                        }
                        if let Some(what) = kube_vip::describe(line) {
                            tl.push_at(tl.at(*at), format!("{}: kube-vip: {what}", n.name));
                        }
                    }
                    n.log_seen = lines.len();
                    continue;
                }
                Member::Down => continue,
            };
            let mut previous: Option<String> = None;
            for line in lines.iter().skip(n.log_seen) {
                if self.cfg.echo_logs {
                    eprintln!("[{}] {line}", n.name);
                }
                let Some(ev) = events::log_event(&n.name, line, tl.wall) else {
                    continue;
                };
                let what = ev.what;
                // The agent logs some steps twice (two layers): keep one.
                if previous.as_ref() == Some(&what) {
                    continue;
                }
                previous = Some(what.clone());
                // keepalived lines carry no parsable timestamp: use "now".
                let at = ev.at.unwrap_or_else(|| tl.now());
                tl.push_at(at, what);
            }
            n.log_seen = lines.len();
        }
    }

    /// Signal / stop / kill the member of node `i` as the scenario says.
    pub(super) async fn stop_member(
        &mut self,
        i: usize,
        tl: &mut Timeline,
        graceful: bool,
    ) -> anyhow::Result<()> {
        self.collect_logs(tl);
        let name = self.nodes[i].name.clone();
        match std::mem::replace(self.slot(i), Member::Down) {
            Member::Agent(agent) => {
                if graceful {
                    tl.push(format!("fault: SIGTERM to {name}'s agent"));
                    let (agent, status) =
                        with_agent(agent, |a| a.stop(Duration::from_secs(10))).await?;
                    // Keep the log of the exited agent for the timeline.
                    *self.slot(i) = Member::Agent(agent);
                    self.collect_logs(tl);
                    match status {
                        Ok(s) => tl.push(format!("{name}: agent exited ({s})")),
                        Err(e) => bail!("{name}: {e}"),
                    }
                } else {
                    let mut agent = agent;
                    tl.push(format!(
                        "fault: SIGKILL to {name}'s agent (address stays configured)"
                    ));
                    agent.kill();
                    tl.push(format!("{name}: agent killed"));
                    *self.slot(i) = Member::Agent(agent);
                    self.collect_logs(tl);
                }
                *self.slot(i) = Member::Down;
            }
            Member::Keepalived(mut k) => {
                if graceful {
                    tl.push(format!("fault: SIGTERM to {name}'s keepalived"));
                    let (k, r) = tokio::task::spawn_blocking(move || {
                        let r = k.stop(Duration::from_secs(10));
                        (k, r)
                    })
                    .await?;
                    *self.slot(i) = Member::Keepalived(k);
                    self.collect_logs(tl);
                    r?;
                    tl.push(format!("{name}: keepalived exited"));
                } else {
                    tl.push(format!("fault: SIGKILL to {name}'s keepalived"));
                    k.kill();
                    *self.slot(i) = Member::Keepalived(k);
                    self.collect_logs(tl);
                }
                *self.slot(i) = Member::Down;
            }
            Member::KubeVip(mut k) => {
                if graceful {
                    tl.push(format!("fault: SIGTERM to {name}'s kube-vip"));
                    let (k, r) = tokio::task::spawn_blocking(move || {
                        let r = k.stop(Duration::from_secs(10));
                        (k, r)
                    })
                    .await?;
                    *self.slot(i) = Member::KubeVip(k);
                    self.collect_logs(tl);
                    tl.push(format!("{name}: kube-vip exited ({})", r?));
                } else {
                    tl.push(format!("fault: SIGKILL to {name}'s kube-vip"));
                    k.kill();
                    *self.slot(i) = Member::KubeVip(k);
                    self.collect_logs(tl);
                }
                *self.slot(i) = Member::Down;
            }
            Member::Down => bail!("{name} is not running"),
        }
        Ok(())
    }

    /// Sends `sig` to node `i`'s member process (agent, keepalived or kube-vip).
    pub fn signal_member(&self, i: usize, sig: Signal) -> anyhow::Result<()> {
        match &*self.nodes[i]
            .member
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
        {
            Member::Agent(a) => a.signal(sig)?,
            Member::Keepalived(k) => k.signal(sig)?,
            Member::KubeVip(k) => k.signal(sig)?,
            Member::Down => bail!("{} is not running", self.nodes[i].name),
        }
        Ok(())
    }

    /// Start node `i`'s member again and wait until it competes.
    pub(super) async fn restart_member(
        &mut self,
        i: usize,
        tl: &mut Timeline,
    ) -> anyhow::Result<()> {
        self.collect_logs(tl);
        self.spawn_member(i)?;
        tl.push(format!("{}: started again", self.nodes[i].name));
        self.wait_member_started(i).await?;
        self.collect_logs(tl);
        Ok(())
    }
}
