//! Protobuf bodies (`application/vnd.kubernetes.protobuf`) for built-in kinds, as
//! kube-apiserver reads and writes them: the magic `k8s\0`, then a `runtime.Unknown` whose
//! `raw` is the object's message; watch events are length-prefixed `WatchEvent`s.
//!
//! The messages are not hand-written: `build.rs` compiles Kubernetes' own `generated.proto`
//! files (vendored in `proto/`, k8s.io/api and k8s.io/apimachinery v0.33) into a descriptor
//! set, and objects are mapped between the sandbox's JSON and the messages generically with
//! `prost-reflect`, field by field (the proto field names are the JSON names). Only the
//! types whose JSON form is not their message are special: `Time`, `MicroTime`, `Duration`,
//! `IntOrString`, `Quantity`, `FieldsV1`, `RawExtension` and the `{items}` wrappers
//! (`ExtraValue`, `Verbs`). Custom resources have no messages: JSON only, as in
//! kube-apiserver. Pure.

use super::error::ApiError;
use chrono::{DateTime, SecondsFormat, Utc};
use prost::Message;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor,
    ReflectMessage, Value as Pb,
};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::LazyLock;

/// The media type.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
/// The media type of a protobuf watch stream.
pub const WATCH_MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf;stream=watch";
/// Every protobuf body starts with these four bytes.
pub const MAGIC: &[u8; 4] = b"k8s\0";

const META: &str = "k8s.io.apimachinery.pkg.apis.meta.v1";
const RUNTIME_UNKNOWN: &str = "k8s.io.apimachinery.pkg.runtime.Unknown";

static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(&include_bytes!(concat!(env!("OUT_DIR"), "/kubernetes.fds"))[..])
        .expect("build.rs writes a valid descriptor set")
});

/// Whether a Content-Type is protobuf.
pub fn is_protobuf(content_type: &str) -> bool {
    content_type.split(';').next().unwrap_or("").trim() == MEDIA_TYPE
}

/// How a response is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    /// JSON (the default).
    Json,
    /// Protobuf, with the envelope.
    Protobuf,
}

/// The encoding an `Accept` header asks for, for a resource that has (or has not) a protobuf
/// form: the first acceptable media type by quality, in the order given. A client that accepts
/// only protobuf, for a kind that has none, gets 406, as from kube-apiserver.
pub fn negotiate(accept: &str, has_protobuf: bool) -> Result<Wire, ApiError> {
    let mut offers: Vec<(f32, usize, &str)> = accept
        .split(',')
        .enumerate()
        .filter_map(|(i, part)| {
            let mut params = part.split(';').map(str::trim);
            let media = params.next().filter(|m| !m.is_empty())?;
            let mut q = 1.0;
            for p in params {
                if let Some(v) = p.strip_prefix("q=") {
                    q = v.parse().unwrap_or(0.0);
                }
            }
            (q > 0.0).then_some((q, i, media))
        })
        .collect();
    if offers.is_empty() {
        return Ok(Wire::Json);
    }
    offers.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, _, media) in offers {
        match media {
            MEDIA_TYPE if has_protobuf => return Ok(Wire::Protobuf),
            MEDIA_TYPE => {}
            _ => return Ok(Wire::Json),
        }
    }
    Err(ApiError::new(
        406,
        "NotAcceptable",
        // kube-apiserver names protobuf even for custom resources, which cannot use it.
        "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf",
    ))
}

/// The message of a kind in an API version (`v1`, `apps/v1`), if it has one. `Status`,
/// `DeleteOptions` and the other meta kinds are found from any version.
pub fn message_of(api_version: &str, kind: &str) -> Option<MessageDescriptor> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let package = match group {
        "" => "core",
        "internal.apiserver.k8s.io" => "apiserverinternal",
        "meta.k8s.io" => return POOL.get_message_by_name(&format!("{META}.{kind}")),
        g => g.split('.').next().unwrap_or(g),
    };
    POOL.get_message_by_name(&format!("k8s.io.api.{package}.{version}.{kind}"))
        .or_else(|| POOL.get_message_by_name(&format!("{META}.{kind}")))
}

