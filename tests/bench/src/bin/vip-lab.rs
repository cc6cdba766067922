//! `vip-lab`: lab tools. `vip-lab lease-server` runs the embedded Lease API server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio::signal::unix::{SignalKind, signal};
use vip_lease_server::{LeaseServer, LeaseServerOptions};

#[derive(Parser, Debug)]
#[command(name = "vip-lab", version, about = "Lab tools for vip-agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the embedded coordination.k8s.io/v1 Lease API server (HTTPS, client certs).
    LeaseServer(LeaseServerArgs),
    /// The lab, live: 3 nodes, a client and an API server in namespaces; crash and
    /// gracefully stop the leader, print each failover's timeline and outage.
    Demo {
        /// `embedded` (the home-made Lease server) or `real` (etcd +
        /// kube-apiserver in every node, built by `cargo xtask setup`).
        #[arg(long, default_value = "embedded", value_name = "KIND")]
        control_plane: vip_lab::lab::ControlPlaneKind,
    },
    /// Steady-state cost: API requests per minute, RSS and CPU of each agent.
    Steady {
        /// Measurement window.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Also write the report as JSON here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Benchmarks (`bench failover`: vip-agent, keepalived and kube-vip side by side).
    #[command(subcommand)]
    Bench(vip_bench::cli::BenchCommand),
}

#[derive(clap::Args, Debug)]
struct LeaseServerArgs {
    /// Address to listen on (port 0 = any free port).
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Where to write the kubeconfig (server URL, CA, client cert and key embedded).
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Serve the plain-HTTP control API (faults, counters) here; keep it on 127.0.0.1.
    #[arg(long)]
    control: Option<SocketAddr>,
    /// Address written into the kubeconfig and the certificate (default: the listen IP,
    /// 127.0.0.1 when that is unspecified).
    #[arg(long)]
    advertise: Option<std::net::IpAddr>,
    /// Extra subject alternative names for the server certificate (repeatable).
    #[arg(long = "san")]
    sans: Vec<String>,
    /// Interval of watch BOOKMARK events, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    bookmark_interval_ms: u64,
    /// Namespace of the kubeconfig context.
    #[arg(long, default_value = "kube-system")]
    namespace: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The demo draws a live status line: keep the embedded server's logs quiet there.
    let default_level = if matches!(cli.command, Command::Demo { .. } | Command::Bench(_)) {
        "warn"
    } else {
        "info"
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colours only on a terminal: piped to a file or CI, plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .init();
    match cli.command {
        Command::Demo { control_plane } => vip_lab::lab::demo::run(control_plane).await,
        Command::Steady { seconds, out } => {
            vip_lab::lab::steady::run(seconds, out).await.map(|_| ())
        }
        Command::Bench(cmd) => {
            if !vip_bench::cli::run(cmd).await? {
                // Everything is written and torn down; the exit code tells a target failed.
                std::process::exit(1);
            }
            Ok(())
        }
        Command::LeaseServer(args) => lease_server(args).await,
    }
}

async fn lease_server(args: LeaseServerArgs) -> anyhow::Result<()> {
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let server = LeaseServer::start(LeaseServerOptions {
        listen: args.listen,
        advertise: args.advertise,
        extra_sans: args.sans,
        bookmark_interval: Duration::from_millis(args.bookmark_interval_ms),
        control: args.control,
        namespace: args.namespace,
        ..LeaseServerOptions::default()
    })
    .await
    .context("starting the lease server")?;
    server
        .write_kubeconfig(&args.kubeconfig)
        .with_context(|| format!("writing {}", args.kubeconfig.display()))?;
    let control = server
        .control_addr()
        .map_or_else(|| "none".to_owned(), |a| format!("http://{a}"));
    println!(
        "vip-lab lease-server ready: url={} listen={} kubeconfig={} control={control}",
        server.url(),
        server.addr(),
        args.kubeconfig.display()
    );
    tokio::select! {
        _ = sigterm.recv() => tracing::info!("SIGTERM: stopping"),
        r = tokio::signal::ctrl_c() => {
            r.context("waiting for SIGINT")?;
            tracing::info!("SIGINT: stopping");
        }
    }
    server.shutdown().await;
    Ok(())
}
