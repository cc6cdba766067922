//! kube-vip's environment, read the way kube-vip v1.0.0 reads it
//! (`pkg/kubevip/config_environment.go`), so the `env:` of the static pod
//! `kube-vip manifest pod` prints works with the image and command swapped.
//!
//! [`KUBE_VIP_SETTINGS`] is the one table: every variable kube-vip v1.0.0
//! reads, what the agent does with it, and why. A setting is
//! - honoured: copied onto our variable, converted from kube-vip's units
//!   (the timers are whole SECONDS there); ours win when both are set, and a
//!   flag wins over both;
//! - the same: its value is what the agent does anyway (logged at info);
//! - warned: ignored, and the difference does not matter for the VIP;
//! - refused: behaviour would silently differ in a way that matters (BGP,
//!   Services, no ARP, ...): start-up stops, naming the setting and why.
//!
//! kube-vip treats an empty value as unset; so does this module.

use std::collections::HashMap;
use std::net::IpAddr;

/// What the agent does with one kube-vip setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Same meaning: converted onto our variable.
    Honour(Conv),
    /// A boolean (Go's `strconv.ParseBool`): the agent always behaves as
    /// `agent`; any other value gets `otherwise`.
    Switch { agent: bool, otherwise: Severity },
    /// Any non-empty value gets this.
    Set(Severity),
}

/// What a setting the agent does not copy leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// Means what the agent does anyway: an info line.
    Same,
    /// Ignored; a warning names it.
    Warn,
    /// Start-up stops, naming it.
    Refuse,
}

