//! Target for the sandbox's HTTP layer: requests written to a socket of a running sandbox
//! (the server takes hyper's `Incoming` bodies, so there is no socket-free way in), parsed by
//! hyper and routed, decoded and served by `nmo::sandbox::server` as for any client.
//!
//! Each input gets a fresh sandbox with nmo's CRDs, a node, a pod, a PDB and a
//! NodeMaintenance, so a crash reproduces from its input alone. The fault injection admin
//! endpoint (`/sandbox/...`) is left out: a latency rule there would stall the run by design.

use super::input::Input;
use nmo::sandbox::Sandbox;
use serde_json::{Value, json};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

const PATHS: &[&str] = &[
    "/api",
    "/apis",
    "/api/v1",
    "/apis/apps/v1",
    "/apis/nodemaintenance.medik8s.io",
    "/version",
    "/openapi/v3",
    "/openapi/v3/api/v1",
    "/openapi/v3/apis/nodemaintenance.medik8s.io/v1beta1",
    "/api/v1/nodes",
    "/api/v1/nodes/{name}",
    "/api/v1/nodes/{name}/status",
    "/api/v1/pods",
    "/api/v1/namespaces/{ns}/pods",
    "/api/v1/namespaces/{ns}/pods/{name}",
    "/api/v1/namespaces/{ns}/pods/{name}/eviction",
    "/api/v1/namespaces/{ns}/pods/{name}/binding",
    "/api/v1/namespaces/{ns}/pods/{name}/status",
    "/api/v1/namespaces",
    "/api/v1/namespaces/{name}",
    "/api/v1/namespaces/{ns}/events",
    "/api/v1/namespaces/{ns}/configmaps/{name}",
    "/apis/events.k8s.io/v1/namespaces/{ns}/events",
    "/apis/apps/v1/namespaces/{ns}/replicasets/{name}",
    "/apis/apps/v1/namespaces/{ns}/deployments",
    "/apis/apps/v1/daemonsets",
    "/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets/{name}",
    "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}",
    "/apis/nodemaintenance.medik8s.io/v1beta1/nodemaintenances",
    "/apis/nodemaintenance.medik8s.io/v1beta1/nodemaintenances/{name}",
    "/apis/nodemaintenance.medik8s.io/v1beta1/nodemaintenances/{name}/status",
    "/apis/nodemaintenance.medik8s.io/v1alpha1/maintenancewindows",
    "/apis/nodemaintenance.medik8s.io/v1alpha1/maintenancewindows/{name}",
    "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}",
    "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
    "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
    "/apis/authentication.k8s.io/v1/tokenreviews",
];

const NAMES: &[&str] = &[
    "n1",
    "p",
    "nm",
    "w",
    "pdb",
    "default",
    "kube-system",
    "nodemaintenances.nodemaintenance.medik8s.io",
];

const QUERY_KEYS: &[&str] = &[
    "labelSelector",
    "fieldSelector",
    "watch",
    "resourceVersion",
    "resourceVersionMatch",
    "limit",
    "continue",
    "fieldManager",
    "force",
    "dryRun",
    "timeoutSeconds",
    "allowWatchBookmarks",
    "sendInitialEvents",
    "propagationPolicy",
    "gracePeriodSeconds",
    "fieldValidation",
];

const QUERY_VALUES: &[&str] = &[
    "true",
    "false",
    "1",
    "0",
    "All",
    "Strict",
    "a=x",
    "a in (x,y)",
    "!a",
    "metadata.name=n1",
    "spec.nodeName=n1",
    "NotOlderThan",
    "Exact",
    "Foreground",
    "-1",
    "fuzz",
];

const CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/apply-patch+yaml",
    "application/merge-patch+json",
    "application/json-patch+json",
    "application/strategic-merge-patch+json",
    "application/vnd.kubernetes.protobuf",
    "",
];

const ACCEPTS: &[&str] = &[
    "application/json",
    "application/vnd.kubernetes.protobuf",
    "application/json;as=Table;v=v1;g=meta.k8s.io",
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
    "application/vnd.kubernetes.protobuf;type=watch",
    "*/*",
    "",
];

/// How long a request may go unanswered before the run counts it as a hang.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

