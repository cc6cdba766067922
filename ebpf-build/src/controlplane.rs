//! The real Kubernetes control plane of the lab: `etcd` and `kube-apiserver`
//! built from the Go module in `tests/controlplane/` (pinned in its go.mod).
//!
//! [`build`] (run by `cargo xtask setup`) builds both once into
//! `<target>/controlplane/<key>/`, where the key is a hash of the module's
//! go.mod, go.sum and Go sources; the lab finds them with [`binaries`]. Go's own
//! caches (module cache, build cache) stay in their default places.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The binaries built from the module, in build order.
pub const BINARIES: [&str; 2] = ["etcd", "kube-apiserver"];

/// How the binaries are built (part of the cache key, with go.mod, which
/// gives the version stamped into kube-apiserver: [`version_ldflags`]).
const BUILD_FLAGS: &str = "CGO_ENABLED=0 go build -trimpath -ldflags=<version of go.mod>";

/// `-X` flags stamping the pinned Kubernetes release into kube-apiserver, as
/// Kubernetes' own build does (else `/version` says `v0.0.0-master`). `None`
/// when go.mod names no `k8s.io/kubernetes vX.Y.Z`.
pub fn version_ldflags(go_mod: &str) -> Option<String> {
    let version = go_mod
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("k8s.io/kubernetes v"))?
        .split_whitespace()
        .next()?;
    let mut parts = version.split('.');
    let (major, minor) = (parts.next()?, parts.next()?);
    let pkg = "k8s.io/component-base/version";
    Some(format!(
        "-X {pkg}.gitVersion=v{version} -X {pkg}.gitMajor={major} -X {pkg}.gitMinor={minor} \
         -X {pkg}.gitTreeState=clean"
    ))
}

/// Why the control plane binaries are not there or could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the control plane binaries for this tree are not built ({0} missing): run `cargo xtask setup`"
    )]
    NotBuilt(PathBuf),
    #[error(
        "`go` not found ({0}): install Go 1.26 (e.g. /usr/local/go/bin on PATH) and run `cargo xtask setup` again"
    )]
    NoGo(std::io::Error),
    #[error("`{command}` failed ({status}) in {dir}")]
    Go {
        command: String,
        status: std::process::ExitStatus,
        dir: PathBuf,
    },
    #[error("creating {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The Go module's folder.
