//! The "old" agent of the upgrade test: this repository at [`OLD_COMMIT`]
//! (the last release before the fence work), built once and cached.
//!
//! The old tree is checked out with `git worktree add --detach` into a
//! temporary directory, built with `cargo build -p vip-agent` (debug: a
//! third of the release build's time, and the lab's agents are debug too)
//! (its own build script builds its own XDP object through its `ebpf-build`),
//! and its binary copied to
//! `<target dir>/vip-old-agent/<commit>/vip-agent`; the checkout is removed
//! again (`git worktree remove`), the cargo target directory next to the
//! cached binary is kept. Later calls return the cached binary at once.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The last release before the current work: it puts the VIP on the
/// interface and has a smaller COUNTERS map.
pub const OLD_COMMIT: &str = "8233a3c";

/// Errors of the old build.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("git is not available ({0}); the upgrade test builds the old agent from git history")]
    NoGit(#[source] std::io::Error),
    #[error(
        "commit {commit} is not in the git history of {repo} ({why}); the upgrade test needs it: \
         fetch the full history (git fetch --unshallow) or a clone that contains it"
    )]
    NoCommit {
        commit: String,
        repo: String,
        why: String,
    },
    #[error("{what} failed: {why}")]
    Command { what: String, why: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// The workspace root (this crate's parent).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("vip-lab lives one level below the workspace root")
        .to_path_buf()
}

/// The cargo target directory: `$CARGO_TARGET_DIR`, else the one the running
/// test binary lives in (`<target>/<profile>/deps/...`), else `<root>/target`.
pub fn target_dir() -> PathBuf {
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        let t = PathBuf::from(t);
        return if t.is_absolute() {
            t
        } else {
            repo_root().join(t)
        };
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(t) = exe.ancestors().find(|a| a.join("CACHEDIR.TAG").is_file())
    {
        return t.to_path_buf();
    }
    repo_root().join("target")
}

fn git(args: &[&str]) -> Result<std::process::Output, Error> {
    let root = repo_root();
    // Tests may run as root in a clone owned by someone else.
    Command::new("git")
        .arg("-c")
        .arg(format!("safe.directory={}", root.display()))
        .arg("-C")
        .arg(&root)
        .args(args)
        .output()
        .map_err(Error::NoGit)
}

/// The full hash of `commit`, or why it is not available.
fn resolve(commit: &str) -> Result<String, Error> {
    let out = git(&[
        "rev-parse",
        "--verify",
        "--quiet",
        &format!("{commit}^{{commit}}"),
    ])?;
    if !out.status.success() {
        let shallow = git(&["rev-parse", "--is-shallow-repository"])
            .ok()
            .is_some_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "true");
        return Err(Error::NoCommit {
            commit: commit.to_owned(),
            repo: repo_root().display().to_string(),
            why: if shallow {
                "shallow clone".into()
            } else {
                format!(
                    "git rev-parse: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )
            },
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Removes the temporary worktree (checkout and git's record of it) on drop.
struct Worktree(PathBuf);

impl Drop for Worktree {
    fn drop(&mut self) {
        let dir = self.0.display().to_string();
        let _ = git(&["worktree", "remove", "--force", &dir]);
        let _ = std::fs::remove_dir_all(&self.0);
        let _ = git(&["worktree", "prune"]);
    }
}

/// Removes `vip-old-agent-<hash>-<pid>` checkouts whose process is gone.
fn remove_stale_checkouts() {
    let Ok(dirs) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for d in dirs.flatten() {
        let name = d.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("vip-old-agent-")
            .and_then(|rest| rest.rsplit_once('-'))
            .and_then(|(_, pid)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!(
                "upgrade: removing {} left by a killed build",
                d.path().display()
            );
            let _ = std::fs::remove_dir_all(d.path());
        }
    }
}

/// The old agent's binary, built on first use (and timed: printed on stderr).
pub fn old_agent_bin() -> Result<PathBuf, Error> {
    build_at(OLD_COMMIT)
}

/// `vip-agent` of `commit`, built once into `<target>/vip-old-agent/<hash>/`.
pub fn build_at(commit: &str) -> Result<PathBuf, Error> {
    // A killed earlier build may have left its checkout (named after its
    // process, now gone) and a registered worktree behind.
    remove_stale_checkouts();
    let hash = resolve(commit)?;
    let cache = target_dir().join("vip-old-agent").join(&hash);
    let bin = cache.join("vip-agent");
    if bin.is_file() {
        eprintln!("upgrade: old agent {commit} cached at {}", bin.display());
        return Ok(bin);
    }
    std::fs::create_dir_all(&cache).map_err(|source| Error::Io {
        what: format!("creating {}", cache.display()),
        source,
    })?;
    let started = Instant::now();
    let _ = git(&["worktree", "prune"]);
    let src = std::env::temp_dir().join(format!(
        "vip-old-agent-{}-{}",
        &hash[..12],
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&src);
    let out = git(&[
        "worktree",
        "add",
        "--detach",
        &src.display().to_string(),
        &hash,
    ])?;
    let worktree = Worktree(src.clone());
    if !out.status.success() {
        return Err(Error::Command {
            what: format!("git worktree add {} {hash}", src.display()),
            why: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&src)
        .args(["build", "--locked", "-p", "vip-agent"])
        .arg("--target-dir")
        .arg(cache.join("target"));
    // We run inside cargo (a test): nothing of the outer build may leak in.
    for (key, _) in std::env::vars_os() {
        let Some(k) = key.to_str() else { continue };
        if (k.starts_with("CARGO") && k != "CARGO_HOME")
            || k.starts_with("RUSTC")
            || k == "RUSTFLAGS"
            || k == "RUSTDOCFLAGS"
        {
            cmd.env_remove(&key);
        }
    }
    eprintln!(
        "upgrade: building the old agent ({commit} = {}) in {} (once; cached in {})",
        &hash[..12],
        src.display(),
        cache.display()
    );
    let status = cmd.status().map_err(|source| Error::Io {
        what: format!("running {cmd:?}"),
        source,
    })?;
    if !status.success() {
        return Err(Error::Command {
            what: format!("cargo build -p vip-agent at {commit} in {}", src.display()),
            why: status.to_string(),
        });
    }
    let built = cache.join("target/debug/vip-agent");
    // Copy then rename: a cached binary is always complete.
    let partial = cache.join("vip-agent.partial");
    std::fs::copy(&built, &partial).map_err(|source| Error::Io {
        what: format!("copying {}", built.display()),
        source,
    })?;
    std::fs::rename(&partial, &bin).map_err(|source| Error::Io {
        what: format!("renaming {}", partial.display()),
        source,
    })?;
    drop(worktree);
    eprintln!(
        "upgrade: old agent {commit} built in {:.0} s: {}",
        started.elapsed().as_secs_f64(),
        bin.display()
    );
    Ok(bin)
}
