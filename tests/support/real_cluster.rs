//! A real Kubernetes control plane for a test: etcd, kube-apiserver and
//! kube-controller-manager started by `tests/control-plane/run`, from the binaries that
//! `tests/control-plane/build` put in `target/control-plane/`.
//!
//! Included by test files with `#[path = "support/real_cluster.rs"]`. The binaries are built
//! on first use; a failed build is a test failure, not a skip.
#![allow(dead_code)]

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube::config::{KubeConfigOptions, Kubeconfig};

/// The three binaries `tests/control-plane/build` makes.
const BINARIES: [&str; 3] = ["etcd", "kube-apiserver", "kube-controller-manager"];
/// Start-up is about ten seconds on an idle machine; leave room for a loaded CI.
const START_TIMEOUT: Duration = Duration::from_secs(240);
/// How long `run` gets to stop the components and remove their data after SIGTERM (it gives
/// each of the three up to 10 s).
const STOP_TIMEOUT: Duration = Duration::from_secs(40);

/// Run `tests/control-plane/build` once per test process: a no-op when the binaries are up
/// to date, otherwise it builds them from the Go module proxy (about 8 minutes on a fresh
/// machine), so `cargo test` alone sets everything up. A failure (no Go, no module proxy) fails
/// the test with the build's output: CI must fail, not skip.
fn build_control_plane(repo: &Path) {
    static BUILT: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if *built {
        return;
    }
    let started = Instant::now();
    let out = Command::new("bash")
        .arg(repo.join("tests/control-plane/build"))
        .output()
        .expect("run tests/control-plane/build (bash must be installed)");
    assert!(
        out.status.success(),
        "tests/control-plane/build failed ({}); it needs Go on the PATH and the Go module proxy:\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "{}control plane checked in {:.1}s",
        String::from_utf8_lossy(&out.stdout),
        started.elapsed().as_secs_f64()
    );
    *built = true;
}

/// A running control plane. Dropping it stops the whole process group of `run`.
pub struct RealCluster {
    // Dropped before `dir`: the components stop before their kubeconfig's folder goes.
    run: RunProcess,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    client: kube::Client,
}

/// `tests/control-plane/run` in its own process group, stopped on drop, even when start-up
/// panics half-way.
struct RunProcess(Child);

impl RealCluster {
    /// Starts the control plane and waits until it is ready (`/readyz` answers `ok`).
    ///
    /// Builds the binaries first if they are missing or stale; panics with the build output when
    /// that fails.
    pub async fn start() -> RealCluster {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        build_control_plane(repo);
        let bin = repo.join("target/control-plane");
        let missing: Vec<&str> = BINARIES
            .into_iter()
            .filter(|b| !bin.join(b).is_file())
            .collect();
        assert!(
            missing.is_empty(),
            "the real control plane is not built ({} missing in {}) although \
             tests/control-plane/build succeeded",
            missing.join(", "),
            bin.display()
        );
        // `run` picks free ports and then binds them; another test starting a control plane at
        // the same moment can take one in between ("address already in use"): start again.
        let mut attempt = 0;
        let started = Instant::now();
        let (dir, kubeconfig, run) = loop {
            attempt += 1;
            let dir = tempfile::tempdir().expect("temp dir");
            let kubeconfig = dir.path().join("kubeconfig");
            let log_path = dir.path().join("run.log");
            let log = File::create(&log_path).expect("log file");
            let mut run = RunProcess(
                Command::new("bash")
                    .arg(repo.join("tests/control-plane/run"))
                    .arg(&kubeconfig)
                    .stdin(Stdio::null())
                    .stdout(log.try_clone().expect("log file"))
                    .stderr(log)
                    // Its own process group, so that drop can stop every component at once.
                    .process_group(0)
                    .spawn()
                    .expect("spawn tests/control-plane/run"),
            );
            let mut port_taken = false;
            // `run` writes the kubeconfig, atomically, once /readyz has answered.
            while !kubeconfig.exists() {
                if let Ok(Some(status)) = run.0.try_wait() {
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    if attempt < 3 && log.contains("address already in use") {
                        port_taken = true;
                        break;
                    }
                    panic!(
                        "tests/control-plane/run exited with {status} before it was ready:\n{log}"
                    );
                }
                assert!(
                    started.elapsed() < START_TIMEOUT,
                    "the control plane was not ready within {START_TIMEOUT:?}:\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if !port_taken {
                break (dir, kubeconfig, run);
            }
        };
        let config = Kubeconfig::read_from(&kubeconfig).expect("read kubeconfig");
        let mut config =
            kube::Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
                .await
                .expect("kubeconfig to config");
        // Tests compare first answers; a retried request would hide them.
        config.default_retry = false;
        let client = kube::Client::try_from(config).expect("client");
        let req = http::Request::get("/readyz")
            .body(Vec::new())
            .expect("request");
        let ready = client.request_text(req).await.expect("GET /readyz");
        assert_eq!(ready, "ok", "/readyz");
        eprintln!(
            "real cluster ready in {:.1}s",
            started.elapsed().as_secs_f64()
        );
        RealCluster {
            run,
            dir,
            kubeconfig,
            client,
        }
    }

    /// A client authenticated as the admin (group `system:masters`).
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// The admin kubeconfig, for kubectl.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }
}

impl Drop for RunProcess {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        // SIGTERM to the group: `run` stops the components and removes their data.
        signal_group("-TERM", &group);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Whatever is still running (run's exit does not prove its children's) is killed.
        signal_group("-KILL", &group);
        let _ = self.0.wait();
    }
}

/// `kill SIGNAL -- -PGID`; a group already gone is not an error.
fn signal_group(signal: &str, group: &str) {
    let _ = Command::new("kill")
        .args([signal, "--", group])
        .stderr(Stdio::null())
        .status();
}