/// How an honoured value is converted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conv {
    /// Copied as is onto our variable.
    Text(&'static str),
    /// Whole seconds (kube-vip's timers) -> a duration onto our variable.
    Seconds(&'static str),
    /// IP addresses, comma-separated -> `VIP_ADDRESS`.
    Addresses,
    /// `port`: kube-vip's control-plane mode dials `kubernetes:<port>`
    /// (its manifest's host alias: 127.0.0.1) -> `VIP_API_SERVER`.
    ApiPort,
    /// `kubernetes_addr` (`host:port`, wins over `port` as in kube-vip) ->
    /// `VIP_API_SERVER` and, as client-go checks, the host as TLS name.
    ApiAddr,
    /// slog level (kube-vip v1.0.0: -4 debug, 0 info, 4 warn, 8 error) -> `RUST_LOG`.
    LogLevel,
    /// `vip_arpRate`: milliseconds between the leader's gratuitous ARPs
    /// (below 500 kube-vip uses 3000) -> `VIP_ANNOUNCE_REFRESH`.
    ArpRate,
    /// Go listen address (`:2112` = every address) -> `VIP_METRICS_ADDR`.
    ListenAddr,
    /// `vip_subnet`: the VIP's prefix length on the interface; the agent
    /// always uses a host prefix on `lo`: the same for 32/128, a warning otherwise.
    Subnet,
}

/// One row of [`KUBE_VIP_SETTINGS`].
#[derive(Clone, Copy, Debug)]
pub struct Setting {
    pub name: &'static str,
    pub rule: Rule,
    pub why: &'static str,
}

const fn row(name: &'static str, rule: Rule, why: &'static str) -> Setting {
    Setting { name, rule, why }
}
use Conv::*;
use Rule::{Honour, Set, Switch};
use Severity::{Refuse, Same, Warn};

const SERVICES: &str =
    "a Services (type LoadBalancer) setting; the agent serves only the control-plane VIP";
const BGP: &str =
    "a BGP setting; the agent announces the VIP by ARP/NS only (bgp_enable=true is refused)";
const TABLE: &str = "a routing-table mode setting (vip_routingtable=true is refused)";

/// Every variable kube-vip v1.0.0 reads (`pkg/kubevip/config_envvar.go`).
/// Order matters where two set the same thing: the first one set wins
/// (`address` over `vip_address`, `kubernetes_addr` over `port`, as in kube-vip).
#[rustfmt::skip]
pub const KUBE_VIP_SETTINGS: &[Setting] = &[
    row("vip_interface", Honour(Text("VIP_INTERFACE")), "the interface that carries the VIP"),
    row("address", Honour(Addresses), "the VIP; kube-vip also takes a DNS name, the agent needs IP addresses"),
    row("vip_address", Honour(Addresses), "the VIP (kube-vip's deprecated name; `address` wins)"),
    row("kubernetes_addr", Honour(ApiAddr), "the local API server's host:port"),
    row("port", Honour(ApiPort), "the API server port kube-vip's control-plane mode dials on kubernetes (127.0.0.1)"),
    row("vip_nodename", Honour(Text("VIP_NODE_NAME")), "this node's identity in the Lease"),
    row("vip_leasename", Honour(Text("VIP_LEASE_NAME")), "the control-plane Lease (kube-vip's is plndr-cp-lock)"),
    row("cp_namespace", Honour(Text("VIP_LEASE_NAMESPACE")), "the Lease's namespace"),
    row("vip_leaseduration", Honour(Seconds("VIP_LEASE_DURATION")), "Lease duration, whole seconds in kube-vip"),
    row("vip_renewdeadline", Honour(Seconds("VIP_RENEW_DEADLINE")), "renew deadline, whole seconds in kube-vip"),
    row("vip_retryperiod", Honour(Seconds("VIP_RETRY_PERIOD")), "retry period, whole seconds in kube-vip"),
    row("vip_loglevel", Honour(LogLevel), "log verbosity (slog levels in kube-vip v1.0.0; RUST_LOG wins)"),
    row("vip_arpRate", Honour(ArpRate), "milliseconds between the leader's gratuitous ARPs: our --announce-refresh"),
    row("prometheus_server", Honour(ListenAddr), "where /metrics is served (the metric names are the agent's own)"),
    row("vip_subnet", Honour(Subnet), "the VIP's prefix length"),
    row("vip_arp", Switch { agent: true, otherwise: Refuse }, "the agent always announces by ARP/NS; without it kube-vip would use another mode or none"),
    row("cp_enable", Switch { agent: true, otherwise: Refuse }, "the agent is a control-plane VIP; kube-vip with cp_enable=false serves none"),
    row("vip_leaderelection", Switch { agent: true, otherwise: Warn }, "kube-vip v1.0.0 elects a control-plane leader in ARP mode whatever this says (cluster.StartCluster); so does the agent (--no-election is the way to run without)"),
    row("cp_detect", Set(Same), "the agent always talks to the local API server (--api-server, TLS name kubernetes)"),
    row("dns_mode", Set(Same), "how kube-vip resolves a DNS name in `address`; the agent takes IP addresses only"),
    row("bgp_enable", Switch { agent: false, otherwise: Refuse }, "the agent does not speak BGP: the VIP would not be routed to"),
    row("svc_enable", Switch { agent: false, otherwise: Refuse }, "the agent does not serve Services of type LoadBalancer: they would get no address"),
    row("vip_wireguard", Switch { agent: false, otherwise: Refuse }, "the agent has no wireguard mode"),
    row("vip_routingtable", Switch { agent: false, otherwise: Refuse }, "the agent has no routing-table mode: no routes would be written"),
    row("vip_ddns", Switch { agent: false, otherwise: Refuse }, "the agent needs a fixed VIP; it does not take one from DHCP"),
    row("lb_enable", Switch { agent: false, otherwise: Warn }, "no IPVS: connections to the VIP reach the leader's API server only (they still work when lb_port is the API server's port)"),
    row("lb_port", Set(Warn), "the IPVS port (lb_enable); no IPVS in the agent"),
    row("lb_fwdmethod", Set(Warn), "the IPVS forwarding method (lb_enable); no IPVS in the agent"),
    row("enable_node_labeling", Switch { agent: false, otherwise: Warn }, "the agent does not label the leader's Node (use vip_agent_leader from /metrics)"),
    row("vip_leaseannotations", Set(Warn), "the agent sets no annotations on its Lease"),
    row("vip_interfaceloglobal", Set(Warn), "the agent puts the VIP on lo its own way (a host prefix, never a source address)"),
    row("vip_servicesinterface", Set(Warn), SERVICES),
    row("vip_singlenode", Set(Warn), "no effect in kube-vip v1.0.0 either"),
    row("vip_startleader", Set(Warn), "no effect in kube-vip v1.0.0 either"),
    row("k8s_config_file", Set(Warn), "kube-vip v1.0.0's manager reads /etc/kubernetes/admin.conf whatever this says (its manifest mounts the host file there); the agent reads --kubeconfig, default the same path"),
    row("health_check_port", Set(Warn), "the agent serves /healthz and /readyz on --metrics-addr"),
    row("annotation", Set(Warn), BGP),
    row("bgp_routerid", Set(Warn), BGP),
    row("bgp_routerinterface", Set(Warn), BGP),
    row("bgp_as", Set(Warn), BGP),
    row("bgp_peeraddress", Set(Warn), BGP),
    row("bgp_peers", Set(Warn), BGP),
    row("bgp_peeras", Set(Warn), BGP),
    row("bgp_peerpass", Set(Warn), BGP),
    row("bgp_multihop", Set(Warn), BGP),
    row("bgp_sourceif", Set(Warn), BGP),
    row("bgp_sourceip", Set(Warn), BGP),
    row("bgp_hold_time", Set(Warn), BGP),
    row("bgp_keepalive_interval", Set(Warn), BGP),
    row("zebra_enable", Set(Warn), BGP),
    row("zebra_url", Set(Warn), BGP),
    row("zebra_version", Set(Warn), BGP),
    row("zebra_software_name", Set(Warn), BGP),
    row("mpbgp_nexthop", Set(Warn), BGP),
    row("mpbgp_ipv4", Set(Warn), BGP),
    row("mpbgp_ipv6", Set(Warn), BGP),
    row("vip_routingtableid", Set(Warn), TABLE),
    row("vip_routingtabletype", Set(Warn), TABLE),
    row("vip_routingprotocol", Set(Warn), TABLE),
    row("vip_cleanroutingtable", Set(Warn), TABLE),
    row("svc_namespace", Set(Warn), SERVICES),
    row("svc_election", Set(Warn), SERVICES),
    row("svc_leasename", Set(Warn), SERVICES),
    row("lb_class_only", Set(Warn), SERVICES),
    row("lb_class_name", Set(Warn), SERVICES),
    row("lb_class_legacy_handling", Set(Warn), SERVICES),
    row("enable_service_security", Set(Warn), SERVICES),
    row("disable_service_updates", Set(Warn), SERVICES),
    row("enable_endpoints", Set(Warn), SERVICES),
    row("mirror_dest_interface", Set(Warn), SERVICES),
    row("iptables_backend", Set(Warn), SERVICES),
    row("backend_health_check_interval", Set(Warn), SERVICES),
    row("enable_upnp", Set(Warn), SERVICES),
    row("egress_podcidr", Set(Warn), SERVICES),
    row("egress_servicecidr", Set(Warn), SERVICES),
    row("egress_withnftables", Set(Warn), SERVICES),
    row("egress_clean", Set(Warn), SERVICES),
];

/// A bad value or a refused setting; all of them, one per line.
#[derive(Debug, thiserror::Error)]
#[error("the kube-vip environment cannot be used as is:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct KubeVipError(pub Vec<String>);

/// How a note is logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
}

