//! Restart storm: SIGKILL and restart agents in a loop (the Lease holder's
//! and followers', sometimes two at once, restarted at once or after a short
//! seeded-random pause) while the client probes ARP and NS, then check what
//! is left: one leader, the Lease holder, answering; no leaked address, pin,
//! program or process. Also the shared end-of-run checks ([`Lab::leaks`])
//! and the record of a whole multi-fault run ([`Lab::take_record`]) used by
//! the upgrade scenario.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};

use super::record::{self, RunRecord};
use super::{LEASE_NAME, Lab, Member, Timeline, client_events};
use crate::topology::LAN_IFNAME;
use vip_lease_server::EventType;

/// A small seeded PRNG (SplitMix64): reproducible storms from a printed seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`; the modulo bias is irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// The storm's seed: `$VIP_STORM_SEED` (to replay a run), else the clock.
pub fn seed_from_env() -> u64 {
    std::env::var("VIP_STORM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        })
}

/// How to run a storm.
#[derive(Clone, Debug)]
pub struct StormConfig {
    pub iterations: usize,
    pub seed: u64,
    /// Upper bound of the random pause between kill and restart.
    pub max_pause: Duration,
}

/// What a storm did and what the client saw.
#[derive(Clone, Debug)]
pub struct StormReport {
    pub seed: u64,
    pub iterations: usize,
    /// Agents killed (an iteration kills one or two).
    pub kills: usize,
    /// Iterations that killed the Lease holder's agent.
    pub leader_kills: usize,
    /// Iterations that killed two agents at once.
    pub double_kills: usize,
    /// Changes of the MAC answering ARP, as the client saw them.
    pub leader_changes: usize,
    /// Changes of the Lease holder (acquisitions by another identity).
    pub holder_changes: usize,
    pub longest_arp_silence: Duration,
    pub longest_ns_silence: Duration,
    pub took: Duration,
    /// The final leader (index), answering ARP and NS, holding the Lease.
    pub leader: usize,
    /// Everything recorded (probes from the storm's start to its end).
    pub record: RunRecord,
}

impl StormReport {
    /// One line of counts.
    pub fn summary(&self) -> String {
        format!(
            "storm seed {}: {} iterations, {} agents killed ({} leader kills, {} double kills), \
             {} leader changes seen by the client, {} Lease holder changes, longest ARP silence \
             {} ms, longest NS silence {} ms, {} split-brain windows (ARP+NS), {:.1} s",
            self.seed,
            self.iterations,
            self.kills,
            self.leader_kills,
            self.double_kills,
            self.leader_changes,
            self.holder_changes,
            self.longest_arp_silence.as_millis(),
            self.longest_ns_silence.as_millis(),
            self.record.split_brain_windows(),
            self.took.as_secs_f64()
        )
    }
}

/// Longest gap between consecutive answered probes (the whole run).
pub fn longest_silence(probes: &[record::Probe]) -> Duration {
    let answered: Vec<Duration> = probes
        .iter()
        .filter(|p| !p.replies.is_empty())
        .map(|p| p.sent)
        .collect();
    answered
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]))
        .max()
        .unwrap_or_default()
}

/// Changes of the first MAC answering, over answered probes.
pub fn answer_changes(probes: &[record::Probe]) -> usize {
    let mut last = None;
    let mut changes = 0;
    for p in probes {
        if let Some(r) = p.replies.first() {
            if last.is_some() && last != Some(r.mac) {
                changes += 1;
            }
            last = Some(r.mac);
        }
    }
    changes
}

/// Number of XDP programs attached to a link, from `ip -j -d link show`'s
/// `xdp` object (one `prog`, or an `attached` list in multi mode).
pub fn xdp_programs(link: &serde_json::Value) -> usize {
    match link.get("xdp") {
        None => 0,
        Some(x) => match x.get("attached").and_then(|a| a.as_array()) {
            Some(a) => a.len(),
            None => usize::from(x.get("prog").is_some()),
        },
    }
}

/// Addresses configured on `dev` in `ns` (`ip -j addr show dev`).
fn addresses(ns: &crate::netns::NetNs, dev: &str) -> anyhow::Result<Vec<IpAddr>> {
    let out = ns.exec_ok(&["-j", "addr", "show", "dev", dev])?;
    let v: serde_json::Value =
        serde_json::from_str(&out).with_context(|| format!("parsing ip -j addr: {out}"))?;
    let mut found = Vec::new();
    for link in v.as_array().into_iter().flatten() {
        for a in link
            .get("addr_info")
            .and_then(|a| a.as_array())
            .into_iter()
            .flatten()
        {
            if let Some(ip) = a
                .get("local")
                .and_then(|l| l.as_str())
                .and_then(|s| s.parse().ok())
            {
                found.push(ip);
            }
        }
    }
    Ok(found)
}

