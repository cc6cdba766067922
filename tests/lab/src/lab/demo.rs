//! `vip-lab demo`: build the lab, show the leader and the client's view live,
//! crash the leader (SIGKILL, address left configured), then stop the new
//! leader gracefully (SIGTERM), and print each failover's timeline and the
//! measured outages.
//!
//! On a terminal a status line is redrawn in place (`\r`, erase-line); when
//! stderr is not a terminal (piped to a file, CI) every line is plain text:
//! the status is printed as a line of its own when what the client sees
//! changes (phase, who answers ARP, who answers TCP, split brain), at most
//! every [`PLAIN_EVERY`] otherwise, and no escape code is written.

use std::io::{IsTerminal as _, Write as _};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::probe::ClientView;
use super::record::RunRecord;
use super::{ControlPlaneKind, Implementation, Lab, LabConfig, Scenario, human};
use crate::packet_socket::format_mac;

/// What the status line shows as the current phase.
#[derive(Clone)]
struct Phase {
    name: String,
    started: Instant,
    expected: Duration,
}

/// Without a terminal, an unchanged status is repeated this often.
pub const PLAIN_EVERY: Duration = Duration::from_secs(5);

struct Status {
    phase: Mutex<Phase>,
    /// While false, the status line is not drawn (a block is being printed).
    drawing: Mutex<bool>,
    /// stderr is a terminal: redraw one line in place; else plain lines.
    tty: bool,
}

impl Status {
    fn set(&self, name: &str, expected: Duration) {
        *self.phase.lock().unwrap_or_else(PoisonError::into_inner) = Phase {
            name: name.to_owned(),
            started: Instant::now(),
            expected,
        };
    }

    /// Print a block of text above the status line.
    fn print(&self, text: &str) {
        let mut drawing = self.drawing.lock().unwrap_or_else(PoisonError::into_inner);
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{text}");
        } else {
            let _ = write!(err, "{text}");
        }
        if !text.ends_with('\n') {
            let _ = writeln!(err);
        }
        let _ = err.flush();
        *drawing = true;
    }

    fn hide(&self) {
        let mut drawing = self.drawing.lock().unwrap_or_else(PoisonError::into_inner);
        *drawing = false;
        if self.tty {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    }
}

fn bar(fraction: f64, width: usize) -> String {
    let filled = ((fraction.clamp(0.0, 1.0)) * width as f64).round() as usize;
    format!("{}{}", "#".repeat(filled), "-".repeat(width - filled))
}

/// What a plain (non-terminal) status line is printed again for.
fn plain_key(phase: &Phase, v: &ClientView) -> (String, Option<[u8; 6]>, Option<String>, u64) {
    (
        phase.name.clone(),
        v.arp_mac,
        v.tcp_node.clone(),
        v.split_brain,
    )
}

