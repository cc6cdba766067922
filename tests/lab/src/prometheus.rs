//! A real Prometheus (Debian's `/usr/bin/prometheus`) in a lab namespace:
//! deploy/prometheus/scrape.yaml's job with its targets rewritten to the lab
//! nodes, deploy/prometheus/alerts.yaml with a test-only `for:`, scrape and
//! evaluation every second, its own data directory. Killed and removed on
//! drop (on panic too).
//!
//! The HTTP API is read with a plain HTTP/1.0 GET over a socket opened in
//! the namespace, like the lab's other `/metrics` readers: one request per
//! connection, the body is everything after the headers.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns};
use serde_json::Value;

/// Where Debian's package puts it.
pub const BINARY: &str = "/usr/bin/prometheus";
/// Its HTTP API, on the namespace's loopback.
pub const LISTEN: &str = "127.0.0.1:9090";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("reading {path}: {why}")]
    Deploy { path: PathBuf, why: String },
    #[error("entering the namespace {path}: {source}")]
    Setns { path: PathBuf, source: nix::Error },
    #[error("prometheus not ready within {timeout:?}: {last}\n{log}")]
    NotReady {
        timeout: Duration,
        last: String,
        log: String,
    },
    #[error("query {query:?}: {why}")]
    Query { query: String, why: String },
    #[error("query {query:?}: no result matched within {timeout:?}; last result: {last}")]
    Timeout {
        query: String,
        timeout: Duration,
        last: String,
    },
}

/// One scrape target: a lab node.
#[derive(Clone, Debug)]
pub struct Target {
    /// `host:port` of the agent's /metrics.
    pub address: String,
    /// Its `node` label (as scrape.yaml gives one per target).
    pub node: String,
}

/// One sample of an instant vector.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub labels: serde_json::Map<String, Value>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).and_then(Value::as_str)
    }
}

/// The running Prometheus.
pub struct Prometheus {
    child: Option<Child>,
    dir: PathBuf,
    ns_path: PathBuf,
    addr: SocketAddr,
}

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/prometheus")
}

