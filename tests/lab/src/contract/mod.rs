//! The Lease contract: one suite of checks of the `coordination.k8s.io/v1`
//! Lease API as vip-agent uses it (create, get, replace with a
//! resourceVersion, list, watch with a resourceVersion and bookmarks, delete)
//! and of its errors, written once against a [`kube::Client`] and run against
//! any server: the embedded one (`vip_lease_server`) and a real
//! kube-apiserver. Each check records what it observed (status codes,
//! reasons, messages, event types, orderings; never raw resourceVersions,
//! uids or times) and what it expected; [`Report::differences`] compares two
//! servers' observations check by check.
//!
//! The suite writes Leases named `contract-*` in the namespace it is given
//! (it must exist); it deletes what it created.

mod checks;
mod watch;

use std::fmt::Debug;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use serde::Serialize;
use serde_json::{Map, Value};

/// One check: its name, what the server did, and which expectations failed.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    /// What was observed, normalised (no resourceVersions, uids or times).
    pub observed: Value,
    /// How many expectations were evaluated.
    pub expectations: usize,
    /// The expectations that failed.
    pub failures: Vec<String>,
}

/// The checks of one run of the suite against one server.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub server: String,
    pub checks: Vec<Check>,
    /// A resourceVersion read before the restart (for [`after_restart`]).
    #[serde(skip)]
    mark: Option<u64>,
}

impl Report {
    /// Every failed expectation, as `server/check: what`.
    pub fn failures(&self) -> Vec<String> {
        self.checks
            .iter()
            .flat_map(|c| {
                c.failures
                    .iter()
                    .map(move |f| format!("{}/{}: {f}", self.server, c.name))
            })
            .collect()
    }

    /// How many expectations were evaluated in all.
    pub fn expectations(&self) -> usize {
        self.checks.iter().map(|c| c.expectations).sum()
    }

    /// Where `self` and `other` observed different things (or ran different
    /// checks), one line per difference.
    pub fn differences(&self, other: &Report) -> Vec<String> {
        let mut out = Vec::new();
        let names = |r: &Report| r.checks.iter().map(|c| c.name).collect::<Vec<_>>();
        if names(self) != names(other) {
            out.push(format!(
                "checks run: {}: {:?}; {}: {:?}",
                self.server,
                names(self),
                other.server,
                names(other)
            ));
        }
        for a in &self.checks {
            let Some(b) = other.checks.iter().find(|b| b.name == a.name) else {
                continue;
            };
            let (Value::Object(oa), Value::Object(ob)) = (&a.observed, &b.observed) else {
                continue;
            };
            let keys: std::collections::BTreeSet<&String> = oa.keys().chain(ob.keys()).collect();
            for k in keys {
                let (va, vb) = (oa.get(k), ob.get(k));
                if va != vb {
                    out.push(format!(
                        "{}.{k}: {} = {}; {} = {}",
                        a.name,
                        self.server,
                        show(va),
                        other.server,
                        show(vb)
                    ));
                }
            }
        }
        out
    }

    /// A readable table of the checks.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{}: {} checks, {} expectations, {} failed\n",
            self.server,
            self.checks.len(),
            self.expectations(),
            self.failures().len()
        );
        for c in &self.checks {
            s.push_str(&format!(
                "  {:<24} {:>2} expectations{}\n",
                c.name,
                c.expectations,
                if c.failures.is_empty() {
                    String::new()
                } else {
                    format!(", FAILED: {}", c.failures.join("; "))
                }
            ));
        }
        s
    }
}

fn show(v: Option<&Value>) -> String {
    v.map_or_else(|| "(absent)".to_owned(), Value::to_string)
}

/// What the suite talks to.
pub(crate) struct Ctx {
    pub client: Client,
    pub api: Api<Lease>,
    pub ns: String,
}

/// Records checks: [`begin`](Self::begin) starts one, the other methods add
/// observations and expectations to the current one.
pub(crate) struct Recorder {
    checks: Vec<Check>,
}

impl Recorder {
    fn new() -> Self {
        Self { checks: Vec::new() }
    }

    fn current(&mut self) -> &mut Check {
        if self.checks.is_empty() {
            self.begin("setup");
        }
        let last = self.checks.len() - 1;
        &mut self.checks[last]
    }

    /// Starts the check `name`.
    pub fn begin(&mut self, name: &'static str) {
        self.checks.push(Check {
            name,
            observed: Value::Object(Map::new()),
            expectations: 0,
            failures: Vec::new(),
        });
    }