/// Whether objects of a kind can be written as protobuf.
pub fn has_message(api_version: &str, kind: &str) -> bool {
    message_of(api_version, kind).is_some()
}

/// Decode a protobuf request body into the object as JSON, with its `apiVersion` and `kind`
/// from the envelope.
pub fn decode(body: &[u8]) -> Result<Value, BodyError> {
    let raw = body.strip_prefix(&MAGIC[..]).ok_or(BodyError::NoMagic)?;
    let unknown = unknown_message();
    let envelope =
        DynamicMessage::decode(unknown, raw).map_err(|e| BodyError::malformed(&e, body))?;
    let type_meta = field_message(&envelope, "typeMeta");
    let api_version = type_meta
        .as_ref()
        .map(|t| field_str(t, "apiVersion"))
        .unwrap_or_default();
    let kind = type_meta
        .as_ref()
        .map(|t| field_str(t, "kind"))
        .unwrap_or_default();
    let desc = message_of(&api_version, &kind).ok_or_else(|| BodyError::UnknownKind {
        api_version: api_version.clone(),
        kind: kind.clone(),
    })?;
    let payload = envelope
        .get_field_by_name("raw")
        .and_then(|v| v.as_bytes().cloned())
        .unwrap_or_default();
    let msg = DynamicMessage::decode(desc, payload).map_err(|e| BodyError::malformed(&e, body))?;
    let mut obj = message_to_json(&msg);
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".into(), json!(api_version));
        m.insert("kind".into(), json!(kind));
    }
    Ok(obj)
}

/// Why a protobuf body could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// It does not start with [`MAGIC`].
    NoMagic,
    /// It is not a message, in Go's words (`unexpected EOF` for one cut short), and the body
    /// in hex, as kube-apiserver quotes it.
    Malformed { why: String, hex: String },
    /// The envelope names a kind that has no message.
    UnknownKind { api_version: String, kind: String },
}

