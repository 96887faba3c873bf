//! The webhook's serving certificate, reloaded when `tls.crt`/`tls.key` change.
//!
//! cert-manager (and every Kubernetes secret volume) updates the files by writing a new
//! timestamped folder and swapping the `..data` symlink that `tls.crt` and `tls.key` point
//! through, so the files themselves never see a write event. The whole directory is watched
//! instead, and any change in it reloads the pair. New TLS handshakes use the new pair; open
//! connections keep theirs. A pair that cannot be read, parsed or matched (a half-written
//! rotation, a key for another certificate) is refused with an error log and the last good
//! pair stays in use.

use super::WebhookError;
use notify::{EventKind, RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

/// File name of the certificate chain (PEM) in the certificate directory.
pub const CERT_FILE: &str = "tls.crt";
/// File name of the private key (PEM) in the certificate directory.
pub const KEY_FILE: &str = "tls.key";

/// How the reloading has gone, for logs, metrics and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CertificateState {
    /// Pairs loaded, the first one included.
    pub loads: u64,
    /// Attempts refused since start (the last good pair stayed in use).
    pub failures: u64,
    /// Why the last attempt was refused; `None` once a later attempt succeeded.
    pub last_error: Option<String>,
}

/// The current pair, shared by the TLS resolver and the directory watcher.
#[derive(Debug)]
pub struct Certificates {
    dir: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    state: Mutex<CertificateState>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl Certificates {
    /// Load the pair in `dir`; fails when it cannot be used (there is no last good pair yet).
    pub fn load(dir: &Path) -> Result<Arc<Certificates>, WebhookError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let pair = read_pair(dir, &provider).map_err(|message| WebhookError::Certificate {
            dir: dir.to_path_buf(),
            message,
        })?;
        Ok(Arc::new(Certificates {
            dir: dir.to_path_buf(),
            current: RwLock::new(Arc::new(pair)),
            state: Mutex::new(CertificateState {
                loads: 1,
                ..Default::default()
            }),
            provider,
        }))
    }

    /// Read the pair again. An unusable pair leaves the current one in place.
    pub fn reload(&self) {
        match read_pair(&self.dir, &self.provider) {
            Ok(pair) => {
                let changed = {
                    let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
                    let changed = current.cert != pair.cert;
                    if changed {
                        *current = Arc::new(pair);
                    }
                    changed
                };
                let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                state.last_error = None;
                if changed {
                    state.loads += 1;
                    tracing::info!(dir = %self.dir.display(), "webhook certificate reloaded");
                }
            }
            Err(message) => {
                tracing::error!(
                    dir = %self.dir.display(),
                    "webhook certificate not reloaded, keeping the last good one: {message}"
                );
                let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                state.failures += 1;
                state.last_error = Some(message);
            }
        }
    }

    /// How reloading has gone so far.
    pub fn state(&self) -> CertificateState {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The certificate chain served now (DER, leaf first).
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .cert
            .clone()
    }

    /// The rustls server configuration: TLS 1.2 and 1.3, HTTP/2 and HTTP/1.1 by ALPN, and the
    /// certificate chosen per handshake from the current pair.
    pub fn server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, WebhookError> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| WebhookError::Certificate {
                dir: self.dir.clone(),
                message: e.to_string(),
            })?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }

    /// Watch the directory and reload on every change in it, until the watcher is dropped.
    pub fn watch(self: &Arc<Self>) -> Result<notify::RecommendedWatcher, WebhookError> {
        let certificates = Arc::downgrade(self);
        let watch_error = |source| WebhookError::WatchCertificates {
            dir: self.dir.clone(),
            source,
        };
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let Some(certificates) = certificates.upgrade() else {
                    return;
                };
                match event {
                    // Our own reads show up as accesses; reloading on them would loop.
                    Ok(e) if matches!(e.kind, EventKind::Access(_)) => {}
                    Ok(_) => certificates.reload(),
                    Err(e) => tracing::error!(
                        dir = %certificates.dir.display(),
                        "watching the webhook certificate directory failed: {e}"
                    ),
                }
            })
            .map_err(watch_error)?;
        watcher
            .watch(&self.dir, RecursiveMode::NonRecursive)
            .map_err(watch_error)?;
        Ok(watcher)
    }
}

/// Picks the current pair for each new handshake.
#[derive(Debug)]
struct Resolver(Arc<Certificates>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.0
                .current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// Read and check `tls.crt` and `tls.key` in `dir`: at least one certificate, a private key,
/// and a key that belongs to the first certificate.
fn read_pair(
    dir: &Path,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<CertifiedKey, String> {
    let cert_path = dir.join(CERT_FILE);
    let key_path = dir.join(KEY_FILE);
    let cert_pem = std::fs::read(&cert_path)
        .map_err(|e| format!("cannot read {}: {e}", cert_path.display()))?;
    let key_pem =
        std::fs::read(&key_path).map_err(|e| format!("cannot read {}: {e}", key_path.display()))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{} is not PEM: {e}", cert_path.display()))?;
    if chain.is_empty() {
        return Err(format!("{} holds no certificate", cert_path.display()));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("{} holds no usable private key: {e}", key_path.display()))?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        format!(
            "{} and {} do not make a pair: {e}",
            cert_path.display(),
            key_path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn write(dir: &Path, (cert, key): &(String, String)) {
        std::fs::write(dir.join(CERT_FILE), cert).unwrap();
        std::fs::write(dir.join(KEY_FILE), key).unwrap();
    }

    #[test]
    fn a_bad_pair_keeps_the_last_good_one() {
        let dir = tempfile::tempdir().unwrap();
        let first = pair("first");
        write(dir.path(), &first);
        let certs = Certificates::load(dir.path()).unwrap();
        let served = certs.chain();

        let second = pair("second");
        // The new certificate with the old key: not a pair.
        write(dir.path(), &(second.0.clone(), first.1.clone()));
        certs.reload();
        assert_eq!(certs.chain(), served);
        let state = certs.state();
        assert_eq!((state.loads, state.failures), (1, 1));
        assert!(
            state
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("do not make a pair")),
            "{state:?}"
        );

        std::fs::write(dir.path().join(CERT_FILE), "garbage").unwrap();
        certs.reload();
        assert!(
            certs
                .state()
                .last_error
                .is_some_and(|e| e.contains("holds no certificate"))
        );

        write(dir.path(), &second);
        certs.reload();
        assert_ne!(certs.chain(), served);
        assert_eq!(certs.state().loads, 2);
        assert_eq!(certs.state().last_error, None);
    }

    #[test]
    fn a_missing_first_pair_is_an_error_naming_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let err = Certificates::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
        assert!(err.contains("tls.crt"), "{err}");
    }
}
