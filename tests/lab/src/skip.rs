//! The one way a test skips when a prerequisite (root, a tool, the agent
//! binary) is missing.
//!
//! * `VIP_LAB_NO_SKIP=1`: a missing prerequisite is a failure: the test panics
//!   with what is missing and how to get it (`cargo xtask test` sets this as
//!   root, where `cargo xtask setup` has installed everything).
//! * Otherwise the test returns early after writing one line
//!   `vip-lab: SKIPPED <test name>: <reason>` straight to fd 2 (libtest only
//!   captures the `print!`/`eprint!` macros, so the line is always visible)
//!   and, when `VIP_LAB_SKIP_LOG` names a file, appending it there
//!   (`cargo xtask test` prints the skips from that file at the end).
//!
//! ```no_run
//! #[test]
//! fn needs_namespaces() {
//!     vip_lab::require_root!();
//!     vip_lab::require_tool!("bpftool", package = "bpftool");
//!     // ...
//! }
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

/// Env: when `1`, a missing prerequisite panics instead of skipping.
pub const NO_SKIP_ENV: &str = "VIP_LAB_NO_SKIP";
/// Env: a file each skip line is appended to.
pub const SKIP_LOG_ENV: &str = "VIP_LAB_SKIP_LOG";
/// Prefix of every skip line.
pub const SKIP_PREFIX: &str = "vip-lab: SKIPPED ";

/// The test returns early: its prerequisite is missing and the skip is recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The line that was written (without the newline).
    pub line: String,
}

/// A missing prerequisite: what is missing and how to get it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}; fix: {fix}")]
pub struct Missing {
    pub reason: String,
    pub fix: String,
}

/// Records a skip (or panics with `VIP_LAB_NO_SKIP=1`). `test` names the test
/// (the libtest thread name by default, see [`test_name`]).
pub fn skip(test: &str, missing: &Missing) -> Skipped {
    skip_with(
        test,
        missing,
        no_skip(),
        std::env::var_os(SKIP_LOG_ENV).map(PathBuf::from),
        &mut std::io::stderr(),
    )
}

/// [`skip`] with the environment and fd 2 passed in (tests of this module).
pub fn skip_with(
    test: &str,
    missing: &Missing,
    no_skip: bool,
    log: Option<PathBuf>,
    stderr: &mut dyn Write,
) -> Skipped {
    if no_skip {
        panic!(
            "{test}: {} ({NO_SKIP_ENV}=1, so nothing may be skipped); fix: {}",
            missing.reason, missing.fix
        );
    }
    let line = format!("{SKIP_PREFIX}{test}: {}", missing.reason);
    let _ = stderr.write_all(format!("{line}\n").as_bytes());
    if let Some(log) = log
        && let Err(e) = append(&log, &line)
    {
        let _ = stderr
            .write_all(format!("vip-lab: cannot append to {}: {e}\n", log.display()).as_bytes());
    }
    Skipped { line }
}

fn append(log: &Path, line: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    // One write per line: concurrent test binaries append whole lines.
    f.write_all(format!("{line}\n").as_bytes())
}

fn no_skip() -> bool {
    std::env::var(NO_SKIP_ENV).is_ok_and(|v| v == "1")
}

/// The running test's name: libtest names each test's thread after it.
pub fn test_name() -> String {
    std::thread::current()
        .name()
        .filter(|n| *n != "main")
        .unwrap_or("<unnamed test>")
        .to_owned()
}

/// Root, or why not.
pub fn missing_root() -> Option<Missing> {
    (!nix::unistd::geteuid().is_root()).then(|| Missing {
        reason: "needs root (network namespaces, XDP, bpffs, BPF_PROG_TEST_RUN)".to_owned(),
        fix: "run the tests as root, e.g. `sudo -E cargo xtask test`".to_owned(),
    })
}

/// `Ok(())` when root: for code that needs root outside tests (the lab).
pub fn ensure_root() -> Result<(), Missing> {
    missing_root().map_or(Ok(()), Err)
}

/// The tool `tool` (a path, or a name looked up in `PATH` and the sbin
/// directories) from the Debian package `package`, or why not.
pub fn missing_tool(tool: &str, package: &str) -> Option<Missing> {
    (!tool_exists(tool)).then(|| Missing {
        reason: format!("{tool} missing (Debian package {package})"),
        fix: format!("run `cargo xtask setup` (or apt-get install {package})"),
    })
}

