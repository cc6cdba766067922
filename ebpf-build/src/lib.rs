//! Builds `vip-ebpf` for `bpfel-unknown-none` with the nightly pinned in
//! `vip-ebpf/rust-toolchain.toml`, `-Z build-std=core` and bpf-linker.
//!
//! Both `vip-agent`'s build script and `cargo xtask build-ebpf` call [`build`],
//! so there is exactly one way the object is produced. [`build_bench`] builds
//! the data-plane benchmark's programs (`bench-ebpf`) the same way.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const TARGET: &str = "bpfel-unknown-none";
pub const BPF_LINKER_VERSION: &str = "0.10.4";

#[derive(Debug)]
pub struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

fn err(msg: impl Into<String>) -> Error {
    Error(msg.into())
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
    let path = workspace_root().join("vip-ebpf/rust-toolchain.toml");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| err(format!("reading {}: {e}", path.display())))?;
    text.lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("channel"))
        .and_then(|rest| rest.split('"').nth(1))
        .map(str::to_owned)
        .ok_or_else(|| err(format!("{}: no `channel = \"...\"` line", path.display())))
}

/// Files whose change must rebuild the object (for `cargo:rerun-if-changed`).
pub fn inputs() -> Vec<PathBuf> {
    let root = workspace_root();
    vec![
        root.join("vip-ebpf/src"),
        root.join("vip-ebpf/Cargo.toml"),
        root.join("vip-ebpf/Cargo.lock"),
        root.join("vip-ebpf/rust-toolchain.toml"),
        root.join("vip-ebpf/.cargo"),
        root.join("vip-common/src"),
        root.join("vip-common/Cargo.toml"),
    ]
}

/// Builds the object and returns its path.
pub fn build(release: bool) -> Result<PathBuf, Error> {
    build_crate("vip-ebpf", release)
}

/// Builds the data-plane benchmark's XDP programs (`bench-ebpf`: flood
/// generator, reply counter, empty program) and returns the object's path.
pub fn build_bench(release: bool) -> Result<PathBuf, Error> {
    build_crate("bench-ebpf", release)
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
        if k.starts_with("CARGO")
            || k.starts_with("RUSTC")
            || k.starts_with("RUSTUP_TOOLCHAIN")
            || k == "RUSTFLAGS"
            || k == "RUSTDOCFLAGS"
        {
            if k == "CARGO_HOME" {
                continue;
            }
            cmd.env_remove(&key);
        }
    }
    let status = cmd
        .status()
        .map_err(|e| err(format!("running rustup: {e} (is rustup installed?)")))?;
    if !status.success() {
        return Err(err(format!(
            "building {name} with {toolchain} failed ({status}); if the toolchain, rust-src or \
             bpf-linker {BPF_LINKER_VERSION} is missing, run `cargo xtask setup`"
        )));
    }
    let object = target_dir
        .join(TARGET)
        .join(if release { "release" } else { "debug" })
        .join(name);
    if !object.is_file() {
        return Err(err(format!(
            "build succeeded but {} is missing",
            object.display()
        )));
    }
    Ok(object)
}
