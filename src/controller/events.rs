//! Events of both controllers: one core `v1` Event object per transition.
//!
//! kube's `Recorder` folds Events with the same reason and object into a series that keeps
//! the *first* message, so "started worker-2" would read "started worker-1" and a second
//! `SucceedMaintenance` for a real second completion would only bump a count. nmo's Events
//! report transitions that people read one by one, so each is its own object, with a name
//! that is unique per publish (`<object>.<hex nanoseconds><sequence>`), as kube-apiserver's
//! own names are.
//!
//! Events are best effort: a failure to publish is returned for the caller to log, and never
//! fails a reconcile. A create that fails in passing (a 5xx, a 429, a 409 other than
//! `AlreadyExists`, a broken connection) is tried again a few times first, as client-go's
//! recorder does: the chaos harness (`tests/chaos.rs`) lost Events to single failed writes.
//! The retry sends the same object, so a first attempt that landed unseen answers
//! `AlreadyExists`, which counts as published, and the Event is never doubled.

use crate::api::to_time;
use crate::clock::Clock;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How many times [`EventPublisher::publish`] sends an Event before giving up.
pub const PUBLISH_ATTEMPTS: u32 = 4;
/// The wait before the first retry; doubled for each next one (100, 200, 400 ms).
const PUBLISH_RETRY: Duration = Duration::from_millis(100);

/// What to do with the answer to an Event create.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublishOutcome {
    /// It is stored (this attempt, or an earlier one whose answer was lost).
    Published,
    /// A failure in passing: send it again.
    Retry,
    /// The API said no for good (invalid, forbidden, namespace missing): give up.
    GiveUp,
}

/// How the answer to an Event create is treated (pure, for the tests).
pub fn publish_outcome(result: &Result<(), kube::Error>) -> PublishOutcome {
    match result {
        Ok(()) => PublishOutcome::Published,
        Err(kube::Error::Api(status)) => match status.code {
            409 if status.reason == "AlreadyExists" => PublishOutcome::Published,
            409 | 429 => PublishOutcome::Retry,
            code if code >= 500 => PublishOutcome::Retry,
            _ => PublishOutcome::GiveUp,
        },
        // Transport failures: the connection broke or timed out.
        Err(kube::Error::HyperError(_) | kube::Error::Service(_)) => PublishOutcome::Retry,
        Err(_) => PublishOutcome::GiveUp,
    }
}

/// `reportingController`, `source.component` and field manager of every nmo Event.
pub const REPORTER: &str = crate::controller::node::FIELD_MANAGER;

/// Where Events about cluster-scoped objects go, as kube-apiserver's own do.
pub const CLUSTER_SCOPED_NAMESPACE: &str = "default";

/// `type` of an Event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// Expected progress.
    Normal,
    /// Something a person may need to look at.
    Warning,
}

impl EventType {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// Publishes Events, stamped with the [`Clock`], reported by `nmo`.
#[derive(Clone)]
pub struct EventPublisher {
    client: Client,
    clock: Arc<dyn Clock>,
    seq: Arc<AtomicU64>,
    instance: String,
}

impl EventPublisher {
    /// A publisher writing through `client`.
    pub fn new(client: Client, clock: Arc<dyn Clock>) -> Self {
        EventPublisher {
            client,
            clock,
            seq: Arc::new(AtomicU64::new(0)),
            instance: REPORTER.to_string(),
        }
    }

    /// Name this process in `reportingInstance` (default `nmo`): with leader election, the
    /// replica's identity, so an Event tells which replica acted.
    pub fn with_instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = instance.into();
        self
    }

