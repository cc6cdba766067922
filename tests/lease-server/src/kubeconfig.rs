//! Writes a kubeconfig (like kubeadm's `admin.conf`) with everything embedded.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use super::Error;
use super::tls::{ADMIN_USER, Pki};

/// The kubeconfig YAML for `server` (e.g. `https://127.0.0.1:6443`), default namespace
/// `namespace`, one user for any number of agents.
pub fn kubeconfig_yaml(server: &str, namespace: &str, pki: &Pki) -> Result<String, Error> {
    kubeconfig_yaml_for(
        server,
        namespace,
        &pki.ca_pem,
        &ClientCert {
            user: ADMIN_USER,
            cert_pem: &pki.client_cert_pem,
            key_pem: &pki.client_key_pem,
        },
    )
}

/// A client certificate and the user name it goes by in a kubeconfig.
pub struct ClientCert<'a> {
    pub user: &'a str,
    pub cert_pem: &'a str,
    pub key_pem: &'a str,
}

/// The kubeconfig YAML for `server` trusting `ca_pem`, authenticating with `client`.
pub fn kubeconfig_yaml_for(
    server: &str,
    namespace: &str,
    ca_pem: &str,
    client: &ClientCert<'_>,
) -> Result<String, Error> {
    let b64 = |s: &str| STANDARD.encode(s.as_bytes());
    let context = format!("{}@vip-lab", client.user);
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{
            "name": "vip-lab",
            "cluster": {
                "server": server,
                "certificate-authority-data": b64(ca_pem),
            },
        }],
        "users": [{
            "name": client.user,
            "user": {
                "client-certificate-data": b64(client.cert_pem),
                "client-key-data": b64(client.key_pem),
            },
        }],
        "contexts": [{
            "name": context,
            "context": {"cluster": "vip-lab", "user": client.user, "namespace": namespace},
        }],
        "current-context": context,
    });
    Ok(serde_saphyr::to_string(&doc)?)
}