impl BodyError {
    fn malformed(e: &prost::DecodeError, body: &[u8]) -> Self {
        let why = e.to_string();
        let why = if why.contains("underflow") || why.contains("EOF") {
            "unexpected EOF".to_string()
        } else {
            why
        };
        BodyError::Malformed {
            why,
            hex: body.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }

    /// The 400 kube-apiserver answers, for a body that should have been a `kind` (`None`
    /// where no kind is expected: DeleteOptions, Eviction).
    pub fn to_api_error(&self, kind: Option<&str>) -> ApiError {
        ApiError::bad_request(match (self, kind) {
            (BodyError::NoMagic, _) => {
                "the body of the request is not a Kubernetes protobuf object: it does not start with the magic \"k8s\\x00\"".to_string()
            }
            (BodyError::Malformed { why, hex }, Some(kind)) => {
                format!("the object provided is unrecognized (must be of type {kind}): {why} ({hex})")
            }
            (BodyError::Malformed { why, hex }, None) => format!("{why} ({hex})"),
            (BodyError::UnknownKind { api_version, kind }, _) => format!(
                "no kind \"{kind}\" is registered for version \"{api_version}\" in scheme \"pkg/runtime/scheme.go:100\""
            ),
        })
    }
}

/// Encode an object (with its `apiVersion` and `kind`) as a protobuf body: magic and
/// envelope. `None` when its kind has no message.
pub fn encode(obj: &Value) -> Option<Vec<u8>> {
    let api_version = obj.get("apiVersion").and_then(Value::as_str)?;
    let kind = obj.get("kind").and_then(Value::as_str)?;
    let desc = message_of(api_version, kind)?;
    let msg = json_to_message(&desc, obj);
    Some(envelope(api_version, kind, msg.encode_to_vec()))
}

/// A list of a kind (`{"kind": "PodList", "items": [...]}`), whose items carry no kind.
pub fn encode_list(list: &Value) -> Option<Vec<u8>> {
    encode(list)
}

/// One watch event (`{"type": ..., "object": ...}`, as the JSON watch writes it), as the
/// protobuf watch stream frames it: a 4-byte big-endian length, then a `WatchEvent` whose
/// object is an enveloped object. `None` when the object's kind has no message.
pub fn encode_watch_event(event: &Value) -> Option<Vec<u8>> {
    let kind = event.get("type").and_then(Value::as_str)?;
    let object = encode(event.get("object")?)?;
    let desc = POOL.get_message_by_name(&format!("{META}.WatchEvent"))?;
    let mut msg = DynamicMessage::new(desc.clone());
    msg.set_field_by_name("type", Pb::String(kind.to_string()));
    let raw_ext = desc.get_field_by_name("object")?;
    let Kind::Message(raw_desc) = raw_ext.kind() else {
        return None;
    };
    let mut raw = DynamicMessage::new(raw_desc);
    raw.set_field_by_name("raw", Pb::Bytes(object.into()));
    msg.set_field(&raw_ext, Pb::Message(raw));
    let bytes = msg.encode_to_vec();
    let mut frame = Vec::with_capacity(bytes.len() + 4);
    frame.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    frame.extend_from_slice(&bytes);
    Some(frame)
}

/// Split a protobuf watch stream into its events, as JSON (for tests and clients).
pub fn decode_watch_stream(mut stream: &[u8]) -> Result<Vec<Value>, ApiError> {
    let desc = POOL
        .get_message_by_name(&format!("{META}.WatchEvent"))
        .ok_or_else(|| ApiError::internal("no WatchEvent message"))?;
    let mut events = Vec::new();
    while stream.len() >= 4 {
        let len = u32::from_be_bytes([stream[0], stream[1], stream[2], stream[3]]) as usize;
        let frame = stream
            .get(4..4 + len)
            .ok_or_else(|| ApiError::bad_request("a watch frame is cut short"))?;
        let msg = DynamicMessage::decode(desc.clone(), frame).map_err(|e| {
            ApiError::bad_request(format!("a watch frame is not a WatchEvent: {e}"))
        })?;
        let raw = field_message(&msg, "object")
            .and_then(|r| {
                r.get_field_by_name("raw")
                    .and_then(|v| v.as_bytes().cloned())
            })
            .unwrap_or_default();
        let object = decode(&raw).map_err(|e| e.to_api_error(None))?;
        events.push(json!({"type": field_str(&msg, "type"), "object": object}));
        stream = &stream[4 + len..];
    }
    Ok(events)
}

fn unknown_message() -> MessageDescriptor {
    POOL.get_message_by_name(RUNTIME_UNKNOWN)
        .expect("runtime.Unknown is in the vendored protos")
}

fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let desc = unknown_message();
    let mut unknown = DynamicMessage::new(desc.clone());
    if let Some(tm) = desc.get_field_by_name("typeMeta")
        && let Kind::Message(tm_desc) = tm.kind()
    {
        let mut type_meta = DynamicMessage::new(tm_desc);
        type_meta.set_field_by_name("apiVersion", Pb::String(api_version.to_string()));
        type_meta.set_field_by_name("kind", Pb::String(kind.to_string()));
        unknown.set_field(&tm, Pb::Message(type_meta));
    }
    unknown.set_field_by_name("raw", Pb::Bytes(raw.into()));
    unknown.set_field_by_name("contentEncoding", Pb::String(String::new()));
    unknown.set_field_by_name("contentType", Pb::String(String::new()));
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&unknown.encode_to_vec());
    out
}

fn field_message(msg: &DynamicMessage, name: &str) -> Option<DynamicMessage> {
    msg.get_field_by_name(name)
        .and_then(|v| v.as_message().cloned())
}

