//! Label and field selectors, as they come in `labelSelector=` and `fieldSelector=` query
//! parameters and in `metav1.LabelSelector` objects (PDBs, ReplicaSets). Pure code.

use serde_json::Value;
use std::collections::BTreeSet;

/// A parse error, worded like kube-apiserver's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(pub String);

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `key=value`, `key==value`, `key in (a,b)`.
    In(String, BTreeSet<String>),
    /// `key!=value`, `key notin (a,b)`.
    NotIn(String, BTreeSet<String>),
    /// `key`.
    Exists(String),
    /// `!key`.
    DoesNotExist(String),
}

/// A parsed label selector: all requirements must hold. Empty selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Parse the string form (`a=b,c!=d,e in (f,g),!h`).
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for part in split_top_level(s) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            requirements.push(parse_requirement(part)?);
        }
        Ok(LabelSelector { requirements })
    }

    /// Build from a `metav1.LabelSelector` object (`matchLabels`, `matchExpressions`).
    /// A missing or null selector gives `None` (selects nothing, as for a PDB without one).
    pub fn from_object(v: Option<&Value>) -> Result<Option<Self>, SelectorError> {
        let Some(v) = v.filter(|v| !v.is_null()) else {
            return Ok(None);
        };
        let mut requirements = Vec::new();
        if let Some(ml) = v.get("matchLabels").and_then(Value::as_object) {
            for (k, val) in ml {
                let val = val.as_str().unwrap_or_default().to_string();
                requirements.push(Requirement::In(k.clone(), BTreeSet::from([val])));
            }
        }
        if let Some(exprs) = v.get("matchExpressions").and_then(Value::as_array) {
            for e in exprs {
                let key = e
                    .get("key")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let values: BTreeSet<String> = e
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                let op = e
                    .get("operator")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                requirements.push(match op {
                    "In" => Requirement::In(key, values),
                    "NotIn" => Requirement::NotIn(key, values),
                    "Exists" => Requirement::Exists(key),
                    "DoesNotExist" => Requirement::DoesNotExist(key),
                    other => {
                        return Err(SelectorError(format!(
                            "{other:?} is not a valid label selector operator"
                        )));
                    }
                });
            }
        }
        Ok(Some(LabelSelector { requirements }))
    }

    /// True when it selects everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Does a label map (`metadata.labels`, possibly absent) match?
    pub fn matches(&self, labels: Option<&Value>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.requirements.iter().all(|r| match r {
            Requirement::In(k, vs) => get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::DoesNotExist(k) => get(k).is_none(),
        })
    }

    /// Does an object's `metadata.labels` match?
    pub fn matches_object(&self, obj: &Value) -> bool {
        self.is_empty() || self.matches(obj.pointer("/metadata/labels"))
    }

    /// Does a label set read through `get` (the value of a key, `None` when absent) match?
    pub fn matches_with<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.requirements.iter().all(|r| match r {
            Requirement::In(k, vs) => get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::DoesNotExist(k) => get(k).is_none(),
        })
    }
}

fn split_top_level(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// The `(a,b)` of `in` and `notin`: each value is checked as an `=` value is (so a stray
/// parenthesis or a control character is refused, not read as part of a value), and the set
/// must not be empty, as kube-apiserver answers.
fn parse_set(key: &str, rest: &str, whole: &str) -> Result<BTreeSet<String>, SelectorError> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| {
            SelectorError(format!(
                "unable to parse requirement: found '{whole}', expected: '('"
            ))
        })?;
    let mut values = BTreeSet::new();
    for (index, v) in inner.split(',').map(str::trim).enumerate() {
        if !v.is_empty() {
            values.insert(valid_value(key, index, v)?);
        }
    }
    if values.is_empty() {
        return Err(SelectorError(format!(
            "unable to parse requirement: values: Invalid value: []string{{}}: for 'in', 'notin' operators, values set can't be empty (in '{whole}')"
        )));
    }
    Ok(values)
}

fn parse_requirement(part: &str) -> Result<Requirement, SelectorError> {
    if let Some(k) = part.strip_prefix('!') {
        return Ok(Requirement::DoesNotExist(valid_key(k.trim())?));
    }
    if let Some((k, v)) = part.split_once("!=") {
        let key = valid_key(k.trim())?;
        let value = valid_value(&key, 0, v.trim())?;
        return Ok(Requirement::NotIn(key, BTreeSet::from([value])));
    }
    if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
        let key = valid_key(k.trim())?;
        let value = valid_value(&key, 0, v.trim())?;
        return Ok(Requirement::In(key, BTreeSet::from([value])));
    }
    let words: Vec<&str> = part.splitn(2, char::is_whitespace).collect();
    if words.len() == 2 {
        let key = valid_key(words[0])?;
        let rest = words[1].trim_start();
        if let Some(r) = rest.strip_prefix("notin") {
            return Ok(Requirement::NotIn(key.clone(), parse_set(&key, r, part)?));
        }
        if let Some(r) = rest.strip_prefix("in") {
            return Ok(Requirement::In(key.clone(), parse_set(&key, r, part)?));
        }
        let found = rest.split_whitespace().next().unwrap_or_default();
        return Err(SelectorError(format!(
            "unable to parse requirement: found '{found}', expected: in, notin, =, ==, !=, gt, lt"
        )));
    }
    Ok(Requirement::Exists(valid_key(part)?))
}

