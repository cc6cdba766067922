//! vip-agent: wiring only.

use std::process::ExitCode;

use vip_agent::cli::LogFormat;
use vip_agent::{agent, cli, kube_vip};
use vip_common::events;

use clap::Parser;

fn main() -> ExitCode {
    // kube-vip's variables onto ours, before clap reads the environment and
    // before any thread exists; a refused setting stops here, before clap
    // can complain about something it implies (a missing --address, ...).
    let kube_vip = match kube_vip::import_env() {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cli = cli::Cli::parse();
    let log_format = match &cli.command {
        cli::Command::Manifest { kind } => {
            kube_vip.eprint(false);
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
        cli::Command::Status(args) => return status(args),
        cli::Command::Run(args) if args.check_config => {
            kube_vip.eprint(true);
            return match args.validate().and_then(|()| args.effective_settings()) {
                Ok(settings) => {
                    print!("{settings}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        cli::Command::Run(args) => args.log_format,
    };
    init_logging(log_format);
    kube_vip.log();
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
        cli::Command::Manifest { .. } | cli::Command::Status(_) => {
            unreachable!("printed above")
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(event = events::AGENT_FAILED, "{e:#}");
            // In JSON every line on stderr is one object: the line above says it.
            if log_format == LogFormat::Text {
                eprintln!("error: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

/// `vip-agent status`: a current-thread runtime, the report on stdout.
fn status(args: &cli::StatusArgs) -> ExitCode {
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(vip_agent::status::run(args)));
    match result {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, filtered by RUST_LOG (default info), as text or as one
/// JSON object per line with the event's fields flattened into it.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
}