fn field_str(msg: &DynamicMessage, name: &str) -> String {
    msg.get_field_by_name(name)
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The fields that Go embeds with `json:",inline"`: their message's fields are written in the
/// enclosing object. From k8s.io/api v0.33's `types.go` (every embedded struct with a
/// protobuf tag but TypeMeta and ListMeta), as (message under `k8s.io.api.`, field).
const INLINE: &[(&str, &str)] = &[
    (
        "admissionregistration.v1.NamedRuleWithOperations",
        "ruleWithOperations",
    ),
    ("admissionregistration.v1.RuleWithOperations", "rule"),
    (
        "admissionregistration.v1alpha1.NamedRuleWithOperations",
        "ruleWithOperations",
    ),
    (
        "admissionregistration.v1beta1.NamedRuleWithOperations",
        "ruleWithOperations",
    ),
    ("core.v1.ConfigMapEnvSource", "localObjectReference"),
    ("core.v1.ConfigMapKeySelector", "localObjectReference"),
    ("core.v1.ConfigMapProjection", "localObjectReference"),
    ("core.v1.ConfigMapVolumeSource", "localObjectReference"),
    ("core.v1.EphemeralContainer", "ephemeralContainerCommon"),
    ("core.v1.PersistentVolumeSpec", "persistentVolumeSource"),
    ("core.v1.Probe", "handler"),
    ("core.v1.SecretEnvSource", "localObjectReference"),
    ("core.v1.SecretKeySelector", "localObjectReference"),
    ("core.v1.SecretProjection", "localObjectReference"),
    ("core.v1.Volume", "volumeSource"),
    ("extensions.v1beta1.IngressRule", "ingressRuleValue"),
    ("networking.v1.IngressRule", "ingressRuleValue"),
    ("networking.v1beta1.IngressRule", "ingressRuleValue"),
    (
        "resource.v1alpha3.DeviceAllocationConfiguration",
        "deviceConfiguration",
    ),
    (
        "resource.v1alpha3.DeviceClaimConfiguration",
        "deviceConfiguration",
    ),
    (
        "resource.v1alpha3.DeviceClassConfiguration",
        "deviceConfiguration",
    ),
    (
        "resource.v1beta1.DeviceAllocationConfiguration",
        "deviceConfiguration",
    ),
    (
        "resource.v1beta1.DeviceClaimConfiguration",
        "deviceConfiguration",
    ),
    (
        "resource.v1beta1.DeviceClassConfiguration",
        "deviceConfiguration",
    ),
    (
        "resource.v1beta2.DeviceAllocationConfiguration",
        "deviceConfiguration",
    ),
    (
        "resource.v1beta2.DeviceClaimConfiguration",
        "deviceConfiguration",
    ),
    (
        "resource.v1beta2.DeviceClassConfiguration",
        "deviceConfiguration",
    ),
];

fn is_inline(message: &MessageDescriptor, field: &FieldDescriptor) -> bool {
    let name = message
        .full_name()
        .strip_prefix("k8s.io.api.")
        .unwrap_or("");
    INLINE.iter().any(|(m, f)| *m == name && *f == field.name())
}

/// The JSON form of the types that are not written as their message.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Special {
    Time,
    MicroTime,
    Duration,
    IntOrString,
    Quantity,
    RawJson,
    RawExtension,
    Items,
}

fn special(desc: &MessageDescriptor) -> Option<Special> {
    Some(match desc.full_name() {
        "k8s.io.apimachinery.pkg.apis.meta.v1.Time" => Special::Time,
        "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime" => Special::MicroTime,
        "k8s.io.apimachinery.pkg.apis.meta.v1.Duration" => Special::Duration,
        "k8s.io.apimachinery.pkg.util.intstr.IntOrString" => Special::IntOrString,
        "k8s.io.apimachinery.pkg.api.resource.Quantity" => Special::Quantity,
        "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1" => Special::RawJson,
        "k8s.io.apimachinery.pkg.runtime.RawExtension" => Special::RawExtension,
        _ => {
            // `ExtraValue`, `Verbs`: a message of one `repeated string items`, written as
            // the list.
            let mut fields = desc.fields();
            let only = fields.next()?;
            if fields.next().is_some() || only.name() != "items" || !only.is_list() {
                return None;
            }
            if desc.name().ends_with("List") {
                return None;
            }
            Special::Items
        }
    })
}