/// Panics anywhere in the process (a server task's panic does not reach the fuzz target by
/// itself; libFuzzer's own hook aborts on it, the smoke test counts it here).
static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    static HOOK: OnceLock<()> = OnceLock::new();
    HOOK.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            previous(info);
        }));
    });
}

fn fixtures() -> &'static [Value] {
    static FIXTURES: OnceLock<Vec<Value>> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        let mut out: Vec<Value> = nmo::api::crds()
            .iter()
            .map(|c| serde_json::to_value(c).expect("a CRD as JSON"))
            .collect();
        out.extend([
            json!({"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": "n1", "labels": {"a": "x", "kubernetes.io/os": "linux"}},
                "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}}),
            json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "namespace": "default", "labels": {"a": "x"}},
                "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]}}),
            json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                "metadata": {"name": "pdb", "namespace": "default"},
                "spec": {"minAvailable": 1, "selector": {"matchLabels": {"a": "x"}}}}),
            json!({"apiVersion": "nodemaintenance.medik8s.io/v1beta1", "kind": "NodeMaintenance",
                "metadata": {"name": "nm"}, "spec": {"nodeName": "n1", "reason": "fuzz"}}),
        ]);
        out
    })
}

/// One request, as bytes on the wire.
struct Request {
    bytes: Vec<u8>,
    /// A structured request (not raw bytes): it must get an HTTP/1.1 answer.
    expect_answer: bool,
}

/// Percent-encode everything but unreserved characters (a fuzzed string as a path segment or
/// query value).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn pick(input: &mut Input, items: &[&str]) -> String {
    match input.byte() {
        0..=231 => input.choose(items).to_string(),
        _ => input.string(),
    }
}

