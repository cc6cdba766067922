//! `run`'s flags ([`crate::cli::RunArgs`]) checked and turned into the
//! settings of each part; every flag has an environment variable, and
//! kube-vip's variables are read too, in kube-vip's units
//! ([`crate::kube_vip`], before clap parses).

use std::net::IpAddr;
use std::time::Duration;

use crate::cli::RunArgs;
use crate::election::{self, ElectionConfig, client::ClientOptions, health::HealthConfig};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Election(#[from] election::ConfigError),
    #[error(
        "--address {0} is not a unicast address a VIP can be; fix: give the control-plane endpoint address"
    )]
    BadVip(IpAddr),
    #[error("--address {0} is given twice; fix: list each VIP once")]
    DuplicateVip(IpAddr),
    #[error("--health-failures must be at least 1")]
    HealthFailures,
    #[error("--health-path {0:?} must start with '/'")]
    HealthPath(String),
    #[error(
        "--node-name is not set and the host name cannot be read ({0}); fix: pass --node-name or set VIP_NODE_NAME"
    )]
    NoNodeName(String),
    #[error("--fast-path: {0}")]
    FastPath(String),
}

/// `--retry-period`'s default with `--fast-path`: one Lease write per second.
pub const FAST_PATH_RETRY_PERIOD: Duration = Duration::from_secs(1);