    /// Records an observation of the current check.
    pub fn observe(&mut self, key: &str, v: impl Serialize) {
        let v = serde_json::to_value(v).unwrap_or_else(|e| Value::String(e.to_string()));
        if let Value::Object(m) = &mut self.current().observed {
            m.insert(key.to_owned(), v);
        }
    }

    /// An expectation: `ok` must hold.
    pub fn expect(&mut self, ok: bool, what: impl Into<String>) -> bool {
        let c = self.current();
        c.expectations += 1;
        if !ok {
            c.failures.push(what.into());
        }
        ok
    }

    /// An expectation: `got == want`.
    pub fn expect_eq<T: PartialEq + Debug>(&mut self, what: &str, got: T, want: T) -> bool {
        let ok = got == want;
        self.expect(ok, format!("{what}: got {got:?}, want {want:?}"))
    }

    /// A step that must succeed; on error the failure is recorded.
    pub fn ok<T, E: std::fmt::Display>(&mut self, what: &str, r: Result<T, E>) -> Option<T> {
        match r {
            Ok(v) => {
                self.expect(true, what);
                Some(v)
            }
            Err(e) => {
                self.expect(false, format!("{what}: {e}"));
                None
            }
        }
    }

    /// A request that must fail with an API error: records the Status (as
    /// `status`, with `uid`s blanked) and returns it.
    pub fn api_error<T: Debug>(
        &mut self,
        what: &str,
        r: Result<T, kube::Error>,
    ) -> Option<kube::core::Status> {
        match r {
            Err(kube::Error::Api(s)) => {
                self.expect(true, what);
                self.observe("status", status_json(&s));
                Some(*s)
            }
            other => {
                self.expect(false, format!("{what}: want an API error, got {other:?}"));
                None
            }
        }
    }

    /// Expects `status` to have `code` and `reason`.
    pub fn expect_status(&mut self, status: Option<&kube::core::Status>, code: u16, reason: &str) {
        let got = status.map(|s| (s.code, s.reason.as_str()));
        self.expect_eq("code and reason", got, Some((code, reason)));
    }

    fn finish(self, server: &str) -> Report {
        Report {
            server: server.to_owned(),
            checks: self.checks,
            mark: None,
        }
    }
}

/// A Status as JSON, with the parts that differ between any two runs (uids)
/// blanked.
pub(crate) fn status_json(s: &kube::core::Status) -> Value {
    let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
    if let Some(uid) = v.pointer_mut("/details/uid") {
        *uid = Value::String("<uid>".into());
    }
    v
}

/// A resourceVersion as a number (both servers use etcd-style integers;
/// clients must not rely on that, the suite only compares them).
pub(crate) fn rv_of(lease: &Lease) -> u64 {
    lease
        .metadata
        .resource_version
        .as_deref()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// The bound on one request or one awaited watch event.
pub(crate) const STEP: Duration = Duration::from_secs(10);

/// Runs the suite against `client` in namespace `ns` (which must exist);
/// `server` names the server in the report. Takes about 6 s (the bookmark
/// watches wait for their timeouts, alongside the other checks). It ends by
/// reading a resourceVersion and writing once more: then restart the server
/// and call [`after_restart`].
pub async fn run(server: &str, client: Client, ns: &str) -> Report {
    let ctx = ctx(client, ns);
    let mut main = Recorder::new();
    let mut timed = Recorder::new();
    tokio::join!(
        async {
            checks::crud(&ctx, &mut main).await;
            checks::invalid(&ctx, &mut main).await;
            checks::micro_time(&ctx, &mut main).await;
            watch::sequence(&ctx, &mut main).await;
        },
        watch::bookmarks(&ctx, &mut timed),
    );
    main.checks.extend(timed.checks);
    let mark = watch::before_restart(&ctx, &mut main).await;
    let mut report = main.finish(server);
    report.mark = mark;
    report
}

/// The checks after the server restarted (its watch history is gone, its
/// Leases are not): 410 Gone for a watch from before the restart, added to
/// `report`.
pub async fn after_restart(report: &mut Report, client: Client, ns: &str) {
    let ctx = ctx(client, ns);
    let mut r = Recorder::new();
    watch::after_restart(&ctx, &mut r, report.mark).await;
    report.checks.extend(r.checks);
}

fn ctx(client: Client, ns: &str) -> Ctx {
    Ctx {
        api: Api::namespaced(client.clone(), ns),
        client,
        ns: ns.to_owned(),
    }
}
