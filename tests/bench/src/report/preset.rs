//! The presets the CLI names (one per implementation and setting), which of
//! them are comparable, and the implementation of each.

use std::time::Duration;

use vip_lab::lab::Implementation;

pub const AGENT_DEFAULT: &str = "agent-default";
pub const AGENT_AGGRESSIVE: &str = "agent-aggressive";
/// vip-agent with `--fast-path` (peer promises), 3 s / 2 s / 1 s.
pub const AGENT_FAST_PATH: &str = "agent-fast-path";
pub const KEEPALIVED_DEFAULT: &str = "keepalived-default";
pub const KEEPALIVED_FAST: &str = "keepalived-fast";
/// kube-vip v1.0.0 at its defaults, 15 s / 10 s / 2 s.
pub const KUBE_VIP_DEFAULT: &str = "kube-vip-default";
/// kube-vip v1.0.0 at its recommended fast settings, 5 s / 3 s / 1 s.
pub const KUBE_VIP_FAST: &str = "kube-vip-fast";
pub const ALL: [&str; 7] = [
    AGENT_DEFAULT,
    AGENT_AGGRESSIVE,
    AGENT_FAST_PATH,
    KEEPALIVED_DEFAULT,
    KEEPALIVED_FAST,
    KUBE_VIP_DEFAULT,
    KUBE_VIP_FAST,
];
/// (settings, vip-agent preset, keepalived preset).
pub const PAIRS: [(&str, &str, &str); 2] = [
    ("default settings", AGENT_DEFAULT, KEEPALIVED_DEFAULT),
    ("fast settings", AGENT_AGGRESSIVE, KEEPALIVED_FAST),
];

/// The CLI preset an implementation equals.
pub fn preset_of(implementation: &Implementation) -> Option<&'static str> {
    [
        (AGENT_DEFAULT, Implementation::agent_defaults()),
        (AGENT_AGGRESSIVE, Implementation::agent_aggressive()),
        (AGENT_FAST_PATH, Implementation::agent_fast_path()),
        (KEEPALIVED_DEFAULT, keepalived_default()),
        (KEEPALIVED_FAST, keepalived_fast()),
        (KUBE_VIP_DEFAULT, Implementation::kube_vip_defaults()),
        (KUBE_VIP_FAST, Implementation::kube_vip_fast()),
    ]
    .into_iter()
    .find(|(_, p)| p == implementation)
    .map(|(name, _)| name)
}

/// keepalived with its default advertisement interval, 1 s.
pub fn keepalived_default() -> Implementation {
    Implementation::Keepalived {
        advert: Duration::from_secs(1),
    }
}

/// keepalived with a 100 ms VRRPv3 advertisement interval.
pub fn keepalived_fast() -> Implementation {
    Implementation::Keepalived {
        advert: Duration::from_millis(100),
    }
}

/// The implementation of a preset name.
pub fn implementation_of_preset(name: &str) -> Option<Implementation> {
    match name {
        AGENT_DEFAULT => Some(Implementation::agent_defaults()),
        AGENT_AGGRESSIVE => Some(Implementation::agent_aggressive()),
        AGENT_FAST_PATH => Some(Implementation::agent_fast_path()),
        KEEPALIVED_DEFAULT => Some(keepalived_default()),
        KEEPALIVED_FAST => Some(keepalived_fast()),
        KUBE_VIP_DEFAULT => Some(Implementation::kube_vip_defaults()),
        KUBE_VIP_FAST => Some(Implementation::kube_vip_fast()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{ImplementationInfo, target};

    #[test]
    fn every_preset_round_trips_and_the_fast_path_has_its_bound() {
        for name in ALL {
            let i = implementation_of_preset(name).expect("a preset");
            assert_eq!(preset_of(&i), Some(name));
        }
        let fast = implementation_of_preset(AGENT_FAST_PATH).expect("fast path");
        assert!(fast.fast_path());
        let info = ImplementationInfo::of(&fast);
        assert_eq!(info.failover_bound, Some(target::FAST_PATH_BOUND));
        assert!(info.timers.ends_with(", fast path"), "{}", info.timers);
    }
}