    /// Publish one Event about `regarding`, trying up to [`PUBLISH_ATTEMPTS`] times while the
    /// failures are passing ones (see [`publish_outcome`]).
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        note: &str,
    ) -> Result<(), kube::Error> {
        let event = self.event(regarding, type_, reason, note);
        let namespace = event.metadata.namespace.clone().unwrap_or_default();
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let params = PostParams {
            field_manager: Some(REPORTER.to_string()),
            ..PostParams::default()
        };
        let mut wait = PUBLISH_RETRY;
        let mut attempt = 1;
        loop {
            let result = api.create(&params, &event).await.map(|_| ());
            match publish_outcome(&result) {
                PublishOutcome::Published => return Ok(()),
                PublishOutcome::Retry if attempt < PUBLISH_ATTEMPTS => {
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                    attempt += 1;
                }
                PublishOutcome::Retry | PublishOutcome::GiveUp => return result,
            }
        }
    }

    /// The Event object [`EventPublisher::publish`] writes.
    pub fn event(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        note: &str,
    ) -> Event {
        let now = self.clock.now();
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let object = regarding.name.clone().unwrap_or_default();
        let name = format!(
            "{object}.{:x}{:04x}",
            now.timestamp_nanos_opt().unwrap_or_default(),
            seq & 0xffff
        );
        let namespace = regarding
            .namespace
            .clone()
            .filter(|ns| !ns.is_empty())
            .unwrap_or_else(|| CLUSTER_SCOPED_NAMESPACE.to_string());
        Event {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(namespace),
                ..ObjectMeta::default()
            },
            involved_object: regarding.clone(),
            reason: Some(reason.to_string()),
            message: Some(note.to_string()),
            type_: Some(type_.as_str().to_string()),
            source: Some(EventSource {
                component: Some(REPORTER.to_string()),
                host: None,
            }),
            reporting_component: Some(REPORTER.to_string()),
            reporting_instance: Some(self.instance.clone()),
            action: Some(reason.to_string()),
            first_timestamp: Some(to_time(now)),
            last_timestamp: Some(to_time(now)),
            count: Some(1),
            ..Event::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::VirtualClock;
    use chrono::{TimeZone, Utc};

    fn publisher() -> EventPublisher {
        // A client that is never used: `event` builds the object only.
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let client = Client::try_from(config).unwrap();
        let clock = VirtualClock::new(Utc.with_ymd_and_hms(2026, 6, 1, 2, 0, 0).unwrap(), 1.0);
        EventPublisher::new(client, Arc::new(clock))
    }

    fn window() -> ObjectReference {
        ObjectReference {
            api_version: Some("nodemaintenance.medik8s.io/v1alpha1".into()),
            kind: Some("MaintenanceWindow".into()),
            name: Some("weekly".into()),
            ..ObjectReference::default()
        }
    }

    #[tokio::test]
    async fn an_event_about_a_cluster_scoped_object_lives_in_default_reported_by_nmo() {
        let e = publisher().event(&window(), EventType::Warning, "NodeBlocked", "why");
        assert_eq!(e.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(e.involved_object, window());
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert_eq!(e.reason.as_deref(), Some("NodeBlocked"));
        assert_eq!(e.message.as_deref(), Some("why"));
        assert_eq!(e.source.unwrap().component.as_deref(), Some("nmo"));
        assert_eq!(e.reporting_component.as_deref(), Some("nmo"));
    }

    fn api_error(code: u16, reason: &str) -> Result<(), kube::Error> {
        Err(kube::Error::Api(
            kube::core::Status::failure("test", reason)
                .with_code(code)
                .boxed(),
        ))
    }

    #[test]
    fn a_passing_failure_is_retried_and_an_event_already_stored_counts_as_published() {
        assert_eq!(publish_outcome(&Ok(())), PublishOutcome::Published);
        assert_eq!(
            publish_outcome(&api_error(409, "AlreadyExists")),
            PublishOutcome::Published
        );
        for (code, reason) in [
            (500, "InternalError"),
            (503, "ServiceUnavailable"),
            (504, "Timeout"),
            (429, "TooManyRequests"),
            (409, "Conflict"),
        ] {
            assert_eq!(
                publish_outcome(&api_error(code, reason)),
                PublishOutcome::Retry,
                "{code} {reason}"
            );
        }
        for (code, reason) in [(422, "Invalid"), (403, "Forbidden"), (404, "NotFound")] {
            assert_eq!(
                publish_outcome(&api_error(code, reason)),
                PublishOutcome::GiveUp,
                "{code} {reason}"
            );
        }
    }

    #[tokio::test]
    async fn two_events_with_the_same_reason_are_two_objects() {
        let p = publisher();
        let a = p.event(&window(), EventType::Normal, "NodeReleased", "worker-1");
        let b = p.event(&window(), EventType::Normal, "NodeReleased", "worker-2");
        assert_ne!(a.metadata.name, b.metadata.name);
        assert!(a.metadata.name.unwrap().starts_with("weekly."));
    }
}
