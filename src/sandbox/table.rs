//! Server-side printing: `meta.k8s.io/v1` Tables for `kubectl get`, with the usual node and
//! pod columns, CRD printer columns evaluated with Kubernetes JSONPath (filters included),
//! and the full object in every row. Pure.

use super::resources::{PrinterColumn, ResourceType};
use crate::clock::Clock;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

fn col(name: &str, type_: &str, format: &str, priority: i64, description: &str) -> Value {
    json!({"name": name, "type": type_, "format": format, "description": description, "priority": priority})
}

fn name_col() -> Value {
    col(
        "Name",
        "string",
        "name",
        0,
        "Name must be unique within a namespace.",
    )
}

fn age_col() -> Value {
    col(
        "Age",
        "string",
        "",
        0,
        "CreationTimestamp is a timestamp representing the server time when this object was created.",
    )
}

/// Build the Table for objects of a type.
pub fn table(
    rt: &ResourceType,
    version: &str,
    objects: &[Value],
    rv: &str,
    clock: &dyn Clock,
) -> Value {
    let now = clock.now();
    let (columns, cells): (Vec<Value>, Cells) = match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "nodes") => (
            vec![
                name_col(),
                col("Status", "string", "", 0, "The status of the node"),
                col("Roles", "string", "", 0, "The roles of the node"),
                age_col(),
                col(
                    "Version",
                    "string",
                    "",
                    0,
                    "Kubelet Version reported by the node.",
                ),
                col("Internal-IP", "string", "", 1, "List of internal IPs."),
                col("External-IP", "string", "", 1, "List of external IPs."),
                col(
                    "OS-Image",
                    "string",
                    "",
                    1,
                    "OS Image reported by the node.",
                ),
                col(
                    "Kernel-Version",
                    "string",
                    "",
                    1,
                    "Kernel Version reported by the node.",
                ),
                col(
                    "Container-Runtime",
                    "string",
                    "",
                    1,
                    "Container Runtime Version reported by the node.",
                ),
            ],
            Box::new(move |o| {
                let info = |k: &str| {
                    json!(str_at(o, &format!("/status/nodeInfo/{k}")).unwrap_or("<unknown>"))
                };
                vec![
                    json!(name(o)),
                    json!(node_status(o)),
                    json!(node_roles(o)),
                    json!(age(o, now)),
                    info("kubeletVersion"),
                    json!(address(o, "InternalIP")),
                    json!(address(o, "ExternalIP")),
                    info("osImage"),
                    info("kernelVersion"),
                    info("containerRuntimeVersion"),
                ]
            }),
        ),
        ("", "pods") => (
            vec![
                name_col(),
                col(
                    "Ready",
                    "string",
                    "",
                    0,
                    "The aggregate readiness state of this pod for accepting traffic.",
                ),
                col(
                    "Status",
                    "string",
                    "",
                    0,
                    "The aggregate status of the containers in this pod.",
                ),
                col(
                    "Restarts",
                    "string",
                    "",
                    0,
                    "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
                ),
                age_col(),
                col(
                    "IP",
                    "string",
                    "",
                    1,
                    "IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
                ),
                col(
                    "Node",
                    "string",
                    "",
                    1,
                    "Name of the Node this Pod is scheduled on.",
                ),
                col(
                    "Nominated Node",
                    "string",
                    "",
                    1,
                    "nominatedNodeName is set only when this pod preempts other pods on the node.",
                ),
                col(
                    "Readiness Gates",
                    "string",
                    "",
                    1,
                    "If specified, all readiness gates will be evaluated for pod readiness.",
                ),
            ],
            Box::new(move |o| {
                vec![
                    json!(name(o)),
                    json!(pod_ready(o)),
                    json!(pod_status(o)),
                    json!("0"),
                    json!(age(o, now)),
                    json!(str_at(o, "/status/podIP").unwrap_or("<none>")),
                    json!(str_at(o, "/spec/nodeName").unwrap_or("<none>")),
                    json!("<none>"),
                    json!("<none>"),
                ]
            }),
        ),
        ("", "namespaces") => (
            vec![
                name_col(),
                col("Status", "string", "", 0, "The status of the namespace"),
                age_col(),
            ],
            Box::new(move |o| {
                vec![
                    json!(name(o)),
                    json!(str_at(o, "/status/phase").unwrap_or("Active")),
                    json!(age(o, now)),
                ]
            }),
        ),
        ("policy", "poddisruptionbudgets") => (
            vec![
                name_col(),
                col(
                    "Min Available",
                    "string",
                    "",
                    0,
                    "The minimum number of pods that must be available.",
                ),
                col(
                    "Max Unavailable",
                    "string",
                    "",
                    0,
                    "The maximum number of pods that may be unavailable.",
                ),
                col(
                    "Allowed Disruptions",
                    "integer",
                    "",
                    0,
                    "Calculated number of pods that may be disrupted at this time.",
                ),
                age_col(),
            ],
            Box::new(move |o| {
                let iv = |p: &str| match o.pointer(p) {
                    Some(Value::Number(n)) => json!(n.to_string()),
                    Some(Value::String(s)) => json!(s),
                    _ => json!("N/A"),
                };
                vec![
                    json!(name(o)),
                    iv("/spec/minAvailable"),
                    iv("/spec/maxUnavailable"),
                    json!(
                        o.pointer("/status/disruptionsAllowed")
                            .and_then(Value::as_i64)
                            .unwrap_or(0)
                    ),
                    json!(age(o, now)),
                ]
            }),
        ),
        ("", "events") | ("events.k8s.io", "events") => (
            vec![
                col("Last Seen", "string", "", 0, "Time of the last occurrence."),
                col(
                    "Type",
                    "string",
                    "",
                    0,
                    "Type of this event (Normal, Warning).",
                ),
                col("Reason", "string", "", 0, "Why the action was taken."),
                col("Object", "string", "", 0, "The object this event is about."),
                col(
                    "Message",
                    "string",
                    "",
                    0,
                    "A human-readable description of the status of this operation.",
                ),
                col(
                    "Name",
                    "string",
                    "name",
                    1,
                    "Name must be unique within a namespace.",
                ),
            ],
            Box::new(move |o| {
                let core = if o.get("involvedObject").is_some() {
                    o.clone()
                } else {
                    super::events::to_core(o)
                };
                let seen = [
                    "/lastTimestamp",
                    "/eventTime",
                    "/series/lastObservedTime",
                    "/metadata/creationTimestamp",
                ]
                .iter()
                .find_map(|p| str_at(&core, p))
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| human_duration(now.signed_duration_since(t.with_timezone(&Utc))))
                .unwrap_or_else(|| "<unknown>".into());
                let object = format!(
                    "{}/{}",
                    str_at(&core, "/involvedObject/kind")
                        .unwrap_or_default()
                        .to_lowercase(),
                    str_at(&core, "/involvedObject/name").unwrap_or_default()
                );
                vec![
                    json!(seen),
                    json!(str_at(&core, "/type").unwrap_or_default()),
                    json!(str_at(&core, "/reason").unwrap_or_default()),
                    json!(object),
                    json!(str_at(&core, "/message").unwrap_or_default()),
                    json!(name(o)),
                ]
            }),
        ),
        ("coordination.k8s.io", "leases") => (
            vec![
                name_col(),
                col("Holder", "string", "", 0, "The holder of the lease."),
                age_col(),
            ],
            Box::new(move |o| {
                vec![
                    json!(name(o)),
                    json!(str_at(o, "/spec/holderIdentity").unwrap_or("")),
                    json!(age(o, now)),
                ]
            }),
        ),
        ("apps", "daemonsets") => (
            vec![
                name_col(),
                col(
                    "Desired",
                    "integer",
                    "",
                    0,
                    "The number of nodes that should be running the daemon pod.",
                ),
                col(
                    "Current",
                    "integer",
                    "",
                    0,
                    "The number of nodes running at least one daemon pod.",
                ),
                col(
                    "Ready",
                    "integer",
                    "",
                    0,
                    "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and ready.",
                ),
                age_col(),
            ],
            Box::new(move |o| {
                let n = |p: &str| json!(o.pointer(p).and_then(Value::as_i64).unwrap_or(0));
                vec![
                    json!(name(o)),
                    n("/status/desiredNumberScheduled"),
                    n("/status/currentNumberScheduled"),
                    n("/status/numberReady"),
                    json!(age(o, now)),
                ]
            }),
        ),
        ("apps", "replicasets") => (
            vec![
                name_col(),
                col("Desired", "integer", "", 0, "Number of desired pods."),
                col("Current", "integer", "", 0, "Number of actual replicas."),
                col("Ready", "integer", "", 0, "Number of ready replicas."),
                age_col(),
            ],
            Box::new(move |o| {
                let n = |p: &str| json!(o.pointer(p).and_then(Value::as_i64).unwrap_or(0));
                vec![
                    json!(name(o)),
                    json!(
                        o.pointer("/spec/replicas")
                            .and_then(Value::as_i64)
                            .unwrap_or(1)
                    ),
                    n("/status/replicas"),
                    n("/status/readyReplicas"),
                    json!(age(o, now)),
                ]
            }),
        ),
        ("apps", "deployments" | "statefulsets") => (
            vec![
                name_col(),
                col("Ready", "string", "", 0, "Number of ready replicas."),
                age_col(),
            ],
            Box::new(move |o| {
                let want = o
                    .pointer("/spec/replicas")
                    .and_then(Value::as_i64)
                    .unwrap_or(1);
                let ready = o
                    .pointer("/status/readyReplicas")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                vec![
                    json!(name(o)),
                    json!(format!("{ready}/{want}")),
                    json!(age(o, now)),
                ]
            }),
        ),
        _ if rt.custom => {
            let pcs: Vec<PrinterColumn> = rt
                .version(version)
                .or_else(|| rt.versions.first())
                .map(|v| v.printer_columns.clone())
                .unwrap_or_default();
            let mut columns = vec![name_col()];
            for c in &pcs {
                columns.push(col(
                    &c.name,
                    &c.type_,
                    &c.format,
                    c.priority,
                    &c.description,
                ));
            }
            if pcs.is_empty() {
                columns.push(col("Age", "date", "", 0, "CreationTimestamp is a timestamp representing the server time when this object was created."));
            }
            custom_cells(columns, pcs, now)
        }
        // fidelity: the columns kube-apiserver prints for the other common built-in kinds.
        ("", "configmaps") => (
            vec![
                name_col(),
                col(
                    "Data",
                    "string",
                    "",
                    0,
                    "The number of keys in data and binaryData.",
                ),
                age_col(),
            ],
            Box::new(move |o| {
                let n = |p: &str| {
                    o.pointer(p)
                        .and_then(Value::as_object)
                        .map_or(0, |m| m.len())
                };
                vec![
                    json!(name(o)),
                    json!(n("/data") + n("/binaryData")),
                    json!(age(o, now)),
                ]
            }),
        ),
        ("", "secrets") => (
            vec![
                name_col(),
                col("Type", "string", "", 0, "The type of the secret"),
                col("Data", "string", "", 0, "The number of keys in data."),
                age_col(),
            ],
            Box::new(move |o| {
                let n = o
                    .pointer("/data")
                    .and_then(Value::as_object)
                    .map_or(0, |m| m.len());
                vec![
                    json!(name(o)),
                    json!(str_at(o, "/type").unwrap_or("Opaque")),
                    json!(n),
                    json!(age(o, now)),
                ]
            }),
        ),
        ("", "serviceaccounts") => (
            vec![
                name_col(),
                col(
                    "Secrets",
                    "string",
                    "",
                    0,
                    "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use.",
                ),
                age_col(),
            ],
            Box::new(move |o| {
                let n = o
                    .pointer("/secrets")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                vec![json!(name(o)), json!(n), json!(age(o, now))]
            }),
        ),
        ("", "services") => (
            vec![
                name_col(),
                col("Type", "string", "", 0, "The type of the service."),
                col(
                    "Cluster-IP",
                    "string",
                    "",
                    0,
                    "The IP address of the service.",
                ),
                col(
                    "External-IP",
                    "string",
                    "",
                    0,
                    "The external IP addresses of the service.",
                ),
                col("Port(s)", "string", "", 0, "The ports of the service."),
                age_col(),
                col(
                    "Selector",
                    "string",
                    "",
                    1,
                    "Route service traffic to pods with label keys and values matching this selector.",
                ),
            ],
            Box::new(move |o| {
                let ports: Vec<String> = o
                    .pointer("/spec/ports")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|p| {
                        let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
                        let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
                        match p.get("nodePort").and_then(Value::as_i64) {
                            Some(np) => format!("{port}:{np}/{proto}"),
                            None => format!("{port}/{proto}"),
                        }
                    })
                    .collect();
                let external: Vec<&str> = o
                    .pointer("/spec/externalIPs")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                let selector: Vec<String> = o
                    .pointer("/spec/selector")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect();
                let type_ = str_at(o, "/spec/type").unwrap_or("ClusterIP");
                vec![
                    json!(name(o)),
                    json!(type_),
                    json!(str_at(o, "/spec/clusterIP").unwrap_or("<none>")),
                    json!(if external.is_empty() {
                        if type_ == "LoadBalancer" {
                            "<pending>".to_string()
                        } else {
                            "<none>".to_string()
                        }
                    } else {
                        external.join(",")
                    }),
                    json!(if ports.is_empty() {
                        "<none>".to_string()
                    } else {
                        ports.join(",")
                    }),
                    json!(age(o, now)),
                    json!(if selector.is_empty() {
                        "<none>".to_string()
                    } else {
                        selector.join(",")
                    }),
                ]
            }),
        ),
        ("batch", "jobs") => (
            vec![
                name_col(),
                col("Status", "string", "", 0, "Status of the job."),
                col(
                    "Completions",
                    "string",
                    "",
                    0,
                    "The desired number of successfully finished pods the job should be run with.",
                ),
                col(
                    "Duration",
                    "string",
                    "",
                    0,
                    "Time required to complete the job.",
                ),
                age_col(),
            ],
            Box::new(move |o| {
                let conds = o.pointer("/status/conditions").and_then(Value::as_array);
                let has = |t: &str| {
                    conds.is_some_and(|cs| {
                        cs.iter().any(|c| {
                            c.get("type").and_then(Value::as_str) == Some(t)
                                && c.get("status").and_then(Value::as_str) == Some("True")
                        })
                    })
                };
                let status = if has("Complete") {
                    "Complete"
                } else if has("Failed") {
                    "Failed"
                } else if o.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true) {
                    "Suspended"
                } else {
                    "Running"
                };
                let succeeded = o
                    .pointer("/status/succeeded")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                let completions = o
                    .pointer("/spec/completions")
                    .and_then(Value::as_i64)
                    .unwrap_or(1);
                let ts = |p: &str| {
                    str_at(o, p)
                        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                        .map(|t| t.with_timezone(&Utc))
                };
                let duration = match (ts("/status/startTime"), ts("/status/completionTime")) {
                    (Some(s), Some(e)) => human_duration(e - s),
                    (Some(s), None) => human_duration(now - s),
                    _ => String::new(),
                };
                vec![
                    json!(name(o)),
                    json!(status),
                    json!(format!("{succeeded}/{completions}")),
                    json!(duration),
                    json!(age(o, now)),
                ]
            }),
        ),
        ("rbac.authorization.k8s.io", "rolebindings" | "clusterrolebindings") => (
            vec![
                name_col(),
                col("Role", "string", "", 0, "Role of the binding."),
                age_col(),
            ],
            Box::new(move |o| {
                vec![
                    json!(name(o)),
                    json!(format!(
                        "{}/{}",
                        str_at(o, "/roleRef/kind").unwrap_or_default(),
                        str_at(o, "/roleRef/name").unwrap_or_default()
                    )),
                    json!(age(o, now)),
                ]
            }),
        ),
        _ => (
            vec![name_col(), age_col()],
            Box::new(move |o| vec![json!(name(o)), json!(age(o, now))]),
        ),
    };
    let created_at = rt.plural == "customresourcedefinitions"
        || (rt.group == "rbac.authorization.k8s.io"
            && matches!(rt.plural.as_str(), "roles" | "clusterroles"));
    let (columns, cells) = if created_at {
        let created: Cells = Box::new(|o: &Value| {
            vec![
                json!(name(o)),
                json!(str_at(o, "/metadata/creationTimestamp").unwrap_or("<unknown>")),
            ]
        });
        (
            vec![
                name_col(),
                col(
                    "Created At",
                    "date",
                    "",
                    0,
                    "CreationTimestamp is a timestamp representing the server time when this object was created.",
                ),
            ],
            created,
        )
    } else {
        (columns, cells)
    };
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| json!({"cells": cells(o), "object": o}))
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv},
        "columnDefinitions": columns, "rows": rows})
}

