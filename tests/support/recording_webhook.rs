//! A validating webhook for tests: it records every AdmissionReview it gets and answers as
//! told (allow, deny, a 503, or never). Also an HTTPS client for tests that talk to webhooks
//! directly.
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// How the webhook answers.
#[derive(Clone, Debug)]
pub enum Answer {
    /// Allowed, with these warnings.
    Allow(Vec<String>),
    /// Denied with this status code and message, and these warnings.
    Deny(u16, String, Vec<String>),
    /// Never answers.
    Hang,
}

/// A recording webhook on a free port of 127.0.0.1.
pub struct RecordingWebhook {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Value>>>,
    answer: Arc<Mutex<Answer>>,
    task: tokio::task::JoinHandle<()>,
}

impl RecordingWebhook {
    /// Serve with the certificate pair (PEM) given; allows everything at first.
    pub async fn start((cert_pem, key_pem): &(String, String)) -> RecordingWebhook {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .unwrap();
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let answer = Arc::new(Mutex::new(Answer::Allow(vec![])));
        let (reqs, ans) = (requests.clone(), answer.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, reqs, ans) = (acceptor.clone(), reqs.clone(), ans.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let (reqs, ans) = (reqs.clone(), ans.clone());
                            async move {
                                let body = req.into_body().collect().await.unwrap().to_bytes();
                                let review: Value =
                                    serde_json::from_slice(&body).unwrap_or(Value::Null);
                                let uid = review["request"]["uid"].clone();
                                reqs.lock().unwrap().push(review);
                                let answer = ans.lock().unwrap().clone();
                                let response = match answer {
                                    Answer::Allow(warnings) => {
                                        json!({"uid": uid, "allowed": true, "warnings": warnings})
                                    }
                                    Answer::Deny(code, message, warnings) => {
                                        json!({"uid": uid, "allowed": false,
                                    "warnings": warnings,
                                    "status": {"code": code, "message": message, "reason": "Forbidden"}})
                                    }
                                    Answer::Hang => std::future::pending().await,
                                };
                                let out = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response});
                                Ok::<_, std::convert::Infallible>(
                                    http::Response::builder()
                                        .header("Content-Type", "application/json")
                                        .body(Full::new(Bytes::from(out.to_string())))
                                        .unwrap(),
                                )
                            }
                        },
                    );
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
                });
            }
        });
        RecordingWebhook {
            addr,
            requests,
            answer,
            task,
        }
    }

    /// Answer this way from now on.
    pub fn answer(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    /// The reviews received so far.
    pub fn requests(&self) -> Vec<Value> {
        self.requests.lock().unwrap().clone()
    }

    /// `https://127.0.0.1:PORT/check`.
    pub fn url(&self) -> String {
        format!("https://{}/check", self.addr)
    }
}

impl Drop for RecordingWebhook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn client_config(ca_pem: &str) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// A new TLS handshake with `addr`, trusting `ca_pem`: the leaf certificate it presents.
pub async fn served_certificate(addr: SocketAddr, ca_pem: &str) -> CertificateDer<'static> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(client_config(ca_pem)))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .expect("TLS handshake");
    tls.get_ref().1.peer_certificates().unwrap()[0].clone()
}

/// POST `body` to `https://addr{path}` over HTTP/1.1, trusting `ca_pem`: the status and body.
pub async fn post(
    addr: SocketAddr,
    ca_pem: &str,
    method: &str,
    path: &str,
    body: &Value,
) -> (u16, String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(client_config(ca_pem)))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .expect("TLS handshake");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("Host", addr.to_string())
        .header("Content-Type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let code = resp.status().as_u16();
    let text = resp.into_body().collect().await.unwrap().to_bytes();
    (code, String::from_utf8_lossy(&text).into_owned())
}
