//! Developer flows, `cargo xtask <command>`:
//! `setup` (install what a fresh machine lacks), `build-ebpf [--release] [--bench]`,
//! `test` (every test, the house rules included), `image [--tag]`, `demo`,
//! `bench (failover | dataplane)` and `fuzz [--seconds]`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

mod kube_vip;

/// Debian packages the tests and the lab use.
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    // (package, a file it installs that tells whether it is there)
    ("iproute2", "/usr/bin/ip"),
    ("bpftool", "/usr/sbin/bpftool"),
    ("tcpdump", "/usr/bin/tcpdump"),
    ("iputils-arping", "/usr/bin/arping"),
    ("ethtool", "/usr/sbin/ethtool"),
    ("util-linux", "/usr/bin/nsenter"),
    ("keepalived", "/usr/sbin/keepalived"),
    // kubectl decodes the manifests with its own Go types; promtool checks
    // the Prometheus rules and their unit tests (vip-agent/tests/manifest.rs).
    ("kubernetes-client", "/usr/bin/kubectl"),
    ("prometheus", "/usr/bin/promtool"),
    // The image (`cargo xtask image`) and its test, which runs it from the
    // manifest with `podman kube play` (tests/lab/tests/image.rs): buildah
    // builds it, musl-gcc links the static binary, podman needs runc here
    // (shared/platform-notes.md) and catatonit for the pod's infra container.
    ("buildah", "/usr/bin/buildah"),
    ("musl-tools", "/usr/bin/musl-gcc"),
    ("podman", "/usr/bin/podman"),
    ("runc", "/usr/sbin/runc"),
    ("catatonit", "/usr/bin/catatonit"),
    // The lab's faults on the agents' peer channel (random loss, one-way
    // cuts: tests/lab/src/lab/peer_faults.rs), matched on the UDP port only.
    ("iptables", "/usr/sbin/xtables-nft-multi"),
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
    /// Debian packages, the lab's etcd and kube-apiserver built from
    /// tests/controlplane). Does nothing when all is there.
    Setup,
    /// Build the eBPF object and print its path.
    BuildEbpf {
        #[arg(long)]
        release: bool,
        /// Build the data-plane benchmark's programs (bench-ebpf) instead.
        #[arg(long)]
        bench: bool,
    },
    /// Run every test: host unit tests, eBPF program tests, namespace tests and
    /// the house rules (xtask/tests/house_rules.rs).
    Test {
        /// Extra arguments for `cargo test` (after --).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Build the container image (static musl binary, FROM scratch, buildah) and
    /// print its name [default: localhost/vip-agent:<version>]. `test` builds it too
    /// (as root) and runs it from the manifest with podman.
    Image {
        /// Image name.
        #[arg(long)]
        tag: Option<String>,
    },
    /// The lab, live: 3 nodes, a client and an API server in namespaces; crash and
    /// gracefully stop the leader, print each failover's timeline and outage (root).
    Demo {
        /// `embedded` (default: the home-made Lease server, so a first demo on a fresh
        /// machine needs no Go build) or `real` (etcd + kube-apiserver in every node,
        /// built once by setup: 10-13 min the first time).
        #[arg(long, default_value = "embedded", value_parser = ["embedded", "real"])]
        control_plane: String,
    },
    /// Benchmarks (root): `bench failover [--repeats R] [--out DIR] [--scenario NAME ...]
    /// [--implementation NAME ...] [--control-plane real|embedded]` runs vip-agent, kube-vip
    /// and keepalived side by side in the lab (release builds; on the real control plane by
    /// default) and writes results/<timestamp>/; see `vip-lab bench failover --help`.
    /// `bench dataplane [--seconds N] [--out DIR]`: ARP/NS flood, XDP responder vs kernel.
    Bench {
        /// Arguments for `vip-lab bench`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<String>,
    },
    /// Fuzz the shared packet logic with cargo-fuzz (libFuzzer) for a while.
    Fuzz {
        /// How long to fuzz.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Setup => setup(),
        Cmd::BuildEbpf { release, bench } => {
            setup_core()?;
            let started = Instant::now();
            let object = if bench {
                ebpf_build::build_bench(release)
            } else {
                ebpf_build::build(release)
            }
            .map_err(anyhow::Error::msg)?;
            let size = std::fs::metadata(&object)?.len();
            eprintln!(
                "built in {:.1} s, {size} bytes",
                started.elapsed().as_secs_f64()
            );
            println!("{}", object.display());
            Ok(())
        }
        Cmd::Test { args } => {
            setup()?;
            test(&args)
        }
        Cmd::Fuzz { seconds } => {
            setup_core()?;
            fuzz(seconds)
        }
        Cmd::Image { tag } => {
            setup_core()?;
            image(tag)
        }
        Cmd::Demo { control_plane } => {
            if control_plane == "real" {
                setup()?;
            } else {
                setup_core()?;
            }
            demo(&control_plane)
        }
        Cmd::Bench { args } => {
            // `bench failover` and `bench stability` run on the real control
            // plane unless told otherwise.
            let embedded = args
                .windows(2)
                .any(|w| w[0] == "--control-plane" && w[1] == "embedded")
                || args.iter().any(|a| a == "--control-plane=embedded");
            if args
                .first()
                .is_some_and(|a| a == "failover" || a == "stability")
                && !embedded
            {
                setup()?;
            } else {
                setup_core()?;
            }
            bench(&args)
        }
    }
}

