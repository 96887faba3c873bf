//! The sandbox driven by another ecosystem's client: runs the pytest suite in `tests/python/`
//! with the official Python `kubernetes` client against an in-process sandbox (two Ready
//! nodes, HTTPS, a kubeconfig written for the suite).
//!
//! The client lives in a virtual environment, `target/py-venv` (or `$NMO_PY_VENV`), which
//! `.ci/run` makes with `python3 -m venv target/py-venv && target/py-venv/bin/pip install
//! kubernetes pytest`. Without it this test FAILS and says how to make it.

use nmo::sandbox::Sandbox;
use std::path::PathBuf;

fn venv_python() -> PathBuf {
    let venv = std::env::var_os("NMO_PY_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/py-venv"));
    venv.join("bin/python")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_client_passes_the_sandbox_suite() {
    let python = venv_python();
    let probe = std::process::Command::new(&python)
        .args(["-c", "import kubernetes, pytest"])
        .output();
    match probe {
        Ok(o) if o.status.success() => {}
        other => panic!(
            "the Python suite needs a virtual environment with the kubernetes client and pytest at {}: \
             run `python3 -m venv target/py-venv && target/py-venv/bin/pip install kubernetes pytest` \
             (as .ci/run does); probing it gave {other:?}",
            python.display()
        ),
    }
    let sandbox = Sandbox::builder()
        .speed(100.0)
        .start()
        .await
        .expect("sandbox starts");
    sandbox.add_node("worker-1", &[]).unwrap();
    sandbox.add_node("worker-2", &[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    sandbox.write_kubeconfig(&kubeconfig).unwrap();
    let suite = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python");
    let out = tokio::process::Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(&suite)
        .env("KUBECONFIG", &kubeconfig)
        .env("HOME", dir.path())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .current_dir(dir.path())
        .kill_on_drop(true)
        .output()
        .await
        .expect("pytest runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the Python suite failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains(" passed"), "{stdout}");
    assert!(
        !stdout.contains("skipped"),
        "nothing may be skipped: {stdout}"
    );
}
