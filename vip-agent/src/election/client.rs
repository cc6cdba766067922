//! Building the `kube::Client` the election (and the health checker) use.
//!
//! The agent talks to the LOCAL API server by default (`https://127.0.0.1:6443`)
//! so that it works during `kubeadm init`, before the VIP exists. The
//! kubeconfig (default `/etc/kubernetes/admin.conf`) supplies credentials and
//! the CA; when the URL is overridden the TLS server name is set to
//! `kubernetes` (a SAN of every kubeadm API server certificate) unless the
//! kubeconfig names one. An empty `--api-server` uses the kubeconfig's server.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use kube::config::{KubeConfigOptions, Kubeconfig};

pub const DEFAULT_KUBECONFIG: &str = "/etc/kubernetes/admin.conf";
/// kubeadm >= 1.29 writes it on the `kubeadm init` node only (group
/// `system:masters`); the election uses it while `--kubeconfig` is forbidden
/// (see `credentials.rs`).
pub const DEFAULT_SUPER_ADMIN_KUBECONFIG: &str = "/etc/kubernetes/super-admin.conf";
pub const DEFAULT_API_SERVER: &str = "https://127.0.0.1:6443";
pub const DEFAULT_TLS_SERVER_NAME: &str = "kubernetes";

#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// `--kubeconfig`
    pub kubeconfig: PathBuf,
    /// `--api-server`; `None` or empty: the kubeconfig's server as is.
    pub api_server: Option<String>,
    /// TLS server name used with an overridden URL (default `kubernetes`).
    pub tls_server_name: String,
    /// Written into the User-Agent (`vip-agent/<version> identity/<identity>`).
    pub identity: String,
    /// TCP/TLS connect timeout. Per-request timeouts are applied by the
    /// election itself (see `ElectionConfig::request_timeout`); no read
    /// timeout is set here because watches are long-lived.
    pub connect_timeout: Duration,
}

impl ClientOptions {
    pub fn new(identity: impl Into<String>) -> Self {
        Self {
            kubeconfig: PathBuf::from(DEFAULT_KUBECONFIG),
            api_server: Some(DEFAULT_API_SERVER.to_owned()),
            tls_server_name: DEFAULT_TLS_SERVER_NAME.to_owned(),
            identity: identity.into(),
            connect_timeout: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot read kubeconfig {path}: {source}. Fix: pass --kubeconfig with a readable file \
         (kubeadm writes /etc/kubernetes/admin.conf, readable by root only; mount it into the \
         static pod and run the agent as root)"
    )]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "kubeconfig {path} is not usable: {source}. Fix: check its current-context, cluster and user entries"
    )]
    Invalid {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("--api-server {url:?} is not a valid URL: {source}")]
    BadUrl {
        url: String,
        #[source]
        source: http::uri::InvalidUri,
    },
    #[error("identity {identity:?} cannot be used in the User-Agent header")]
    BadIdentity { identity: String },
    #[error("building the Kubernetes client failed: {0}")]
    Build(#[source] kube::Error),
}

/// The User-Agent the agent sends (the lab's Lease server identifies clients by it).
pub fn user_agent(identity: &str) -> String {
    format!(
        "vip-agent/{} identity/{identity}",
        env!("CARGO_PKG_VERSION")
    )
}

/// Load the kubeconfig and build the `kube::Config`.
pub async fn build_config(opts: &ClientOptions) -> Result<kube::Config, ClientError> {
    let path: &Path = &opts.kubeconfig;
    // Read it ourselves first so that the error names the file and the cause.
    let text = std::fs::read_to_string(path).map_err(|source| ClientError::Unreadable {
        path: path.to_owned(),
        source,
    })?;
    let invalid = |source| ClientError::Invalid {
        path: path.to_owned(),
        source,
    };
    let kc = Kubeconfig::from_yaml(&text).map_err(invalid)?;
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(invalid)?;
    if let Some(url) = opts.api_server.as_deref().filter(|u| !u.is_empty()) {
        cfg.cluster_url = url.parse().map_err(|source| ClientError::BadUrl {
            url: url.to_owned(),
            source,
        })?;
        if cfg.tls_server_name.is_none() && !opts.tls_server_name.is_empty() {
            cfg.tls_server_name = Some(opts.tls_server_name.clone());
        }
    }
    cfg.connect_timeout = Some(opts.connect_timeout);
    cfg.read_timeout = None;
    // The election retries on its own schedule; kube's retry layer would hide
    // time from it.
    cfg.default_retry = false;
    let ua = HeaderValue::from_str(&user_agent(&opts.identity)).map_err(|_| {
        ClientError::BadIdentity {
            identity: opts.identity.clone(),
        }
    })?;
    cfg.headers
        .push((HeaderName::from_static("user-agent"), ua));
    Ok(cfg)
}

/// [`build_config`] + `kube::Client::try_from`.
pub async fn build_client(opts: &ClientOptions) -> Result<kube::Client, ClientError> {
    let cfg = build_config(opts).await?;
    kube::Client::try_from(cfg).map_err(ClientError::Build)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBECONFIG: &str = r#"
apiVersion: v1
kind: Config
clusters:
- name: c
  cluster:
    server: https://10.0.0.1:6443
    insecure-skip-tls-verify: true
contexts:
- name: ctx
  context: {cluster: c, user: u}
current-context: ctx
users:
- name: u
  user: {token: abc}
"#;

    /// A file in a directory of its own, removed (with the directory) on drop.
    struct TmpFile(PathBuf);

    impl Drop for TmpFile {
        fn drop(&mut self) {
            if let Some(dir) = self.0.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    fn write_tmp(name: &str, text: &str) -> TmpFile {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("vip-agent-election-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        TmpFile(p)
    }

    #[tokio::test]
    async fn override_url_sets_tls_name_and_user_agent() {
        let mut o = ClientOptions::new("node-a");
        let file = write_tmp("ok.conf", KUBECONFIG);
        o.kubeconfig = file.0.clone();
        let cfg = build_config(&o).await.expect("config");
        assert_eq!(cfg.cluster_url.to_string(), "https://127.0.0.1:6443/");
        assert_eq!(cfg.tls_server_name.as_deref(), Some("kubernetes"));
        assert!(!cfg.default_retry);
        let ua = cfg
            .headers
            .iter()
            .find(|(n, _)| n == "user-agent")
            .map(|(_, v)| v.to_str().expect("ascii").to_owned());
        assert_eq!(
            ua.as_deref(),
            Some(format!("vip-agent/{} identity/node-a", env!("CARGO_PKG_VERSION")).as_str())
        );
        // Empty override: the kubeconfig's server as is.
        o.api_server = Some(String::new());
        let cfg = build_config(&o).await.expect("config");
        assert_eq!(cfg.cluster_url.to_string(), "https://10.0.0.1:6443/");
        assert_eq!(cfg.tls_server_name, None);
        assert!(build_client(&o).await.is_ok());
    }

    #[tokio::test]
    async fn unreadable_kubeconfig_names_file_and_fix() {
        let mut o = ClientOptions::new("node-a");
        o.kubeconfig = PathBuf::from("/nonexistent/admin.conf");
        let e = build_config(&o).await.expect_err("must fail").to_string();
        assert!(e.contains("/nonexistent/admin.conf"), "{e}");
        assert!(e.contains("--kubeconfig"), "{e}");
    }
}