type Cells = Box<dyn Fn(&Value) -> Vec<Value>>;

fn custom_cells(
    columns: Vec<Value>,
    pcs: Vec<PrinterColumn>,
    now: DateTime<Utc>,
) -> (Vec<Value>, Cells) {
    let custom_age = pcs.is_empty();
    (
        columns,
        Box::new(move |o| {
            let mut cells = vec![json!(name(o))];
            for c in &pcs {
                cells.push(cell(&c.type_, &jsonpath(o, &c.json_path), now));
            }
            if custom_age {
                cells.push(
                    o.pointer("/metadata/creationTimestamp")
                        .cloned()
                        .unwrap_or(Value::Null),
                );
            }
            cells
        }),
    )
}

/// A printer-column cell from JSONPath results: none is null, one is typed, many are joined.
fn cell(type_: &str, results: &[Value], now: DateTime<Utc>) -> Value {
    match results {
        [] => Value::Null,
        [one] => match (type_, one) {
            ("date", Value::String(s)) => match DateTime::parse_from_rfc3339(s) {
                Ok(t) => json!(human_duration(
                    now.signed_duration_since(t.with_timezone(&Utc))
                )),
                Err(_) => json!(s),
            },
            ("integer", Value::Number(n)) => json!(n.as_i64().unwrap_or_default()),
            ("number", Value::Number(n)) => json!(n.as_f64().unwrap_or_default()),
            ("boolean", Value::Bool(b)) => json!(b),
            (_, Value::String(s)) => json!(s),
            (_, Value::Null) => Value::Null,
            (_, other) => json!(other.to_string()),
        },
        many => json!(
            many.iter()
                .map(|v| v
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Evaluate a Kubernetes JSONPath (`.a.b`, `['k']`, `[0]`, `[*]`, `[?(@.x=="y")]`, with an
/// optional `{}` wrapper) on an object.
pub fn jsonpath(obj: &Value, path: &str) -> Vec<Value> {
    let p = path.trim();
    let p = p
        .strip_prefix('{')
        .and_then(|x| x.strip_suffix('}'))
        .unwrap_or(p);
    let p = p.strip_prefix('$').unwrap_or(p);
    let mut current: Vec<Value> = vec![obj.clone()];
    let chars: Vec<char> = p.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '.' => {
                let start = i + 1;
                let mut j = start;
                while j < chars.len() && chars[j] != '.' && chars[j] != '[' {
                    j += 1;
                }
                let field: String = chars[start..j].iter().collect();
                if !field.is_empty() {
                    current = current
                        .iter()
                        .filter_map(|v| v.get(&field).cloned())
                        .collect();
                }
                i = j;
            }
            '[' => {
                let mut depth = 0;
                let mut j = i;
                let mut in_str: Option<char> = None;
                while j < chars.len() {
                    let c = chars[j];
                    match in_str {
                        Some(q) if c == q => in_str = None,
                        Some(_) => {}
                        None if c == '"' || c == '\'' => in_str = Some(c),
                        None if c == '[' => depth += 1,
                        None if c == ']' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        None => {}
                    }
                    j += 1;
                }
                let inner: String = chars[i + 1..j.min(chars.len())].iter().collect();
                current = step(current, inner.trim());
                i = j + 1;
            }
            _ => i += 1,
        }
    }
    current
}

fn step(current: Vec<Value>, inner: &str) -> Vec<Value> {
    if inner == "*" {
        return current
            .into_iter()
            .flat_map(|v| match v {
                Value::Array(a) => a,
                Value::Object(m) => m.into_iter().map(|(_, v)| v).collect(),
                _ => vec![],
            })
            .collect();
    }
    if let Some(filter) = inner.strip_prefix("?(").and_then(|f| f.strip_suffix(')')) {
        let (lhs, op, rhs) = match filter.split_once("==") {
            Some((l, r)) => (l.trim(), "==", r.trim()),
            None => match filter.split_once("!=") {
                Some((l, r)) => (l.trim(), "!=", r.trim()),
                None => (filter.trim(), "exists", ""),
            },
        };
        let field = lhs.strip_prefix('@').unwrap_or(lhs);
        let want = rhs.trim_matches(|c| c == '"' || c == '\'');
        return current
            .into_iter()
            .flat_map(|v| match v {
                Value::Array(a) => a,
                _ => vec![],
            })
            .filter(|item| {
                let got = jsonpath(item, field);
                match op {
                    "exists" => !got.is_empty(),
                    _ => {
                        let eq = got.first().is_some_and(|g| match g {
                            Value::String(s) => s == want,
                            other => *other == want,
                        });
                        (op == "==") == eq
                    }
                }
            })
            .collect();
    }
    if let Some(key) = inner
        .strip_prefix('\'')
        .and_then(|k| k.strip_suffix('\''))
        .or_else(|| inner.strip_prefix('"').and_then(|k| k.strip_suffix('"')))
    {
        let key = key.replace("\\.", ".");
        return current
            .iter()
            .filter_map(|v| v.get(&key).cloned())
            .collect();
    }
    if let Ok(n) = inner.parse::<i64>() {
        return current
            .iter()
            .filter_map(|v| {
                let a = v.as_array()?;
                let idx = if n < 0 { a.len() as i64 + n } else { n };
                a.get(usize::try_from(idx).ok()?).cloned()
            })
            .collect();
    }
    vec![]
}

fn name(o: &Value) -> &str {
    str_at(o, "/metadata/name").unwrap_or_default()
}

fn str_at<'a>(o: &'a Value, p: &str) -> Option<&'a str> {
    o.pointer(p)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// `Ready`, `NotReady` or `Unknown`, plus `,SchedulingDisabled` when cordoned.
pub fn node_status(node: &Value) -> String {
    let ready = node
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
        });
    let mut s = match ready.and_then(|c| c.get("status")).and_then(Value::as_str) {
        Some("True") => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        s.push_str(",SchedulingDisabled");
    }
    s
}