fn tool_exists(tool: &str) -> bool {
    if tool.contains('/') {
        return Path::new(tool).is_file();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .any(|dir| dir.join(tool).is_file())
}

/// Ok when root; otherwise records the skip.
pub fn root() -> Result<(), Skipped> {
    missing_root().map_or(Ok(()), |m| Err(skip(&test_name(), &m)))
}

/// Ok when `tool` exists ([`missing_tool`]); otherwise records the skip.
pub fn tool(tool: &str, package: &str) -> Result<(), Skipped> {
    missing_tool(tool, package).map_or(Ok(()), |m| Err(skip(&test_name(), &m)))
}

/// The agent binary ([`crate::agent::agent_bin`]); otherwise records the skip.
pub fn agent_bin() -> Result<PathBuf, Skipped> {
    crate::agent::agent_bin().map_err(|e| {
        skip(
            &test_name(),
            &Missing {
                reason: format!("no vip-agent binary: {e}"),
                fix: "build it (`cargo build -p vip-agent`) or set VIP_AGENT_BIN".to_owned(),
            },
        )
    })
}

/// The lab's etcd and kube-apiserver, built for this tree by `cargo xtask
/// setup` ([`ebpf_build::controlplane::binaries`]); otherwise records the skip.
pub fn controlplane() -> Result<(PathBuf, PathBuf), Skipped> {
    ebpf_build::controlplane::binaries().map_err(|e| {
        skip(
            &test_name(),
            &Missing {
                reason: format!("no control plane binaries: {e}"),
                fix: "run `cargo xtask setup` (builds etcd and kube-apiserver from tests/controlplane)"
                    .to_owned(),
            },
        )
    })
}

/// Root and the agent binary, as every lab test needs; otherwise records the skip.
pub fn lab() -> Result<PathBuf, Skipped> {
    root()?;
    agent_bin()
}

/// Returns from the calling test (with `$ret`, default `()`) unless root.
#[macro_export]
macro_rules! require_root {
    () => {
        $crate::require_root!(())
    };
    ($ret:expr) => {
        if $crate::skip::root().is_err() {
            return $ret;
        }
    };
}

/// The agent binary when root and built ([`lab`]); otherwise returns from the
/// calling test (with `$ret`, default `()`).
#[macro_export]
macro_rules! require_lab {
    () => {
        $crate::require_lab!(())
    };
    ($ret:expr) => {
        match $crate::skip::lab() {
            Ok(bin) => bin,
            Err(_) => return $ret,
        }
    };
}

/// Returns from the calling test (with `$ret`, default `()`) unless the
/// control plane binaries are built ([`controlplane`]).
#[macro_export]
macro_rules! require_controlplane {
    () => {
        $crate::require_controlplane!(())
    };
    ($ret:expr) => {
        if $crate::skip::controlplane().is_err() {
            return $ret;
        }
    };
}

/// Returns from the calling test unless the tool is there (a path or a
/// name): `require_tool!("bpftool", package = "bpftool")`.
#[macro_export]
macro_rules! require_tool {
    ($tool:expr, package = $package:expr) => {
        $crate::require_tool!($tool, package = $package, ())
    };
    ($tool:expr, package = $package:expr, $ret:expr) => {
        if $crate::skip::tool($tool, $package).is_err() {
            return $ret;
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_tool() -> Missing {
        missing_tool("/nonexistent/vip-lab-fake-tool", "vip-lab-fake").expect("missing")
    }

    #[test]
    fn a_present_tool_is_not_missing() {
        assert_eq!(missing_tool("/proc/self/exe", "none"), None);
        assert_eq!(missing_tool("sh", "dash"), None);
        assert!(missing_tool("vip-lab-fake-tool", "vip-lab-fake").is_some());
    }

    #[test]
    fn skip_writes_the_line_to_the_log() {
        let log =
            std::env::temp_dir().join(format!("vip-lab-skip-test-{}.log", std::process::id()));
        let _ = std::fs::remove_file(&log);
        let mut stderr = Vec::new();
        let s1 = skip_with("t1", &fake_tool(), false, Some(log.clone()), &mut stderr);
        let s2 = skip_with("t2", &fake_tool(), false, Some(log.clone()), &mut stderr);
        let text = std::fs::read_to_string(&log).expect("skip log");
        let _ = std::fs::remove_file(&log);
        assert_eq!(String::from_utf8(stderr).expect("utf-8"), text);
        assert_eq!(
            s1.line,
            "vip-lab: SKIPPED t1: /nonexistent/vip-lab-fake-tool missing (Debian package vip-lab-fake)"
        );
        assert_eq!(text, format!("{}\n{}\n", s1.line, s2.line));
    }

    #[test]
    #[should_panic(expected = "run `cargo xtask setup` (or apt-get install vip-lab-fake)")]
    fn no_skip_panics_with_the_fix() {
        let _ = skip_with("t", &fake_tool(), true, None, &mut Vec::new());
    }

    #[test]
    fn test_name_is_the_libtest_thread_name() {
        // Not through the macros: a real skip here would land in the
        // `cargo xtask test` skip log (or panic under VIP_LAB_NO_SKIP=1).
        assert!(test_name().ends_with("test_name_is_the_libtest_thread_name"));
    }
}
