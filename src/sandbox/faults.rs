//! Fault injection: make the sandbox fail the way a real API server under load does, so that the
//! controllers' error paths get exercised.
//!
//! A [`FaultRule`] picks requests by verb, resource, namespace and object name, and answers a
//! share of them with an error status (500, 503, 409, or 429 with `Retry-After` as API Priority
//! and Fairness sends it), delays them, or ends watches early. Rules are switched at run time
//! through [`Faults`] (from Rust: [`super::Sandbox::faults`]) or through the admin endpoint
//! `/sandbox/faults` that `nmo simulate --serve` exposes (see [`admin`]). Which requests are hit
//! is decided by a seeded generator, so a run with the same seed and the same request order
//! fails the same requests.

use super::error::ApiError;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Mutex;
use std::time::Duration;

/// What a matching request gets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Fault {
    /// An error `Status` with this code: 409 (`Conflict`, as for a stale resourceVersion), 500
    /// (`InternalError`), 503 (`ServiceUnavailable`), 504 (`Timeout`), or any other code.
    Status(u16),
    /// 429 `TooManyRequests` with a `Retry-After` header and no PodDisruptionBudget in the body,
    /// as API Priority and Fairness answers.
    TooManyRequests {
        /// The `Retry-After` seconds.
        #[serde(rename = "retryAfterSeconds")]
        retry_after_secs: u64,
    },
    /// The request is served, after this delay.
    Latency {
        /// Milliseconds added.
        millis: u64,
    },
    /// Watches are served but end after this long, well before their `timeoutSeconds`.
    EndWatch {
        /// Milliseconds a watch lives.
        millis: u64,
    },
}