fn node_roles(node: &Value) -> String {
    let mut roles: Vec<String> = node
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|l| {
            l.iter()
                .filter_map(|(k, v)| {
                    if let Some(r) = k.strip_prefix("node-role.kubernetes.io/") {
                        Some(r.to_string())
                    } else if k == "kubernetes.io/role" {
                        v.as_str().map(str::to_string)
                    } else {
                        None
                    }
                })
                .filter(|r| !r.is_empty())
                .collect()
        })
        .unwrap_or_default();
    roles.sort();
    roles.dedup();
    if roles.is_empty() {
        "<none>".into()
    } else {
        roles.join(",")
    }
}

fn address(node: &Value, kind: &str) -> String {
    node.pointer("/status/addresses")
        .and_then(Value::as_array)
        .and_then(|a| {
            a.iter()
                .find(|x| x.get("type").and_then(Value::as_str) == Some(kind))
        })
        .and_then(|x| x.get("address").and_then(Value::as_str))
        .unwrap_or("<none>")
        .to_string()
}

fn pod_ready(pod: &Value) -> String {
    let total = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|c| c.len())
        .unwrap_or(0);
    let ready = match pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
    {
        Some(cs) => cs
            .iter()
            .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
            .count(),
        None if super::pdb::pod_healthy(pod) => total,
        None => 0,
    };
    format!("{ready}/{total}")
}

