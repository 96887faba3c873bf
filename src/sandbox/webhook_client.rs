//! Calling a webhook: one HTTPS POST to `clientConfig.url`, trusting only `caBundle`.
//!
//! Errors are worded the way kube-apiserver (Go's HTTP client) words the common ones, since
//! clients see them after `failed calling webhook "NAME": `.
//!
//! What the sandbox cannot do: it serves no Services and has no cluster network, so a
//! `clientConfig.service` is answered the way kube-apiserver answers a Service that does not
//! exist (the call fails and `failurePolicy` decides); register webhooks by `url` instead.
//! Without a `caBundle` kube-apiserver trusts the system roots; the sandbox has none to
//! trust, so such a webhook's certificate is refused as signed by an unknown authority.

use super::webhook_rules::Hook;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

/// The largest answer read from a webhook.
const MAX_ANSWER: usize = 8 * 1024 * 1024;

/// Send `body` (an AdmissionReview) to `hook`; the HTTP status and body of its answer, or why
/// it could not be called (the text after `failed calling webhook "NAME": `).
pub async fn call(hook: &Hook, body: Vec<u8>) -> Result<(u16, Bytes), String> {
    let timeout = hook.timeout();
    let config = &hook.webhook.client_config;
    let Some(url) = config.url.as_deref() else {
        return Err(match &config.service {
            Some(s) => {
                let path = s.path.as_deref().unwrap_or("");
                format!(
                    "failed to call webhook: Post \"https://{}.{}.svc:{}{path}?timeout={}s\": service \"{}\" not found",
                    s.name,
                    s.namespace,
                    s.port.unwrap_or(443),
                    timeout.as_secs(),
                    s.name
                )
            }
            None => "could not get REST client: neither url nor service is set".into(),
        });
    };
    let roots = root_store(config.ca_bundle.as_ref().map(|b| b.0.as_slice()))
        .map_err(|e| format!("could not get REST client: {e}"))?;
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("could not get REST client: invalid url {url:?}: {e}"))?;
    let query = match uri.query() {
        Some(q) => format!("?{q}&timeout={}s", timeout.as_secs()),
        None => format!("?timeout={}s", timeout.as_secs()),
    };
    let shown = format!(
        "{}://{}{}{query}",
        uri.scheme_str().unwrap_or("https"),
        uri.authority().map(|a| a.as_str()).unwrap_or_default(),
        uri.path()
    );
    let post = post(&uri, roots, &query, body);
    match tokio::time::timeout(timeout, post).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => Err(format!("failed to call webhook: Post {shown:?}: {e}")),
        Err(_) => Err(format!(
            "failed to call webhook: Post {shown:?}: context deadline exceeded"
        )),
    }
}

/// The caBundle's certificates, parsed.
fn root_store(ca_bundle: Option<&[u8]>) -> Result<Vec<CertificateDer<'static>>, String> {
    let Some(pem) = ca_bundle.filter(|b| !b.is_empty()) else {
        return Ok(Vec::new());
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("unable to load root certificates: {e}"))?;
    if certs.is_empty() {
        return Err("unable to load root certificates: unable to parse bytes as PEM block".into());
    }
    Ok(certs)
}

async fn post(
    uri: &http::Uri,
    roots: Vec<CertificateDer<'static>>,
    query: &str,
    body: Vec<u8>,
) -> Result<(u16, Bytes), String> {
    if uri.scheme_str() != Some("https") {
        return Err(format!(
            "unsupported protocol scheme {:?}",
            uri.scheme_str().unwrap_or_default()
        ));
    }
    let host = uri.host().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(443);
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|e| dial_error(host, port, &e))?;
    let _ = tcp.set_nodelay(true);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = SelfSignedAware::new(roots, provider.clone())?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, tcp)
        .await
        .map_err(|e| tls_error(host, &e))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(connection);
    let request = http::Request::post(format!("{}{query}", uri.path()))
        .header(
            http::header::HOST,
            uri.authority().map(|a| a.as_str()).unwrap_or(host),
        )
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, "application/json, */*")
        .header(http::header::USER_AGENT, "nmo-sandbox")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let code = response.status().as_u16();
    let answer = http_body_util::Limited::new(response.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| format!("cannot read the answer: {e}"))?
        .to_bytes();
    driver.abort();
    Ok((code, answer))
}

/// Go's wording for a failed dial.
fn dial_error(host: &str, port: u16, e: &std::io::Error) -> String {
    let why = match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connect: connection refused".to_string(),
        _ => e.to_string(),
    };
    format!("dial tcp {host}:{port}: {why}")
}

/// Go's wording for the usual certificate problems.
fn tls_error(host: &str, e: &std::io::Error) -> String {
    use rustls::CertificateError;
    let inner = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
    match inner {
        Some(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => {
            "tls: failed to verify certificate: x509: certificate signed by unknown authority"
                .into()
        }
        Some(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        )) => {
            format!("tls: failed to verify certificate: x509: certificate is not valid for {host}")
        }
        Some(rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        )) => {
            "tls: failed to verify certificate: x509: certificate has expired or is not yet valid"
                .into()
        }
        _ => e.to_string(),
    }
}

/// Go's certificate verification, which kube-apiserver uses to call webhooks, accepts a
/// self-signed server certificate that is itself in the caBundle (the usual
/// `openssl req -x509` set-up), where webpki refuses a CA used as an end entity. This
/// verifier does what webpki does, and accepts that one case too: the presented certificate
/// is one of the bundle's, byte for byte, and is valid for the host name.
#[derive(Debug)]
struct SelfSignedAware {
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
    bundle: Vec<CertificateDer<'static>>,
}

impl SelfSignedAware {
    fn new(
        bundle: Vec<CertificateDer<'static>>,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<Self, String> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in &bundle {
            roots
                .add(cert.clone())
                .map_err(|e| format!("unable to load root certificates: {e}"))?;
        }
        // webpki refuses an empty root store; with no caBundle nothing is trusted anyway.
        let webpki = if roots.is_empty() {
            None
        } else {
            Some(
                rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|e| format!("unable to load root certificates: {e}"))?,
            )
        };
        let webpki = webpki.ok_or_else(|| {
            "tls: failed to verify certificate: x509: certificate signed by unknown authority"
                .to_string()
        })?;
        Ok(SelfSignedAware { webpki, bundle })
    }
}

impl rustls::client::danger::ServerCertVerifier for SelfSignedAware {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        match self
            .webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(_)))
                if self
                    .bundle
                    .iter()
                    .any(|c| c.as_ref() == end_entity.as_ref()) =>
            {
                let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
                rustls::client::verify_server_name(&parsed, server_name)?;
                Ok(rustls::client::danger::ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}
