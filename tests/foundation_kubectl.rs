//! `nmo crds | kubectl apply --dry-run=client -f -` is accepted by the installed kubectl.
//! kubectl needs a server for discovery even in client dry-run, so it talks to the sandbox
//! (which has no nmo CRDs installed: the dry run must not need them).

use std::io::Write;
use std::process::{Command, Stdio};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_accepts_the_crds_in_a_client_dry_run() {
    let sandbox = nmo::sandbox::Sandbox::builder()
        .start()
        .await
        .expect("sandbox starts");
    let home = tempfile::tempdir().unwrap();
    let kubeconfig = home.path().join("kubeconfig");
    sandbox.write_kubeconfig(&kubeconfig).unwrap();
    let crds = Command::new(env!("CARGO_BIN_EXE_nmo"))
        .arg("crds")
        .output()
        .unwrap();
    assert!(crds.status.success());
    let out = tokio::task::spawn_blocking(move || {
        let mut child = Command::new("kubectl")
            .args(["apply", "--dry-run=client", "-f", "-"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", home.path())
            .env("KUBECONFIG", &kubeconfig)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl must be installed and on the PATH for these tests");
        child.stdin.take().unwrap().write_all(&crds.stdout).unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in [
        "nodemaintenances.nodemaintenance.medik8s.io",
        "maintenancewindows.nodemaintenance.medik8s.io",
    ] {
        assert!(
            stdout.contains(&format!(
                "customresourcedefinition.apiextensions.k8s.io/{name} created (dry run)"
            )),
            "{stdout}"
        );
    }
    // A dry run persists nothing.
    assert!(
        sandbox
            .list("apiextensions.k8s.io/v1", "CustomResourceDefinition")
            .is_empty()
    );
}