fn pod_status(pod: &Value) -> String {
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        return "Terminating".into();
    }
    str_at(pod, "/status/reason")
        .or_else(|| str_at(pod, "/status/phase"))
        .unwrap_or("Pending")
        .to_string()
}

fn age(o: &Value, now: DateTime<Utc>) -> String {
    match str_at(o, "/metadata/creationTimestamp")
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
    {
        Some(t) => human_duration(now.signed_duration_since(t.with_timezone(&Utc))),
        None => "<unknown>".into(),
    }
}

/// kubectl's short human duration (`45s`, `3m12s`, `5h`, `2d3h`, `4y12d`).
pub fn human_duration(d: chrono::Duration) -> String {
    let secs = d.num_seconds();
    if secs < 0 {
        return "<invalid>".into();
    }
    let (m, h, day) = (secs / 60, secs / 3600, secs / 86400);
    if secs < 120 {
        format!("{secs}s")
    } else if m < 10 {
        let s = secs % 60;
        if s == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{s}s")
        }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        let mm = m % 60;
        if mm == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{mm}m")
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        let hh = h % 24;
        if hh == 0 {
            format!("{day}d")
        } else {
            format!("{day}d{hh}h")
        }
    } else if h < 24 * 365 * 2 {
        format!("{day}d")
    } else if h < 24 * 365 * 8 {
        let dy = day % 365;
        if dy == 0 {
            format!("{}y", day / 365)
        } else {
            format!("{}y{dy}d", day / 365)
        }
    } else {
        format!("{}y", day / 365)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;

    #[test]
    fn jsonpath_follows_fields_indexes_wildcards_and_filters() {
        let o = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Open", "status": "False"}]},
            "metadata": {"labels": {"a.b/c": "x"}}, "spec": {"list": [1, 2, 3]}});
        assert_eq!(
            jsonpath(&o, ".status.conditions[?(@.type==\"Ready\")].status"),
            [json!("True")]
        );
        assert_eq!(
            jsonpath(&o, "{.status.conditions[?(@.type!='Ready')].type}"),
            [json!("Open")]
        );
        assert_eq!(jsonpath(&o, ".spec.list[1]"), [json!(2)]);
        assert_eq!(jsonpath(&o, ".spec.list[-1]"), [json!(3)]);
        assert_eq!(jsonpath(&o, ".spec.list[*]").len(), 3);
        assert_eq!(jsonpath(&o, ".metadata.labels['a\\.b/c']"), [json!("x")]);
        assert!(jsonpath(&o, ".status.missing").is_empty());
    }

    #[test]
    fn node_status_shows_readiness_and_cordons() {
        let mut n =
            json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}, "spec": {}});
        assert_eq!(node_status(&n), "Ready");
        n["spec"]["unschedulable"] = json!(true);
        assert_eq!(node_status(&n), "Ready,SchedulingDisabled");
        n["status"]["conditions"][0]["status"] = json!("Unknown");
        assert_eq!(node_status(&n), "NotReady,SchedulingDisabled");
    }

    #[test]
    fn every_row_carries_its_object_and_crd_cells_are_typed() {
        let crd = serde_json::to_value(&crate::api::crds()[0]).unwrap();
        let rt = crate::sandbox::resources::from_crd(&crd).unwrap();
        let obj = json!({"metadata": {"name": "x", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"nodeName": "n1", "schedule": "0 2 * * *"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let t = table(
            &rt,
            rt.preferred_version(),
            std::slice::from_ref(&obj),
            "5",
            &SystemClock,
        );
        assert_eq!(t["rows"][0]["object"], obj);
        assert_eq!(t["rows"][0]["cells"][0], json!("x"));
        let cols = t["columnDefinitions"].as_array().unwrap();
        assert_eq!(cols.len(), t["rows"][0]["cells"].as_array().unwrap().len());
    }

    #[test]
    fn events_print_their_object_reason_and_message_through_either_api() {
        let rt = crate::sandbox::resources::builtins()
            .into_iter()
            .find(|t| t.group == "events.k8s.io")
            .unwrap();
        let new = json!({"metadata": {"name": "e"}, "type": "Normal", "reason": "Drained", "note": "done",
            "regarding": {"kind": "Node", "name": "n1"}, "eventTime": "2026-01-01T00:00:00.000000Z"});
        let t = table(&rt, "v1", &[new], "1", &SystemClock);
        let cells = t["rows"][0]["cells"].as_array().unwrap();
        assert_eq!(
            &cells[1..5],
            [
                json!("Normal"),
                json!("Drained"),
                json!("node/n1"),
                json!("done")
            ]
        );
    }

    #[test]
    fn ages_read_like_kubectl() {
        let cases = [
            (45, "45s"),
            (150, "2m30s"),
            (600, "10m"),
            (3 * 3600 + 60, "3h1m"),
            (10 * 3600, "10h"),
            (3 * 86400 + 3600, "3d1h"),
            (30 * 86400, "30d"),
        ];
        for (s, want) in cases {
            assert_eq!(human_duration(chrono::Duration::seconds(s)), want);
        }
    }
}