/// Names in a pin directory (sorted).
fn pin_names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Where each node's VIP addresses are, for the leak checks.
#[derive(Clone, Debug, Default)]
pub struct VipPlaces {
    pub on_lo: Vec<IpAddr>,
    pub on_interface: Vec<IpAddr>,
}

/// Pids of running `vip-agent` processes started with one of `pins` as `--pin-dir`.
pub fn agents_using(pins: &[PathBuf]) -> BTreeSet<i32> {
    let ours: Vec<String> = pins.iter().map(|p| p.display().to_string()).collect();
    let mut found = BTreeSet::new();
    for p in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
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
        if is_agent
            && args
                .windows(2)
                .any(|w| w[0] == "--pin-dir" && ours.contains(&w[1]))
        {
            found.insert(pid);
        }
    }
    found
}

impl Lab {
    /// Pids of running `vip-agent` processes whose pin dir is one of this lab's.
    pub fn agent_processes(&self) -> BTreeSet<i32> {
        agents_using(&self.pin_dirs())
    }

    /// Pids of the agents the lab runs now.
    pub fn running_agents(&self) -> BTreeSet<i32> {
        self.nodes
            .iter()
            .filter_map(
                |n| match &*n.member.lock().unwrap_or_else(PoisonError::into_inner) {
                    Member::Agent(a) => a.pid().map(|p| p.as_raw()),
                    _ => None,
                },
            )
            .collect()
    }

    /// The VIP addresses found on node `i`'s `lo` and lab interface.
    pub fn vip_places(&self, i: usize) -> anyhow::Result<VipPlaces> {
        let ns = self.lan.node(i).ns();
        let vips = [IpAddr::from(self.vip4), IpAddr::from(self.vip6)];
        let keep = |v: Vec<IpAddr>| v.into_iter().filter(|a| vips.contains(a)).collect();
        Ok(VipPlaces {
            on_lo: keep(addresses(ns, "lo")?),
            on_interface: keep(addresses(ns, LAN_IFNAME)?),
        })
    }

    /// Names in node `i`'s pin directory.
    pub fn pin_names(&self, i: usize) -> BTreeSet<String> {
        pin_names(self.nodes[i].pins.path())
    }