/// A label value: empty, or at most 63 alphanumerics, '-', '_' and '.', starting and ending
/// with an alphanumeric.
fn valid_value(key: &str, index: usize, v: &str) -> Result<String, SelectorError> {
    let ok = v.is_empty()
        || (v.len() <= 63
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric()));
    if ok {
        Ok(v.to_string())
    } else {
        Err(SelectorError(format!(
            "unable to parse requirement: values[{index}][{key}]: Invalid value: {v:?}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
        )))
    }
}

fn valid_key(k: &str) -> Result<String, SelectorError> {
    let ok = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if ok {
        Ok(k.to_string())
    } else {
        Err(SelectorError(format!(
            "unable to parse requirement: invalid label key \"{k}\""
        )))
    }
}

/// One term of a field selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldTerm {
    /// Dotted field path, such as `spec.nodeName`.
    pub field: String,
    /// The value compared with.
    pub value: String,
    /// `!=` rather than `=`.
    pub negated: bool,
}

/// A parsed field selector (`metadata.name=x,spec.nodeName!=y`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<FieldTerm>,
}

impl FieldSelector {
    /// Parse the string form.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut terms = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, value, negated) = if let Some((f, v)) = part.split_once("!=") {
                (f, v, true)
            } else if let Some((f, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (f, v, false)
            } else {
                return Err(SelectorError(format!(
                    "invalid selector: '{part}'; can't understand '{part}'"
                )));
            };
            terms.push(FieldTerm {
                field: field.trim().to_string(),
                value: value.trim().to_string(),
                negated,
            });
        }
        Ok(FieldSelector { terms })
    }

    /// The terms.
    pub fn terms(&self) -> &[FieldTerm] {
        &self.terms
    }

    /// True when it selects everything.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The exact `metadata.name` asked for, if any (lets a LIST do a point lookup).
    pub fn exact_name(&self) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.field == "metadata.name" && !t.negated)
            .map(|t| t.value.as_str())
    }

    /// Does the object match? Any dotted path into the object works, so `spec.nodeName`,
    /// `status.phase`, `involvedObject.name` and the like; a missing field reads as "".
    pub fn matches(&self, obj: &Value) -> bool {
        self.terms.iter().all(|t| {
            let equal = match field_ref(obj, &t.field) {
                Some(Value::String(s)) => *s == t.value,
                None | Some(Value::Null) => t.value.is_empty(),
                Some(other) => field_string(other) == t.value,
            };
            equal != t.negated
        })
    }

    /// Does an object match, its fields read through `get` (a field's string value as
    /// [`field_value`] gives it, "" when absent)? `None` when `get` does not know one of the
    /// fields asked for.
    pub fn matches_with<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> Option<bool> {
        let mut all = true;
        for t in &self.terms {
            all &= (get(&t.field)? == t.value) != t.negated;
        }
        Some(all)
    }

    /// kube-apiserver answers 400 for a field a resource cannot be selected by: every resource
    /// takes `metadata.name` and `metadata.namespace`, some kinds a few more.
    pub fn check_supported(
        &self,
        rt: &super::resources::ResourceType,
    ) -> Result<(), super::error::ApiError> {
        let extra: &[&str] = match (rt.store_key().0.as_str(), rt.plural.as_str()) {
            ("", "pods") => &[
                "spec.nodeName",
                "spec.restartPolicy",
                "spec.schedulerName",
                "spec.serviceAccountName",
                "spec.hostNetwork",
                "status.phase",
                "status.podIP",
                "status.podIPs",
                "status.nominatedNodeName",
            ],
            ("", "nodes") => &["spec.unschedulable"],
            ("", "namespaces") => &["status.phase"],
            ("", "events") => &[
                "involvedObject.kind",
                "involvedObject.namespace",
                "involvedObject.name",
                "involvedObject.uid",
                "involvedObject.apiVersion",
                "involvedObject.resourceVersion",
                "involvedObject.fieldPath",
                "reason",
                "reportingComponent",
                "source",
                "type",
            ],
            ("apps", "replicasets") => &["status.replicas"],
            ("", "secrets") => &["type"],
            ("", "replicationcontrollers") => &["status.replicas"],
            ("certificates.k8s.io", "certificatesigningrequests") => &["spec.signerName"],
            _ => &[],
        };
        match self.terms.iter().find(|t| {
            !matches!(t.field.as_str(), "metadata.name" | "metadata.namespace")
                && !extra.contains(&t.field.as_str())
        }) {
            Some(t) => Err(super::error::ApiError::bad_request(format!(
                "field label not supported: {}",
                t.field
            ))),
            None => Ok(()),
        }
    }

    /// The exact value asked for a field (`field=value`), if any.
    pub fn exact(&self, field: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.field == field && !t.negated)
            .map(|t| t.value.as_str())
    }
}

