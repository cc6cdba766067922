//! The peer key: a file (`--peer-key-file`), or the Secret `--peer-key-secret`
//! in the Lease namespace, created by the first agent that finds none (32
//! random bytes under `data.key`). Until a key is loaded the agent sends and
//! accepts no peer message: it never acks, so it is never a member, and a
//! leader without members fences on its Lease renewals alone: the slow path
//! works as without `--fast-path`.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use ring::rand::SecureRandom;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use vip_common::events;

use super::Peers;
use super::wire::{self, MIN_KEY_LEN};

/// The key's field in the Secret.
pub const SECRET_KEY_FIELD: &str = "key";
/// The default Secret name.
pub const DEFAULT_SECRET: &str = "vip-agent-peer-key";
/// Retry period while the key cannot be loaded.
pub const RETRY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("reading the peer key file {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the peer key in {what} has {len} bytes; it needs at least {MIN_KEY_LEN} (e.g. `head -c 32 /dev/urandom`)"
    )]
    Short { what: String, len: usize },
    #[error("the Secret {namespace}/{name}: {source}")]
    Api {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("the Secret {namespace}/{name} has no data.{SECRET_KEY_FIELD}")]
    NoField { namespace: String, name: String },
    #[error("no randomness for a new peer key")]
    Random,
}

/// Where the key comes from.
#[derive(Clone)]
pub enum KeySource {
    File(PathBuf),
    Secret {
        client: kube::Client,
        namespace: String,
        name: String,
    },
}

impl KeySource {
    /// Read (or, for a Secret that does not exist, create) the key.
    pub async fn load(&self) -> Result<Vec<u8>, KeyError> {
        let bytes = match self {
            KeySource::File(path) => std::fs::read(path).map_err(|source| KeyError::File {
                path: path.clone(),
                source,
            })?,
            KeySource::Secret {
                client,
                namespace,
                name,
            } => secret(client, namespace, name).await?,
        };
        if bytes.len() < MIN_KEY_LEN {
            return Err(KeyError::Short {
                what: self.describe(),
                len: bytes.len(),
            });
        }
        Ok(bytes)
    }

    pub fn describe(&self) -> String {
        match self {
            KeySource::File(p) => format!("file {}", p.display()),
            KeySource::Secret {
                namespace, name, ..
            } => format!("Secret {namespace}/{name}"),
        }
    }
}

async fn secret(client: &kube::Client, namespace: &str, name: &str) -> Result<Vec<u8>, KeyError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let err = |source| KeyError::Api {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        source,
    };
    let existing = match api.get_opt(name).await.map_err(err)? {
        Some(s) => s,
        None => {
            let mut key = vec![0u8; MIN_KEY_LEN];
            ring::rand::SystemRandom::new()
                .fill(&mut key)
                .map_err(|_| KeyError::Random)?;
            let s = Secret {
                metadata: ObjectMeta {
                    name: Some(name.to_owned()),
                    namespace: Some(namespace.to_owned()),
                    labels: Some(
                        [("app.kubernetes.io/name".to_owned(), "vip-agent".to_owned())].into(),
                    ),
                    ..ObjectMeta::default()
                },
                data: Some([(SECRET_KEY_FIELD.to_owned(), ByteString(key))].into()),
                ..Secret::default()
            };
            match api.create(&PostParams::default(), &s).await {
                Ok(created) => {
                    info!(secret = %format!("{namespace}/{name}"), "created the peer key Secret");
                    created
                }
                // Another agent created it first: use theirs.
                Err(kube::Error::Api(e)) if e.code == 409 => api.get(name).await.map_err(err)?,
                Err(e) => return Err(err(e)),
            }
        }
    };
    existing
        .data
        .and_then(|mut d| d.remove(SECRET_KEY_FIELD))
        .map(|b| b.0)
        .ok_or_else(|| KeyError::NoField {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
}

/// Load the key into `peers`, retrying every [`RETRY`] until it works or
/// `shutdown`. The first failure is a warning, the rest are repeated only
/// every minute.
pub async fn load_into(source: KeySource, peers: Peers, shutdown: CancellationToken) {
    let mut failures = 0u32;
    loop {
        match source.load().await {
            Ok(bytes) => match wire::key(&bytes) {
                Some(key) => {
                    peers.set_key(key);
                    info!(source = %source.describe(), event = events::PEER_KEY_READY, "peer key loaded: the fast path is on");
                    return;
                }
                None => warn!(source = %source.describe(), "peer key too short"),
            },
            Err(e) => {
                if failures.is_multiple_of(12) {
                    warn!(error = %e, retry_in = ?RETRY, "no peer key: the fast path waits, the slow path works");
                }
                failures += 1;
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(RETRY) => {}
        }
    }
}
