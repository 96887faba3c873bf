//! Target for the sandbox's request bodies and query strings, through the functions the
//! server calls: object bodies (JSON, YAML, protobuf), merge patches, JSON patches,
//! strategic merge patches, server-side apply, protobuf watch streams and query parameters.

use super::input::Input;
use nmo::sandbox::decode;
use nmo::sandbox::patch::{self, Scope, WriteContext};
use nmo::sandbox::protobuf;
use nmo::sandbox::resources::ResourceType;
use nmo::sandbox::server::{Query, percent_decode};
use nmo::sandbox::store::Store;
use serde_json::{Value, json};

const CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
    "",
    "application/json; charset=utf-8",
    "text/plain",
];

/// Live objects the patches apply to, with managed fields of two managers.
fn live(pick: u8) -> Value {
    match pick % 3 {
        0 => json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "n1", "labels": {"a": "x"}, "resourceVersion": "7",
                "managedFields": [
                    {"manager": "kubectl", "operation": "Apply", "apiVersion": "v1",
                     "time": "2026-01-01T00:00:00Z", "fieldsType": "FieldsV1",
                     "fieldsV1": {"f:metadata": {"f:labels": {"f:a": {}}},
                                  "f:spec": {"f:taints": {}}}},
                    {"manager": "nmo", "operation": "Update", "apiVersion": "v1",
                     "time": "2026-01-01T00:00:00Z", "fieldsType": "FieldsV1",
                     "fieldsV1": {"f:spec": {"f:unschedulable": {}}}}]},
            "spec": {"unschedulable": true,
                "taints": [{"key": "k", "effect": "NoSchedule"}, {"key": "j", "value": "v", "effect": "NoExecute"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}
        }),
        1 => json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default", "finalizers": ["f"],
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u"}]},
            "spec": {"nodeName": "n1", "containers": [
                {"name": "c", "image": "i", "ports": [{"containerPort": 80, "protocol": "TCP"}],
                 "env": [{"name": "A", "value": "1"}]}],
                "tolerations": [{"operator": "Exists"}]},
            "status": {"phase": "Running"}
        }),
        _ => json!({
            "apiVersion": "nodemaintenance.medik8s.io/v1beta1", "kind": "NodeMaintenance",
            "metadata": {"name": "nm", "labels": {"nodemaintenance.medik8s.io/window": "w"}},
            "spec": {"nodeName": "n1", "reason": "r"},
            "status": {"phase": "Running", "pendingPods": ["a", "b"], "drainProgress": 50}
        }),
    }
}

/// `sandbox_bodies`: the first bytes pick a resource type, a content type and an operation;
/// the rest is the body. Nothing may panic; errors are 4xx with a message; a protobuf body
/// that decodes encodes back to the same object; patches keep objects objects.
pub fn sandbox_bodies(data: &[u8]) {
    let mut input = Input::new(data);
    let types = super::all_types();
    let rt: &ResourceType = input.choose(types);
    let version = rt.preferred_version().to_string();
    let content_type = *input.choose(CONTENT_TYPES);
    let op = input.byte();
    let base = live(input.byte());
    let body = input.rest();
    let lists_box = Store::list_oracle(rt, &version);
    let lists: patch::ListOracle = &*lists_box;
    match op % 8 {
        0 => match decode::object(rt, content_type, body) {
            Ok(v) => {
                assert!(v.is_object());
                assert!(decode::check_kind(rt, &v).is_ok());
            }
            Err(e) => client_error(&e),
        },
        1 => match decode::merge_patch(body) {
            Ok(p) => {
                let mut target = base.clone();
                patch::merge_patch(&mut target, &p);
                assert!(target.is_object(), "merge patch {p} made {target}");
                // A merge patch is idempotent.
                let mut again = target.clone();
                patch::merge_patch(&mut again, &p);
                assert_eq!(again, target, "merge patch {p} twice");
            }
            Err(e) => client_error(&e),
        },
        2 => match decode::json_patch(body) {
            Ok(p) => {
                let mut target = base.clone();
                if patch::json_patch(&mut target, &p).is_err() {
                    assert_eq!(target, base, "a failed JSON patch {p} changed the object");
                }
            }
            Err(e) => client_error(&e),
        },
        3 => match decode::merge_patch(body) {
            Ok(p) => {
                if let Ok(out) = patch::strategic_merge(&base, &p, lists) {
                    assert!(out.is_object(), "strategic merge {p} made {out}");
                }
            }
            Err(e) => client_error(&e),
        },
        4 => {
            let Ok(applied) = serde_yaml::from_slice::<Value>(body) else {
                return;
            };
            if !applied.is_object() {
                return;
            }
            let scope = if op & 0x80 == 0 {
                Scope::Main {
                    has_status: rt.status_subresource,
                }
            } else {
                Scope::Status
            };
            let api_version = rt.api_version(&version);
            let ctx = WriteContext {
                manager: "fuzz",
                scope,
                api_version: &api_version,
                time: "2026-01-01T00:00:00Z",
            };
            let force = op & 0x40 != 0;
            for live in [None, Some(&base)] {
                match patch::server_side_apply(live, &applied, &ctx, force, lists) {
                    Ok(merged) => {
                        assert!(merged.is_object());
                        // An entry with no fields is dropped, as kube-apiserver does.
                        let entries = patch::read_managed(&merged);
                        assert!(
                            patch::field_set(&applied, scope, lists).is_empty()
                                || entries
                                    .iter()
                                    .any(|e| e.manager == "fuzz" && e.operation == "Apply"),
                            "apply of {applied} left no entry for its manager"
                        );
                        let mut updated = merged.clone();
                        patch::record_update(Some(&base), &mut updated, &ctx, lists);
                    }
                    Err(conflicts) => assert!(!force && !conflicts.is_empty()),
                }
            }
        }
        5 => match protobuf::decode(body) {
            Ok(v) => {
                let again = protobuf::encode(&v)
                    .unwrap_or_else(|| panic!("{v} decoded from protobuf has no message"));
                let back = protobuf::decode(&again)
                    .unwrap_or_else(|e| panic!("{v} re-encoded does not decode: {e:?}"));
                assert_eq!(back, v, "protobuf round trip");
            }
            Err(e) => client_error(&e.to_api_error(Some(&rt.kind))),
        },
        6 => {
            if let Err(e) = protobuf::decode_watch_stream(body) {
                assert!(!e.message.is_empty());
            }
        }
        _ => {
            let text = String::from_utf8_lossy(body);
            let query = Query::parse(&text);
            let _ = percent_decode(&text);
            if let Err(e) = decode::limit(query.get("limit")) {
                client_error(&e);
            }
            for key in ["resourceVersion", "watch", "labelSelector", "continue"] {
                if let Some(v) = query.get(key) {
                    let _ = decode::invalid_resource_version(v);
                    let _ = decode::invalid_watch_resource_version(v);
                }
            }
        }
    }
}

fn client_error(e: &nmo::sandbox::error::ApiError) {
    assert!(
        (400..500).contains(&e.code) && !e.message.is_empty(),
        "{} {:?}",
        e.code,
        e.message
    );
}
