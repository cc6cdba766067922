//! Faults on one node's control plane processes, for the lab's scenarios:
//! signal a process (SIGSTOP: an API server that hangs; SIGTERM: an API
//! server that drains, its /readyz failing at once while it still serves for
//! `--shutdown-delay-duration`), restart it, wait until it is ready again; and
//! read its metrics (requests per minute, etcd writes).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::args::{APISERVER_PORT, ETCD_METRICS_PORT};
use super::{ControlPlane, Error, readyz};
use crate::netns::NetNs;

/// One of a node's two control plane processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    Etcd,
    ApiServer,
}

impl ControlPlane {
    fn process(&mut self, i: usize, c: Component) -> &mut super::process::Process {
        match c {
            Component::Etcd => &mut self.nodes[i].etcd,
            Component::ApiServer => &mut self.nodes[i].apiserver,
        }
    }

    /// Send `sig` to node `i`'s `c`.
    pub fn signal(&mut self, i: usize, c: Component, sig: Signal) -> Result<(), Error> {
        self.process(i, c).signal(sig)
    }

    /// Wait (bounded) until node `i`'s `c` has exited; whether it did.
    pub fn wait_exit(&mut self, i: usize, c: Component, timeout: Duration) -> bool {
        self.process(i, c).wait_exit(timeout).is_some()
    }

    /// Kill node `i`'s `c` if it still runs and start it again in `ns` (its
    /// namespace) with the same command line. Does not wait for it.
    pub fn restart(&mut self, i: usize, c: Component, ns: &NetNs) -> Result<(), Error> {
        self.process(i, c).restart(ns)
    }

    /// Restarts node `i`'s kube-apiserver (SIGKILL, then the same command
    /// line; `ns` is node `i`'s namespace) and waits until its `/readyz` says
    /// ok again. Its watch cache starts afresh: watches from a
    /// resourceVersion older than the restart get 410 Gone. Returns how long
    /// it took.
    pub fn restart_apiserver(
        &mut self,
        i: usize,
        ns: &NetNs,
        timeout: Duration,
    ) -> Result<Duration, Error> {
        let started = std::time::Instant::now();
        self.restart(i, Component::ApiServer, ns)?;
        self.wait_ready(i, ns, timeout)?;
        Ok(started.elapsed())
    }

    /// Wait until node `i`'s API server says ready on 127.0.0.1:6443 in `ns`.
    pub fn wait_ready(&mut self, i: usize, ns: &NetNs, timeout: Duration) -> Result<(), Error> {
        let client = self.client.clone();
        let p = &mut self.nodes[i];
        readyz::wait_ready(
            ns,
            &client,
            SocketAddr::from((Ipv4Addr::LOCALHOST, APISERVER_PORT)),
            &mut [&mut p.etcd, &mut p.apiserver],
            timeout,
        )?;
        Ok(())
    }

    /// Node `i`'s API server's `/metrics` (Prometheus text), read in `ns`.
    pub fn apiserver_metrics(&self, ns: &NetNs) -> Result<String, Error> {
        let client = self.client.clone();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, APISERVER_PORT));
        match ns.try_run(|| readyz::get(&client, addr, "kubernetes", "/metrics"))? {
            Ok((200, body)) => Ok(body),
            Ok((code, body)) => Err(Error::Tls(format!("/metrics: HTTP {code}: {body}"))),
            Err(e) => Err(Error::Tls(format!("/metrics: {e}"))),
        }
    }

    /// Node `i`'s etcd member's `/metrics` (plain HTTP on 127.0.0.1:2381), read in `ns`.
    pub fn etcd_metrics(&self, ns: &NetNs) -> Result<String, Error> {
        use std::io::{Read as _, Write as _};
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, ETCD_METRICS_PORT));
        let io = |what: &str, source| Error::Io {
            what: format!("etcd /metrics {what}"),
            source,
        };
        ns.try_run(|| {
            let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1))
                .map_err(|e| io("connect", e))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .map_err(|e| io("timeout", e))?;
            s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
                .map_err(|e| io("write", e))?;
            let mut raw = String::new();
            s.read_to_string(&mut raw).map_err(|e| io("read", e))?;
            Ok(raw
                .split_once("\r\n\r\n")
                .map_or(String::new(), |(_, b)| b.to_owned()))
        })?
    }
}

/// The sum of every sample of `metric` whose labels contain all of `labels`
/// (`key="value"` strings) in Prometheus text exposition `text`.
pub fn sum_samples(text: &str, metric: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name_labels, value) = l.rsplit_once(' ')?;
            let (name, rest) = match name_labels.split_once('{') {
                Some((n, r)) => (n, r),
                None => (name_labels, ""),
            };
            (name == metric && labels.iter().all(|want| rest.contains(want)))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::sum_samples;

    #[test]
    fn sums_matching_samples() {
        let text = "# HELP x\n\
            apiserver_request_total{code=\"200\",resource=\"leases\",verb=\"PUT\"} 5\n\
            apiserver_request_total{code=\"409\",resource=\"leases\",verb=\"PUT\"} 2\n\
            apiserver_request_total{code=\"200\",resource=\"pods\",verb=\"GET\"} 7\n\
            etcd_mvcc_put_total 12\n";
        assert_eq!(
            sum_samples(text, "apiserver_request_total", &["resource=\"leases\""]),
            7.0
        );
        assert_eq!(sum_samples(text, "apiserver_request_total", &[]), 14.0);
        assert_eq!(sum_samples(text, "etcd_mvcc_put_total", &[]), 12.0);
        assert_eq!(sum_samples(text, "missing", &[]), 0.0);
    }
}
