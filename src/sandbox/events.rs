//! The two Event APIs are two views of one store: objects are stored as core `v1` Events and
//! converted to and from `events.k8s.io/v1` the way kube-apiserver converts them. Pure.

use serde_json::{Map, Value, json};

const COMMON: [&str; 4] = ["metadata", "reason", "type", "action"];

/// `events.k8s.io/v1` -> core `v1`.
pub fn to_core(new: &Value) -> Value {
    let mut out = Map::new();
    out.insert("apiVersion".into(), json!("v1"));
    out.insert("kind".into(), json!("Event"));
    for k in COMMON {
        if let Some(v) = new.get(k) {
            out.insert(k.into(), v.clone());
        }
    }
    let copy = |out: &mut Map<String, Value>, from: &str, to: &str| {
        if let Some(v) = new.get(from).filter(|v| !v.is_null()) {
            out.insert(to.into(), v.clone());
        }
    };
    copy(&mut out, "regarding", "involvedObject");
    copy(&mut out, "related", "related");
    copy(&mut out, "note", "message");
    copy(&mut out, "eventTime", "eventTime");
    copy(&mut out, "reportingController", "reportingComponent");
    copy(&mut out, "reportingInstance", "reportingInstance");
    copy(&mut out, "deprecatedFirstTimestamp", "firstTimestamp");
    copy(&mut out, "deprecatedLastTimestamp", "lastTimestamp");
    let mut source = Map::new();
    if let Some(c) = new.get("reportingController") {
        source.insert("component".into(), c.clone());
    }
    if let Some(h) = new.get("reportingInstance") {
        source.insert("host".into(), h.clone());
    }
    if let Some(s) = new.get("deprecatedSource").and_then(Value::as_object) {
        for (k, v) in s {
            source.entry(k.clone()).or_insert(v.clone());
        }
    }
    if !source.is_empty() {
        out.insert("source".into(), Value::Object(source));
    }
    match new.get("series").filter(|s| !s.is_null()) {
        Some(series) => {
            out.insert(
                "count".into(),
                series.get("count").cloned().unwrap_or(json!(1)),
            );
            if let Some(t) = series.get("lastObservedTime") {
                out.insert(
                    "series".into(),
                    json!({"count": series.get("count"), "lastObservedTime": t}),
                );
            }
        }
        None => {
            let count = new.get("deprecatedCount").cloned().unwrap_or(json!(1));
            out.insert("count".into(), count);
        }
    }
    Value::Object(out)
}

/// core `v1` -> `events.k8s.io/v1`.
pub fn to_new(core: &Value) -> Value {
    let mut out = Map::new();
    out.insert("apiVersion".into(), json!("events.k8s.io/v1"));
    out.insert("kind".into(), json!("Event"));
    for k in COMMON {
        if let Some(v) = core.get(k) {
            out.insert(k.into(), v.clone());
        }
    }
    let copy = |out: &mut Map<String, Value>, from: &str, to: &str| {
        if let Some(v) = core.get(from).filter(|v| !v.is_null()) {
            out.insert(to.into(), v.clone());
        }
    };
    copy(&mut out, "involvedObject", "regarding");
    copy(&mut out, "related", "related");
    copy(&mut out, "message", "note");
    copy(&mut out, "eventTime", "eventTime");
    copy(&mut out, "reportingInstance", "reportingInstance");
    copy(&mut out, "firstTimestamp", "deprecatedFirstTimestamp");
    copy(&mut out, "lastTimestamp", "deprecatedLastTimestamp");
    copy(&mut out, "source", "deprecatedSource");
    let controller = core
        .get("reportingComponent")
        .filter(|v| v.as_str().is_some_and(|s| !s.is_empty()))
        .or_else(|| core.pointer("/source/component"));
    if let Some(c) = controller {
        out.insert("reportingController".into(), c.clone());
    }
    let count = core.get("count").and_then(Value::as_i64).unwrap_or(0);
    match core.get("series").filter(|s| !s.is_null()) {
        Some(s) => {
            out.insert(
                "series".into(),
                json!({"count": s.get("count").cloned().unwrap_or(json!(count)), "lastObservedTime": s.get("lastObservedTime")}),
            );
        }
        None if count > 1 => {
            out.insert("deprecatedCount".into(), json!(count));
        }
        None => {}
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_written_through_either_api_reads_the_same_through_the_other() {
        let new = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e", "namespace": "default"}, "reason": "Drained", "type": "Normal",
            "action": "Drain", "note": "node drained", "reportingController": "nmo",
            "reportingInstance": "nmo-0", "eventTime": "2026-01-01T00:00:00.000000Z",
            "regarding": {"kind": "Node", "name": "n1"},
            "series": {"count": 3, "lastObservedTime": "2026-01-01T00:01:00.000000Z"}});
        let core = to_core(&new);
        assert_eq!(core["involvedObject"]["name"], json!("n1"));
        assert_eq!(core["message"], json!("node drained"));
        assert_eq!(core["count"], json!(3));
        assert_eq!(core["source"]["component"], json!("nmo"));
        let back = to_new(&core);
        for k in [
            "regarding",
            "note",
            "reportingController",
            "reason",
            "action",
            "eventTime",
        ] {
            assert_eq!(back[k], new[k], "{k}");
        }
        assert_eq!(back["series"]["count"], json!(3));
    }

    #[test]
    fn a_core_event_gets_its_controller_from_the_source_component() {
        let core = json!({"metadata": {"name": "e"}, "message": "m", "count": 1,
            "source": {"component": "kubelet"}, "involvedObject": {"kind": "Pod", "name": "p"}});
        let new = to_new(&core);
        assert_eq!(new["reportingController"], json!("kubelet"));
        assert_eq!(new["note"], json!("m"));
        assert!(new.get("series").is_none());
    }
}