fn request(input: &mut Input, last: bool) -> Request {
    let method = *input.choose(METHODS);
    let mut path = match input.byte() {
        0..=239 => input.choose(PATHS).to_string(),
        // Any path, percent-encoded but for its slashes (a raw one could end the request
        // line and smuggle a second request onto the connection).
        _ => format!(
            "/{}",
            input
                .string()
                .split('/')
                .map(encode)
                .collect::<Vec<_>>()
                .join("/")
        ),
    };
    if path.contains("{ns}") {
        path = path.replace(
            "{ns}",
            &encode(&pick(input, &["default", "kube-system", "x"])),
        );
    }
    if path.contains("{name}") {
        path = path.replace("{name}", &encode(&pick(input, NAMES)));
    }
    let mut query = Vec::new();
    for _ in 0..input.below(4) {
        let key = pick(input, QUERY_KEYS);
        let value = pick(input, QUERY_VALUES);
        query.push(format!("{}={}", encode(&key), encode(&value)));
    }
    let content_type = pick(input, CONTENT_TYPES);
    let accept = pick(input, ACCEPTS);
    let body = if last { input.rest() } else { input.bytes() };
    let target = if query.is_empty() {
        path
    } else {
        format!("{path}?{}", query.join("&"))
    };
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: sandbox\r\nConnection: close\r\n");
    for (name, value) in [("Content-Type", &content_type), ("Accept", &accept)] {
        // Header values cannot hold control characters; such a header is left out.
        if !value.is_empty() && !value.bytes().any(|b| b.is_ascii_control()) {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    Request {
        bytes,
        expect_answer: true,
    }
}

/// `sandbox_http`: an input that starts with `RAW\n` is written to the socket as it is (and
/// may get any answer or none); any other input is 1-3 structured requests (method, path from
/// the sandbox's routes, query parameters, content type, accept, body). Nothing may panic;
/// each structured request gets an HTTP answer; an error answer is a `Status` whose `code`
/// is the HTTP status and whose message is not empty.
pub fn sandbox_http(data: &[u8]) {
    count_panics();
    let requests = match data.strip_prefix(b"RAW\n") {
        Some(raw) => vec![Request {
            bytes: raw.to_vec(),
            expect_answer: false,
        }],
        None => {
            let mut input = Input::new(data);
            let n = 1 + input.below(3);
            (0..n).map(|i| request(&mut input, i + 1 == n)).collect()
        }
    };
    // Requests for the fault injection admin endpoint are not sent (see the module docs).
    let admin = format!(" /{}", nmo::sandbox::faults::admin::PREFIX);
    let before = PANICS.load(Ordering::SeqCst);
    runtime().block_on(async {
        let sandbox = Sandbox::builder()
            .https(false)
            .start()
            .await
            .expect("a sandbox");
        for obj in fixtures() {
            sandbox.seed(obj.clone()).expect("a fixture");
        }
        let address = sandbox.url().trim_start_matches("http://").to_string();
        for r in &requests {
            let line_end = r
                .bytes
                .iter()
                .position(|b| *b == b'\n')
                .unwrap_or(r.bytes.len());
            if String::from_utf8_lossy(&r.bytes[..line_end]).contains(&admin) {
                continue;
            }
            exchange(&address, r).await;
        }
        drop(sandbox);
    });
    assert_eq!(
        PANICS.load(Ordering::SeqCst),
        before,
        "the sandbox panicked while serving this input"
    );
}

async fn exchange(address: &str, r: &Request) {
    let mut stream = TcpStream::connect(address)
        .await
        .expect("connect to the sandbox");
    // Close with a reset, so runs of many connections leave no TIME_WAIT behind.
    let _ = stream.set_zero_linger();
    if stream.write_all(&r.bytes).await.is_err() {
        assert!(
            !r.expect_answer,
            "the sandbox closed the connection mid-request"
        );
        return;
    }
    if !r.expect_answer {
        // Raw bytes may leave a request unfinished: end the connection's input so the server
        // does not wait for the rest.
        let _ = stream.shutdown().await;
    }
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    let mut header_end = None;
    loop {
        let read = tokio::time::timeout(ANSWER_WITHIN, stream.read(&mut buf)).await;
        let n = match read {
            Ok(Ok(n)) => n,
            Ok(Err(_)) => 0,
            Err(_) => {
                assert!(
                    header_end.is_some(),
                    "no answer within {ANSWER_WITHIN:?} to {:?}",
                    String::from_utf8_lossy(&r.bytes)
                );
                // A streamed answer (a watch) goes on: the head is enough.
                break;
            }
        };
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        if header_end.is_none() {
            header_end = answer
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|i| i + 4);
            if let Some(end) = header_end
                && status_of(&answer[..end]).is_some_and(|s| s < 400)
            {
                // Success: the body may be a stream that never ends; the head is enough.
                break;
            }
        }
        if answer.len() > (4 << 20) {
            break;
        }
    }
    if !r.expect_answer {
        if std::env::var_os("NMO_FUZZ_DEBUG").is_some() {
            eprintln!("raw answer: {:?}", String::from_utf8_lossy(&answer));
        }
        return;
    }
    let end = header_end.unwrap_or_else(|| {
        panic!(
            "no HTTP answer to {:?}: got {:?}",
            String::from_utf8_lossy(&r.bytes),
            String::from_utf8_lossy(&answer)
        )
    });
    let status = status_of(&answer[..end]).unwrap_or_else(|| {
        panic!(
            "not an HTTP status line: {:?}",
            String::from_utf8_lossy(&answer)
        )
    });
    assert!((100..600).contains(&status), "status {status}");
    let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
    // hyper answers a request it cannot parse with an empty 4xx of its own; the sandbox
    // answers errors in JSON.
    if status >= 400
        && head.contains("content-type: application/json")
        && !r.bytes.starts_with(b"HEAD ")
    {
        let body = &answer[end..];
        let body = if head.contains("transfer-encoding: chunked") {
            dechunk(body)
        } else {
            body.to_vec()
        };
        let status_obj: Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!(
                "error {status} with a body that is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&body)
            )
        });
        assert_eq!(status_obj["kind"], "Status", "{status_obj}");
        assert_eq!(status_obj["code"], json!(status), "{status_obj}");
        assert!(
            status_obj["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "an error without a message: {status_obj}"
        );
    }
}

fn status_of(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    (parts.next()? == "HTTP/1.1").then_some(())?;
    parts.next()?.parse().ok()
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = body.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&body[..line_end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
            .unwrap_or(0);
        body = &body[line_end + 2..];
        if size == 0 || body.len() < size {
            break;
        }
        out.extend_from_slice(&body[..size]);
        body = body.get(size + 2..).unwrap_or_default();
    }
    out
}