pub fn module_dir() -> PathBuf {
    crate::workspace_root().join("tests/controlplane")
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` (relative to the workspace
/// root) or `<workspace>/target`.
fn target_dir() -> PathBuf {
    let root = crate::workspace_root();
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |t| root.join(t))
}

/// Every file the binaries are built from: go.mod, go.sum and the `.go` files,
/// sorted, as paths relative to the module folder.
fn sources(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    fn walk(dir: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<(), Error> {
        let read = |source| Error::Read {
            path: dir.to_path_buf(),
            source,
        };
        for entry in std::fs::read_dir(dir).map_err(read)? {
            let entry = entry.map_err(read)?;
            let name = entry.file_name();
            let rel = rel.join(&name);
            if entry.file_type().map_err(read)?.is_dir() {
                walk(&entry.path(), &rel, out)?;
            } else if name.to_string_lossy().ends_with(".go") {
                out.push(rel);
            }
        }
        Ok(())
    }
    let mut files = vec![PathBuf::from("go.mod"), PathBuf::from("go.sum")];
    walk(&dir.join("cmd"), Path::new("cmd"), &mut files)?;
    files.sort();
    Ok(files)
}

/// The cache key: FNV-1a (64 bit) over the build flags and each source's
/// relative path and content, as 16 hex digits.
pub fn cache_key() -> Result<String, Error> {
    let dir = module_dir();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // A separator, so that moving bytes between two parts changes the key.
        hash ^= 0xff;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    };
    feed(BUILD_FLAGS.as_bytes());
    for rel in sources(&dir)? {
        let path = dir.join(&rel);
        let content = std::fs::read(&path).map_err(|source| Error::Read { path, source })?;
        feed(rel.to_string_lossy().as_bytes());
        feed(&content);
    }
    Ok(format!("{hash:016x}"))
}

/// The folder holding the binaries of the current sources.
pub fn cache_dir() -> Result<PathBuf, Error> {
    Ok(target_dir().join("controlplane").join(cache_key()?))
}

/// The built binaries: `(etcd, kube-apiserver)`, or [`Error::NotBuilt`].
pub fn binaries() -> Result<(PathBuf, PathBuf), Error> {
    let dir = cache_dir()?;
    let [etcd, apiserver] = BINARIES.map(|b| dir.join(b));
    for b in [&etcd, &apiserver] {
        if !b.is_file() {
            return Err(Error::NotBuilt(b.clone()));
        }
    }
    Ok((etcd, apiserver))
}

/// What [`build`] did.
#[derive(Debug)]
pub struct Built {
    /// Where the binaries are.
    pub dir: PathBuf,
    /// `None` when they were already there; else the time of
    /// `go mod download` and of `go build`.
    pub took: Option<(Duration, Duration)>,
}

/// `go` from PATH, else the official tarball's place.
fn go_bin() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("go"))
        .chain([PathBuf::from("/usr/local/go/bin/go")])
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("go"))
}

fn go(dir: &Path, args: &[&str]) -> Result<(), Error> {
    let command = format!("go {}", args.join(" "));
    let status = Command::new(go_bin())
        .current_dir(dir)
        .args(args)
        .env("CGO_ENABLED", "0")
        .status()
        .map_err(Error::NoGo)?;
    if !status.success() {
        return Err(Error::Go {
            command,
            status,
            dir: dir.to_path_buf(),
        });
    }
    Ok(())
}

/// Builds both binaries into [`cache_dir`] unless they are there. The build
/// goes to a temporary folder that is renamed into place, so an interrupted
/// build never leaves a half-filled cache entry; then the entries of other
/// sources are removed.
pub fn build() -> Result<Built, Error> {
    let dir = cache_dir()?;
    if binaries().is_ok() {
        return Ok(Built { dir, took: None });
    }
    let module = module_dir();
    let started = Instant::now();
    go(&module, &["mod", "download"])?;
    let downloaded = started.elapsed();
    let partial = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial).map_err(|source| Error::Write {
        path: partial.clone(),
        source,
    })?;
    let out = format!("{}/", partial.display());
    let go_mod_path = module.join("go.mod");
    let go_mod = std::fs::read_to_string(&go_mod_path).map_err(|source| Error::Read {
        path: go_mod_path,
        source,
    })?;
    let ldflags = version_ldflags(&go_mod).unwrap_or_default();
    let mut args = vec!["build", "-trimpath", "-ldflags", &ldflags, "-o", &out];
    let packages = BINARIES.map(|b| format!("./cmd/{b}"));
    args.extend(packages.iter().map(String::as_str));
    go(&module, &args)?;
    let built = started.elapsed() - downloaded;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&partial, &dir).map_err(|source| Error::Write {
        path: dir.clone(),
        source,
    })?;
    // Earlier builds (of other sources) are 200 MB each: keep only this one.
    if let (Some(parent), Some(name)) = (dir.parent(), dir.file_name())
        && let Ok(entries) = std::fs::read_dir(parent)
    {
        for e in entries.flatten() {
            if e.file_name() != name {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    Ok(Built {
        dir,
        took: Some((downloaded, built)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_the_kubernetes_release_of_go_mod() {
        let go_mod = "module x\n\nrequire (\n\tgo.etcd.io/etcd/server/v3 v3.7.3\n\tk8s.io/kubernetes v1.37.2\n)\n";
        let flags = version_ldflags(go_mod).expect("flags");
        assert!(flags.contains("version.gitVersion=v1.37.2 "), "{flags}");
        assert!(flags.contains("gitMajor=1 "), "{flags}");
        assert!(flags.contains("gitMinor=37 "), "{flags}");
        assert_eq!(version_ldflags("module x\n"), None);
        // The module of this tree pins one.
        let ours = std::fs::read_to_string(module_dir().join("go.mod")).expect("go.mod");
        assert!(version_ldflags(&ours).is_some());
    }
}