fn root() -> PathBuf {
    ebpf_build::workspace_root()
}

/// Cargo's target directory (honours CARGO_TARGET_DIR, relative to the workspace).
fn target_dir() -> PathBuf {
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from);
    if target.is_absolute() {
        target
    } else {
        root().join(target)
    }
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
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Everything: the Rust pieces and Debian packages ([`setup_core`]), then
/// the Go builds the tests use (the real control plane, kube-vip; minutes
/// the first time on a fresh machine).
fn setup() -> anyhow::Result<()> {
    setup_core()?;
    // 4. The lab's real control plane (etcd, kube-apiserver) from tests/controlplane.
    setup_controlplane()?;
    // 5. kube-vip (xtask/src/kube_vip.rs): built once into target/kube-vip/.
    kube_vip::ensure(&root(), &target_dir())?;
    Ok(())
}

/// The pinned nightly with rust-src, bpf-linker and the Debian packages:
/// what the demo, the eBPF build, the fuzzer and the image need (the demo
/// runs on the embedded Lease server, so a first demo skips the Go builds).
fn setup_core() -> anyhow::Result<()> {
    let toolchain = ebpf_build::toolchain().map_err(anyhow::Error::msg)?;
    // 1. The pinned nightly with rust-src (RUSTUP_AUTO_INSTALL=0: install explicitly).
    let has_toolchain = output_ok(Command::new("rustup").args(["toolchain", "list"]))
        .is_some_and(|l| l.lines().any(|t| t.starts_with(&toolchain)));
    let has_src = has_toolchain
        && output_ok(Command::new("rustup").args([
            "component",
            "list",
            "--installed",
            "--toolchain",
            &toolchain,
        ]))
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
    let has_linker =
        output_ok(Command::new("bpf-linker").arg("--version")).is_some_and(|v| v.contains(want));
    if !has_linker {
        eprintln!("setup: installing bpf-linker {want}");
        run(Command::new("rustup").args([
            "run",
            &toolchain,
            "cargo",
            "install",
            &format!("bpf-linker@{want}"),
            "--locked",
        ]))?;
    }
    // 3. Debian packages.
    ensure_debian_packages("setup", DEBIAN_PACKAGES)
}

/// Builds etcd and kube-apiserver from the Go module once (cached by a hash
/// of its go.mod, go.sum and sources); says what it did and how long it took.
fn setup_controlplane() -> anyhow::Result<()> {
    use ebpf_build::controlplane;
    let started = Instant::now();
    let dir = controlplane::cache_dir()?;
    if controlplane::binaries().is_err() {
        eprintln!(
            "setup: building etcd and kube-apiserver from {} into {} (first time: minutes)",
            controlplane::module_dir().display(),
            dir.display()
        );
    }
    let built = controlplane::build()?;
    match built.took {
        None => eprintln!(
            "setup: control plane binaries up to date in {} (checked in {:.2} s)",
            built.dir.display(),
            started.elapsed().as_secs_f64()
        ),
        Some((download, build)) => eprintln!(
            "setup: control plane built in {}: go mod download {:.1} s, go build {:.1} s",
            built.dir.display(),
            download.as_secs_f64(),
            build.as_secs_f64()
        ),
    }
    Ok(())
}

