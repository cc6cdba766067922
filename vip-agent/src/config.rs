//! Command line and environment (clap). Every flag has an environment
//! variable; the kube-vip names operators already use are accepted too
//! (see [`import_kube_vip_env`]).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::dataplane::XdpModeArg;

#[derive(Debug, Parser)]
#[command(name = "vip-agent", version, about = "Control-plane VIP for bare-metal Kubernetes: in-kernel ARP/NS responder fenced by Lease leadership")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent on this node.
    Run(Box<RunArgs>),
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e}; write it like 500ms, 2s or 1m"))
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Interface that carries the VIP (kube-vip: vip_interface).
    #[arg(long, env = "VIP_INTERFACE")]
    pub interface: String,

    /// VIP to answer for; repeat or comma-separate for several (IPv4 and IPv6) (kube-vip: address).
    #[arg(long = "address", env = "VIP_ADDRESS", value_delimiter = ',', required = true)]
    pub addresses: Vec<IpAddr>,

    /// Answer for the VIPs without leader election (a single node, a lab, a test).
    #[arg(long, env = "VIP_NO_ELECTION")]
    pub no_election: bool,

    /// XDP attach mode; auto tries native and falls back to skb (generic).
    #[arg(long, env = "VIP_XDP_MODE", value_enum, default_value = "auto")]
    pub xdp_mode: XdpModeArg,

    /// bpffs directory for the pinned program maps and link
    /// [default: /sys/fs/bpf/vip-agent/netns<inode>-<interface>].
    #[arg(long, env = "VIP_PIN_DIR")]
    pub pin_dir: Option<PathBuf>,

    /// How long a Lease stays valid without renewal, as seen by followers (kube-vip: vip_leaseduration).
    #[arg(long, env = "VIP_LEASE_DURATION", default_value = "3s", value_parser = parse_duration)]
    pub lease_duration: Duration,

    /// How long after a renew request was sent the leader keeps answering (kube-vip: vip_renewdeadline).
    #[arg(long, env = "VIP_RENEW_DEADLINE", default_value = "2s", value_parser = parse_duration)]
    pub renew_deadline: Duration,

    /// How often the leader renews and followers retry (kube-vip: vip_retryperiod).
    #[arg(long, env = "VIP_RETRY_PERIOD", default_value = "500ms", value_parser = parse_duration)]
    pub retry_period: Duration,

    /// Announcement frames per VIP sent at once on takeover.
    #[arg(long, env = "VIP_ANNOUNCE_BURST", default_value_t = 3)]
    pub announce_burst: u32,

    /// Announcements repeated after the burst.
    #[arg(long, env = "VIP_ANNOUNCE_REPEATS", default_value_t = 3)]
    pub announce_repeats: u32,

    /// Interval between those repeats.
    #[arg(long, env = "VIP_ANNOUNCE_INTERVAL", default_value = "200ms", value_parser = parse_duration)]
    pub announce_interval: Duration,

    /// Slow refresh of the announcement while leading (0s: off).
    #[arg(long, env = "VIP_ANNOUNCE_REFRESH", default_value = "10s", value_parser = parse_duration)]
    pub announce_refresh: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--retry-period ({retry:?}) must be shorter than --renew-deadline ({renew:?}): the leader renews several times per deadline; fix: lower --retry-period (e.g. a quarter of --renew-deadline)")]
    RetryNotBelowRenew { retry: Duration, renew: Duration },
    #[error("--renew-deadline ({renew:?}) plus the safety margin ({margin:?}) must be below --lease-duration ({lease:?}), or an old leader could still answer when a follower takes over; fix: raise --lease-duration to at least {need:?} or lower --renew-deadline")]
    RenewNotBelowLease { renew: Duration, lease: Duration, margin: Duration, need: Duration },
    #[error("{flag} must be greater than zero")]
    Zero { flag: &'static str },
    #[error("--address {0} is not a unicast address a VIP can be")]
    BadVip(IpAddr),
    #[error("--address {0} is given twice")]
    DuplicateVip(IpAddr),
}

/// The margin kept between the leader falling silent and a follower being
/// allowed to take over: max(250 ms, 10% of the lease duration).
pub fn safety_margin(lease: Duration) -> Duration {
    (lease / 10).max(Duration::from_millis(250))
}