fn read_yaml(name: &str) -> Result<Value, Error> {
    let path = deploy_dir().join(name);
    let bad = |why: String| Error::Deploy {
        path: path.clone(),
        why,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
    serde_saphyr::from_str(&text).map_err(|e| bad(e.to_string()))
}

/// scrape.yaml's job(s) with `targets` instead of the examples, scraped
/// every `interval`.
pub fn scrape_configs(targets: &[Target], interval: Duration) -> Result<Value, Error> {
    let mut jobs = read_yaml("scrape.yaml")?;
    let list = jobs.as_array_mut().ok_or_else(|| Error::Deploy {
        path: deploy_dir().join("scrape.yaml"),
        why: "not a list of scrape jobs".into(),
    })?;
    for job in list {
        job["scrape_interval"] = format!("{}ms", interval.as_millis()).into();
        job["scrape_timeout"] = format!("{}ms", interval.as_millis() * 9 / 10).into();
        job["static_configs"] = targets
            .iter()
            .map(|t| serde_json::json!({"targets": [t.address], "labels": {"node": t.node}}))
            .collect();
    }
    Ok(jobs)
}

/// alerts.yaml with every `for:` replaced by `for_` (test-only).
pub fn alert_rules(for_: Duration) -> Result<Value, Error> {
    let mut rules = read_yaml("alerts.yaml")?;
    for group in rules["groups"].as_array_mut().into_iter().flatten() {
        for rule in group["rules"].as_array_mut().into_iter().flatten() {
            if rule.get("for").is_some() {
                rule["for"] = format!("{}ms", for_.as_millis()).into();
            }
        }
    }
    Ok(rules)
}

/// Percent-encoding of a query parameter (RFC 3986 unreserved kept).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Prometheus {
    /// Starts Prometheus in the namespace at `ns_path` with the job and the
    /// rules (JSON is YAML), and waits for `/-/ready`.
    pub fn start(
        ns_path: &Path,
        targets: &[Target],
        interval: Duration,
        alert_for: Duration,
        timeout: Duration,
    ) -> Result<Self, Error> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("vip-lab-prometheus-{}-{n}", std::process::id()));
        let io = |what: &str, source| Error::Io {
            what: what.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir.join("data")).map_err(|e| io("temp dir", e))?;
        // From here on, drop removes the directory.
        let mut me = Self {
            child: None,
            dir,
            ns_path: ns_path.to_owned(),
            addr: LISTEN.parse().expect("constant address"),
        };
        let every = format!("{}ms", interval.as_millis());
        let config = serde_json::json!({
            "global": {"scrape_interval": every, "evaluation_interval": every},
            "rule_files": ["alerts.json"],
            "scrape_configs": scrape_configs(targets, interval)?,
        });
        let write = |name: &str, v: &Value| {
            std::fs::write(me.dir.join(name), format!("{v:#}")).map_err(|e| io(name, e))
        };
        write("prometheus.json", &config)?;
        write("alerts.json", &alert_rules(alert_for)?)?;
        let log = std::fs::File::create(me.dir.join("prometheus.log")).map_err(|e| io("log", e))?;
        let child = Command::new("nsenter")
            .arg(format!("--net={}", ns_path.display()))
            .arg("--")
            .arg(BINARY)
            .arg(format!(
                "--config.file={}",
                me.dir.join("prometheus.json").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                me.dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={LISTEN}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| io("spawning prometheus", e))?;
        me.child = Some(child);
        let deadline = Instant::now() + timeout;
        loop {
            let last = match me.get("/-/ready") {
                Ok((200, _)) => return Ok(me),
                Ok((code, body)) => format!("{code} {body}"),
                Err(e) => e.to_string(),
            };
            let exited = me.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() >= deadline {
                return Err(Error::NotReady {
                    timeout,
                    last: format!("{last} (exit: {exited:?})"),
                    log: me.log(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Prometheus' own log (stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// One GET in the namespace: status and body.
    fn get(&self, path_and_query: &str) -> Result<(u16, String), Error> {
        let io = |what: &str, source| Error::Io {
            what: format!("GET {path_and_query}: {what}"),
            source,
        };
        let file = std::fs::File::open(&self.ns_path).map_err(|e| io("namespace", e))?;
        let addr = self.addr;
        let ns_path = self.ns_path.clone();
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|source| Error::Setns {
                        path: ns_path,
                        source,
                    })?;
                    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
                        .map_err(|e| io("connect", e))?;
                    s.set_read_timeout(Some(Duration::from_secs(10)))
                        .map_err(|e| io("timeout", e))?;
                    write!(
                        s,
                        "GET {path_and_query} HTTP/1.0\r\nHost: localhost\r\n\r\n"
                    )
                    .map_err(|e| io("write", e))?;
                    let mut raw = String::new();
                    s.read_to_string(&mut raw).map_err(|e| io("read", e))?;
                    let status = raw
                        .split_whitespace()
                        .nth(1)
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(0);
                    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b);
                    Ok((status, body.to_owned()))
                })
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// `GET /api/v1/<endpoint>?query=...`: the `data` of a successful reply.
    pub fn api(&self, endpoint: &str, query: &str) -> Result<Value, Error> {
        let bad = |why: String| Error::Query {
            query: query.to_owned(),
            why,
        };
        let (code, body) = self.get(&format!("/api/v1/{endpoint}?query={}", encode(query)))?;
        let v: Value =
            serde_json::from_str(&body).map_err(|e| bad(format!("{code}: {e}: {body}")))?;
        if v["status"] != "success" {
            return Err(bad(format!("{code}: {body}")));
        }
        Ok(v["data"].clone())
    }

    /// An instant query's vector.
    pub fn query(&self, query: &str) -> Result<Vec<Sample>, Error> {
        let data = self.api("query", query)?;
        let bad = |why: &str| Error::Query {
            query: query.to_owned(),
            why: format!("{why}: {data}"),
        };
        if data["resultType"] != "vector" {
            return Err(bad("not a vector"));
        }
        data["result"]
            .as_array()
            .ok_or_else(|| bad("no result"))?
            .iter()
            .map(|r| {
                let labels = r["metric"].as_object().cloned().unwrap_or_default();
                let value = r["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| bad("a sample without a value"))?;
                Ok(Sample { labels, value })
            })
            .collect()
    }

    /// Polls `query` until `done` accepts its vector (a deadline, no sleeps
    /// as synchronisation: Prometheus evaluates on its own clock).
    pub fn wait(
        &self,
        query: &str,
        timeout: Duration,
        mut done: impl FnMut(&[Sample]) -> bool,
    ) -> Result<Vec<Sample>, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = self.query(query);
            if let Ok(v) = &last
                && done(v)
            {
                return last;
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    query: query.to_owned(),
                    timeout,
                    last: format!("{last:?}"),
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The temporary directory (config, rules, data, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_promql() {
        assert_eq!(
            encode(r#"sum(up{job="x"}) > 0"#),
            "sum%28up%7Bjob%3D%22x%22%7D%29%20%3E%200"
        );
    }

    #[test]
    fn deploy_files_are_rewritten() {
        let t = [Target {
            address: "10.0.0.1:2112".into(),
            node: "n0".into(),
        }];
        let jobs = scrape_configs(&t, Duration::from_secs(1)).unwrap();
        assert_eq!(jobs[0]["job_name"], "vip-agent");
        assert_eq!(jobs[0]["static_configs"][0]["targets"][0], "10.0.0.1:2112");
        assert_eq!(jobs[0]["scrape_interval"], "1000ms");
        let rules = alert_rules(Duration::from_secs(2)).unwrap();
        let text = rules.to_string();
        assert!(text.contains("VipAgentNoLeader") && text.contains(r#""for":"2000ms""#));
    }
}