fn field_ref<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = obj;
    for seg in path.split('.') {
        cur = cur.get(seg)?;
    }
    Some(cur)
}

/// The string value of a dotted field path, "" when absent.
pub fn field_value(obj: &Value, path: &str) -> String {
    field_ref(obj, path).map(field_string).unwrap_or_default()
}

fn field_string(cur: &Value) -> String {
    match cur {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> Value {
        json!({"metadata": {"labels": v}})
    }

    #[test]
    fn equality_set_and_existence_requirements_all_have_to_hold() {
        let cases = [
            ("a=b", json!({"a": "b"}), true),
            ("a==b", json!({"a": "c"}), false),
            ("a!=b", json!({}), true),
            ("a!=b", json!({"a": "b"}), false),
            ("a in (b, c)", json!({"a": "c"}), true),
            ("a notin (b,c)", json!({"a": "c"}), false),
            ("a notin (b,c)", json!({}), true),
            ("a", json!({"a": ""}), true),
            ("!a", json!({"a": ""}), false),
            ("a=b,c in (d),!e", json!({"a": "b", "c": "d"}), true),
            (
                "node-role.kubernetes.io/worker",
                json!({"node-role.kubernetes.io/worker": ""}),
                true,
            ),
            ("", json!({}), true),
        ];
        for (sel, l, want) in cases {
            let s = LabelSelector::parse(sel).unwrap();
            assert_eq!(s.matches_object(&labels(l.clone())), want, "{sel} on {l}");
        }
    }

    /// Regression (fuzzing, docs/fuzzing.md): set values were not checked, so an unclosed
    /// nested parenthesis or control characters were read as values, and a selector that
    /// parsed stopped parsing when joined with itself.
    #[test]
    fn set_values_are_checked_as_equality_values_are() {
        let found = "a==,\t\ta in (\t\t\u{10}\0\0\t\u{10}\u{4}\u{fffd}x\u{fffd}\u{1},\u{fffd}()";
        let err = LabelSelector::parse(found).unwrap_err().0;
        assert!(err.contains("values[0][a]: Invalid value"), "{err}");
        for bad in [
            "a in (x,(y)",
            "a in (x y)",
            "a notin (x,y))",
            "a in (\u{1})",
        ] {
            let err = LabelSelector::parse(bad).unwrap_err().0;
            assert!(err.contains("Invalid value"), "{bad}: {err}");
        }
        for empty in ["a in ()", "a notin ( , )"] {
            let err = LabelSelector::parse(empty).unwrap_err().0;
            assert!(err.contains("values set can't be empty"), "{empty}: {err}");
        }
        let s = LabelSelector::parse("a in ( x , y-1 ),b notin (z)").unwrap();
        assert!(s.matches_object(&labels(json!({"a": "y-1"}))));
        assert!(!s.matches_object(&labels(json!({"a": "y-1", "b": "z"}))));
    }

    #[test]
    fn a_garbled_label_selector_is_refused() {
        assert!(LabelSelector::parse("a in b").is_err());
        assert!(LabelSelector::parse("a b c").is_err());
        assert!(LabelSelector::parse("a$=b").is_err());
    }

    #[test]
    fn object_selectors_understand_match_labels_and_expressions() {
        let sel = json!({"matchLabels": {"app": "web"}, "matchExpressions": [
            {"key": "tier", "operator": "NotIn", "values": ["db"]}]});
        let s = LabelSelector::from_object(Some(&sel)).unwrap().unwrap();
        assert!(s.matches_object(&labels(json!({"app": "web"}))));
        assert!(!s.matches_object(&labels(json!({"app": "web", "tier": "db"}))));
        assert!(LabelSelector::from_object(None).unwrap().is_none());
        let bad = json!({"matchExpressions": [{"key": "a", "operator": "Near"}]});
        assert!(LabelSelector::from_object(Some(&bad)).is_err());
    }

    #[test]
    fn field_selectors_read_dotted_paths_and_treat_missing_as_empty() {
        let pod = json!({"metadata": {"name": "p", "namespace": "ns"},
            "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        let yes = [
            "metadata.name=p",
            "spec.nodeName==n1,status.phase=Running",
            "spec.nodeName!=n2",
            "spec.missing=",
        ];
        for s in yes {
            assert!(FieldSelector::parse(s).unwrap().matches(&pod), "{s}");
        }
        let no = [
            "metadata.name=q",
            "metadata.namespace!=ns",
            "status.phase=Pending",
        ];
        for s in no {
            assert!(!FieldSelector::parse(s).unwrap().matches(&pod), "{s}");
        }
        assert_eq!(
            FieldSelector::parse("metadata.name=p")
                .unwrap()
                .exact_name(),
            Some("p")
        );
        assert!(FieldSelector::parse("garbage").is_err());
    }
}
