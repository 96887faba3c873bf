//! A minimal Prometheus HTTP API client: one instant query (`GET /api/v1/query`) over
//! plain HTTP/1.1 with hyper. TLS to Prometheus is left to a sidecar or a service mesh, as
//! with most in-cluster Prometheus endpoints; an `https` URL is refused with a clear error.

use std::time::Duration as StdDuration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::Deserialize;

use super::{GateError, QueryResult};

/// How long one query may take, connection included.
const QUERY_TIMEOUT: StdDuration = StdDuration::from_secs(10);

/// A Prometheus HTTP API at a base URL (`http://prometheus.monitoring:9090`, optionally with
/// a path prefix such as `/prometheus`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrometheusClient {
    url: String,
}

impl PrometheusClient {
    /// A client for `url`, checked: `http://host[:port][/prefix]`.
    pub fn new(url: &str) -> Result<PrometheusClient, GateError> {
        let bad = |reason: &str| GateError::BadUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let uri: http::Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(&format!("not a URL: {e}")))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(bad(
                    "https is not supported: use an http URL (in-cluster Service) or a TLS-terminating sidecar",
                ));
            }
            _ => return Err(bad("must start with http://")),
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(bad("has no host"));
        }
        if uri.query().is_some() {
            return Err(bad("must not have a query string"));
        }
        Ok(PrometheusClient {
            url: url.trim_end_matches('/').to_string(),
        })
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Run an instant query.
    pub async fn query(&self, promql: &str) -> Result<QueryResult, GateError> {
        match tokio::time::timeout(QUERY_TIMEOUT, self.query_inner(promql)).await {
            Ok(result) => result,
            Err(_) => {
                Err(self.unreachable(format!("no answer within {}s", QUERY_TIMEOUT.as_secs())))
            }
        }
    }

    fn unreachable(&self, reason: String) -> GateError {
        GateError::Unreachable {
            url: self.url.clone(),
            reason,
        }
    }

    async fn query_inner(&self, promql: &str) -> Result<QueryResult, GateError> {
        let target: http::Uri = format!("{}/api/v1/query?query={}", self.url, encode(promql))
            .parse()
            .map_err(|e: http::uri::InvalidUri| self.unreachable(e.to_string()))?;
        let host = target.host().unwrap_or_default().to_string();
        let port = target.port_u16().unwrap_or(80);
        let authority = target
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_default();
        let stream = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| self.unreachable(e.to_string()))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.unreachable(e.to_string()))?;
        let driver = tokio::spawn(connection);
        let request =
            http::Request::get(target.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
                .header(http::header::HOST, authority)
                .header(http::header::ACCEPT, "application/json")
                .header(http::header::USER_AGENT, "nmo-health-gate")
                .body(Empty::<Bytes>::new())
                .map_err(|e| self.unreachable(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.unreachable(e.to_string()))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| self.unreachable(e.to_string()))?
            .to_bytes();
        driver.abort();
        parse_answer(&self.url, status.as_u16(), &body)
    }
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    result_type: String,
    result: serde_json::Value,
}

/// Read Prometheus' JSON answer.
fn parse_answer(url: &str, status: u16, body: &[u8]) -> Result<QueryResult, GateError> {
    let failed = |message: String| GateError::QueryFailed {
        url: url.to_string(),
        status,
        message,
    };
    let answer: Answer = serde_json::from_slice(body).map_err(|e| {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).to_string();
        failed(format!("not a Prometheus API answer ({e}): {text}"))
    })?;
    if answer.status != "success" || !(200..300).contains(&status) {
        return Err(failed(answer.error.unwrap_or(answer.status)));
    }
    let data = answer
        .data
        .ok_or_else(|| failed("the answer has no data".to_string()))?;
    let series = match data.result_type.as_str() {
        "vector" | "matrix" => data
            .result
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|item| series_name(item.get("metric")))
                    .collect()
            })
            .unwrap_or_default(),
        // A scalar or a string is one value: it counts as a result.
        _ => vec![data.result.to_string()],
    };
    Ok(QueryResult { series })
}

/// `name{label="value",...}` for a series' labels.
fn series_name(metric: Option<&serde_json::Value>) -> String {
    let Some(labels) = metric.and_then(|m| m.as_object()) else {
        return "{}".to_string();
    };
    let name = labels
        .get("__name__")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    let rest: Vec<String> = labels
        .iter()
        .filter(|(k, _)| k.as_str() != "__name__")
        .map(|(k, v)| format!("{k}={}", v))
        .collect();
    format!("{name}{{{}}}", rest.join(","))
}

/// Percent-encode a query parameter value (RFC 3986 unreserved characters stay).
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_when_configured() {
        assert!(PrometheusClient::new("http://prometheus.monitoring:9090/").is_ok());
        assert_eq!(
            PrometheusClient::new("http://p:9090/prom/").unwrap().url(),
            "http://p:9090/prom"
        );
        let err = PrometheusClient::new("https://p:9090")
            .unwrap_err()
            .to_string();
        assert!(err.contains("https is not supported"), "{err}");
        let err = PrometheusClient::new("p:9090").unwrap_err().to_string();
        assert!(err.starts_with("prometheus.url \"p:9090\""), "{err}");
    }

    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(
            encode("ALERTS{alertstate=\"firing\"} > 0"),
            "ALERTS%7Balertstate%3D%22firing%22%7D%20%3E%200"
        );
    }

    #[test]
    fn vector_answers_list_their_series_and_errors_are_named() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"__name__":"ALERTS","alertname":"NodeDown"},"value":[1,"1"]}]}}"#;
        let r = parse_answer("http://p", 200, body).unwrap();
        assert_eq!(r.series, ["ALERTS{alertname=\"NodeDown\"}"]);
        let empty = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert!(parse_answer("http://p", 200, empty).unwrap().is_empty());
        let bad = br#"{"status":"error","errorType":"bad_data","error":"parse error at char 3"}"#;
        assert_eq!(
            parse_answer("http://p", 400, bad).unwrap_err().to_string(),
            "Prometheus at http://p answered 400: parse error at char 3"
        );
        let html = b"<html>not found</html>";
        assert!(
            parse_answer("http://p", 404, html)
                .unwrap_err()
                .to_string()
                .contains("not a Prometheus API answer")
        );
    }
}