/// One line for the start-up log about one kube-vip setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub level: Level,
    pub name: &'static str,
    pub text: String,
}

/// What the environment asks for: our variables to set, and the notes.
#[derive(Debug, Default)]
pub struct Import {
    pub set: Vec<(&'static str, String)>,
    pub notes: Vec<Note>,
}

impl Import {
    /// Logs the notes (after logging is set up).
    pub fn log(&self) {
        for n in &self.notes {
            match n.level {
                Level::Info => {
                    tracing::info!(kube_vip_setting = n.name, "kube-vip setting: {}", n.text)
                }
                Level::Warn => {
                    tracing::warn!(kube_vip_setting = n.name, "kube-vip setting: {}", n.text)
                }
            }
        }
    }

    /// The notes on stderr, for commands that do not log (`manifest`,
    /// `run --check-config`); info notes only when `all`.
    pub fn eprint(&self, all: bool) {
        for n in &self.notes {
            match n.level {
                Level::Warn => eprintln!("warning: kube-vip setting: {}", n.text),
                Level::Info if all => eprintln!("note: kube-vip setting: {}", n.text),
                Level::Info => {}
            }
        }
    }
}

/// Reads the kube-vip settings from the process environment and sets our
/// variables, before clap parses. Must run at the very start of `main`,
/// before any thread exists (it calls `set_var`).
pub fn import_env() -> Result<Import, KubeVipError> {
    let import = plan(|k| std::env::var(k).ok())?;
    for (ours, value) in &import.set {
        // SAFETY: called at the very start of main, before any thread
        // (tokio runtime included) exists; nothing reads the environment
        // concurrently.
        unsafe { std::env::set_var(ours, value) };
    }
    Ok(import)
}

/// The pure part of [`import_env`]: `env` looks a variable up.
pub fn plan(env: impl Fn(&str) -> Option<String>) -> Result<Import, KubeVipError> {
    let get = |k: &str| env(k).filter(|v| !v.is_empty());
    let mut set = Vec::new();
    let mut notes = Vec::new();
    let mut problems = Vec::new();
    // Our variables set by an earlier kube-vip row (the first one wins).
    let mut taken: HashMap<&'static str, &'static str> = HashMap::new();
    for s in KUBE_VIP_SETTINGS {
        let Some(value) = get(s.name) else { continue };
        let shown = format!("{}={value}", s.name);
        let mut note = |level, text: String| {
            notes.push(Note {
                level,
                name: s.name,
                text,
            })
        };
        let outcome = match s.rule {
            Rule::Honour(conv) => match convert(conv, &value) {
                Err(fix) => Err(format!("{shown}: {fix}")),
                Ok(c) => {
                    if let Some(w) = &c.warning {
                        note(Level::Warn, format!("{shown}: {w}"));
                    } else if c.set.is_empty() {
                        note(Level::Info, format!("{shown}: what the agent does"));
                    }
                    for (ours, v) in c.set {
                        if let Some(first) = taken.get(ours) {
                            note(
                                Level::Warn,
                                format!("{shown} ignored: {first} is set too and wins"),
                            );
                        } else if get(ours).is_some() {
                            note(
                                Level::Info,
                                format!("{shown} ignored: {ours} is set and wins"),
                            );
                        } else {
                            note(
                                Level::Info,
                                format!("{shown} honoured as {ours}={v} ({})", s.why),
                            );
                            taken.insert(ours, s.name);
                            set.push((ours, v));
                        }
                    }
                    Ok(())
                }
            },
            Rule::Switch { agent, otherwise } => match parse_go_bool(&value) {
                None => Err(format!(
                    "{shown}: not a boolean; fix: true or false (kube-vip also reads 1/0, t/f)"
                )),
                Some(v) if v == agent => {
                    note(Level::Info, format!("{shown}: what the agent does"));
                    Ok(())
                }
                Some(_) => severity(otherwise, &shown, s.why, &mut note),
            },
            Rule::Set(sev) => severity(sev, &shown, s.why, &mut note),
        };
        if let Err(p) = outcome {
            problems.push(p);
        }
    }
    if problems.is_empty() {
        Ok(Import { set, notes })
    } else {
        Err(KubeVipError(problems))
    }
}

fn severity(
    sev: Severity,
    shown: &str,
    why: &str,
    note: &mut impl FnMut(Level, String),
) -> Result<(), String> {
    match sev {
        Severity::Refuse => return Err(format!("{shown} is refused: {why}")),
        Severity::Warn => note(Level::Warn, format!("{shown} ignored: {why}")),
        Severity::Same => note(Level::Info, format!("{shown}: {why}")),
    }
    Ok(())
}

struct Converted {
    set: Vec<(&'static str, String)>,
    warning: Option<String>,
}

fn to(ours: &'static str, v: String) -> Converted {
    Converted {
        set: vec![(ours, v)],
        warning: None,
    }
}

/// Go's `strconv.ParseBool`.
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// An `Err` is the fix, shown after the variable.
fn convert(conv: Conv, v: &str) -> Result<Converted, String> {
    Ok(match conv {
        Conv::Text(ours) => to(ours, v.to_owned()),
        Conv::Seconds(ours) => {
            let n: u32 = v.parse().map_err(|_| {
                "kube-vip reads a whole number of seconds; fix: write it like 5 (or set our \
                 variable with a unit, e.g. VIP_LEASE_DURATION=5s)"
                    .to_owned()
            })?;
            to(ours, format!("{n}s"))
        }
        Conv::Addresses => {
            for a in v.split(',') {
                a.trim().parse::<IpAddr>().map_err(|_| {
                    format!(
                        "{a:?} is not an IP address (kube-vip resolves DNS names, the agent does \
                         not); fix: give the VIP as an IP address"
                    )
                })?;
            }
            to("VIP_ADDRESS", v.to_owned())
        }
        Conv::ApiPort => {
            let p: u16 = v
                .parse()
                .ok()
                .filter(|p| *p != 0)
                .ok_or("not a TCP port; fix: the API server's port, e.g. 6443")?;
            to("VIP_API_SERVER", format!("https://127.0.0.1:{p}"))
        }
        Conv::ApiAddr => {
            let url = if v.contains("://") {
                v.to_owned()
            } else {
                format!("https://{v}")
            };
            let uri: http::Uri = url
                .parse()
                .map_err(|_| "not host:port; fix: e.g. 10.0.0.5:6443".to_owned())?;
            let host = uri
                .host()
                .ok_or("no host; fix: e.g. 10.0.0.5:6443")?
                .trim_matches(['[', ']'])
                .to_owned();
            Converted {
                set: vec![("VIP_API_SERVER", url), ("VIP_API_SERVER_TLS_NAME", host)],
                warning: None,
            }
        }
        Conv::LogLevel => {
            let l: i32 = v
                .parse()
                .map_err(|_| "not an integer; fix: -4 debug, 0 info, 4 warn, 8 error".to_owned())?;
            to("RUST_LOG", slog_level_filter(l).to_owned())
        }
        Conv::ArpRate => {
            let ms: i32 = v
                .parse()
                .map_err(|_| "not a whole number of milliseconds; fix: e.g. 3000".to_owned())?;
            if ms < 500 {
                Converted {
                    set: vec![("VIP_ANNOUNCE_REFRESH", "3000ms".to_owned())],
                    warning: Some("below 500 ms: 3000 ms used, as kube-vip does".to_owned()),
                }
            } else {
                to("VIP_ANNOUNCE_REFRESH", format!("{ms}ms"))
            }
        }
        Conv::ListenAddr => {
            let a = if v.starts_with(':') {
                format!("0.0.0.0{v}")
            } else {
                v.to_owned()
            };
            to("VIP_METRICS_ADDR", a)
        }
        Conv::Subnet => {
            let host = v
                .split(',')
                .all(|p| matches!(p.trim().trim_start_matches('/'), "32" | "128"));
            Converted {
                set: vec![],
                warning: (!host).then(|| {
                    "ignored: the agent always puts the VIP on lo with a host prefix (/32, /128)"
                        .to_owned()
                }),
            }
        }
    })
}

/// kube-vip v1.0.0 shows records at slog level >= `l` (debug -4, info 0,
/// warn 4, error 8); the same cut as an `EnvFilter`.
pub fn slog_level_filter(l: i32) -> &'static str {
    match l {
        i32::MIN..=-4 => "debug",
        -3..=0 => "info",
        1..=4 => "warn",
        5..=8 => "error",
        _ => "off",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_of(vars: &[(&str, &str)]) -> Result<Import, KubeVipError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        plan(|k| map.get(k).cloned())
    }