impl RunArgs {
    /// Checks everything that can be checked before touching the system.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.election_config()?.validate()?;
        for (i, ip) in self.addresses.iter().enumerate() {
            let broadcast = *ip == IpAddr::from([255, 255, 255, 255]);
            if ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() || broadcast {
                return Err(ConfigError::BadVip(*ip));
            }
            if self.addresses[..i].contains(ip) {
                return Err(ConfigError::DuplicateVip(*ip));
            }
        }
        if self.fast_path {
            let cfg = self.election_config()?;
            self.peer_timing()
                .check(cfg.renew_deadline, cfg.retry_period)
                .map_err(ConfigError::FastPath)?;
            if let Some(p) = &self.peer_key_file
                && p.as_os_str().is_empty()
            {
                return Err(ConfigError::FastPath(
                    "--peer-key-file is empty: name the key file, or leave it out to use the Secret".into(),
                ));
            }
        }
        if self.health_failures == 0 {
            return Err(ConfigError::HealthFailures);
        }
        if !self.health_path.starts_with('/') {
            return Err(ConfigError::HealthPath(self.health_path.clone()));
        }
        Ok(())
    }

    pub fn identity(&self) -> Result<String, ConfigError> {
        match &self.node_name {
            Some(n) => Ok(n.clone()),
            None => nix::unistd::gethostname()
                .map_err(|e| ConfigError::NoNodeName(e.to_string()))
                .map(|h| h.to_string_lossy().into_owned()),
        }
    }

    pub fn election_config(&self) -> Result<ElectionConfig, ConfigError> {
        Ok(ElectionConfig {
            lease_name: self.lease_name.clone(),
            namespace: self.lease_namespace.clone(),
            identity: self.identity()?,
            lease_duration: self.lease_duration,
            renew_deadline: self.renew_deadline,
            retry_period: self.retry_period(),
        })
    }

    /// `--retry-period`, or its default: 500ms, 1s with `--fast-path` (one
    /// Lease write per second in steady state).
    pub fn retry_period(&self) -> Duration {
        self.retry_period.unwrap_or(if self.fast_path {
            FAST_PATH_RETRY_PERIOD
        } else {
            election::DEFAULT_RETRY_PERIOD
        })
    }

    /// The fast path's timers.
    pub fn peer_timing(&self) -> crate::peer::Timing {
        crate::peer::Timing {
            heartbeat: self.heartbeat_interval,
            silence: self.takeover_silence,
            promise: self.promise,
            margin: self.promise_margin,
        }
    }

    pub fn client_options(&self) -> Result<ClientOptions, ConfigError> {
        let mut o = ClientOptions::new(self.identity()?);
        o.kubeconfig = self.kubeconfig.clone();
        o.api_server = (!self.api_server.is_empty()).then(|| self.api_server.clone());
        o.tls_server_name = self.api_server_tls_name.clone();
        Ok(o)
    }

    /// The options of the super-admin client (`--super-admin-kubeconfig`, the
    /// rest as [`Self::client_options`]); `None` when the flag is empty.
    pub fn super_admin_client_options(&self) -> Result<Option<ClientOptions>, ConfigError> {
        if self.super_admin_kubeconfig.is_empty() {
            return Ok(None);
        }
        let mut o = self.client_options()?;
        o.kubeconfig = self.super_admin_kubeconfig.clone().into();
        Ok(Some(o))
    }

    /// `run --check-config`: the settings in force, one `name: value` per
    /// line (durations like 5s or 500ms), after the kube-vip environment,
    /// our variables and the flags are merged.
    pub fn effective_settings(&self) -> Result<String, ConfigError> {
        let d = |d: std::time::Duration| humantime::format_duration(d).to_string();
        let addrs: Vec<String> = self.addresses.iter().map(ToString::to_string).collect();
        let api = if self.api_server.is_empty() {
            "(the kubeconfig's server)".to_owned()
        } else {
            format!(
                "{} (TLS name {})",
                self.api_server, self.api_server_tls_name
            )
        };
        let lines = [
            ("interface", self.interface.clone()),
            ("addresses", addrs.join(",")),
            (
                "election",
                if self.no_election { "off" } else { "on" }.to_owned(),
            ),
            ("node-name", self.identity()?),
            (
                "lease",
                format!("{}/{}", self.lease_namespace, self.lease_name),
            ),
            ("lease-duration", d(self.lease_duration)),
            ("renew-deadline", d(self.renew_deadline)),
            ("retry-period", d(self.retry_period())),
            (
                "fast-path",
                if self.fast_path {
                    format!(
                        "on (udp port {}, heartbeat {}, takeover silence {}, promise {} + {})",
                        self.peer_port,
                        d(self.heartbeat_interval),
                        d(self.takeover_silence),
                        d(self.promise),
                        d(self.promise_margin)
                    )
                } else {
                    "off".to_owned()
                },
            ),
            ("kubeconfig", self.kubeconfig.display().to_string()),
            (
                "super-admin-kubeconfig",
                if self.super_admin_kubeconfig.is_empty() {
                    "(off)".to_owned()
                } else {
                    self.super_admin_kubeconfig.clone()
                },
            ),
            ("api-server", api),
            ("health-check", self.health_check.to_string()),
            ("metrics-addr", self.metrics_addr.clone()),
            ("announce-refresh", d(self.announce_refresh)),
            ("xdp-mode", format!("{:?}", self.xdp_mode).to_lowercase()),
        ];
        Ok(lines.iter().map(|(k, v)| format!("{k}: {v}\n")).collect())
    }

    pub fn health_config(&self) -> HealthConfig {
        HealthConfig {
            enabled: self.health_check,
            path: self.health_path.clone(),
            interval: self.health_interval,
            failures: self.health_failures,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;
    use std::time::Duration;

    fn parse(args: &[&str]) -> Result<RunArgs, String> {
        let mut v = vec!["vip-agent", "run"];
        v.extend_from_slice(args);
        match Cli::try_parse_from(v) {
            Ok(Cli {
                command: Command::Run(r),
            }) => Ok(*r),
            Ok(other) => Err(format!("not a run command: {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn defaults_are_valid_and_fast() {
        let r = parse(&[
            "--interface",
            "eth0",
            "--address",
            "192.0.2.10",
            "--node-name",
            "cp1",
        ])
        .unwrap();
        r.validate().unwrap();
        assert_eq!(
            r.election_config().unwrap().lease_duration,
            election::DEFAULT_LEASE_DURATION
        );
        assert_eq!(r.renew_deadline, election::DEFAULT_RENEW_DEADLINE);
        assert_eq!(r.retry_period(), election::DEFAULT_RETRY_PERIOD);
        assert_eq!(
            r.client_options().unwrap().api_server.as_deref(),
            Some("https://127.0.0.1:6443")
        );
        let r = parse(&[
            "--interface",
            "eth0",
            "--address",
            "192.0.2.10",
            "--api-server",
            "",
        ])
        .unwrap();
        assert_eq!(r.client_options().unwrap().api_server, None);
        assert_eq!(r.lease_duration, Duration::from_secs(3));
        assert_eq!(r.renew_deadline, Duration::from_secs(2));
        assert_eq!(r.retry_period(), Duration::from_millis(500));
    }

    #[test]
    fn several_addresses_by_repeat_and_comma() {
        let r = parse(&[
            "--interface",
            "eth0",
            "--address",
            "192.0.2.10,2001:db8::10",
            "--address",
            "192.0.2.11",
        ])
        .unwrap();
        assert_eq!(r.addresses.len(), 3);
    }

    #[test]
    fn bad_values_name_the_flag_and_the_fix() {
        let e = parse(&["--interface", "eth0", "--address", "192.0.2.300"]).unwrap_err();
        assert!(e.contains("--address"), "{e}");
        let e = parse(&[
            "--interface",
            "eth0",
            "--address",
            "192.0.2.1",
            "--lease-duration",
            "3 parsecs",
        ])
        .unwrap_err();
        assert!(e.contains("--lease-duration") && e.contains("500ms"), "{e}");
        let e = parse(&[
            "--interface",
            "eth0",
            "--address",
            "192.0.2.1",
            "--xdp-mode",
            "turbo",
        ])
        .unwrap_err();
        assert!(e.contains("--xdp-mode") && e.contains("skb"), "{e}");

        let r = parse(&[
            "--interface",
            "eth0",
            "--address",
            "192.0.2.1",
            "--renew-deadline",
            "3s",
        ])
        .unwrap();
        let e = r.validate().unwrap_err().to_string();
        assert!(
            e.contains("--renew-deadline") && e.contains("raise --lease-duration"),
            "{e}"
        );
        let r = parse(&[
            "--interface",
            "eth0",
            "--address",
            "192.0.2.1",
            "--retry-period",
            "2s",
        ])
        .unwrap();
        assert!(
            r.validate()
                .unwrap_err()
                .to_string()
                .contains("--retry-period")
        );
        let r = parse(&[
            "--interface",
            "eth0",
            "--address",
            "192.0.2.1",
            "--health-path",
            "readyz",
        ])
        .unwrap();
        assert!(
            r.validate()
                .unwrap_err()
                .to_string()
                .contains("--health-path")
        );
        let r = parse(&["--interface", "eth0", "--address", "224.0.0.1"]).unwrap();
        assert!(matches!(r.validate(), Err(ConfigError::BadVip(_))));
        let r = parse(&["--interface", "eth0", "--address", "192.0.2.1,192.0.2.1"]).unwrap();
        assert!(matches!(r.validate(), Err(ConfigError::DuplicateVip(_))));
    }

    #[test]
    fn margin_is_enforced_exactly() {
        // lease 1s -> margin 250ms: renew 700ms ok, 750ms not.
        let ok = parse(&[
            "--interface",
            "e",
            "--address",
            "192.0.2.1",
            "--lease-duration",
            "1s",
            "--renew-deadline",
            "700ms",
            "--retry-period",
            "200ms",
        ])
        .unwrap();
        ok.validate().unwrap();
        let bad = parse(&[
            "--interface",
            "e",
            "--address",
            "192.0.2.1",
            "--lease-duration",
            "1s",
            "--renew-deadline",
            "750ms",
            "--retry-period",
            "200ms",
        ])
        .unwrap();
        assert!(bad.validate().is_err());
    }
}