impl RunArgs {
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (flag, d) in [
            ("--lease-duration", self.lease_duration),
            ("--renew-deadline", self.renew_deadline),
            ("--retry-period", self.retry_period),
        ] {
            if d.is_zero() {
                return Err(ConfigError::Zero { flag });
            }
        }
        if self.retry_period >= self.renew_deadline {
            return Err(ConfigError::RetryNotBelowRenew { retry: self.retry_period, renew: self.renew_deadline });
        }
        let margin = safety_margin(self.lease_duration);
        if self.renew_deadline + margin >= self.lease_duration {
            let need = self.renew_deadline + margin + Duration::from_millis(1);
            return Err(ConfigError::RenewNotBelowLease {
                renew: self.renew_deadline,
                lease: self.lease_duration,
                margin,
                need,
            });
        }
        for (i, ip) in self.addresses.iter().enumerate() {
            if ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() || *ip == IpAddr::from([255, 255, 255, 255]) {
                return Err(ConfigError::BadVip(*ip));
            }
            if self.addresses[..i].contains(ip) {
                return Err(ConfigError::DuplicateVip(*ip));
            }
        }
        Ok(())
    }
}

/// kube-vip environment names mapped onto ours, so an operator's existing
/// static-pod environment keeps working. Ours win when both are set.
pub const KUBE_VIP_ENV: &[(&str, &str)] = &[
    ("vip_interface", "VIP_INTERFACE"),
    ("address", "VIP_ADDRESS"),
    ("vip_address", "VIP_ADDRESS"),
];

/// Copies kube-vip environment variables to our names (before clap parses).
pub fn import_kube_vip_env() {
    for (theirs, ours) in KUBE_VIP_ENV {
        if std::env::var_os(ours).is_none() {
            if let Some(v) = std::env::var_os(theirs) {
                // SAFETY: called at the very start of main, before any thread
                // (tokio runtime included) exists.
                unsafe { std::env::set_var(ours, v) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<RunArgs, String> {
        let mut v = vec!["vip-agent", "run"];
        v.extend_from_slice(args);
        match Cli::try_parse_from(v) {
            Ok(Cli { command: Command::Run(r) }) => Ok(*r),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn defaults_are_valid_and_fast() {
        let r = parse(&["--interface", "eth0", "--address", "192.0.2.10"]).unwrap();
        r.validate().unwrap();
        assert_eq!(r.lease_duration, Duration::from_secs(3));
        assert_eq!(r.renew_deadline, Duration::from_secs(2));
        assert_eq!(r.retry_period, Duration::from_millis(500));
    }

    #[test]
    fn several_addresses_by_repeat_and_comma() {
        let r = parse(&["--interface", "eth0", "--address", "192.0.2.10,2001:db8::10", "--address", "192.0.2.11"]).unwrap();
        assert_eq!(r.addresses.len(), 3);
    }

    #[test]
    fn bad_values_name_the_flag_and_the_fix() {
        let e = parse(&["--interface", "eth0", "--address", "192.0.2.300"]).unwrap_err();
        assert!(e.contains("--address"), "{e}");
        let e = parse(&["--interface", "eth0", "--address", "192.0.2.1", "--lease-duration", "3 parsecs"]).unwrap_err();
        assert!(e.contains("--lease-duration") && e.contains("500ms"), "{e}");
        let e = parse(&["--interface", "eth0", "--address", "192.0.2.1", "--xdp-mode", "turbo"]).unwrap_err();
        assert!(e.contains("--xdp-mode") && e.contains("skb"), "{e}");

        let r = parse(&["--interface", "eth0", "--address", "192.0.2.1", "--renew-deadline", "3s"]).unwrap();
        let e = r.validate().unwrap_err().to_string();
        assert!(e.contains("--renew-deadline") && e.contains("fix"), "{e}");
        let r = parse(&["--interface", "eth0", "--address", "192.0.2.1", "--retry-period", "2s"]).unwrap();
        assert!(r.validate().unwrap_err().to_string().contains("--retry-period"));
        let r = parse(&["--interface", "eth0", "--address", "224.0.0.1"]).unwrap();
        assert!(matches!(r.validate(), Err(ConfigError::BadVip(_))));
        let r = parse(&["--interface", "eth0", "--address", "192.0.2.1,192.0.2.1"]).unwrap();
        assert!(matches!(r.validate(), Err(ConfigError::DuplicateVip(_))));
    }

    #[test]
    fn margin_is_enforced_exactly() {
        // lease 1s -> margin 250ms: renew 700ms ok, 750ms not.
        let ok = parse(&["--interface", "e", "--address", "192.0.2.1", "--lease-duration", "1s", "--renew-deadline", "700ms", "--retry-period", "200ms"]).unwrap();
        ok.validate().unwrap();
        let bad = parse(&["--interface", "e", "--address", "192.0.2.1", "--lease-duration", "1s", "--renew-deadline", "750ms", "--retry-period", "200ms"]).unwrap();
        assert!(bad.validate().is_err());
    }
}