    fn set_of(i: &Import) -> HashMap<&'static str, String> {
        i.set.iter().cloned().collect()
    }

    /// The names kube-vip v1.0.0 reads (pkg/kubevip/config_envvar.go, every
    /// constant): the table covers each exactly once.
    #[rustfmt::skip]
    const KUBE_VIP_V1_0_0_NAMES: &[&str] = &[
        "vip_arp", "vip_arpRate", "vip_leaderelection", "vip_leasename", "vip_leaseduration",
        "vip_renewdeadline", "vip_retryperiod", "vip_leaseannotations", "vip_loglevel",
        "vip_interface", "vip_interfaceloglobal", "vip_servicesinterface", "vip_subnet",
        "egress_podcidr", "egress_servicecidr", "egress_withnftables", "vip_address", "address",
        "port", "annotation", "vip_ddns", "vip_nodename", "vip_singlenode", "vip_startleader",
        "bgp_enable", "bgp_routerid", "bgp_routerinterface", "bgp_as", "bgp_peeraddress",
        "bgp_peers", "bgp_peeras", "bgp_peerpass", "bgp_multihop", "bgp_sourceif",
        "bgp_sourceip", "bgp_hold_time", "bgp_keepalive_interval", "zebra_enable", "zebra_url",
        "zebra_version", "zebra_software_name", "mpbgp_nexthop", "mpbgp_ipv4", "mpbgp_ipv6",
        "vip_wireguard", "vip_routingtable", "vip_routingtableid", "vip_routingtabletype",
        "vip_routingprotocol", "vip_cleanroutingtable", "cp_namespace", "cp_enable",
        "cp_detect", "kubernetes_addr", "svc_enable", "svc_namespace", "svc_election",
        "svc_leasename", "lb_class_only", "lb_class_name", "lb_class_legacy_handling",
        "lb_enable", "lb_port", "lb_fwdmethod", "enable_service_security",
        "enable_node_labeling", "prometheus_server", "k8s_config_file", "dns_mode",
        "disable_service_updates", "enable_endpoints", "mirror_dest_interface",
        "iptables_backend", "backend_health_check_interval", "health_check_port", "enable_upnp",
        "egress_clean",
    ];

