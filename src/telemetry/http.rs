//! The plain-HTTP servers of `nmo run`: `/metrics` on one listener, `/healthz` and `/readyz` on
//! another, as controller-runtime splits them (`--metrics-bind-address`,
//! `--health-probe-bind-address`).
//!
//! Each is bound first ([`HttpServer::bind_metrics`], [`HttpServer::bind_probes`]), so that
//! the caller learns the address when it asked for port 0, then served until a shutdown future
//! resolves ([`HttpServer::serve`]). Shutdown is graceful: no new connection is accepted,
//! requests in progress are answered, idle keep-alive connections are closed, and connections
//! that still hang after [`DRAIN_TIMEOUT`] are dropped.

use super::metrics::Metrics;
use super::readiness::Readiness;
use super::registry::CONTENT_TYPE;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for connections still busy.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What a server answers.
#[derive(Clone)]
enum Routes {
    /// `GET /metrics`.
    Metrics(Arc<Metrics>),
    /// `GET /healthz` and `GET /readyz`.
    Probes(Readiness),
}

/// A bound, not yet serving, HTTP server.
pub struct HttpServer {
    listener: TcpListener,
    local: SocketAddr,
    routes: Routes,
}

/// Bind `addr` and serve `/metrics` from `metrics` until `shutdown` resolves.
pub async fn serve_metrics(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    HttpServer::bind_metrics(addr, metrics)
        .await?
        .serve(shutdown)
        .await;
    Ok(())
}

/// Bind `addr` and serve `/healthz` and `/readyz` from `readiness` until `shutdown` resolves.
pub async fn serve_probes(
    addr: SocketAddr,
    readiness: Readiness,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    HttpServer::bind_probes(addr, readiness)
        .await?
        .serve(shutdown)
        .await;
    Ok(())
}

impl HttpServer {
    async fn bind(addr: SocketAddr, routes: Routes) -> Result<Self, ServeError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| ServeError::Bind { addr, source })?;
        Ok(HttpServer {
            listener,
            local,
            routes,
        })
    }

    /// Bind `addr` for `/metrics`.
    pub async fn bind_metrics(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<Self, ServeError> {
        Self::bind(addr, Routes::Metrics(metrics)).await
    }

    /// Bind `addr` for `/healthz` and `/readyz`.
    pub async fn bind_probes(addr: SocketAddr, readiness: Readiness) -> Result<Self, ServeError> {
        Self::bind(addr, Routes::Probes(readiness)).await
    }

    /// The address bound (the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Serve until `shutdown` resolves, then shut down gracefully.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut connections = tokio::task::JoinSet::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                _ = &mut shutdown => break,
                accepted = self.listener.accept() => accepted,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(addr = %self.local, error = %err, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let routes = self.routes.clone();
            let mut stopped = stopped.clone();
            connections.spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let routes = routes.clone();
                    async move { Ok::<_, Infallible>(answer(&routes, &req)) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service);
                let mut connection = std::pin::pin!(connection);
                tokio::select! {
                    _ = connection.as_mut() => {}
                    _ = stopped.changed() => {
                        connection.as_mut().graceful_shutdown();
                        let _ = connection.await;
                    }
                }
            });
            // Reap finished connections so the set does not grow.
            while connections.try_join_next().is_some() {}
        }
        drop(self.listener);
        let _ = stop.send(true);
        let drained = async { while connections.join_next().await.is_some() {} };
        if tokio::time::timeout(DRAIN_TIMEOUT, drained).await.is_err() {
            tracing::warn!(addr = %self.local, "connections still open at shutdown were dropped");
        }
    }
}

fn text(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// The answer to one request.
fn answer(routes: &Routes, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    let path = req.uri().path();
    let known = match routes {
        Routes::Metrics(_) => path == "/metrics",
        Routes::Probes(_) => path == "/healthz" || path == "/readyz",
    };
    if !known {
        return text(StatusCode::NOT_FOUND, PLAIN, "404 page not found\n".into());
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            PLAIN,
            "only GET and HEAD are served\n".into(),
        );
    }
    match routes {
        Routes::Metrics(metrics) => text(StatusCode::OK, CONTENT_TYPE, metrics.encode()),
        Routes::Probes(_) if path == "/healthz" => text(StatusCode::OK, PLAIN, "ok\n".into()),
        Routes::Probes(readiness) => readyz(readiness),
    }
}

/// `/readyz`: 200 `ok`, or 503 with one line per check in the Kubernetes style
/// (`[+]cache Node ok`, `[-]cache Node not synced`).
fn readyz(readiness: &Readiness) -> Response<Full<Bytes>> {
    let report = readiness.report();
    if report.iter().all(|c| c.ok) {
        return text(StatusCode::OK, "text/plain; charset=utf-8", "ok\n".into());
    }
    let mut body = String::new();
    for check in &report {
        if check.ok {
            body.push_str(&format!("[+]{} ok\n", check.name));
        } else {
            body.push_str(&format!("[-]{} not ready\n", check.name));
        }
    }
    body.push_str("readyz check failed\n");
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        "text/plain; charset=utf-8",
        body,
    )
}
