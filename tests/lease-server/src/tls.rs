//! A throwaway PKI: a CA, a server certificate and one admin client certificate, like the
//! ones kubeadm writes, and the rustls server configuration that requires client certs.

use std::net::IpAddr;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;

use super::Error;

/// The user name in the client certificate (as in a kubeadm `admin.conf`).
pub const ADMIN_USER: &str = "kubernetes-admin";

/// The generated PKI, PEM encoded.
#[derive(Clone, Debug)]
pub struct Pki {
    /// The CA certificate (trusted by both sides).
    pub ca_pem: String,
    ca_der: CertificateDer<'static>,
    server_cert_der: CertificateDer<'static>,
    server_key_der: Vec<u8>,
    /// The server certificate (e.g. kube-apiserver's serving certificate).
    pub server_cert_pem: String,
    /// The server key (PKCS#8).
    pub server_key_pem: String,
    /// The CA, to issue more certificates ([`Self::issue`]).
    ca_params: CertificateParams,
    ca_key_pem: String,
    /// The client certificate.
    pub client_cert_pem: String,
    /// The client key (PKCS#8).
    pub client_key_pem: String,
}

impl Pki {
    /// Generates a CA, a server certificate for `ips` + `dns_names` (plus `localhost`,
    /// `kubernetes`, `127.0.0.1` and `::1`) and an admin client certificate.
    pub fn generate(ips: &[IpAddr], dns_names: &[String]) -> Result<Self, Error> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.distinguished_name = dn("vip-lab-ca", None);
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let ca_key_pem = ca_key.serialize_pem();
        let issuer = Issuer::new(ca_params.clone(), ca_key);

        let server_key = KeyPair::generate()?;
        let mut sp = CertificateParams::new(Vec::<String>::new())?;
        sp.distinguished_name = dn("kube-apiserver", None);
        let mut sans: Vec<SanType> = Vec::new();
        let mut all_ips: Vec<IpAddr> = ips.to_vec();
        all_ips.extend(
            ["127.0.0.1".parse::<IpAddr>().ok(), "::1".parse().ok()]
                .into_iter()
                .flatten(),
        );
        all_ips.dedup();
        for ip in all_ips {
            if !ip.is_unspecified() && !sans.contains(&SanType::IpAddress(ip)) {
                sans.push(SanType::IpAddress(ip));
            }
        }
        let mut names: Vec<String> = vec![
            "localhost".into(),
            "kubernetes".into(),
            "kubernetes.default".into(),
            "kubernetes.default.svc".into(),
        ];
        names.extend(dns_names.iter().cloned());
        for n in names {
            if let Ok(ip) = n.parse::<IpAddr>() {
                sans.push(SanType::IpAddress(ip));
            } else {
                sans.push(SanType::DnsName(n.try_into()?));
            }
        }
        sp.subject_alt_names = sans;
        sp.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = sp.signed_by(&server_key, &issuer)?;

        let client_key = KeyPair::generate()?;
        let mut cp = CertificateParams::new(Vec::<String>::new())?;
        cp.distinguished_name = dn(ADMIN_USER, Some("system:masters"));
        cp.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        cp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = cp.signed_by(&client_key, &issuer)?;

        Ok(Self {
            ca_pem: ca_cert.pem(),
            ca_der: ca_cert.der().clone(),
            server_cert_der: server_cert.der().clone(),
            server_key_der: server_key.serialize_der(),
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
            ca_params,
            ca_key_pem,
            client_cert_pem: client_cert.pem(),
            client_key_pem: client_key.serialize_pem(),
        })
    }

    /// A rustls server config presenting the server certificate and requiring a client
    /// certificate signed by the CA. ALPN: `http/1.1` only.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der.clone())?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| Error::Tls(e.to_string()))?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key_der.clone()));
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![self.server_cert_der.clone(), self.ca_der.clone()], key)?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }

    /// Issues a certificate signed by the CA: common name `cn`, organisation
    /// `org`, the SANs `ips` and `dns_names`, for serving and/or client auth.
    /// Returns (certificate PEM, PKCS#8 key PEM).
    pub fn issue(&self, spec: &CertSpec<'_>) -> Result<(String, String), Error> {
        let issuer = Issuer::new(self.ca_params.clone(), KeyPair::from_pem(&self.ca_key_pem)?);
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.distinguished_name = dn(spec.cn, spec.org);
        let mut sans: Vec<SanType> = spec.ips.iter().map(|ip| SanType::IpAddress(*ip)).collect();
        for n in spec.dns_names {
            sans.push(SanType::DnsName((*n).try_into()?));
        }
        p.subject_alt_names = sans;
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        if spec.server {
            p.extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if spec.client {
            p.extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        let cert = p.signed_by(&key, &issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// The CA certificate, DER encoded (for test clients building their own rustls config).
    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.ca_der.clone()
    }
}

/// What [`Pki::issue`] puts in a certificate.
#[derive(Clone, Debug, Default)]
pub struct CertSpec<'a> {
    pub cn: &'a str,
    pub org: Option<&'a str>,
    pub ips: &'a [IpAddr],
    pub dns_names: &'a [&'a str],
    /// Extended key usage serverAuth.
    pub server: bool,
    /// Extended key usage clientAuth.
    pub client: bool,
}

fn dn(cn: &str, org: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    if let Some(o) = org {
        dn.push(DnType::OrganizationName, o);
    }
    dn.push(DnType::CommonName, cn);
    dn
}