/// A message as the JSON Kubernetes writes for it. Empty strings and zero times are left
/// out, as the Go types' `omitempty` does (the protobuf encoding writes every non-pointer
/// field).
pub fn message_to_json(msg: &DynamicMessage) -> Value {
    let desc = msg.descriptor();
    if let Some(s) = special(&desc) {
        return special_to_json(s, msg);
    }
    let mut out = Map::new();
    for (field, value) in msg.fields() {
        if is_inline(&desc, &field)
            && let Pb::Message(inner) = value
            && let Value::Object(fields) = message_to_json(inner)
        {
            out.extend(fields);
            continue;
        }
        if let Some(v) = field_to_json(&field, value) {
            out.insert(field.name().to_string(), v);
        }
    }
    Value::Object(out)
}

fn field_to_json(field: &FieldDescriptor, value: &Pb) -> Option<Value> {
    match value {
        Pb::String(s) if s.is_empty() => None,
        Pb::Message(m)
            if matches!(
                special(&m.descriptor()),
                Some(Special::Time | Special::MicroTime)
            ) =>
        {
            let seconds = m
                .get_field_by_name("seconds")
                .and_then(|v| v.as_i64())
                .unwrap_or(0);
            let nanos = m
                .get_field_by_name("nanos")
                .and_then(|v| v.as_i32())
                .unwrap_or(0);
            (seconds != 0 || nanos != 0).then(|| scalar_to_json(value))
        }
        Pb::List(items) => Some(Value::Array(items.iter().map(scalar_to_json).collect())),
        Pb::Map(map) => {
            let _ = field;
            let mut out = Map::new();
            for (k, v) in map {
                out.insert(map_key(k), scalar_to_json(v));
            }
            Some(Value::Object(out))
        }
        v => Some(scalar_to_json(v)),
    }
}

fn map_key(k: &MapKey) -> String {
    match k {
        MapKey::Bool(b) => b.to_string(),
        MapKey::I32(n) => n.to_string(),
        MapKey::I64(n) => n.to_string(),
        MapKey::U32(n) => n.to_string(),
        MapKey::U64(n) => n.to_string(),
        MapKey::String(s) => s.clone(),
    }
}

fn scalar_to_json(v: &Pb) -> Value {
    use base64::Engine;
    match v {
        Pb::Bool(b) => json!(b),
        Pb::I32(n) => json!(n),
        Pb::I64(n) => json!(n),
        Pb::U32(n) => json!(n),
        Pb::U64(n) => json!(n),
        Pb::F32(n) => json!(n),
        Pb::F64(n) => json!(n),
        Pb::String(s) => json!(s),
        Pb::Bytes(b) => json!(base64::engine::general_purpose::STANDARD.encode(b)),
        Pb::EnumNumber(n) => json!(n),
        Pb::Message(m) => message_to_json(m),
        Pb::List(items) => Value::Array(items.iter().map(scalar_to_json).collect()),
        Pb::Map(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (map_key(k), scalar_to_json(v)))
                .collect(),
        ),
    }
}

