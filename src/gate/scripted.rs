//! A health gate whose answers follow a script over the (virtual) clock, for `nmo simulate
//! --fake-alert` and tests.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use super::QueryResult;

/// `[start, end)` during which the gate fires.
type Span = (DateTime<Utc>, DateTime<Utc>);

/// Answers "firing" during the spans given to [`ScriptedGate::firing_between`] and empty
/// otherwise. Clones share the script, so a test can add spans while the controller runs.
#[derive(Clone, Debug, Default)]
pub struct ScriptedGate {
    spans: Arc<Mutex<Vec<Span>>>,
    queries: Arc<Mutex<u64>>,
}

impl PartialEq for ScriptedGate {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.spans, &other.spans)
    }
}

impl Eq for ScriptedGate {}

impl ScriptedGate {
    /// A gate that never fires until told to.
    pub fn new() -> ScriptedGate {
        ScriptedGate::default()
    }

    /// Fire from `start` (inclusive) to `end` (exclusive).
    pub fn firing_between(&self, start: DateTime<Utc>, end: DateTime<Utc>) -> &Self {
        self.spans
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((start, end));
        self
    }

    /// How many queries were answered.
    pub fn queries(&self) -> u64 {
        *self.queries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The answer at `now`.
    pub fn query(&self, now: DateTime<Utc>) -> QueryResult {
        *self.queries.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        let firing = self
            .spans
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|(start, end)| *start <= now && now < *end);
        QueryResult {
            series: if firing {
                vec!["ALERTS{alertname=\"FakeAlert\",alertstate=\"firing\"}".to_string()]
            } else {
                Vec::new()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn it_fires_only_inside_its_spans() {
        let t = |h| Utc.with_ymd_and_hms(2026, 12, 1, h, 0, 0).unwrap();
        let gate = ScriptedGate::new();
        gate.firing_between(t(2), t(3));
        assert!(gate.query(t(1)).is_empty());
        assert!(!gate.query(t(2)).is_empty());
        assert!(gate.query(t(3)).is_empty());
        assert_eq!(gate.queries(), 3);
    }
}
