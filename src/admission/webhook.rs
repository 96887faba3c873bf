//! The validating admission webhook: an HTTPS server for the apiserver's
//! `admission.k8s.io/v1` AdmissionReviews.
//!
//! - `POST /validate-nodemaintenance` and `POST /validate-maintenancewindow` apply the rules of
//!   [`decide`]: the pure rules shared with `nmo validate`, plus the ones that need the cluster
//!   (the node exists, one NodeMaintenance per node, control-plane quorum, nodeName immutable,
//!   overlapping window selectors as warnings).
//! - The cluster is read through the operator's client for each review; nothing is cached, so
//!   two reviews in a row always see each other's objects once they are stored.
//! - When a read fails the webhook cannot decide: it answers HTTP 503 with a `Status`, and
//!   the apiserver applies the webhook's `failurePolicy`. With `Fail` (see
//!   [`configuration`]) the request is refused with a 500 naming the webhook and the failed
//!   read; with `Ignore` it is let through.
//! - The serving certificate is `tls.crt`/`tls.key` in a directory, reloaded on change
//!   ([`certs`]).
//! - Shutdown is graceful: the listener closes, in-flight reviews are answered, then every
//!   connection is closed.
//!
//! ```no_run
//! # async fn demo(client: kube::Client) -> Result<(), nmo::admission::webhook::WebhookError> {
//! use nmo::admission::webhook::{WebhookConfig, serve};
//! let config = WebhookConfig {
//!     bind: "0.0.0.0:9443".parse().unwrap(),
//!     cert_dir: "/tmp/k8s-webhook-server/serving-certs".into(),
//! };
//! serve(config, client, async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

pub mod certs;
pub mod configuration;
pub mod decide;
pub mod review;

pub use certs::{CertificateState, Certificates};
pub use configuration::{WebhookEndpoint, validating_webhook_configuration};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use review::Reviewed;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Path of the NodeMaintenance webhook.
pub const NODE_MAINTENANCE_PATH: &str = "/validate-nodemaintenance";
/// Path of the MaintenanceWindow webhook.
pub const MAINTENANCE_WINDOW_PATH: &str = "/validate-maintenancewindow";
/// The largest AdmissionReview accepted (the apiserver's own request limit is 3 MiB, and a
/// review carries the object twice).
const MAX_BODY: usize = 8 * 1024 * 1024;

/// Where the webhook listens and where its certificate is.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    /// Address to listen on (`0.0.0.0:9443` in a cluster; port 0 picks a free port).
    pub bind: SocketAddr,
    /// Folder holding `tls.crt` and `tls.key`, as a cert-manager secret mount does.
    pub cert_dir: PathBuf,
}

/// Why the webhook server could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The listening socket could not be opened.
    #[error("webhook: cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The certificate pair in the directory cannot be used.
    #[error("webhook: no usable certificate in {dir}: {message}")]
    Certificate {
        /// The certificate directory.
        dir: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The certificate directory cannot be watched for changes.
    #[error("webhook: cannot watch {dir} for certificate changes: {source}")]
    WatchCertificates {
        /// The certificate directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: notify::Error,
    },
}

/// A webhook server that is listening but not yet serving: [`WebhookServer::local_addr`]
/// tells the port when port 0 was asked for.
pub struct WebhookServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    certificates: Arc<Certificates>,
    acceptor: tokio_rustls::TlsAcceptor,
    // Kept alive for as long as the server runs: dropping it stops the reloads.
    _watcher: notify::RecommendedWatcher,
}

impl WebhookServer {
    /// Load the certificate, start watching its directory and open the socket.
    pub async fn bind(config: &WebhookConfig) -> Result<WebhookServer, WebhookError> {
        let certificates = Certificates::load(&config.cert_dir)?;
        let watcher = certificates.watch()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(certificates.server_config()?));
        let bind_error = |source| WebhookError::Bind {
            addr: config.bind,
            source,
        };
        let listener = TcpListener::bind(config.bind).await.map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        Ok(WebhookServer {
            listener,
            local_addr,
            certificates,
            acceptor,
            _watcher: watcher,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The certificates it serves, to read their reload state.
    pub fn certificates(&self) -> Arc<Certificates> {
        self.certificates.clone()
    }

    /// Serve reviews until `shutdown` completes, then stop accepting, answer the reviews in
    /// flight and return.
    pub async fn run(
        self,
        client: kube::Client,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), WebhookError> {
        tracing::info!(address = %self.local_addr, "webhook serving");
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut connections = tokio::task::JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                () = &mut shutdown => break,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, do not spin.
                    tracing::warn!("webhook: accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let acceptor = self.acceptor.clone();
            let client = client.clone();
            let stop = stop_rx.clone();
            connections.spawn(serve_connection(stream, acceptor, client, stop));
            while connections.try_join_next().is_some() {}
        }
        drop(self.listener);
        let _ = stop_tx.send(true);
        while connections.join_next().await.is_some() {}
        tracing::info!("webhook stopped");
        Ok(())
    }
}

/// Serve the webhook at `config.bind` with certificates from `config.cert_dir`, reading the
/// cluster through `client`, until `shutdown` completes (see [`WebhookServer::run`]).
pub async fn serve(
    config: WebhookConfig,
    client: kube::Client,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WebhookError> {
    WebhookServer::bind(&config)
        .await?
        .run(client, shutdown)
        .await
}

/// One TLS connection, HTTP/1.1 or HTTP/2; on stop, in-flight requests finish first.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    client: kube::Client,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let tls = tokio::select! {
        tls = acceptor.accept(stream) => match tls {
            Ok(tls) => tls,
            Err(e) => {
                tracing::debug!("webhook: TLS handshake failed: {e}");
                return;
            }
        },
        _ = stop.wait_for(|s| *s) => return,
    };
    let service = hyper::service::service_fn(move |req| {
        let client = client.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(&client, req).await) }
    });
    let builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(tls), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                tracing::debug!("webhook: connection ended: {e}");
            }
            return;
        }
        _ = stop.wait_for(|s| *s) => {}
    }
    connection.as_mut().graceful_shutdown();
    if let Err(e) = connection.await {
        tracing::debug!("webhook: connection ended: {e}");
    }
}

/// Route one HTTP request.
async fn handle(client: &kube::Client, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let Some(reviewed) = Reviewed::from_path(req.uri().path()) else {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: POST AdmissionReviews to /validate-nodemaintenance or /validate-maintenancewindow",
        );
    };
    if req.method() != Method::POST {
        return plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed: POST an AdmissionReview",
        );
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => {
            return plain(
                StatusCode::BAD_REQUEST,
                &format!("cannot read the request body: {e}"),
            );
        }
    };
    match review::answer(client, reviewed, &body).await {
        Ok(review) => json(StatusCode::OK, &review),
        Err(e) => {
            tracing::warn!("webhook: {e}");
            let code = StatusCode::from_u16(e.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            json(code, &e.status())
        }
    }
}

fn json(code: StatusCode, body: &impl serde::Serialize) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(bytes)))
        .expect("a valid response")
}

fn plain(code: StatusCode, message: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(message.to_string())))
        .expect("a valid response")
}
