//! Helpers of the deploy tests (`tests/deploy_*.rs`): render `deploy/` with the real kubectl's
//! kustomize and pick objects out of the result.
//!
//! Included with `#[path = "support/deploy.rs"]`.
#![allow(dead_code)]

use serde::Deserialize as _;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `kubectl kustomize <repo>/<dir>`, one JSON value per document. Fails the test (never
/// skips) without kubectl.
pub fn render(dir: &str) -> Vec<Value> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(repo().join(dir))
        .output()
        .expect("kubectl must be on the PATH for the deploy tests");
    assert!(
        out.status.success(),
        "kubectl kustomize {dir} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_documents(&String::from_utf8(out.stdout).expect("utf-8"))
}

/// Every YAML document of `text` as JSON.
pub fn parse_documents(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| serde_yaml::Value::deserialize(doc).expect("YAML document"))
        .filter(|doc| !doc.is_null())
        .map(|doc| serde_yaml::from_value::<Value>(doc).expect("YAML as JSON"))
        .collect()
}

/// The one object of `kind` named `name`.
pub fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let found: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "exactly one {kind} {name} in the rendered manifests"
    );
    found[0]
}

/// The kinds in `docs`, in order.
pub fn kinds(docs: &[Value]) -> Vec<String> {
    docs.iter()
        .map(|d| d["kind"].as_str().unwrap_or_default().to_string())
        .collect()
}