/// Installs the packages of `wanted` (package, a file it installs) whose
/// file is missing; does nothing when all are there.
fn ensure_debian_packages(who: &str, wanted: &[(&str, &str)]) -> anyhow::Result<()> {
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(_, f)| !Path::new(f).exists())
        .map(|(p, _)| *p)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !nix_is_root() {
        bail!(
            "{who}: missing Debian packages {missing:?}; install them as root: apt-get install {}",
            missing.join(" ")
        );
    }
    eprintln!("{who}: installing Debian packages {missing:?}");
    run(Command::new("apt-get").arg("update").arg("-qq"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
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
    // The lab tests drive real agent processes: build the binary first and
    // name it, so they run the agent of this very tree.
    run(Command::new(env!("CARGO")).current_dir(root()).args([
        "build",
        "-p",
        "vip-agent",
        "--bins",
    ]))?;
    let agent = target_dir().join("debug/vip-agent");
    // The image of this very tree, for the test that runs it from the
    // manifest (tests/lab/tests/image.rs); buildah needs root: without it
    // that test skips (and says so) like every namespace test.
    let image = if nix_is_root() {
        Some(build_image(None).context("building the image (cargo xtask image)")?)
    } else {
        None
    };
    // --- skips (test crates, vip_lab::skip): every skipped test appends a line
    // to this log; as root (after `setup`) nothing may be skipped: a missing
    // prerequisite fails its test instead.
    let skip_log = std::env::temp_dir().join(format!("vip-lab-skips-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&skip_log);
    let mut cargo_test = Command::new(env!("CARGO"));
    cargo_test.env("VIP_LAB_SKIP_LOG", &skip_log);
    if let Some(image) = &image {
        cargo_test.env("VIP_IMAGE_UNDER_TEST", image);
    }
    if nix_is_root() {
        cargo_test.env("VIP_LAB_NO_SKIP", "1");
    }
    let result = run(cargo_test
        .current_dir(root())
        .env("VIP_AGENT_BIN", &agent)
        .args(["test", "--workspace", "--no-fail-fast"])
        .arg("--")
        .args(["--test-threads", "1"])
        .args(extra));
    let skips: Vec<String> = std::fs::read_to_string(&skip_log)
        .unwrap_or_default()
        .lines()
        .map(|l| l.strip_prefix("vip-lab: SKIPPED ").unwrap_or(l).to_owned())
        .collect();
    let _ = std::fs::remove_file(&skip_log);
    if skips.is_empty() {
        eprintln!("xtask test: 0 skipped");
    } else {
        eprintln!(
            "xtask test: {} tests skipped: {}",
            skips.len(),
            skips.join("; ")
        );
    }
    result?;
    // --- end of skips
    eprintln!(
        "xtask test: all passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn demo(control_plane: &str) -> anyhow::Result<()> {
    // Build both binaries first (the agent embeds a freshly built XDP object),
    // then run the lab with exactly that agent.
    run(Command::new(env!("CARGO")).current_dir(root()).args([
        "build",
        "-p",
        "vip-agent",
        "-p",
        "vip-bench", // the `vip-lab` binary
        "--bins",
    ]))?;
    let bin_dir = target_dir().join("debug");
    let lab = bin_dir.join("vip-lab");
    let agent = bin_dir.join("vip-agent");
    let mut cmd = Command::new(&lab);
    cmd.args(["demo", "--control-plane", control_plane])
        .env("VIP_AGENT_BIN", &agent);
    if !nix_is_root() {
        // Namespaces, XDP and bpffs need root: re-run the lab through sudo.
        cmd = Command::new("sudo");
        cmd.arg("--preserve-env=VIP_AGENT_BIN,RUST_LOG")
            .arg(&lab)
            .args(["demo", "--control-plane", control_plane])
            .env("VIP_AGENT_BIN", &agent);
    }
    run(&mut cmd)
}

fn bench(args: &[String]) -> anyhow::Result<()> {
    // Release builds: timings of the agent, not of debug code. The agent embeds
    // a freshly built XDP object; the lab runs exactly that agent.
    run(Command::new(env!("CARGO")).current_dir(root()).args([
        "build",
        "--release",
        "-p",
        "vip-agent",
        "-p",
        "vip-bench", // the `vip-lab` binary
        "--bins",
    ]))?;
    let bin_dir = target_dir().join("release");
    let lab = bin_dir.join("vip-lab");
    let agent = bin_dir.join("vip-agent");
    let mut cmd = if nix_is_root() {
        Command::new(&lab)
    } else {
        // Namespaces, XDP and bpffs need root: run the lab through sudo.
        let mut c = Command::new("sudo");
        c.arg("--preserve-env=VIP_AGENT_BIN,RUST_LOG").arg(&lab);
        c
    };
    cmd.arg("bench").args(args).env("VIP_AGENT_BIN", &agent);
    run(&mut cmd)
}

fn fuzz(seconds: u64) -> anyhow::Result<()> {
    let toolchain = ebpf_build::toolchain().map_err(anyhow::Error::msg)?;
    if output_ok(Command::new("cargo-fuzz").arg("--version")).is_none() {
        eprintln!("fuzz: installing cargo-fuzz");
        run(Command::new("rustup").args([
            "run",
            &toolchain,
            "cargo",
            "install",
            "cargo-fuzz",
            "--locked",
        ]))?;
    }
    let corpus = root().join("fuzz/corpus/process");
    run(Command::new(env!("CARGO"))
        .current_dir(root())
        .args([
            "run",
            "--quiet",
            "-p",
            "vip-common",
            "--features",
            "host",
            "--example",
            "fuzz_seeds",
            "--",
        ])
        .arg(&corpus))?;
    run(Command::new("rustup")
        .current_dir(root().join("fuzz"))
        .args(["run", &toolchain, "cargo", "fuzz", "run", "process", "--"])
        .arg(format!("-max_total_time={seconds}")))
}

/// Target of the static binary in the image.
const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";

/// `cargo xtask image`: the static (musl) agent in a FROM-scratch image built
/// by buildah from deploy/Containerfile. Prints the image name on stdout.
fn image(tag: Option<String>) -> anyhow::Result<()> {
    let tag = build_image(tag)?;
    println!("{tag}");
    Ok(())
}

/// Builds the image (see [`image`]) and returns its name.
fn build_image(tag: Option<String>) -> anyhow::Result<String> {
    let version = env!("CARGO_PKG_VERSION");
    let tag = tag.unwrap_or_else(|| format!("localhost/vip-agent:{version}"));
    ensure_debian_packages(
        "image",
        &[
            ("musl-tools", "/usr/bin/musl-gcc"),
            ("buildah", "/usr/bin/buildah"),
        ],
    )?;
    let installed = output_ok(Command::new("rustup").current_dir(root()).args([
        "target",
        "list",
        "--installed",
    ]));
    if !installed.is_some_and(|l| l.lines().any(|t| t.trim() == MUSL_TARGET)) {
        eprintln!("image: adding the {MUSL_TARGET} target");
        run(Command::new("rustup")
            .current_dir(root())
            .args(["target", "add", MUSL_TARGET]))?;
    }
    // The build script still builds the eBPF object with the pinned nightly
    // and embeds it: the object does not depend on the host target.
    // The musl build has a target dir of its own outside the clone
    // ([`image_target_dir`]): a fresh clone (CI) reuses its compiled
    // dependencies instead of spending minutes on them again.
    let image_target = image_target_dir();
    let started = Instant::now();
    run(Command::new(env!("CARGO"))
        .current_dir(root())
        .env("CARGO_TARGET_DIR", &image_target)
        .args([
            "build",
            "--release",
            "-p",
            "vip-agent",
            "--bin",
            "vip-agent",
            "--target",
            MUSL_TARGET,
        ])
        .env(format!("CC_{}", MUSL_TARGET.replace('-', "_")), "musl-gcc"))?;
    let build_secs = started.elapsed().as_secs_f64();
    let target = target_dir();
    let binary = image_target
        .join(MUSL_TARGET)
        .join("release")
        .join("vip-agent");
    let elf = std::fs::read(&binary).with_context(|| format!("reading {}", binary.display()))?;
    if elf_has_interpreter(&elf) {
        bail!(
            "{} is dynamically linked; FROM scratch needs a static binary",
            binary.display()
        );
    }
    // A one-file build context: buildah never walks the workspace's target/.
    let context = target.join("image-context");
    std::fs::create_dir_all(&context)?;
    let staged = context.join("vip-agent");
    std::fs::copy(&binary, &staged).context("staging the binary")?;
    // Symbols are a third of the binary; panics still print messages without them.
    if output_ok(Command::new("strip").arg(&staged)).is_none() {
        eprintln!("image: `strip` failed or is missing (binutils): the image keeps the symbols");
    }
    let image_id = || {
        output_ok(Command::new("buildah").args([
            "--storage-driver",
            "vfs",
            "images",
            "--format",
            "{{.ID}}",
            &tag,
        ]))
        .map(|id| id.trim().to_owned())
        .filter(|id| !id.is_empty())
    };
    let previous = image_id();
    let started = Instant::now();
    run(Command::new("buildah")
        .current_dir(root())
        .args([
            "--storage-driver",
            "vfs",
            "bud",
            "--build-arg",
            &format!("VERSION={version}"),
            "-t",
            &tag,
        ])
        .args(["-f", "deploy/Containerfile"])
        .arg(&context)
        .stdout(std::io::stderr()))?;
    let size = output_ok(Command::new("buildah").args([
        "--storage-driver",
        "vfs",
        "images",
        "--format",
        "{{.Size}}",
        &tag,
    ]))
    .unwrap_or_default();
    // The tag moved to the new image: remove the one it leaves untagged
    // (`cargo xtask test` builds an image on every run).
    if let Some(old) = previous.filter(|old| image_id().as_ref() != Some(old)) {
        let _ = output_ok(Command::new("buildah").args(["--storage-driver", "vfs", "rmi", &old]));
    }
    eprintln!(
        "image: binary {} bytes built in {build_secs:.0} s, image built in {:.1} s, size {}",
        elf.len(),
        started.elapsed().as_secs_f64(),
        size.trim()
    );
    Ok(tag)
}

/// Cargo's target dir for the image's musl build: `$VIP_IMAGE_TARGET_DIR`,
/// else `~/.cache/vip-agent/image-target` (shared by every clone of the
/// workspace on the machine; cargo tells the clones' own crates apart by
/// their paths and rebuilds only those), else `target/image-target`.
fn image_target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("VIP_IMAGE_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    match std::env::var_os("HOME") {
        Some(home) if !home.is_empty() => PathBuf::from(home).join(".cache/vip-agent/image-target"),
        _ => target_dir().join("image-target"),
    }
}

/// Whether an ELF file has a PT_INTERP program header (a dynamic loader it
/// needs at run time). Anything that is not a 64-bit ELF file has none.
fn elf_has_interpreter(elf: &[u8]) -> bool {
    use object::elf::{FileHeader64, PT_INTERP};
    use object::read::elf::{FileHeader as _, ProgramHeader as _};
    let Ok(header) = FileHeader64::<object::Endianness>::parse(elf) else {
        return false;
    };
    let Ok(endian) = header.endian() else {
        return false;
    };
    header
        .program_headers(endian, elf)
        .is_ok_and(|headers| headers.iter().any(|h| h.p_type(endian) == PT_INTERP))
}

#[cfg(test)]
mod tests {
    use super::*;

    use object::elf::{FileHeader64, PT_INTERP};
    use object::read::elf::{FileHeader as _, ProgramHeader as _};

    #[test]
    fn tells_a_dynamic_executable_from_other_files() {
        // This test binary is a dynamically linked executable.
        let exe = std::env::current_exe().expect("current_exe");
        let elf = std::fs::read(&exe).expect("reading the test binary");
        assert!(elf_has_interpreter(&elf));
        // Neither text nor a truncated header has a loader.
        assert!(!elf_has_interpreter(b"#!/bin/sh\n"));
        assert!(!elf_has_interpreter(&elf[..40]));
        // A copy whose PT_INTERP entry is turned into PT_NULL reads as static.
        let mut stripped = elf.clone();
        let header = FileHeader64::<object::Endianness>::parse(&elf[..]).expect("ELF header");
        let endian = header.endian().expect("endianness");
        let (phoff, size) = (header.e_phoff(endian), header.e_phentsize(endian));
        let interp = header
            .program_headers(endian, &elf[..])
            .expect("program headers")
            .iter()
            .position(|h| h.p_type(endian) == PT_INTERP)
            .expect("a PT_INTERP entry");
        let at = usize::try_from(phoff).expect("offset") + interp * usize::from(size);
        stripped[at..at + 4].copy_from_slice(&object::elf::PT_NULL.to_ne_bytes());
        assert!(!elf_has_interpreter(&stripped));
    }
}