    /// bpffs entries of this lab (`/sys/fs/bpf/vip-lab-<pid>-<tag>-*`).
    pub fn bpffs_entries(&self) -> BTreeSet<PathBuf> {
        let prefix = format!("vip-lab-{}-{}-", std::process::id(), self.tag);
        std::fs::read_dir("/sys/fs/bpf")
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| e.path())
            .collect()
    }

    /// What is wrong with the lab's state with `leader` leading and every
    /// agent running: a VIP address on a node other than the leader (`lo` or
    /// the lab interface), none on the leader, an interface without exactly
    /// one XDP program, pin directories other than one per node, pin
    /// directories that differ between nodes, agent processes other than the
    /// lab's current ones. Empty: nothing leaked.
    pub fn leaks(&self, leader: usize) -> anyhow::Result<Vec<String>> {
        let mut problems = Vec::new();
        for i in 0..self.nodes.len() {
            let name = &self.nodes[i].name;
            let places = self.vip_places(i)?;
            if i == leader {
                if places.on_lo.is_empty() && places.on_interface.is_empty() {
                    problems.push(format!(
                        "leader {name}: no VIP address on lo or {LAN_IFNAME}"
                    ));
                }
            } else if !places.on_lo.is_empty() || !places.on_interface.is_empty() {
                problems.push(format!(
                    "{name} (not leading): VIP addresses left: lo {:?}, {LAN_IFNAME} {:?}",
                    places.on_lo, places.on_interface
                ));
            }
            let link = self.lan.node(i).ns().link_json(LAN_IFNAME)?;
            let progs = xdp_programs(&link);
            if progs != 1 {
                problems.push(format!(
                    "{name}: {progs} XDP programs attached to {LAN_IFNAME} (want 1): {}",
                    link.get("xdp").map(ToString::to_string).unwrap_or_default()
                ));
            }
        }
        let want: BTreeSet<PathBuf> = self.pin_dirs().into_iter().collect();
        let have = self.bpffs_entries();
        if have != want {
            problems.push(format!(
                "pin directories: have {have:?}, want one per node {want:?}"
            ));
        }
        let first = self.pin_names(0);
        if first.is_empty() {
            problems.push(format!("{}: empty pin directory", self.nodes[0].name));
        }
        for i in 1..self.nodes.len() {
            let names = self.pin_names(i);
            if names != first {
                problems.push(format!(
                    "pins differ: {} has {names:?}, {} has {first:?}",
                    self.nodes[i].name, self.nodes[0].name
                ));
            }
        }
        let procs = self.agent_processes();
        let running = self.running_agents();
        if procs != running {
            problems.push(format!(
                "agent processes {procs:?}, but the lab runs {running:?} (leaked or lost)"
            ));
        }
        Ok(problems)
    }

    /// The current Lease holder's node index, if the holder is a lab node.
    pub fn lease_holder_node(&self) -> Option<usize> {
        let holder = self.lease_holder()?;
        self.nodes.iter().position(|n| n.name == holder)
    }

    /// SIGKILL node `i`'s agent (address and pins stay) and reap it.
    pub(super) async fn kill_agent(&mut self, i: usize, tl: &mut Timeline) -> anyhow::Result<()> {
        self.stop_member(i, tl, false).await
    }

    /// Start node `i`'s agent with `bin` (the lab's own binary when `None`)
    /// and wait until it competes (it started despite whatever pins it found).
    pub(super) async fn start_agent(
        &mut self,
        i: usize,
        bin: Option<&Path>,
        tl: &mut Timeline,
    ) -> anyhow::Result<()> {
        self.collect_logs(tl);
        let bin = match bin {
            Some(b) => b.to_path_buf(),
            None => self
                .agent_bin
                .clone()
                .ok_or_else(|| anyhow!("no agent binary"))?,
        };
        self.spawn_agent(i, &bin)?;
        tl.push(format!(
            "{}: started ({})",
            self.nodes[i].name,
            bin.display()
        ));
        self.wait_member_started(i).await.with_context(|| {
            format!(
                "{}: agent {} did not start",
                self.nodes[i].name,
                bin.display()
            )
        })?;
        self.collect_logs(tl);
        Ok(())
    }

    /// Wait for the next Lease write naming a holder (so from an agent
    /// running now: the killed ones are dead) and until the client sees that
    /// holder's MAC answer ARP steadily. Returns its index.
    async fn wait_live_leader(&self, timeout: Duration) -> anyhow::Result<usize> {
        let holder = match self.server.clone() {
            Some(server) => {
                let mut rx = server.subscribe();
                let next_write = async {
                    loop {
                        match rx.recv().await {
                            Ok(ev) if ev.name == LEASE_NAME && ev.kind != EventType::Deleted => {
                                if let Some(h) = ev
                                    .object
                                    .spec
                                    .as_ref()
                                    .and_then(|s| s.holder_identity.clone())
                                    .filter(|h| !h.is_empty())
                                {
                                    return Some(h);
                                }
                            }
                            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                        }
                    }
                };
                tokio::time::timeout(timeout, next_write)
                    .await
                    .ok()
                    .flatten()
            }
            // Real control plane: the next change the lab's watches report.
            None => self.next_lease_write(timeout).await,
        }
        .ok_or_else(|| anyhow!("no Lease write by a holder within {timeout:?}"))?;
        let i = self
            .nodes
            .iter()
            .position(|n| n.name == holder)
            .ok_or_else(|| anyhow!("unknown holder {holder}"))?;
        let mac = self.lan.node(i).mac();
        let mut view = self.prober.view();
        tokio::time::timeout(
            timeout,
            view.wait_for(|v| v.arp_mac == Some(mac) && v.arp_streak >= 3),
        )
        .await
        .map_err(|_| {
            anyhow!(
                "{holder} holds the Lease but the client does not see it answer within {timeout:?} ({:?})",
                *self.prober.view().borrow()
            )
        })?
        .map_err(|_| anyhow!("the probes stopped"))?;
        Ok(i)
    }

    /// Everything the probes recorded since `tl` started, as one run record
    /// (times since `tl.start`), with the lab's log and Lease events.
    pub(super) fn take_record(
        &mut self,
        tl: &mut Timeline,
        scenario: &str,
        fault_at: Duration,
    ) -> RunRecord {
        self.collect_logs(tl);
        let (arp, tcp) = self.prober.take();
        let ns = self.prober.take_ns();
        let offset = tl.start.duration_since(self.prober.epoch());
        let shift = |probes: Vec<record::Probe>| -> Vec<record::Probe> {
            probes
                .into_iter()
                .filter(|p| p.sent >= offset)
                .map(|mut p| {
                    p.sent -= offset;
                    for r in &mut p.replies {
                        r.at = r.at.saturating_sub(offset);
                    }
                    p
                })
                .collect()
        };
        let tcp = tcp
            .into_iter()
            .filter(|a| a.started >= offset)
            .map(|mut a| {
                a.started -= offset;
                a
            })
            .collect();
        // Every Lease holder change since the start.
        let start = tl.start;
        let mut last: Option<String> = None;
        for c in self
            .lease_log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|c| c.at >= start)
        {
            if c.holder != last {
                let what = match &c.holder {
                    Some(h) => format!("Lease: holder is now {h}"),
                    None => "Lease: released (no holder)".to_owned(),
                };
                tl.push_at(tl.at(c.at), what);
                last.clone_from(&c.holder);
            }
        }
        let mut record = RunRecord {
            implementation: self.cfg.implementation.label(),
            scenario: scenario.to_owned(),
            repeat: 0,
            fault_at,
            probe_interval: self.cfg.probe_interval,
            nodes: self.node_macs(),
            arp: shift(arp),
            ns: shift(ns),
            tcp,
            events: std::mem::take(&mut tl.events),
        };
        client_events(&mut record);
        record.events.sort_by_key(|e| e.at);
        record
    }

    /// Steady leader `i` at the end of a run: what the client saw in the last
    /// `windows` ARP and NS probe windows of `r` was answered (nearly always:
    /// at most one window in ten lost) by `i`'s MAC alone.
    pub fn check_final_answers(&self, r: &RunRecord, i: usize, windows: usize) -> Vec<String> {
        let mac = self.lan.node(i).mac();
        let mut problems = Vec::new();
        for (kind, probes) in [("ARP", &r.arp), ("NS", &r.ns)] {
            let tail = &probes[probes.len().saturating_sub(windows)..];
            let answered = tail.iter().filter(|p| !p.replies.is_empty()).count();
            let foreign = tail
                .iter()
                .flat_map(|p| &p.replies)
                .filter(|x| x.mac != mac)
                .count();
            if tail.len() < windows || answered * 10 < tail.len() * 9 || foreign > 0 {
                problems.push(format!(
                    "{kind}: of the last {} windows {answered} answered, {foreign} replies from a MAC \
                     other than the leader {}'s",
                    tail.len(),
                    self.nodes[i].name
                ));
            }
        }
        problems
    }

    /// The restart storm (see the module doc). Returns the report; errors
    /// when the cluster does not recover within bounds. The invariant checks
    /// (split brain, leaks) are the caller's, on the report and [`Lab::leaks`].
    pub async fn restart_storm(&mut self, cfg: &StormConfig) -> anyhow::Result<StormReport> {
        let n = self.nodes.len();
        if n < 2 {
            bail!("a storm needs at least two nodes");
        }
        let mut rng = Rng::new(cfg.seed);
        let first = self
            .steady()
            .await
            .context("storm: waiting for a steady leader")?;
        let _ = self.prober.take();
        let _ = self.prober.take_ns();
        let started = Instant::now();
        let mut tl = Timeline::new();
        tl.push(format!("steady: {} leads", self.nodes[first].name));
        let bound = self.recovery_bound();
        let (mut kills, mut leader_kills, mut double_kills) = (0, 0, 0);
        for iter in 0..cfg.iterations {
            let holder = self
                .lease_holder_node()
                .unwrap_or_else(|| rng.below(n as u64) as usize);
            let others: Vec<usize> = (0..n).filter(|i| *i != holder).collect();
            let follower = others[rng.below(others.len() as u64) as usize];
            let mut victims = if iter % 2 == 0 {
                leader_kills += 1;
                vec![holder]
            } else {
                vec![follower]
            };
            if rng.below(4) == 0 {
                double_kills += 1;
                let rest: Vec<usize> = (0..n).filter(|i| !victims.contains(i)).collect();
                victims.push(rest[rng.below(rest.len() as u64) as usize]);
            }
            let pause = if rng.below(2) == 0 {
                Duration::ZERO
            } else {
                Duration::from_millis(rng.below(cfg.max_pause.as_millis() as u64 + 1))
            };
            let settle = rng.below(4) != 0;
            tl.push(format!(
                "storm #{iter}: kill {:?} (holder {}), pause {} ms{}",
                victims
                    .iter()
                    .map(|v| &self.nodes[*v].name)
                    .collect::<Vec<_>>(),
                self.nodes[holder].name,
                pause.as_millis(),
                if settle { "" } else { ", next at once" }
            ));
            for v in &victims {
                self.kill_agent(*v, &mut tl).await?;
                kills += 1;
            }
            // The fault schedule itself (a pause between kill and restart), not synchronisation.
            tokio::time::sleep(pause).await;
            for v in &victims {
                self.start_agent(*v, None, &mut tl)
                    .await
                    .with_context(|| format!("storm #{iter} (seed {})", cfg.seed))?;
            }
            if settle {
                let l = self
                    .wait_live_leader(bound)
                    .await
                    .with_context(|| format!("storm #{iter} (seed {}): no leader", cfg.seed))?;
                tl.push(format!("storm #{iter}: {} leads", self.nodes[l].name));
            }
        }
        let leader = self
            .steady()
            .await
            .with_context(|| format!("storm (seed {}): no steady leader at the end", cfg.seed))?;
        tl.push(format!("end: {} leads", self.nodes[leader].name));
        // Recording time at the end (the final answers are checked on it), not synchronisation.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let record = self.take_record(&mut tl, "restart-storm", Duration::ZERO);
        let holder_changes = {
            let log = self
                .lease_log
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let mut last: Option<&String> = None;
            let mut changes = 0;
            for c in log.iter().filter(|c| c.at >= tl.start) {
                if let Some(h) = &c.holder {
                    if last.is_some_and(|l| l != h) {
                        changes += 1;
                    }
                    last = Some(h);
                }
            }
            changes
        };
        Ok(StormReport {
            seed: cfg.seed,
            iterations: cfg.iterations,
            kills,
            leader_kills,
            double_kills,
            leader_changes: answer_changes(&record.arp),
            holder_changes,
            longest_arp_silence: longest_silence(&record.arp),
            longest_ns_silence: longest_silence(&record.ns),
            took: started.elapsed(),
            leader,
            record,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use record::{Probe, Reply};

    fn p(ms: u64, mac: Option<u8>) -> Probe {
        Probe {
            sent: Duration::from_millis(ms),
            replies: mac
                .map(|m| Reply {
                    at: Duration::from_millis(ms + 1),
                    mac: [2, 0, 0, 0, 0, m],
                })
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn silences_and_changes() {
        let probes = [
            p(0, Some(1)),
            p(5, Some(1)),
            p(10, None),
            p(15, None),
            p(20, Some(2)),
            p(25, Some(2)),
            p(30, Some(1)),
        ];
        assert_eq!(longest_silence(&probes), Duration::from_millis(15));
        assert_eq!(answer_changes(&probes), 2);
        assert_eq!(longest_silence(&[]), Duration::ZERO);
    }

    #[test]
    fn rng_is_seeded() {
        let a: Vec<u64> = {
            let mut r = Rng::new(7);
            (0..5).map(|_| r.below(10)).collect()
        };
        let b: Vec<u64> = {
            let mut r = Rng::new(7);
            (0..5).map(|_| r.below(10)).collect()
        };
        assert_eq!(a, b);
        assert!(a.iter().all(|x| *x < 10));
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
    }

    #[test]
    fn counts_xdp_programs() {
        let one: serde_json::Value =
            serde_json::from_str(r#"{"ifname":"eth0","xdp":{"mode":2,"prog":{"id":7}}}"#).unwrap();
        let none: serde_json::Value = serde_json::from_str(r#"{"ifname":"eth0"}"#).unwrap();
        let two: serde_json::Value = serde_json::from_str(
            r#"{"xdp":{"mode":4,"attached":[{"mode":1,"prog":{"id":1}},{"mode":2,"prog":{"id":2}}]}}"#,
        )
        .unwrap();
        assert_eq!(xdp_programs(&one), 1);
        assert_eq!(xdp_programs(&none), 0);
        assert_eq!(xdp_programs(&two), 2);
    }
}
