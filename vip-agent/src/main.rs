//! vip-agent: wiring only.

use std::process::ExitCode;

use vip_agent::{agent, cli, config};

use clap::Parser;

fn main() -> ExitCode {
    config::import_kube_vip_env();
    let cli = cli::Cli::parse();
    if let cli::Command::Manifest { kind } = &cli.command {
        // Printed as is (it ends in a newline): byte-identical to deploy/.
        return match vip_agent::manifest::render(kind) {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        cli::Command::Run(args) => runtime.block_on(agent::run(*args)),
        cli::Command::Manifest { .. } => unreachable!("printed above"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