fn special_to_json(s: Special, msg: &DynamicMessage) -> Value {
    let int = |name: &str| {
        msg.get_field_by_name(name)
            .and_then(|v| v.as_i64().or_else(|| v.as_i32().map(i64::from)))
            .unwrap_or(0)
    };
    let bytes = |name: &str| {
        msg.get_field_by_name(name)
            .and_then(|v| v.as_bytes().cloned())
            .unwrap_or_default()
    };
    match s {
        Special::Time | Special::MicroTime => {
            let t = DateTime::<Utc>::from_timestamp(int("seconds"), int("nanos") as u32)
                .unwrap_or_default();
            json!(if s == Special::Time {
                t.to_rfc3339_opts(SecondsFormat::Secs, true)
            } else {
                t.to_rfc3339_opts(SecondsFormat::Micros, true)
            })
        }
        Special::Duration => json!(go_duration(int("duration"))),
        Special::IntOrString => {
            if int("type") == 1 {
                json!(field_str(msg, "strVal"))
            } else {
                json!(int("intVal"))
            }
        }
        Special::Quantity => json!(field_str(msg, "string")),
        Special::RawJson => {
            let raw = msg
                .descriptor()
                .fields()
                .next()
                .and_then(|f| msg.get_field(&f).as_bytes().cloned())
                .unwrap_or_default();
            serde_json::from_slice(&raw).unwrap_or(Value::Null)
        }
        Special::RawExtension => {
            let raw = bytes("raw");
            if raw.starts_with(MAGIC) {
                decode(&raw).unwrap_or(Value::Null)
            } else {
                serde_json::from_slice(&raw).unwrap_or(Value::Null)
            }
        }
        Special::Items => msg
            .get_field_by_name("items")
            .map(|v| scalar_to_json(&v))
            .unwrap_or_else(|| json!([])),
    }
}

/// Go's `time.Duration.String()`: `1h0m0s`, `1.5s`, `100ms`, `0s`.
fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    if n < 1_000_000_000 {
        let (unit, div) = if n < 1_000 {
            ("ns", 1)
        } else if n < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{sign}{}{unit}", fraction(n, div));
    }
    let secs = n / 1_000_000_000;
    let (h, m) = (secs / 3600, (secs % 3600) / 60);
    let s = fraction(n % 60_000_000_000, 1_000_000_000);
    match (h, m) {
        (0, 0) => format!("{sign}{s}s"),
        (0, m) => format!("{sign}{m}m{s}s"),
        (h, m) => format!("{sign}{h}h{m}m{s}s"),
    }
}

