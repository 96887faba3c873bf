//! Idle memory and CPU of a real `nmo run` process against a sandbox with 1,000 nodes, 30,000
//! pods and 20 MaintenanceWindows, all closed, so that there is nothing to do.
//!
//! The sandbox runs in this process; `nmo run` (the release binary Cargo built for the bench)
//! runs as a child process with a kubeconfig for it. Once nmo has reconciled every window and
//! its requests have stopped, the bench reads the child's resident memory (`VmRSS`, and the peak
//! `VmHWM`, from /proc/PID/status) and the CPU time it uses over an idle span (utime + stime
//! from /proc/PID/stat). Target: under 64 MiB RSS and about zero CPU.
//!
//! Run with `cargo bench --bench idle`.

use nmo::sandbox::{NewPod, Sandbox};
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NODES: usize = 1_000;
const PODS: usize = 30_000;
const WINDOWS: usize = 20;
/// How long the idle CPU is measured over.
const IDLE: Duration = Duration::from_secs(25);

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(idle());
}

async fn idle() {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    sandbox.install_crds().expect("CRDs install");
    let seeding = Instant::now();
    seed(&sandbox);
    println!(
        "seeded {NODES} nodes, {PODS} pods and {WINDOWS} MaintenanceWindows in {:.1} s",
        seeding.elapsed().as_secs_f64()
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    sandbox
        .write_kubeconfig(&kubeconfig)
        .expect("kubeconfig written");
    let log = std::fs::File::create(dir.path().join("nmo.log")).expect("log file");
    let nmo = env!("CARGO_BIN_EXE_nmo");
    let mut args = vec!["run".to_string(), "--kubeconfig".to_string()];
    args.push(kubeconfig.display().to_string());
    args.extend(listener_flags(nmo));
    let started = Instant::now();
    let mut child = Command::new(nmo)
        .args(&args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("nmo run starts");
    let pid = child.id();

    wait_for_windows_reconciled(&sandbox, &mut child).await;
    let ready = started.elapsed();
    let quiet = wait_for_quiet(&sandbox).await;
    println!(
        "nmo run (pid {pid}) reconciled every window {:.1} s after start; requests stopped after {:.1} s more",
        ready.as_secs_f64(),
        quiet.as_secs_f64()
    );

    let requests_before = total_requests(&sandbox);
    let ticks_before = cpu_ticks(pid);
    let rss_start = memory(pid, "VmRSS");
    let t0 = Instant::now();
    tokio::time::sleep(IDLE).await;
    let span = t0.elapsed();
    let ticks = cpu_ticks(pid) - ticks_before;
    let requests = total_requests(&sandbox) - requests_before;
    let cpu_seconds = ticks as f64 / clock_ticks_per_second();
    let rss = memory(pid, "VmRSS");
    let peak = memory(pid, "VmHWM");
    println!(
        "idle over {:.0} s: CPU {:.3} s ({:.2} % of one core), {requests} API requests",
        span.as_secs_f64(),
        cpu_seconds,
        100.0 * cpu_seconds / span.as_secs_f64()
    );
    println!(
        "memory: RSS {:.1} MiB at the start of the idle span, {:.1} MiB at its end, peak {:.1} MiB (target < 64 MiB)",
        mib(rss_start),
        mib(rss),
        mib(peak)
    );

    stop(&mut child);
    sandbox.shutdown().await;
}

/// The nodes (three zones, two pools), 30 pods each (ReplicaSet-owned, 2 of them a DaemonSet's)
/// and the windows, each selecting a pool and a zone, with schedules that open only on 29
/// February.
fn seed(sandbox: &Sandbox) {
    let per_node = PODS / NODES;
    for n in 0..NODES {
        let name = format!("node-{n:04}");
        let zone = format!("zone-{}", n % 3);
        let pool = if n % 2 == 0 { "general" } else { "batch" };
        sandbox
            .add_node(
                &name,
                &[
                    ("topology.kubernetes.io/zone", zone.as_str()),
                    ("pool", pool),
                    ("node-role.kubernetes.io/worker", ""),
                ],
            )
            .expect("node added");
        for p in 0..per_node {
            let pod = NewPod::new(&format!("{name}-{p}"))
                .namespace(&format!("team-{}", n % 10))
                .on_node(&name)
                .label("app", &format!("app-{}", p % 15));
            let pod = if p < 2 {
                pod.daemon_set(&format!("agent-{p}"))
            } else {
                pod.replica_set(&format!("app-{}-{}", n % 10, p % 15))
            };
            sandbox.create_pod(pod).expect("pod created");
        }
    }
    for w in 0..WINDOWS {
        let pool = if w % 2 == 0 { "general" } else { "batch" };
        let window = json!({
            "apiVersion": "nodemaintenance.medik8s.io/v1alpha1",
            "kind": "MaintenanceWindow",
            "metadata": {"name": format!("window-{w:02}")},
            "spec": {
                "schedule": format!("{} 3 29 2 *", w * 2),
                "timeZone": "Europe/Berlin",
                "duration": "2h",
                "maxUnavailable": "10%",
                "release": {"after": "30m"},
                "nodeSelector": {"matchLabels": {
                    "pool": pool,
                    "topology.kubernetes.io/zone": format!("zone-{}", w % 3),
                }},
            },
        });
        sandbox
            .apply_yaml(&serde_yaml::to_string(&window).expect("window YAML"))
            .expect("window applied");
    }
}

/// `--metrics-bind-address` and `--health-probe-bind-address` on port 0 when this `nmo run`
/// has them, so the bench never collides with a port in use.
fn listener_flags(nmo: &str) -> Vec<String> {
    let help = Command::new(nmo)
        .args(["run", "--help"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    ["--metrics-bind-address", "--health-probe-bind-address"]
        .into_iter()
        .filter(|flag| help.contains(flag))
        .flat_map(|flag| [flag.to_string(), "127.0.0.1:0".to_string()])
        .collect()
}

/// Wait until nmo has written the status of every window (its first reconcile of each).
async fn wait_for_windows_reconciled(sandbox: &Sandbox, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("nmo run exited early: {status}");
        }
        let windows = sandbox.list("nodemaintenance.medik8s.io/v1alpha1", "MaintenanceWindow");
        let reconciled = windows
            .iter()
            .filter(|w| w["status"]["observedGeneration"] == w["metadata"]["generation"])
            .count();
        let open = windows
            .iter()
            .filter(|w| {
                w["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "WindowOpen" && c["status"] == "True")
                })
            })
            .count();
        if reconciled == WINDOWS {
            assert_eq!(open, 0, "every window is closed, so nmo is idle");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "nmo reconciled {reconciled} of {WINDOWS} windows in 5 minutes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Wait until a full second passes with no request from nmo (at most a minute); how long that
/// took.
async fn wait_for_quiet(sandbox: &Sandbox) -> Duration {
    let started = Instant::now();
    let mut last = total_requests(sandbox);
    let mut last_change = Instant::now();
    while last_change.elapsed() < Duration::from_secs(1)
        && started.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = total_requests(sandbox);
        if now != last {
            last = now;
            last_change = Instant::now();
        }
    }
    started.elapsed()
}

fn total_requests(sandbox: &Sandbox) -> u64 {
    sandbox.request_counts().values().sum()
}

/// utime + stime of `pid`, in clock ticks (fields 14 and 15 of /proc/PID/stat).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after = &stat[stat.rfind(')').expect("a command name") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3, so fields 14 and 15 are at 11 and 12.
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// A `Vm*` line of /proc/PID/status, in KiB.
fn memory(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// SIGTERM, then wait for the exit (SIGKILL after 15 s).
fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}
