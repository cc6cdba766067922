//! Builds `vip-ebpf` for `bpfel-unknown-none` with the nightly pinned in
//! `vip-ebpf/rust-toolchain.toml`, `-Z build-std=core` and bpf-linker.
//!
//! `vip-agent`'s build script, `cargo xtask build-ebpf` and the lab all call
//! [`build`], so there is exactly one way the object is produced.
//! [`build_bench`] builds the data-plane benchmark's programs (`bench-ebpf`)
//! the same way.
//!
//! Why not `aya-build`: its `build_ebpf` only runs inside a build script (it
//! needs `OUT_DIR` and `CARGO_CFG_TARGET_*`, and reports through
//! `cargo:warning` lines on stdout), while the xtask and the lab build the
//! object at run time too; it always adds `-Cdebuginfo=2 -Clink-arg=--btf`,
//! which would change the program the tests load; and its only
//! `rerun-if-changed` input is the eBPF crate's folder, not the shared packet
//! logic in `vip-common`; it also runs `cargo build --package` from the
//! current folder, which does not see our eBPF crates (excluded from the root
//! workspace) without a `set_current_dir`. [`inputs`] lists every input
//! instead, and only paths that exist.

pub mod controlplane;

use std::path::{Path, PathBuf};
use std::process::Command;

pub const TARGET: &str = "bpfel-unknown-none";
pub const BPF_LINKER_VERSION: &str = "0.10.4";

/// The eBPF crate of the agent and the benchmark's one (workspace folders,
/// each with a binary of the same name).
const AGENT_CRATE: &str = "vip-ebpf";
const BENCH_CRATE: &str = "bench-ebpf";

/// Why the object could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not valid TOML: {source}")]
    Toml {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("{path}: no `[toolchain] channel = \"...\"`")]
    NoChannel { path: PathBuf },
    #[error("running rustup: {0} (is rustup installed? run `cargo xtask setup`)")]
    Rustup(std::io::Error),
    #[error(
        "building {name} with {toolchain} failed ({status}); if the toolchain, rust-src or \
         bpf-linker {BPF_LINKER_VERSION} is missing, run `cargo xtask setup`"
    )]
    Build {
        name: String,
        toolchain: String,
        status: std::process::ExitStatus,
    },
    #[error("build succeeded but {0} is missing")]
    Missing(PathBuf),
}

/// The workspace root (parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("ebpf-build lives one level below the workspace root")
        .to_path_buf()
}

/// The pinned nightly, read from `vip-ebpf/rust-toolchain.toml` (single source of truth).
pub fn toolchain() -> Result<String, Error> {
    let path = workspace_root()
        .join(AGENT_CRATE)
        .join("rust-toolchain.toml");
    let text = std::fs::read_to_string(&path).map_err(|source| Error::Read {
        path: path.clone(),
        source,
    })?;
    channel(&text).map_err(|e| match e {
        ChannelError::Toml(source) => Error::Toml { path, source },
        ChannelError::Missing => Error::NoChannel { path },
    })
}

enum ChannelError {
    Toml(toml::de::Error),
    Missing,
}

/// `[toolchain] channel` of a `rust-toolchain.toml`.
fn channel(text: &str) -> Result<String, ChannelError> {
    let table: toml::Table = toml::from_str(text).map_err(ChannelError::Toml)?;
    table
        .get("toolchain")
        .and_then(|t| t.get("channel"))
        .and_then(toml::Value::as_str)
        .map(str::to_owned)
        .ok_or(ChannelError::Missing)
}

/// Files and folders whose change must rebuild the agent's object (for
/// `cargo:rerun-if-changed`; cargo scans folders recursively). Only paths
/// that exist: a missing one would make cargo rerun the build every time.
pub fn inputs() -> Vec<PathBuf> {
    crate_inputs(AGENT_CRATE)
}

/// Environment variables the build passes on to the inner cargo (for
/// `cargo:rerun-if-env-changed`): they choose the toolchain and bpf-linker.
/// (The build also reads the `CARGO*`/`RUSTC*` variables, only to drop them.)
pub const INPUT_ENV: &[&str] = &["CARGO_HOME", "RUSTUP_HOME"];