    #[test]
    fn the_table_covers_every_kube_vip_name_once() {
        let mut names: Vec<&str> = KUBE_VIP_SETTINGS.iter().map(|s| s.name).collect();
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "a name is in the table twice");
        let mut want = KUBE_VIP_V1_0_0_NAMES.to_vec();
        want.sort();
        assert_eq!(names, want);
        for s in KUBE_VIP_SETTINGS {
            assert!(!s.why.is_empty(), "{} has no reason", s.name);
        }
    }

    #[test]
    fn timers_are_whole_seconds() {
        let i = plan_of(&[
            ("vip_leaseduration", "5"),
            ("vip_renewdeadline", "3"),
            ("vip_retryperiod", "1"),
        ])
        .unwrap();
        let set = set_of(&i);
        assert_eq!(set["VIP_LEASE_DURATION"], "5s");
        assert_eq!(set["VIP_RENEW_DEADLINE"], "3s");
        assert_eq!(set["VIP_RETRY_PERIOD"], "1s");
        assert!(
            i.notes.iter().all(|n| n.level == Level::Info),
            "{:?}",
            i.notes
        );
    }

    #[test]
    fn bad_values_name_the_variable_and_the_fix() {
        for (k, v, fix) in [
            ("vip_leaseduration", "abc", "whole number of seconds"),
            ("vip_renewdeadline", "2.5", "whole number of seconds"),
            ("vip_retryperiod", "-1", "whole number of seconds"),
            ("address", "cp.example.com", "IP address"),
            ("port", "0", "port"),
            ("vip_arp", "yes", "true or false"),
            ("vip_loglevel", "debug", "-4 debug"),
        ] {
            let e = plan_of(&[(k, v)]).unwrap_err().to_string();
            assert!(e.contains(&format!("{k}={v}")) && e.contains(fix), "{e}");
        }
    }

    #[test]
    fn what_would_silently_differ_is_refused_each_named() {
        let e = plan_of(&[
            ("bgp_enable", "true"),
            ("svc_enable", "true"),
            ("vip_arp", "false"),
            ("cp_enable", "false"),
            ("vip_wireguard", "true"),
            ("vip_routingtable", "1"),
            ("vip_ddns", "true"),
        ])
        .unwrap_err();
        assert_eq!(e.0.len(), 7, "{e}");
        for k in [
            "bgp_enable",
            "svc_enable",
            "vip_arp",
            "cp_enable",
            "vip_wireguard",
        ] {
            assert!(e.to_string().contains(k), "{e}");
        }
        // The same switches at the agent's own values are fine.
        let i = plan_of(&[
            ("bgp_enable", "false"),
            ("svc_enable", "false"),
            ("vip_arp", "true"),
            ("cp_enable", "true"),
            ("vip_leaderelection", "true"),
        ])
        .unwrap();
        assert!(i.set.is_empty());
        assert!(i.notes.iter().all(|n| n.level == Level::Info));
    }

    #[test]
    fn what_does_not_matter_is_warned() {
        let i = plan_of(&[
            ("vip_leaderelection", "false"),
            ("lb_enable", "true"),
            ("lb_port", "6443"),
            ("svc_leasename", "plndr-svcs-lock"),
            ("k8s_config_file", "/etc/kubernetes/super-admin.conf"),
            ("vip_subnet", "24"),
            ("bgp_as", "65000"),
        ])
        .unwrap();
        let warned: Vec<_> = i
            .notes
            .iter()
            .filter(|n| n.level == Level::Warn)
            .map(|n| n.name)
            .collect();
        assert_eq!(warned.len(), 7, "{:?}", i.notes);
        assert!(i.set.is_empty());
        assert!(plan_of(&[("vip_subnet", "32,128")]).unwrap().notes[0].level == Level::Info);
    }

    #[test]
    fn first_name_wins_and_ours_win() {
        let i = plan_of(&[("address", "192.0.2.10"), ("vip_address", "192.0.2.99")]).unwrap();
        assert_eq!(set_of(&i)["VIP_ADDRESS"], "192.0.2.10");
        assert!(
            i.notes
                .iter()
                .any(|n| n.name == "vip_address" && n.level == Level::Warn)
        );
        let i = plan_of(&[("vip_leaseduration", "5"), ("VIP_LEASE_DURATION", "4s")]).unwrap();
        assert!(i.set.is_empty(), "{:?}", i.set);
        let i = plan_of(&[("kubernetes_addr", "10.0.0.5:6443"), ("port", "7443")]).unwrap();
        let set = set_of(&i);
        assert_eq!(set["VIP_API_SERVER"], "https://10.0.0.5:6443");
        assert_eq!(set["VIP_API_SERVER_TLS_NAME"], "10.0.0.5");
        let i = plan_of(&[("port", "7443"), ("vip_leasename", ""), ("address", "")]).unwrap();
        assert_eq!(
            i.set,
            vec![("VIP_API_SERVER", "https://127.0.0.1:7443".to_owned())]
        );
    }

    #[test]
    fn units_of_the_other_honoured_settings() {
        let set = set_of(
            &plan_of(&[
                ("prometheus_server", ":2112"),
                ("vip_arpRate", "1500"),
                ("vip_loglevel", "-4"),
                ("vip_interface", "eth1"),
                ("vip_nodename", "cp1"),
                ("vip_leasename", "plndr-cp-lock"),
                ("cp_namespace", "kube-system"),
            ])
            .unwrap(),
        );
        assert_eq!(set["VIP_METRICS_ADDR"], "0.0.0.0:2112");
        assert_eq!(set["VIP_ANNOUNCE_REFRESH"], "1500ms");
        assert_eq!(set["RUST_LOG"], "debug");
        assert_eq!(set["VIP_INTERFACE"], "eth1");
        assert_eq!(set["VIP_NODE_NAME"], "cp1");
        assert_eq!(set["VIP_LEASE_NAME"], "plndr-cp-lock");
        assert_eq!(set["VIP_LEASE_NAMESPACE"], "kube-system");
        let i = plan_of(&[("vip_arpRate", "100")]).unwrap();
        assert_eq!(set_of(&i)["VIP_ANNOUNCE_REFRESH"], "3000ms");
        assert_eq!(i.notes[0].level, Level::Warn);
        assert_eq!(slog_level_filter(0), "info");
        assert_eq!(slog_level_filter(4), "warn");
        assert_eq!(slog_level_filter(5), "error");
        assert_eq!(slog_level_filter(9), "off");
    }
}
