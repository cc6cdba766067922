//! Health gate for the election: an unhealthy node never acquires the Lease,
//! and a leader that turns unhealthy steps down (`fence.follow()`, release).
//!
//! Disabled by default: without `--health-check` the gate is always healthy.
//! With it, a task GETs `--health-path` (default `/readyz`) on the API server
//! through the same `kube::Client` (same URL override, TLS and credentials)
//! every `--health-interval` (default 1 s), with a timeout of the interval.
//! It marks the node unhealthy after `--health-failures` (default 3)
//! consecutive failures (error, timeout or non-2xx), and healthy again after
//! one success. Only a path is used: kube's client joins it to the API server
//! URL, so a full URL given here would still be sent to that server.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use vip_common::events;

pub const DEFAULT_HEALTH_PATH: &str = "/readyz";
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_HEALTH_FAILURES: u32 = 3;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthConfig {
    /// `--health-check`: off by default (always healthy).
    pub enabled: bool,
    /// `--health-path`
    pub path: String,
    /// `--health-interval`
    pub interval: Duration,
    /// `--health-failures`
    pub failures: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            path: DEFAULT_HEALTH_PATH.to_owned(),
            interval: DEFAULT_HEALTH_INTERVAL,
            failures: DEFAULT_HEALTH_FAILURES,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HealthConfigError {
    #[error("--health-interval must be greater than zero")]
    ZeroInterval,
    #[error("--health-failures must be at least 1")]
    ZeroFailures,
    #[error("--health-path {0:?} must be a path starting with '/' (e.g. /readyz)")]
    BadPath(String),
}

impl HealthConfig {
    pub fn validate(&self) -> Result<(), HealthConfigError> {
        if self.interval.is_zero() {
            return Err(HealthConfigError::ZeroInterval);
        }
        if self.failures == 0 {
            return Err(HealthConfigError::ZeroFailures);
        }
        if !self.path.starts_with('/') || self.path.parse::<http::Uri>().is_err() {
            return Err(HealthConfigError::BadPath(self.path.clone()));
        }
        Ok(())
    }
}

/// One health probe.
pub trait Probe: Send + Sync {
    fn probe(&self) -> impl Future<Output = Result<(), String>> + Send;
}

/// GET a path on the API server through a `kube::Client`.
pub struct KubeProbe {
    pub client: kube::Client,
    pub path: String,
}

impl Probe for KubeProbe {
    async fn probe(&self) -> Result<(), String> {
        let req = http::Request::get(self.path.as_str())
            .body(Vec::new())
            .map_err(|e| e.to_string())?;
        // request_text fails on non-2xx statuses.
        self.client
            .request_text(req)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

/// Run probes every `cfg.interval` until `shutdown`, publishing the gate on
/// `tx`. When `cfg.enabled` is false, publishes `true` once and waits.
pub async fn run_checker<P: Probe>(
    probe: &P,
    cfg: &HealthConfig,
    tx: watch::Sender<bool>,
    shutdown: CancellationToken,
) {
    if !cfg.enabled {
        tx.send_replace(true);
        shutdown.cancelled().await;
        return;
    }
    let mut failures = 0u32;
    let mut ticker = tokio::time::interval(cfg.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let result = tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            r = tokio::time::timeout(cfg.interval, probe.probe()) => {
                r.unwrap_or_else(|_| Err("health probe timed out".to_owned()))
            }
        };
        match result {
            Ok(()) => {
                failures = 0;
                if !*tx.borrow() {
                    info!(path = %cfg.path, event = events::HEALTH_PASSING, "health check passing again: node is healthy");
                }
                tx.send_if_modified(|h| !std::mem::replace(h, true));
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                debug!(path = %cfg.path, failures, error = %e, "health probe failed");
                if failures >= cfg.failures && *tx.borrow() {
                    warn!(path = %cfg.path, failures, error = %e, event = events::HEALTH_FAILING, "health check failing: node is unhealthy");
                    tx.send_replace(false);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::Mutex;

    struct Scripted(Mutex<VecDeque<bool>>);

    impl Probe for Scripted {
        async fn probe(&self) -> Result<(), String> {
            match self.0.lock().expect("lock").pop_front() {
                Some(true) | None => Ok(()),
                Some(false) => Err("down".into()),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn failures_then_recovery() {
        let probe = Scripted(Mutex::new(
            [true, false, false, true, false, false, false, false, true]
                .into_iter()
                .collect(),
        ));
        let cfg = HealthConfig {
            enabled: true,
            ..HealthConfig::default()
        };
        let (tx, mut rx) = watch::channel(true);
        let stop = CancellationToken::new();
        let start = tokio::time::Instant::now();
        let task = async {
            run_checker(&probe, &cfg, tx, stop.clone()).await;
        };
        let observe = async {
            let mut seen = Vec::new();
            while seen.len() < 2 {
                rx.changed().await.expect("sender alive");
                seen.push((*rx.borrow_and_update(), start.elapsed()));
            }
            stop.cancel();
            seen
        };
        let ((), seen) = tokio::join!(task, observe);
        // Probes at t=0,1,2,...: two failures (t=1,2) are not enough; the
        // third consecutive failure (t=6) flips; one success (t=8) recovers.
        assert_eq!(
            seen,
            vec![
                (false, Duration::from_secs(6)),
                (true, Duration::from_secs(8))
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn disabled_is_always_healthy() {
        let probe = Scripted(Mutex::new([false; 10].into_iter().collect()));
        let (tx, rx) = watch::channel(false);
        let stop = CancellationToken::new();
        stop.cancel();
        run_checker(&probe, &HealthConfig::default(), tx, stop).await;
        assert!(*rx.borrow());
    }

    #[test]
    fn validate_rejects_bad_values() {
        let mut c = HealthConfig::default();
        assert!(c.validate().is_ok());
        c.path = "readyz".into();
        assert!(c.validate().is_err());
        c.path = "/readyz".into();
        c.failures = 0;
        assert_eq!(c.validate(), Err(HealthConfigError::ZeroFailures));
    }
}