fn crate_inputs(name: &str) -> Vec<PathBuf> {
    let root = workspace_root();
    let krate = root.join(name);
    let mut inputs = vec![
        krate.join("src"),
        krate.join("Cargo.toml"),
        krate.join("Cargo.lock"),
        // The toolchain file of vip-ebpf pins the nightly for both crates.
        root.join(AGENT_CRATE).join("rust-toolchain.toml"),
        krate.join(".cargo/config.toml"),
        // Cargo reads the config files of every parent folder too.
        root.join(".cargo/config.toml"),
        // The shared packet logic, a path dependency...
        root.join("vip-common/src"),
        root.join("vip-common/Cargo.toml"),
        root.join("vip-common/build.rs"),
        // ...whose manifest inherits `[workspace.package]` from the root.
        root.join("Cargo.toml"),
    ];
    inputs.retain(|p| p.exists());
    inputs
}

/// Builds the object and returns its path.
pub fn build(release: bool) -> Result<PathBuf, Error> {
    build_crate(AGENT_CRATE, release)
}

/// Builds the data-plane benchmark's XDP programs (`bench-ebpf`: flood
/// generator, reply counter, empty program) and returns the object's path.
pub fn build_bench(release: bool) -> Result<PathBuf, Error> {
    build_crate(BENCH_CRATE, release)
}

/// Builds the eBPF crate in the workspace folder `name` (whose binary is
/// also called `name`) with the pinned nightly.
fn build_crate(name: &str, release: bool) -> Result<PathBuf, Error> {
    let root = workspace_root();
    let toolchain = toolchain()?;
    let target_dir = root.join("target/ebpf");
    let mut cmd = Command::new("rustup");
    cmd.current_dir(root.join(name))
        .args([
            "run",
            &toolchain,
            "cargo",
            "build",
            "--locked",
            "-Z",
            "build-std=core",
            "--target",
            TARGET,
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    if release {
        cmd.arg("--release");
    }
    // We may run inside another cargo (a build script): drop everything that
    // would make the inner cargo use the outer toolchain, flags or target.
    for (key, _) in std::env::vars_os() {
        let Some(k) = key.to_str() else { continue };
        let outer = k.starts_with("CARGO")
            || k.starts_with("RUSTC")
            || k.starts_with("RUSTUP_TOOLCHAIN")
            || k == "RUSTFLAGS"
            || k == "RUSTDOCFLAGS";
        if outer && k != "CARGO_HOME" {
            cmd.env_remove(&key);
        }
    }
    let status = cmd.status().map_err(Error::Rustup)?;
    if !status.success() {
        return Err(Error::Build {
            name: name.to_owned(),
            toolchain,
            status,
        });
    }
    let object = target_dir
        .join(TARGET)
        .join(if release { "release" } else { "debug" })
        .join(name);
    if !object.is_file() {
        return Err(Error::Missing(object));
    }
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_channel_of_the_pinned_toolchain() {
        let text = "# pinned\n[toolchain]\nchannel = \"nightly-2026-05-19\" # date\n\
                    components = [\"rust-src\"]\n";
        assert_eq!(channel(text).ok().as_deref(), Some("nightly-2026-05-19"));
        assert!(matches!(
            channel("[toolchain]\nprofile = \"minimal\"\n"),
            Err(ChannelError::Missing)
        ));
        assert!(matches!(channel("channel = "), Err(ChannelError::Toml(_))));
        assert!(toolchain().is_ok_and(|t| t.starts_with("nightly-")));
    }

    #[test]
    fn every_input_exists_so_cargo_does_not_rerun_forever() {
        let inputs = inputs();
        let root = workspace_root();
        for want in [
            "vip-ebpf/src",
            "vip-common/src",
            "vip-ebpf/rust-toolchain.toml",
        ] {
            assert!(inputs.contains(&root.join(want)), "{want} missing");
        }
        assert!(inputs.iter().all(|p| p.exists()));
        assert!(crate_inputs(BENCH_CRATE).contains(&root.join("bench-ebpf/src")));
    }
}
