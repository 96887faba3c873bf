//! The sandbox's TLS material: a CA generated at start-up and a server certificate it signs
//! for 127.0.0.1 and localhost (rustls will not take a self-signed leaf as its own anchor).

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use std::sync::Arc;

/// The CA and server certificate, PEM and DER.
pub struct TlsMaterial {
    /// The CA certificate, PEM (for kubeconfigs).
    pub ca_pem: String,
    /// The CA certificate, DER (for kube::Config).
    pub ca_der: Vec<u8>,
    /// The server's rustls configuration.
    pub server_config: Arc<tokio_rustls::rustls::ServerConfig>,
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Certificate generation failed.
    #[error("cannot generate the sandbox certificates: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the material.
    #[error("cannot configure TLS: {0}")]
    Configure(#[from] tokio_rustls::rustls::Error),
}

/// Generate a CA and a server certificate signed by it.
pub fn generate() -> Result<TlsMaterial, TlsError> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "nmo sandbox CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate()?;
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key)?;
    let mut params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
    params
        .distinguished_name
        .push(DnType::CommonName, "nmo-sandbox");
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca)?;
    let chain = vec![cert.der().clone()];
    let key_der = tokio_rustls::rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut server_config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)?;
    server_config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsMaterial {
        ca_pem: ca.pem(),
        ca_der: ca.der().to_vec(),
        server_config: Arc::new(server_config),
    })
}