fn status_line(t0: Instant, phase: &Phase, v: &ClientView, macs: &[(String, [u8; 6])]) -> String {
    let who = |m: [u8; 6]| {
        macs.iter()
            .find(|(_, x)| *x == m)
            .map_or("?", |(n, _)| n.as_str())
            .to_owned()
    };
    let arp = match v.arp_mac {
        Some(m) => format!("{} ({})", who(m), format_mac(&m)),
        None => "-- nobody --".to_owned(),
    };
    let tcp = v.tcp_node.as_deref().unwrap_or("FAIL");
    let el = phase.started.elapsed();
    format!(
        "[{:6.1}s] {:<26} [{}] | ARP: {arp:<27} | TCP: {tcp:<5} ok {:>5} fail {:>4} | split-brain {}",
        t0.elapsed().as_secs_f64(),
        phase.name,
        bar(
            el.as_secs_f64() / phase.expected.as_secs_f64().max(0.001),
            16
        ),
        v.tcp_ok,
        v.tcp_fail,
        v.split_brain,
    )
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// The timeline of one run, relative to the fault.
pub fn timeline_text(r: &RunRecord) -> String {
    let mut s = format!(
        "--- {} ({}): timeline, t = 0 at the fault ---\n",
        r.scenario, r.implementation
    );
    for e in &r.events {
        let rel = e.at.as_secs_f64() - r.fault_at.as_secs_f64();
        s.push_str(&format!("  {:+9.1} ms  {}\n", rel * 1000.0, e.what));
    }
    s.push_str(&summary_line(r));
    s.push('\n');
    s
}

/// Outages and split brain of one run, on one line.
pub fn summary_line(r: &RunRecord) -> String {
    let show = |o: Option<Duration>| o.map_or_else(|| "never recovered".to_owned(), ms);
    format!(
        "  outage: ARP {}  NS {}  TCP {}  | split-brain windows: {}  ({} ARP + {} NS probes, {} TCP connects)",
        show(r.arp_outage()),
        show(r.ns_outage()),
        show(r.tcp_outage()),
        r.split_brain_windows(),
        r.arp.len(),
        r.ns.len(),
        r.tcp.len()
    )
}

/// Run the demo.
pub async fn run(control_plane: ControlPlaneKind) -> anyhow::Result<()> {
    crate::skip::ensure_root()?;
    let t0 = Instant::now();
    let implementation = Implementation::agent_defaults();
    let cfg = LabConfig {
        implementation: implementation.clone(),
        control_plane,
        ..LabConfig::default()
    };
    match control_plane {
        ControlPlaneKind::Embedded => eprintln!(
            "API server: the embedded Lease server (a first demo needs no Go build). \
             `cargo xtask demo --control-plane real` runs etcd + kube-apiserver in every node \
             instead (built once by setup: 10-13 min on a fresh machine)."
        ),
        ControlPlaneKind::Real => eprintln!(
            "API server: the real control plane, an etcd member and a kube-apiserver in every \
             node; each agent talks to its own (127.0.0.1:6443) as the user vip-agent."
        ),
    }
    eprintln!(
        "vip-lab demo: {} nodes + a client + an API server in network namespaces on one bridge,\n\
         {} (XDP in skb mode), VIP 192.0.2.200 / 2001:db8::200, probes: ARP every {}, TCP :8443 every 10 ms.\n\
         Ctrl-C stops and cleans up.",
        cfg.nodes,
        implementation.label(),
        human(cfg.probe_interval),
    );
    eprintln!("building the lab...");
    let lab = Lab::start(cfg).await.context("starting the lab")?;
    let status = Arc::new(Status {
        phase: Mutex::new(Phase {
            name: "electing a leader".into(),
            started: Instant::now(),
            expected: Duration::from_secs(4),
        }),
        drawing: Mutex::new(true),
        tty: std::io::stderr().is_terminal(),
    });
    let macs = lab.node_macs();
    for (n, m) in &macs {
        eprintln!("  {n}: {}", format_mac(m));
    }
    let painter = {
        let status = status.clone();
        let view = lab.client_view();
        let macs = macs.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut last_plain: Option<(Instant, _)> = None;
            // Bounded by the demo's own life (aborted at the end), and at most 10 min.
            for _ in 0..6000 {
                tick.tick().await;
                let phase = status
                    .phase
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                let line = status_line(t0, &phase, &view.borrow(), &macs);
                let drawing = status
                    .drawing
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if !*drawing {
                    continue;
                }
                let mut err = std::io::stderr().lock();
                if status.tty {
                    let _ = write!(err, "\r\x1b[2K{line}");
                } else {
                    let key = plain_key(&phase, &view.borrow());
                    let due = last_plain.as_ref().is_none_or(|(at, k): &(Instant, _)| {
                        *k != key || at.elapsed() >= PLAIN_EVERY
                    });
                    if !due {
                        continue;
                    }
                    last_plain = Some((Instant::now(), key));
                    let _ = writeln!(err, "{line}");
                }
                let _ = err.flush();
            }
        })
    };
    let result = tokio::select! {
        r = scenes(lab, &status) => r,
        r = tokio::signal::ctrl_c() => {
            // Dropping the scenes future drops the lab: agents killed, namespaces removed.
            status.hide();
            r.context("waiting for Ctrl-C")?;
            eprintln!("interrupted: cleaned up");
            painter.abort();
            return Ok(());
        }
    };
    painter.abort();
    status.hide();
    let records = result?;
    eprintln!("\n=== summary ({:.1} s) ===", t0.elapsed().as_secs_f64());
    for r in &records {
        eprintln!("{:<14}{}", r.scenario, summary_line(r));
    }
    Ok(())
}

async fn scenes(mut lab: Lab, status: &Status) -> anyhow::Result<Vec<RunRecord>> {
    let leader = lab.wait_for_leader(Duration::from_secs(20)).await?;
    status.print(&format!(
        "leader: {} (answers ARP for the VIP)",
        lab.node_names()[leader]
    ));
    status.set("steady", Duration::from_secs(1));
    // Let the viewer see the steady state for a moment.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut records = Vec::new();
    for (scenario, text, expected) in [
        (
            Scenario::Crash,
            "crash: SIGKILL the leader's agent (its address stays configured; the fence must expire)",
            Duration::from_secs(7),
        ),
        (
            Scenario::GracefulStop,
            "graceful stop: SIGTERM the leader's agent (releases the Lease, followers watch)",
            Duration::from_secs(3),
        ),
    ] {
        status.print(&format!("\n>>> {text}"));
        status.set(scenario.name(), expected);
        let r = lab.run_scenario(scenario, 0).await?;
        status.print(&timeline_text(&r));
        records.push(r);
    }
    status.set("shutting down", Duration::from_secs(2));
    lab.shutdown().await?;
    Ok(records)
}
