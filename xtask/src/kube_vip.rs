//! `cargo xtask setup`'s kube-vip build: kube-vip v1.0.0 from the Go module in
//! `tests/kube-vip/` (go.mod pins it, go.sum its hashes) into
//! `<target>/kube-vip/<key>/kube-vip`, `<key>` the FNV-1a hash of that go.mod
//! and go.sum (vip-agent/tests/kube_vip_manifest.rs finds it by the same
//! key). Built once: a present binary is used as is; a new key builds afresh
//! and removes the binaries of older keys. Prints what it does and how long
//! the download and the build took.
//!
//! The Go checksum database does not know kube-vip v1.0.0 (its lookup
//! answers 404). With the committed go.sum, go checks the download against
//! it and asks no database; the download still runs with
//! `GONOSUMDB=github.com/kube-vip/kube-vip`, as changing go.mod needs it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};

/// What is built (`go build` of this package with the module's versions).
const PACKAGE: &str = "github.com/kube-vip/kube-vip";
const VERSION: &str = "v1.0.0";

/// FNV-1a (64 bit) of `bytes`: the cache key.
pub fn key(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn go() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/local/go/bin")])
        .map(|d| d.join("go"))
        .find(|g| g.is_file())
        .context(
            "setup: Go (1.24 or later) is needed to build kube-vip from tests/kube-vip/; \
             fix: install it from go.dev/dl into /usr/local/go",
        )
}

/// The kube-vip binary, built when missing.
pub fn ensure(root: &Path, target: &Path) -> anyhow::Result<PathBuf> {
    let module = root.join("tests/kube-vip");
    let mut bytes = Vec::new();
    for f in ["go.mod", "go.sum"] {
        let p = module.join(f);
        bytes.extend(std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?);
    }
    let cache = target.join("kube-vip");
    let dir = cache.join(format!("{:016x}", key(&bytes)));
    let bin = dir.join("kube-vip");
    if bin.is_file() {
        return Ok(bin);
    }
    let go = go()?;
    eprintln!(
        "setup: building kube-vip {VERSION} from tests/kube-vip/ into {} (once; about 1 min download, 5-7 min build on 2 cores)",
        bin.display()
    );
    let go_cmd = |args: &[&str]| {
        let mut c = Command::new(&go);
        c.current_dir(&module)
            .env("GONOSUMDB", PACKAGE)
            .env("GOFLAGS", "-mod=readonly -buildvcs=false")
            .args(args);
        c
    };
    let started = Instant::now();
    let status = go_cmd(&["mod", "download"]).status()?;
    if !status.success() {
        bail!("setup: downloading kube-vip {VERSION} failed ({status}); see the go output above");
    }
    let downloaded = started.elapsed();
    let partial = cache.join(".partial");
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial)?;
    let ldflags = format!("-s -w -X=main.Version={VERSION}");
    let status = go_cmd(&["build", "-trimpath", "-ldflags", &ldflags, "-o"])
        .arg(partial.join("kube-vip"))
        .arg(PACKAGE)
        .status()?;
    if !status.success() {
        bail!("setup: building kube-vip {VERSION} failed ({status}); see the go output above");
    }
    // Only this key's binary stays.
    for old in std::fs::read_dir(&cache)?.flatten() {
        if old.path() != partial {
            let _ = std::fs::remove_dir_all(old.path());
        }
    }
    std::fs::rename(&partial, &dir)?;
    eprintln!(
        "setup: kube-vip {VERSION} built in {:.1?} (download {:.1?}, build {:.1?})",
        started.elapsed(),
        downloaded,
        started.elapsed() - downloaded
    );
    Ok(bin)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_key_is_fnv1a_64() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(super::key(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(super::key(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
