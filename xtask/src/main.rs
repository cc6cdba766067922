//! Developer flows: `cargo xtask setup | build-ebpf | test | demo | bench`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

/// Debian packages the tests and the lab use.
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    // (package, a file it installs that tells whether it is there)
    ("iproute2", "/usr/bin/ip"),
    ("bpftool", "/usr/sbin/bpftool"),
    ("tcpdump", "/usr/bin/tcpdump"),
    ("iputils-arping", "/usr/bin/arping"),
    ("ethtool", "/usr/sbin/ethtool"),
    ("util-linux", "/usr/bin/nsenter"),
];

#[derive(Parser)]
#[command(name = "xtask", about = "vip-agent developer flows")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what a fresh machine lacks (pinned nightly + rust-src, bpf-linker,
    /// Debian packages). Does nothing when all is there.
    Setup,
    /// Build the eBPF object and print its path.
    BuildEbpf {
        #[arg(long)]
        release: bool,
    },
    /// Run every test: host unit tests, eBPF program tests, namespace tests.
    Test {
        /// Extra arguments for `cargo test` (after --).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// The quick start: one node in a namespace answering ARP/NS for a VIP.
    Demo,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Setup => setup(),
        Cmd::BuildEbpf { release } => {
            setup()?;
            let started = Instant::now();
            let object = ebpf_build::build(release).map_err(anyhow::Error::msg)?;
            let size = std::fs::metadata(&object)?.len();
            eprintln!("built in {:.1} s, {size} bytes", started.elapsed().as_secs_f64());
            println!("{}", object.display());
            Ok(())
        }
        Cmd::Test { args } => {
            setup()?;
            test(&args)
        }
        Cmd::Demo => {
            setup()?;
            demo()
        }
    }
}

fn root() -> PathBuf {
    ebpf_build::workspace_root()
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd.status().with_context(|| format!("running {shown}"))?;
    if !status.success() {
        bail!("{shown} failed: {status}");
    }
    Ok(())
}

fn output_ok(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn setup() -> anyhow::Result<()> {
    let toolchain = ebpf_build::toolchain().map_err(anyhow::Error::msg)?;
    // 1. The pinned nightly with rust-src (RUSTUP_AUTO_INSTALL=0: install explicitly).
    let has_toolchain = output_ok(Command::new("rustup").args(["toolchain", "list"]))
        .is_some_and(|l| l.lines().any(|t| t.starts_with(&toolchain)));
    let has_src = has_toolchain
        && output_ok(Command::new("rustup").args(["component", "list", "--installed", "--toolchain", &toolchain]))
            .is_some_and(|l| l.lines().any(|c| c.starts_with("rust-src")));
    if !has_toolchain || !has_src {
        eprintln!("setup: installing {toolchain} with rust-src");
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            &toolchain,
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))?;
    }
    // 2. bpf-linker, built with that nightly (it links against its LLVM).
    let want = ebpf_build::BPF_LINKER_VERSION;
    let has_linker = output_ok(Command::new("bpf-linker").arg("--version")).is_some_and(|v| v.contains(want));
    if !has_linker {
        eprintln!("setup: installing bpf-linker {want}");
        run(Command::new("rustup").args(["run", &toolchain, "cargo", "install", &format!("bpf-linker@{want}"), "--locked"]))?;
    }
    // 3. Debian packages.
    let missing: Vec<&str> = DEBIAN_PACKAGES.iter().filter(|(_, f)| !Path::new(f).exists()).map(|(p, _)| *p).collect();
    if !missing.is_empty() {
        if !nix_is_root() {
            bail!("setup: missing Debian packages {missing:?}; install them as root: apt-get install {}", missing.join(" "));
        }
        eprintln!("setup: installing Debian packages {missing:?}");
        run(Command::new("apt-get").arg("update").arg("-qq"))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    Ok(())
}

fn nix_is_root() -> bool {
    output_ok(Command::new("id").arg("-u")).is_some_and(|u| u.trim() == "0")
}

fn test(extra: &[String]) -> anyhow::Result<()> {
    let started = Instant::now();
    // One cargo invocation for the whole workspace: host unit tests (vip-common,
    // config, election state machine), the eBPF program under BPF_PROG_TEST_RUN,
    // the Lease server, and the namespace tests. Namespace tests share the
    // machine's network state, so they run one at a time.
    run(Command::new(env!("CARGO"))
        .current_dir(root())
        .args(["test", "--workspace", "--no-fail-fast"])
        .arg("--")
        .args(["--test-threads", "1"])
        .args(extra))?;
    eprintln!("xtask test: all passed in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn demo() -> anyhow::Result<()> {
    run(Command::new(env!("CARGO")).current_dir(root()).args(["run", "--quiet", "-p", "vip-lab", "--bin", "vip-lab", "--", "demo"]))
}
