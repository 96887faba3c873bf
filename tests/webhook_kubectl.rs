//! nmo's validating webhook end to end with the real kubectl against the sandbox: the sandbox
//! calls the webhook over HTTPS (caBundle honoured) on every NodeMaintenance and
//! MaintenanceWindow write, dry runs included, and kubectl shows its refusals and warnings.
//! kubectl must be on the PATH: these tests fail without it.

#[path = "support/webhook_env.rs"]
mod webhook_env;

use nmo::sandbox::Sandbox;
use webhook_env::{Kubectl, RunningWebhook};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_sees_the_webhook_refuse_and_warn() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    let home = tempfile::tempdir().unwrap();
    let kubeconfig = home.path().join("kubeconfig");
    sandbox.write_kubeconfig(&kubeconfig).unwrap();
    let kubectl = Kubectl::new(&kubeconfig);
    webhook_env::install_crds(&kubectl).await;
    let client = sandbox.client().unwrap();
    webhook_env::create_scenario_nodes(&client).await;
    let webhook = RunningWebhook::start(client.clone()).await;
    webhook.register(&client).await;

    let steps = webhook_env::scenario(&kubectl).await;
    assert_eq!(steps.len(), 14, "{steps:#?}");
    for s in &steps {
        eprintln!(
            "--- {} ({})\n{}{}",
            s.case,
            if s.success { "ok" } else { "refused" },
            s.stdout,
            s.stderr
        );
    }
    webhook.stop().await;
}
