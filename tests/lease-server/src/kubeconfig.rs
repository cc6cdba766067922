//! Writes a kubeconfig (like kubeadm's `admin.conf`) with everything embedded.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use super::Error;
use super::tls::{ADMIN_USER, Pki};

/// The kubeconfig YAML for `server` (e.g. `https://127.0.0.1:6443`), default namespace
/// `namespace`, one user for any number of agents.
pub fn kubeconfig_yaml(server: &str, namespace: &str, pki: &Pki) -> Result<String, Error> {
    let b64 = |s: &str| STANDARD.encode(s.as_bytes());
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{
            "name": "vip-lab",
            "cluster": {
                "server": server,
                "certificate-authority-data": b64(&pki.ca_pem),
            },
        }],
        "users": [{
            "name": ADMIN_USER,
            "user": {
                "client-certificate-data": b64(&pki.client_cert_pem),
                "client-key-data": b64(&pki.client_key_pem),
            },
        }],
        "contexts": [{
            "name": "kubernetes-admin@vip-lab",
            "context": {"cluster": "vip-lab", "user": ADMIN_USER, "namespace": namespace},
        }],
        "current-context": "kubernetes-admin@vip-lab",
    });
    Ok(serde_saphyr::to_string(&doc)?)
}
