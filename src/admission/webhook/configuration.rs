//! The `ValidatingWebhookConfiguration` that registers nmo's webhook with the apiserver.

use super::{MAINTENANCE_WINDOW_PATH, NODE_MAINTENANCE_PATH};
use crate::api::GROUP;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    RuleWithOperations, ServiceReference, ValidatingWebhook, ValidatingWebhookConfiguration,
    WebhookClientConfig,
};
use kube::api::ObjectMeta;

/// Name of the webhook that reviews NodeMaintenances (shown in refusals:
/// `admission webhook "vnodemaintenance.nodemaintenance.medik8s.io" denied the request: ...`).
pub const NODE_MAINTENANCE_WEBHOOK: &str = "vnodemaintenance.nodemaintenance.medik8s.io";
/// Name of the webhook that reviews MaintenanceWindows.
pub const MAINTENANCE_WINDOW_WEBHOOK: &str = "vmaintenancewindow.nodemaintenance.medik8s.io";
/// How long the apiserver waits for an answer. Each review does at most four reads.
pub const TIMEOUT_SECONDS: i32 = 10;

/// Where the apiserver reaches the webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WebhookEndpoint {
    /// A Service in the cluster (the deployment's case); the paths are added.
    Service {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// Its port (the apiserver's default is 443).
        port: Option<i32>,
    },
    /// A base URL such as `https://127.0.0.1:9443` (tests, and webhooks outside the
    /// cluster); the paths are appended.
    Url(String),
}

/// The ValidatingWebhookConfiguration `name` for nmo's two webhooks at `endpoint`, trusting
/// `ca_bundle` (PEM) for their serving certificate. An empty `ca_bundle` leaves `caBundle`
/// out, for cert-manager's CA injector (`cert-manager.io/inject-ca-from`) to fill in.
///
/// Both webhooks have `sideEffects: None` (so `kubectl apply --dry-run=server` calls them),
/// `admissionReviewVersions: [v1]`, `failurePolicy: Fail` (a request is refused when the
/// webhook cannot decide), `matchPolicy: Equivalent`, cluster scope, CREATE and UPDATE only
/// (deletes are always allowed, so none are sent) and [`TIMEOUT_SECONDS`].
pub fn validating_webhook_configuration(
    name: &str,
    endpoint: &WebhookEndpoint,
    ca_bundle: &[u8],
) -> ValidatingWebhookConfiguration {
    let ca_bundle = (!ca_bundle.is_empty()).then(|| ByteString(ca_bundle.to_vec()));
    let webhook = |webhook_name: &str, path: &str, version: &str, plural: &str| {
        let client_config = match endpoint {
            WebhookEndpoint::Service {
                namespace,
                name,
                port,
            } => WebhookClientConfig {
                ca_bundle: ca_bundle.clone(),
                service: Some(ServiceReference {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    path: Some(path.to_string()),
                    port: *port,
                }),
                url: None,
            },
            WebhookEndpoint::Url(base) => WebhookClientConfig {
                ca_bundle: ca_bundle.clone(),
                service: None,
                url: Some(format!("{}{path}", base.trim_end_matches('/'))),
            },
        };
        ValidatingWebhook {
            name: webhook_name.to_string(),
            admission_review_versions: vec!["v1".into()],
            client_config,
            failure_policy: Some("Fail".into()),
            match_policy: Some("Equivalent".into()),
            side_effects: "None".into(),
            timeout_seconds: Some(TIMEOUT_SECONDS),
            rules: Some(vec![RuleWithOperations {
                api_groups: Some(vec![GROUP.into()]),
                api_versions: Some(vec![version.into()]),
                operations: Some(vec!["CREATE".into(), "UPDATE".into()]),
                resources: Some(vec![plural.into()]),
                scope: Some("Cluster".into()),
            }]),
            match_conditions: None,
            namespace_selector: None,
            object_selector: None,
        }
    };
    ValidatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some([("app.kubernetes.io/name".to_string(), "nmo".to_string())].into()),
            ..Default::default()
        },
        webhooks: Some(vec![
            webhook(
                NODE_MAINTENANCE_WEBHOOK,
                NODE_MAINTENANCE_PATH,
                "v1beta1",
                "nodemaintenances",
            ),
            webhook(
                MAINTENANCE_WINDOW_WEBHOOK,
                MAINTENANCE_WINDOW_PATH,
                "v1alpha1",
                "maintenancewindows",
            ),
        ]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_configuration_has_the_documented_shape() {
        let endpoint = WebhookEndpoint::Service {
            namespace: "nmo-system".into(),
            name: "nmo-webhook".into(),
            port: Some(443),
        };
        let vwc = validating_webhook_configuration("nmo", &endpoint, b"PEM");
        let v = serde_json::to_value(&vwc).unwrap();
        let nm = &v["webhooks"][0];
        assert_eq!(nm["name"], NODE_MAINTENANCE_WEBHOOK);
        assert_eq!(nm["sideEffects"], "None");
        assert_eq!(nm["admissionReviewVersions"], json!(["v1"]));
        assert_eq!(nm["failurePolicy"], "Fail");
        assert_eq!(nm["matchPolicy"], "Equivalent");
        assert_eq!(nm["timeoutSeconds"], TIMEOUT_SECONDS);
        assert_eq!(
            nm["rules"],
            json!([{"apiGroups": [GROUP], "apiVersions": ["v1beta1"], "operations": ["CREATE", "UPDATE"],
                "resources": ["nodemaintenances"], "scope": "Cluster"}])
        );
        assert_eq!(
            nm["clientConfig"],
            json!({"caBundle": "UEVN", "service": {"namespace": "nmo-system", "name": "nmo-webhook",
                "path": "/validate-nodemaintenance", "port": 443}})
        );
        let mw = &v["webhooks"][1];
        assert_eq!(mw["rules"][0]["resources"], json!(["maintenancewindows"]));
        assert_eq!(mw["rules"][0]["apiVersions"], json!(["v1alpha1"]));
    }

    #[test]
    fn a_url_endpoint_gets_the_paths_appended() {
        let vwc = validating_webhook_configuration(
            "nmo",
            &WebhookEndpoint::Url("https://127.0.0.1:9443/".into()),
            b"",
        );
        let hooks = vwc.webhooks.unwrap();
        assert_eq!(
            hooks[1].client_config.url.as_deref(),
            Some("https://127.0.0.1:9443/validate-maintenancewindow")
        );
        assert!(hooks[1].client_config.service.is_none());
        assert!(
            hooks[1].client_config.ca_bundle.is_none(),
            "left for cert-manager"
        );
    }
}