fn fraction(n: u64, div: u64) -> String {
    let whole = n / div;
    let rest = n % div;
    if rest == 0 {
        return whole.to_string();
    }
    let width = div.ilog10() as usize;
    let digits = format!("{rest:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// Parse Go's duration syntax (`1h30m`, `1.5s`, `300ms`) into nanoseconds.
fn parse_go_duration(s: &str) -> Option<i64> {
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(0);
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..end].parse().ok()?;
        rest = &rest[end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += value * scale;
        rest = &rest[unit_end..];
    }
    Some(if neg { -total } else { total } as i64)
}

/// A JSON object as the message `desc`. Fields the message does not have are left out (as
/// kube-apiserver's typed objects drop them); values of the wrong type are left out too.
pub fn json_to_message(desc: &MessageDescriptor, v: &Value) -> DynamicMessage {
    let mut msg = DynamicMessage::new(desc.clone());
    if let Some(s) = special(desc) {
        json_to_special(s, &mut msg, v);
        return msg;
    }
    let Some(obj) = v.as_object() else {
        return msg;
    };
    for field in desc.fields().filter(|f| is_inline(desc, f)) {
        if let Kind::Message(inner) = field.kind() {
            let m = json_to_message(&inner, v);
            if m.fields().next().is_some() {
                msg.set_field(&field, Pb::Message(m));
            }
        }
    }
    for (key, value) in obj {
        let Some(field) = desc.get_field_by_name(key) else {
            continue;
        };
        if value.is_null() {
            continue;
        }
        if let Some(pb) = json_to_field(&field, value) {
            msg.set_field(&field, pb);
        }
    }
    msg
}

fn json_to_field(field: &FieldDescriptor, v: &Value) -> Option<Pb> {
    let kind = field.kind();
    if field.is_map() {
        let Kind::Message(entry) = &kind else {
            return None;
        };
        let value_kind = entry.map_entry_value_field().kind();
        let map: HashMap<MapKey, Pb> = v
            .as_object()?
            .iter()
            .filter_map(|(k, v)| Some((MapKey::String(k.clone()), json_to_kind(&value_kind, v)?)))
            .collect();
        return Some(Pb::Map(map));
    }
    if field.is_list() {
        let items = v
            .as_array()?
            .iter()
            .filter_map(|i| json_to_kind(&kind, i))
            .collect();
        return Some(Pb::List(items));
    }
    json_to_kind(&kind, v)
}

fn json_to_kind(kind: &Kind, v: &Value) -> Option<Pb> {
    use base64::Engine;
    Some(match kind {
        Kind::Bool => Pb::Bool(v.as_bool()?),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Pb::I32(v.as_i64()? as i32),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Pb::I64(v.as_i64()?),
        Kind::Uint32 | Kind::Fixed32 => Pb::U32(v.as_u64()? as u32),
        Kind::Uint64 | Kind::Fixed64 => Pb::U64(v.as_u64()?),
        Kind::Float => Pb::F32(v.as_f64()? as f32),
        Kind::Double => Pb::F64(v.as_f64()?),
        Kind::String => Pb::String(v.as_str()?.to_string()),
        Kind::Bytes => Pb::Bytes(
            base64::engine::general_purpose::STANDARD
                .decode(v.as_str()?)
                .ok()?
                .into(),
        ),
        Kind::Enum(_) => Pb::EnumNumber(v.as_i64()? as i32),
        Kind::Message(m) => Pb::Message(json_to_message(m, v)),
    })
}

fn json_to_special(s: Special, msg: &mut DynamicMessage, v: &Value) {
    match s {
        Special::Time | Special::MicroTime => {
            if let Some(t) = v
                .as_str()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            {
                msg.set_field_by_name("seconds", Pb::I64(t.timestamp()));
                msg.set_field_by_name("nanos", Pb::I32(t.timestamp_subsec_nanos() as i32));
            }
        }
        Special::Duration => {
            if let Some(n) = v.as_str().and_then(parse_go_duration) {
                msg.set_field_by_name("duration", Pb::I64(n));
            }
        }
        Special::IntOrString => match v {
            Value::String(s) => {
                msg.set_field_by_name("type", Pb::I64(1));
                msg.set_field_by_name("strVal", Pb::String(s.clone()));
            }
            v => {
                msg.set_field_by_name("type", Pb::I64(0));
                msg.set_field_by_name("intVal", Pb::I32(v.as_i64().unwrap_or(0) as i32));
            }
        },
        Special::Quantity => {
            let q = match v {
                Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            msg.set_field_by_name("string", Pb::String(q));
        }
        Special::RawJson => {
            if let Some(f) = msg.descriptor().fields().next() {
                let raw = serde_json::to_vec(v).unwrap_or_default();
                msg.set_field(&f, Pb::Bytes(raw.into()));
            }
        }
        Special::RawExtension => {
            let raw = serde_json::to_vec(v).unwrap_or_default();
            msg.set_field_by_name("raw", Pb::Bytes(raw.into()));
        }
        Special::Items => {
            let items = v
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(|s| Pb::String(s.to_string())))
                        .collect()
                })
                .unwrap_or_default();
            msg.set_field_by_name("items", Pb::List(items));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "web",
                "namespace": "default",
                "labels": {"app": "web", "empty": ""},
                "creationTimestamp": "2026-01-02T03:04:05Z",
                "managedFields": [{"manager": "kubectl", "operation": "Update",
                    "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {}},
                    "time": "2026-01-02T03:04:05Z"}]
            },
            "spec": {
                "nodeName": "n1",
                "automountServiceAccountToken": false,
                "containers": [{
                    "name": "c",
                    "image": "nginx",
                    "args": ["a", ""],
                    "ports": [{"containerPort": 80}],
                    "resources": {"limits": {"cpu": "500m", "memory": "1Gi"}},
                    "readinessProbe": {"httpGet": {"port": "http", "path": "/"}},
                    "livenessProbe": {"tcpSocket": {"port": 8080}}
                }]
            },
            "status": {"phase": "Running"}
        })
    }

    #[test]
    fn an_object_round_trips_through_the_envelope() {
        let bytes = encode(&pod()).unwrap();
        assert!(bytes.starts_with(MAGIC));
        assert_eq!(decode(&bytes).unwrap(), pod());
    }

    #[test]
    fn lists_secrets_and_leases_round_trip() {
        let list = json!({"apiVersion": "v1", "kind": "SecretList",
            "metadata": {"resourceVersion": "7", "continue": "x"},
            "items": [{"metadata": {"name": "s"}, "data": {"k": "aGk="}, "type": "Opaque"}]});
        assert_eq!(decode(&encode_list(&list).unwrap()).unwrap(), list);
        let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "l"},
            "spec": {"holderIdentity": "me", "leaseDurationSeconds": 15,
                "renewTime": "2026-01-02T03:04:05.123456Z"}});
        assert_eq!(decode(&encode(&lease).unwrap()).unwrap(), lease);
    }

    #[test]
    fn custom_kinds_have_no_message() {
        assert!(!has_message(
            "nodemaintenance.medik8s.io/v1beta1",
            "NodeMaintenance"
        ));
        assert!(has_message("apps/v1", "Deployment"));
        assert!(has_message("policy/v1", "Eviction"));
        assert!(has_message("v1", "Status"));
        assert!(has_message("rbac.authorization.k8s.io/v1", "ClusterRole"));
        assert!(encode(&json!({"apiVersion": "x/v1", "kind": "Y"})).is_none());
    }

    #[test]
    fn bad_bodies_name_the_problem() {
        let e = decode(b"{}").unwrap_err().to_api_error(Some("Pod"));
        assert_eq!(e.code, 400);
        assert!(e.message.contains("magic"), "{}", e.message);
        // As kube-apiserver v1.37 answers it (the row in tests/sandbox_errors.rs).
        let e = decode(b"k8s\0\n\x0b\n\x02v1\x12\x03Pod").unwrap_err();
        assert_eq!(
            e.to_api_error(Some("Pod")).message,
            "the object provided is unrecognized (must be of type Pod): unexpected EOF (6b3873000a0b0a0276311203506f64)"
        );
        let unknown = envelope("v1", "Nothing", vec![]);
        assert!(
            decode(&unknown)
                .unwrap_err()
                .to_api_error(None)
                .message
                .contains("no kind \"Nothing\"")
        );
    }

    #[test]
    fn accept_headers_are_negotiated_in_order_and_by_quality() {
        let pb = "application/vnd.kubernetes.protobuf,application/json";
        assert_eq!(negotiate(pb, true).unwrap(), Wire::Protobuf);
        assert_eq!(negotiate(pb, false).unwrap(), Wire::Json);
        assert_eq!(negotiate("", true).unwrap(), Wire::Json);
        assert_eq!(negotiate("application/json", true).unwrap(), Wire::Json);
        assert_eq!(
            negotiate(
                "application/vnd.kubernetes.protobuf;q=0.5, application/json",
                true
            )
            .unwrap(),
            Wire::Json
        );
        assert_eq!(
            negotiate("application/vnd.kubernetes.protobuf", false)
                .unwrap_err()
                .code,
            406
        );
    }

    #[test]
    fn watch_events_are_length_prefixed() {
        let ev = json!({"type": "ADDED", "object": pod()});
        let mut stream = encode_watch_event(&ev).unwrap();
        let len = u32::from_be_bytes(stream[..4].try_into().unwrap()) as usize;
        assert_eq!(len + 4, stream.len());
        stream.extend(encode_watch_event(&json!({"type": "DELETED", "object": pod()})).unwrap());
        let events = decode_watch_stream(&stream).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0], ev);
        assert_eq!(events[1]["type"], "DELETED");
    }

    #[test]
    fn go_durations_are_written_and_read_as_go_does() {
        for (n, s) in [
            (0, "0s"),
            (1_500_000_000, "1.5s"),
            (3_600_000_000_000, "1h0m0s"),
            (100_000_000, "100ms"),
            (90_000_000_000, "1m30s"),
        ] {
            assert_eq!(go_duration(n), s);
            assert_eq!(parse_go_duration(s), Some(n));
        }
    }
}