impl Fault {
    /// An added delay.
    pub fn latency(d: Duration) -> Self {
        Fault::Latency {
            millis: u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// Watches that end after `d`.
    pub fn end_watch(d: Duration) -> Self {
        Fault::EndWatch {
            millis: u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// The error this fault answers with, if it is an error.
    pub fn error(&self) -> Option<ApiError> {
        let (code, reason, message) = match self {
            Fault::Status(409) => (
                409,
                "Conflict",
                "Operation cannot be fulfilled: the object has been modified; please apply your changes to the latest version and try again (injected fault)",
            ),
            Fault::Status(500) => (
                500,
                "InternalError",
                "Internal error occurred: injected fault",
            ),
            Fault::Status(503) => (
                503,
                "ServiceUnavailable",
                "the server is currently unable to handle the request (injected fault)",
            ),
            Fault::Status(504) => (
                504,
                "Timeout",
                "the server was unable to return a response in the time allotted (injected fault)",
            ),
            Fault::Status(code) => (*code, "InternalError", "injected fault"),
            Fault::TooManyRequests { retry_after_secs } => {
                let mut e = ApiError::new(
                    429,
                    "TooManyRequests",
                    "Too many requests, please try again later.",
                );
                e.details = json!({ "retryAfterSeconds": retry_after_secs });
                return Some(e);
            }
            Fault::Latency { .. } | Fault::EndWatch { .. } => return None,
        };
        Some(ApiError::new(code, reason, message))
    }
}

/// Which requests a fault applies to, and how often. Empty lists match everything.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultRule {
    /// What matching requests get.
    pub fault: Fault,
    /// Verbs: `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verbs: Vec<String>,
    /// Resources as the request names them: `pods`, `nodes`, `leases`, `nodemaintenances`, or a
    /// subresource such as `pods/eviction` or `maintenancewindows/status`. A plain resource
    /// also matches its subresources (`nodemaintenances` matches `nodemaintenances/status`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    /// Namespaces (`""` for cluster-scoped objects).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Object names: the name in the path, or for a create the body's `metadata.name`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// Share of matching requests hit, 0.0 to 1.0. Default 1.
    #[serde(default = "one")]
    pub share: f64,
    /// Stop after hitting this many requests. Default: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

fn one() -> f64 {
    1.0
}

impl FaultRule {
    /// A rule hitting every request with `fault`; narrow it with the builder methods.
    pub fn new(fault: Fault) -> Self {
        FaultRule {
            fault,
            verbs: Vec::new(),
            resources: Vec::new(),
            namespaces: Vec::new(),
            names: Vec::new(),
            share: 1.0,
            limit: None,
        }
    }

    /// Only these verbs.
    pub fn verbs(mut self, verbs: &[&str]) -> Self {
        self.verbs = verbs.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Only these resources (and their subresources).
    pub fn resources(mut self, resources: &[&str]) -> Self {
        self.resources = resources.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Only these namespaces.
    pub fn namespaces(mut self, namespaces: &[&str]) -> Self {
        self.namespaces = namespaces.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Only these object names.
    pub fn names(mut self, names: &[&str]) -> Self {
        self.names = names.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Hit this share of the matching requests.
    pub fn share(mut self, share: f64) -> Self {
        self.share = share;
        self
    }

    /// Hit at most `n` requests.
    pub fn limit(mut self, n: u64) -> Self {
        self.limit = Some(n);
        self
    }

    /// Whether the rule is well formed: a share within 0 to 1 and known verbs.
    pub fn check(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.share) {
            return Err(format!("share must be within 0 and 1, got {}", self.share));
        }
        const VERBS: [&str; 8] = [
            "get",
            "list",
            "watch",
            "create",
            "update",
            "patch",
            "delete",
            "deletecollection",
        ];
        if let Some(v) = self.verbs.iter().find(|v| !VERBS.contains(&v.as_str())) {
            return Err(format!(
                "unknown verb {v:?}: expected one of {}",
                VERBS.join(", ")
            ));
        }
        if let Fault::Status(code) = self.fault
            && !(400..=599).contains(&code)
        {
            return Err(format!("status must be an error code 400-599, got {code}"));
        }
        Ok(())
    }

    /// Whether the request `req` is one this rule is about (before the share is rolled).
    pub fn matches(&self, req: &RequestInfo<'_>) -> bool {
        let any = |list: &[String], v: &str| list.is_empty() || list.iter().any(|x| x == v);
        let resource_ok = self.resources.is_empty()
            || self.resources.iter().any(|r| {
                r == req.resource
                    || req
                        .resource
                        .split_once('/')
                        .is_some_and(|(main, _)| main == r)
            });
        any(&self.verbs, req.verb)
            && resource_ok
            && any(&self.namespaces, req.namespace)
            && (self.names.is_empty() || req.name.is_some_and(|n| any(&self.names, n)))
    }
}

/// The parts of a request that rules match on.
#[derive(Clone, Copy, Debug)]
pub struct RequestInfo<'a> {
    /// The verb.
    pub verb: &'a str,
    /// `plural` or `plural/subresource`.
    pub resource: &'a str,
    /// Namespace, `""` when cluster-scoped.
    pub namespace: &'a str,
    /// Object name, when known.
    pub name: Option<&'a str>,
}

/// What the injector decided for one request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Verdict {
    /// Delay before serving (or failing) it.
    pub delay: Duration,
    /// Fail it with this error.
    pub error: Option<ApiError>,
    /// For a watch: end it after this long.
    pub end_watch: Option<Duration>,
}

/// An id for removing a rule.
pub type FaultId = u64;

#[derive(Debug)]
struct Installed {
    id: FaultId,
    rule: FaultRule,
    hits: u64,
}

#[derive(Debug)]
struct State {
    rules: Vec<Installed>,
    next_id: FaultId,
    rng: u64,
    injected: u64,
}

/// The rules in force. Cheap when empty: one lock and a length check per request.
#[derive(Debug)]
pub struct Faults {
    state: Mutex<State>,
    watches: tokio::sync::watch::Sender<u64>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults::with_seed(0x6e6d_6f66_6175_6c74)
    }
}

/// splitmix64: small, fast, and the same sequence for the same seed.
fn next_random(state: &mut u64) -> f64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

impl Faults {
    /// No rules, and a generator seeded with `seed`.
    pub fn with_seed(seed: u64) -> Self {
        Faults {
            state: Mutex::new(State {
                rules: Vec::new(),
                next_id: 1,
                rng: seed,
                injected: 0,
            }),
            watches: tokio::sync::watch::channel(0).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether no rule is in force.
    pub fn is_empty(&self) -> bool {
        self.lock().rules.is_empty()
    }

    /// Put `rule` in force; later requests are subject to it. Refuses a malformed rule.
    pub fn add(&self, rule: FaultRule) -> Result<FaultId, String> {
        rule.check()?;
        let mut s = self.lock();
        let id = s.next_id;
        s.next_id += 1;
        s.rules.push(Installed { id, rule, hits: 0 });
        Ok(id)
    }

    /// Take rule `id` out of force. Whether it was there.
    pub fn remove(&self, id: FaultId) -> bool {
        let mut s = self.lock();
        let before = s.rules.len();
        s.rules.retain(|r| r.id != id);
        s.rules.len() != before
    }

    /// Take every rule out of force.
    pub fn clear(&self) {
        self.lock().rules.clear();
    }

    /// Reseed the generator, for a reproducible run.
    pub fn reseed(&self, seed: u64) {
        self.lock().rng = seed;
    }

    /// Requests rule `id` has hit so far (0 for an unknown id).
    pub fn hits(&self, id: FaultId) -> u64 {
        self.lock()
            .rules
            .iter()
            .find(|r| r.id == id)
            .map_or(0, |r| r.hits)
    }

    /// Requests hit by any rule since the sandbox started, removed rules included.
    pub fn injected(&self) -> u64 {
        self.lock().injected
    }

    /// The rules in force with their ids and hit counts, as the admin endpoint shows them.
    pub fn describe(&self) -> Value {
        let s = self.lock();
        json!({
            "injected": s.injected,
            "rules": s.rules.iter().map(|r| json!({
                "id": r.id,
                "hits": r.hits,
                "rule": r.rule,
            })).collect::<Vec<_>>(),
        })
    }

    /// End every open watch now; clients see the stream close and resume.
    pub fn close_watches(&self) {
        self.watches.send_modify(|n| *n += 1);
    }

    /// A receiver that changes whenever [`Faults::close_watches`] is called.
    pub fn watch_closer(&self) -> tokio::sync::watch::Receiver<u64> {
        self.watches.subscribe()
    }

    /// Decide what happens to `req`. Delays of every hitting rule add up; the first hitting
    /// error rule answers; the shortest watch lifetime wins.
    pub fn decide(&self, req: &RequestInfo<'_>) -> Verdict {
        let mut verdict = Verdict::default();
        let mut s = self.lock();
        if s.rules.is_empty() {
            return verdict;
        }
        let State {
            rules,
            rng,
            injected,
            ..
        } = &mut *s;
        for r in rules.iter_mut() {
            if r.rule.limit.is_some_and(|l| r.hits >= l) || !r.rule.matches(req) {
                continue;
            }
            let applies = match &r.rule.fault {
                Fault::EndWatch { .. } => req.verb == "watch",
                f if f.error().is_some() => verdict.error.is_none(),
                _ => true,
            };
            if !applies || next_random(rng) >= r.rule.share {
                continue;
            }
            r.hits += 1;
            *injected += 1;
            match &r.rule.fault {
                Fault::Latency { millis } => verdict.delay += Duration::from_millis(*millis),
                Fault::EndWatch { millis } => {
                    let d = Duration::from_millis(*millis);
                    verdict.end_watch = Some(verdict.end_watch.map_or(d, |e| e.min(d)));
                }
                f => verdict.error = f.error(),
            }
        }
        verdict
    }
}

/// The admin endpoint, served under `/sandbox/` next to the Kubernetes API:
///
/// - `GET /sandbox/faults`: the rules in force, with ids and hit counts;
/// - `POST /sandbox/faults` with a [`FaultRule`] as JSON (for example
///   `{"fault": {"status": 503}, "verbs": ["patch"], "resources": ["nodes"], "share": 0.1}`):
///   puts it in force and answers its id;
/// - `DELETE /sandbox/faults/<id>`, or `DELETE /sandbox/faults` for all of them;
/// - `POST /sandbox/watches/close`: ends every open watch;
/// - `POST /sandbox/watch-history/expire`: forgets the watch history, so resuming watches get
///   410 Gone and relist.
pub mod admin {
    /// The path prefix of the admin endpoint.
    pub const PREFIX: &str = "sandbox";
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(verb: &'a str, resource: &'a str, name: Option<&'a str>) -> RequestInfo<'a> {
        RequestInfo {
            verb,
            resource,
            namespace: "",
            name,
        }
    }

    #[test]
    fn a_rule_matches_by_verb_resource_subresource_and_name() {
        let rule = FaultRule::new(Fault::Status(500))
            .verbs(&["patch"])
            .resources(&["nodemaintenances"])
            .names(&["a"]);
        assert!(rule.matches(&req("patch", "nodemaintenances", Some("a"))));
        assert!(rule.matches(&req("patch", "nodemaintenances/status", Some("a"))));
        assert!(!rule.matches(&req("patch", "nodemaintenances", Some("b"))));
        assert!(!rule.matches(&req("patch", "nodemaintenances", None)));
        assert!(!rule.matches(&req("get", "nodemaintenances", Some("a"))));
        assert!(!rule.matches(&req("patch", "nodes", Some("a"))));
        let status_only = FaultRule::new(Fault::Status(500)).resources(&["nodes/status"]);
        assert!(status_only.matches(&req("patch", "nodes/status", None)));
        assert!(!status_only.matches(&req("patch", "nodes", None)));
    }

    #[test]
    fn a_limit_stops_the_rule_and_hits_are_counted() {
        let f = Faults::default();
        let id = f.add(FaultRule::new(Fault::Status(503)).limit(2)).unwrap();
        let r = req("get", "pods", Some("p"));
        let codes: Vec<Option<u16>> = (0..4).map(|_| f.decide(&r).error.map(|e| e.code)).collect();
        assert_eq!(codes, vec![Some(503), Some(503), None, None]);
        assert_eq!(f.hits(id), 2);
        assert_eq!(f.injected(), 2);
        assert!(f.remove(id));
        assert!(!f.remove(id));
    }

    #[test]
    fn a_share_hits_about_that_share_and_the_same_seed_hits_the_same_requests() {
        let run = |seed| {
            let f = Faults::with_seed(seed);
            f.add(FaultRule::new(Fault::Status(500)).share(0.1))
                .unwrap();
            (0..10_000)
                .map(|_| f.decide(&req("patch", "nodes", None)).error.is_some())
                .collect::<Vec<_>>()
        };
        let a = run(7);
        let hit = a.iter().filter(|h| **h).count();
        assert!((800..1200).contains(&hit), "{hit} of 10000");
        assert_eq!(a, run(7));
        assert_ne!(a, run(8));
    }

    #[test]
    fn delays_add_up_the_first_error_answers_and_watches_end_at_the_shortest_lifetime() {
        let f = Faults::default();
        for rule in [
            FaultRule::new(Fault::latency(Duration::from_millis(5))),
            FaultRule::new(Fault::latency(Duration::from_millis(7))),
            FaultRule::new(Fault::TooManyRequests {
                retry_after_secs: 2,
            }),
            FaultRule::new(Fault::Status(500)),
            FaultRule::new(Fault::end_watch(Duration::from_secs(3))),
            FaultRule::new(Fault::end_watch(Duration::from_secs(1))),
        ] {
            f.add(rule).unwrap();
        }
        let v = f.decide(&req("watch", "pods", None));
        assert_eq!(v.delay, Duration::from_millis(12));
        let e = v.error.unwrap();
        assert_eq!((e.code, e.reason.as_str()), (429, "TooManyRequests"));
        assert_eq!(e.details["retryAfterSeconds"], 2);
        assert_eq!(v.end_watch, Some(Duration::from_secs(1)));
        let v = f.decide(&req("get", "pods", None));
        assert_eq!(v.end_watch, None, "only watches end early");
    }

    #[test]
    fn injected_errors_are_worded_like_kube_apiserver() {
        let conflict = Fault::Status(409).error().unwrap();
        assert_eq!(conflict.reason, "Conflict");
        assert!(conflict.message.contains("the object has been modified"));
        assert_eq!(Fault::Status(500).error().unwrap().reason, "InternalError");
        assert_eq!(
            Fault::Status(503).error().unwrap().reason,
            "ServiceUnavailable"
        );
        assert_eq!(Fault::latency(Duration::from_millis(1)).error(), None);
    }

    #[test]
    fn malformed_rules_are_refused_with_what_is_wrong() {
        let f = Faults::default();
        let e = f
            .add(FaultRule::new(Fault::Status(500)).share(1.5))
            .unwrap_err();
        assert!(e.contains("share"), "{e}");
        let e = f
            .add(FaultRule::new(Fault::Status(500)).verbs(&["frob"]))
            .unwrap_err();
        assert!(e.contains("frob"), "{e}");
        let e = f.add(FaultRule::new(Fault::Status(200))).unwrap_err();
        assert!(e.contains("200"), "{e}");
    }

    #[test]
    fn rules_round_trip_through_the_admin_json() {
        let rule: FaultRule = serde_json::from_value(json!({
            "fault": {"tooManyRequests": {"retryAfterSeconds": 1}},
            "verbs": ["create"],
            "resources": ["nodemaintenances"],
            "share": 0.25
        }))
        .unwrap();
        assert_eq!(
            rule,
            FaultRule::new(Fault::TooManyRequests {
                retry_after_secs: 1
            })
            .verbs(&["create"])
            .resources(&["nodemaintenances"])
            .share(0.25)
        );
        let status: FaultRule = serde_json::from_value(json!({"fault": {"status": 503}})).unwrap();
        assert_eq!(status.share, 1.0);
        assert_eq!(status.fault, Fault::Status(503));
        let latency: FaultRule =
            serde_json::from_value(json!({"fault": {"latency": {"millis": 20}}})).unwrap();
        assert_eq!(latency.fault, Fault::latency(Duration::from_millis(20)));
    }
}
