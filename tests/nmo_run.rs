//! `nmo run` in production shape, as the real binary: two replicas with leader election
//! against one sandbox cluster, kill -9 and SIGTERM, fault injection on the leader Lease, the
//! reloadable config file, and bad flags.
//!
//! Logs are read as JSON (`--log-format json`) from each process's stderr; the cluster is
//! read through kube-rs. Waits poll a condition with a deadline; durations are printed, never
//! asserted against a wall-clock bound.

#[path = "node_maintenance_support.rs"]
mod support;

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use nmo::api::{MaintenancePhase, MaintenanceWindow, NodeMaintenance, WINDOW_LABEL};
use nmo::sandbox::{Fault, FaultRule, NewPod};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

const T: Duration = Duration::from_secs(60);
const LEASE_NAMESPACE: &str = "nmo-system";

/// One `nmo run` process, its stderr collected line by line.
struct Operator {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    identity: String,
}

impl Operator {
    /// Start `nmo run` against `kubeconfig` with JSON logs and the HTTP servers off, and wait
    /// until it names its identity.
    async fn start(kubeconfig: &Path, home: &Path, extra: &[&str]) -> Operator {
        let mut command = Command::new(env!("CARGO_BIN_EXE_nmo"));
        command
            .args(["run", "--kubeconfig"])
            .arg(kubeconfig)
            .args([
                "--log-format",
                "json",
                "--metrics-bind-address",
                "0",
                "--health-probe-bind-address",
                "0",
            ])
            .args(extra)
            .env("HOME", home)
            .env("RUST_LOG", "info,kube=warn")
            .env_remove("KUBECONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, _) in std::env::vars() {
            if key.starts_with("NMO_") {
                command.env_remove(key);
            }
        }
        let mut child = command.spawn().expect("nmo starts");
        let stderr = child.stderr.take().expect("stderr piped");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut operator = Operator {
            child,
            lines,
            identity: String::new(),
        };
        let started = operator
            .wait_log("its start", |l| message(l) == "nmo starting")
            .await;
        operator.identity = field(&started, "identity");
        operator
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Every JSON log line so far.
    fn logs(&self) -> Vec<Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn stderr(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Wait for a log line matching `check`.
    async fn wait_log(&self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + T;
        loop {
            if let Some(line) = self.logs().into_iter().find(|l| check(l)) {
                return line;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what} in the log of {}: {}",
                    self.identity,
                    self.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args([signal, &self.pid()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill {signal} failed");
    }

    /// Wait for the process to exit; returns its status and how long it took.
    async fn wait_exit(&mut self, timeout: Duration) -> (ExitStatus, Duration) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait works") {
                // Let the reader thread take the last lines.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return (status, started.elapsed());
            }
            if started.elapsed() > timeout {
                let _ = self.child.kill();
                panic!(
                    "{} did not exit within {timeout:?}: {}",
                    self.identity,
                    self.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// SIGTERM, then wait (generously) for it to exit.
    async fn terminate(&mut self) -> (ExitStatus, Duration) {
        self.signal("-TERM");
        self.wait_exit(Duration::from_secs(60)).await
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn message(line: &Value) -> &str {
    line["fields"]["message"].as_str().unwrap_or_default()
}

fn field(line: &Value, name: &str) -> String {
    line["fields"][name]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn timestamp(line: &Value) -> DateTime<Utc> {
    line["timestamp"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .expect("log lines carry a timestamp")
}

/// A sandbox cluster with the lease namespace, and a kubeconfig file for the processes.
async fn cluster_for_processes() -> (Cluster, tempfile::TempDir) {
    let c = cluster().await;
    c.sandbox
        .apply_yaml("apiVersion: v1\nkind: Namespace\nmetadata: {name: nmo-system}\n")
        .expect("namespace created");
    let dir = tempfile::tempdir().unwrap();
    c.sandbox
        .write_kubeconfig(dir.path().join("kubeconfig"))
        .unwrap();
    (c, dir)
}

fn leases(client: &Client) -> Api<Lease> {
    Api::namespaced(client.clone(), LEASE_NAMESPACE)
}

/// The leader Lease's holder (`Some("")` once released).
async fn holder(client: &Client) -> Option<String> {
    leases(client)
        .get_opt("nmo-leader")
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}

/// Wait until the leader Lease is held by someone `accept`s.
async fn wait_holder(client: &Client, what: &str, accept: impl Fn(&str) -> bool) -> String {
    eventually(what, T, || async {
        holder(client).await.filter(|h| !h.is_empty() && accept(h))
    })
    .await
}

/// Every NodeMaintenance creation seen (name → uids) and the most that existed at once.
#[derive(Default, Debug)]
struct NmLog {
    uids: BTreeMap<String, BTreeSet<String>>,
    nodes: BTreeMap<String, String>,
    live: BTreeSet<String>,
    max_live: usize,
}

fn record_nodemaintenances(client: Client) -> Arc<Mutex<NmLog>> {
    let log = Arc::new(Mutex::new(NmLog::default()));
    let sink = log.clone();
    tokio::spawn(async move {
        let api: Api<NodeMaintenance> = Api::all(client);
        let mut events = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Ok(Some(event)) = events.try_next().await {
            let mut log = sink.lock().unwrap();
            match event {
                watcher::Event::Apply(nm) | watcher::Event::InitApply(nm) => {
                    let name = nm.name_any();
                    log.uids
                        .entry(name.clone())
                        .or_default()
                        .insert(nm.uid().unwrap_or_default());
                    log.nodes.insert(name.clone(), nm.spec.node_name.clone());
                    log.live.insert(name);
                    log.max_live = log.max_live.max(log.live.len());
                }
                watcher::Event::Delete(nm) => {
                    log.live.remove(&nm.name_any());
                }
                watcher::Event::Init | watcher::Event::InitDone => {}
            }
        }
    });
    log
}

/// Events reported by nmo: (reason, regarding object, reportingInstance, time).
async fn nmo_events(client: &Client) -> Vec<(String, String, String, DateTime<Utc>)> {
    Api::<Event>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("events listed")
        .items
        .into_iter()
        .filter(|e| e.reporting_component.as_deref() == Some("nmo"))
        .map(|e| {
            (
                e.reason.clone().unwrap_or_default(),
                e.involved_object.name.clone().unwrap_or_default(),
                e.reporting_instance.clone().unwrap_or_default(),
                e.first_timestamp
                    .as_ref()
                    .map(nmo::api::from_time)
                    .unwrap_or_default(),
            )
        })
        .collect()
}

fn windows(client: &Client) -> Api<MaintenanceWindow> {
    Api::all(client.clone())
}

async fn create_window(client: &Client, yaml: &str) {
    let window: MaintenanceWindow = serde_yaml::from_str(yaml).unwrap();
    windows(client)
        .create(&PostParams::default(), &window)
        .await
        .expect("window created");
}

async fn run_now(client: &Client, window: &str, value: &str) {
    let patch = serde_json::json!({"metadata": {"annotations": {"nodemaintenance.medik8s.io/run-now": value}}});
    windows(client)
        .patch(window, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("run-now set");
}

/// Two replicas: exactly one leads and acts; kill -9 it mid-round and the other takes over and
/// finishes the round. No node is maintained twice and no NodeMaintenance is created twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_only_the_leader_acts_and_the_standby_finishes_the_round_after_kill_9() {
    let (c, dir) = cluster_for_processes().await;
    let workers = ["w1", "w2", "w3", "w4"];
    for w in workers {
        c.sandbox.add_node(w, &[("pool", "blue")]).unwrap();
        c.create_pod(
            NewPod::new(&format!("web-{w}"))
                .on_node(w)
                .replica_set("web")
                .grace_period(1),
        );
    }
    c.add_node("spare").await;
    let nms = record_nodemaintenances(c.client.clone());
    let kubeconfig = dir.path().join("kubeconfig");
    let mut a = Operator::start(&kubeconfig, dir.path(), &["--leader-elect"]).await;
    let mut b = Operator::start(&kubeconfig, dir.path(), &["--leader-elect"]).await;

    let first = wait_holder(&c.client, "a first leader", |_| true).await;
    let (leader, standby) = if first == a.identity {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    assert_eq!(first, leader.identity, "the lease names one of the two");
    standby
        .wait_log("the standby standing by", |l| {
            message(l) == "another replica leads; standing by" && field(l, "leader") == first
        })
        .await;

    create_window(
        &c.client,
        r#"
apiVersion: nodemaintenance.medik8s.io/v1alpha1
kind: MaintenanceWindow
metadata:
  name: blue
  annotations: {nodemaintenance.medik8s.io/run-now: "go"}
spec:
  schedule: "0 0 1 1 *"
  duration: 1h
  nodeSelector: {matchLabels: {pool: blue}}
  maxUnavailable: 1
  release: {after: 1s}
"#,
    )
    .await;
    // Mid-round: the first node is done and released.
    eventually("the first node of the round to complete", T, || async {
        let w = windows(&c.client).get("blue").await.ok()?;
        let round = w.status?.round?;
        (round.completed >= 1 && round.completed < 4).then_some(())
    })
    .await;

    let killed_at = Utc::now();
    let kill = Instant::now();
    leader.child.kill().expect("kill -9");
    let (status, _) = leader.wait_exit(T).await;
    assert!(!status.success());
    let second = wait_holder(&c.client, "the standby to take the lease", |h| h != first).await;
    let gap = kill.elapsed();
    assert_eq!(second, standby.identity);
    println!(
        "failover: {second} holds the lease {:.1}s after kill -9 of {first} (lease duration 15s)",
        gap.as_secs_f64()
    );
    let took_over = standby
        .wait_log("the standby to lead", |l| message(l) == "became the leader")
        .await;

    let done = eventually("the round to finish under the new leader", T, || async {
        let w = windows(&c.client).get("blue").await.ok()?;
        let round = w.status.clone()?.round?;
        (round.finished.is_some()).then_some(round)
    })
    .await;
    assert_eq!(done.completed, 4, "{done:?}");
    assert_eq!(done.failed, 0, "{done:?}");

    // No NodeMaintenance was created twice and no node got two.
    {
        let log = nms.lock().unwrap();
        let mut by_node: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (name, uids) in &log.uids {
            assert_eq!(uids.len(), 1, "{name} was created {} times", uids.len());
            by_node
                .entry(log.nodes[name].as_str())
                .or_default()
                .push(name);
        }
        assert_eq!(
            by_node.keys().copied().collect::<Vec<_>>(),
            workers.to_vec(),
            "one NodeMaintenance per node: {by_node:?}"
        );
        assert!(
            by_node.values().all(|names| names.len() == 1),
            "{by_node:?}"
        );
        assert_eq!(log.max_live, 1, "maxUnavailable 1 was kept");
    }

    // Only the leader of the moment acted: every Event names it, the old one's before the
    // kill, the new one's after it took over; and each node succeeded exactly once.
    let events = nmo_events(&c.client).await;
    let took_over_at = timestamp(&took_over);
    for (reason, object, instance, at) in &events {
        if *instance == first {
            assert!(
                *at <= killed_at,
                "{reason} on {object} by {first} after it was killed"
            );
        } else {
            assert_eq!(
                *instance, second,
                "{reason} on {object} by a replica that did not lead"
            );
            assert!(
                at.timestamp() >= took_over_at.timestamp(),
                "{reason} on {object} by {second} at {at}, before it led ({took_over_at})"
            );
        }
    }
    let succeeded: Vec<&String> = events
        .iter()
        .filter(|(reason, ..)| reason == "SucceedMaintenance")
        .map(|(_, object, ..)| object)
        .collect();
    let distinct: BTreeSet<&String> = succeeded.iter().copied().collect();
    assert_eq!(succeeded.len(), 4, "{events:?}");
    assert_eq!(distinct.len(), 4, "{events:?}");
    // The standby did nothing of the controllers' before it led.
    let standby_logs = standby.logs();
    let led_at = standby_logs
        .iter()
        .position(|l| message(l) == "became the leader")
        .unwrap();
    for line in &standby_logs[..led_at] {
        assert!(
            ![
                "drain started",
                "created NodeMaintenance",
                "deleted NodeMaintenance"
            ]
            .contains(&message(line)),
            "the standby acted before it led: {line}"
        );
    }

    let (status, took) = standby.terminate().await;
    assert!(status.success(), "{}", standby.stderr());
    println!(
        "the new leader exited on SIGTERM in {:.2}s",
        took.as_secs_f64()
    );
}

/// SIGTERM while a drain is blocked by a PodDisruptionBudget: exit 0, the lease released; a
/// restarted operator finishes the drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_drain_exits_0_releases_the_lease_and_a_restart_finishes_the_drain() {
    let (c, dir) = cluster_for_processes().await;
    c.add_node("worker-1").await;
    c.add_node("spare").await;
    c.create_pod(
        NewPod::new("guarded")
            .on_node("worker-1")
            .label("app", "guarded")
            .grace_period(0),
    );
    c.pdb("default", "guarded", "guarded", 1).await;
    let kubeconfig = dir.path().join("kubeconfig");
    let mut first = Operator::start(&kubeconfig, dir.path(), &["--leader-elect"]).await;
    let leader = wait_holder(&c.client, "the leader", |_| true).await;
    assert_eq!(leader, first.identity);

    c.create_nm("nm-1", "worker-1").await;
    c.wait_nm("nm-1", "draining, blocked by the budget", T, |nm| {
        nm.status.as_ref().is_some_and(|s| {
            s.phase == Some(MaintenancePhase::Running)
                && s.pending_pods
                    .as_deref()
                    .is_some_and(|p| p.iter().any(|p| p.contains("guarded")))
        })
    })
    .await;
    // nmo writes the BeginMaintenance Event right after the status that shows Running; on a
    // loaded machine a SIGTERM can land between the two and the Event is not written (a known
    // gap: Events are best effort). Wait for it, so the count below checks the restart alone.
    let deadline = Instant::now() + T;
    while c.events("nm-1", "BeginMaintenance").await == 0 {
        assert!(
            Instant::now() < deadline,
            "no BeginMaintenance Event for nm-1"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (status, took) = first.terminate().await;
    println!(
        "SIGTERM during a drain: exited in {:.2}s",
        took.as_secs_f64()
    );
    assert!(status.success(), "{}", first.stderr());
    assert_eq!(
        holder(&c.client).await.as_deref(),
        Some(""),
        "the lease is released on the way out"
    );
    let stopping = first.logs();
    assert!(
        stopping
            .iter()
            .any(|l| message(l) == "released the leader lease"),
        "{}",
        first.stderr()
    );
    let phase = c.nms().get("nm-1").await.unwrap().status.unwrap().phase;
    assert_eq!(phase, Some(MaintenancePhase::Running));

    c.set_pdb_min_available("default", "guarded", 0).await;
    let mut second = Operator::start(&kubeconfig, dir.path(), &["--leader-elect"]).await;
    let taken = Instant::now();
    wait_holder(&c.client, "the restarted operator to lead", |h| {
        h == second.identity
    })
    .await;
    println!(
        "the restarted operator took the released lease in {:.2}s",
        taken.elapsed().as_secs_f64()
    );
    c.wait_phase("nm-1", MaintenancePhase::Succeeded, T).await;
    assert!(c.pods_on("worker-1").await.is_empty());
    // The SucceedMaintenance Event follows the status that shows Succeeded: wait for it.
    let deadline = Instant::now() + T;
    while c.events("nm-1", "SucceedMaintenance").await == 0 {
        assert!(
            Instant::now() < deadline,
            "no SucceedMaintenance Event for nm-1"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(c.events("nm-1", "BeginMaintenance").await, 1);
    assert_eq!(c.events("nm-1", "SucceedMaintenance").await, 1);
    let (status, _) = second.terminate().await;
    assert!(status.success(), "{}", second.stderr());
}

/// A leader whose lease writes fail (500) stops acting at its renew deadline, exits 1, and
/// only then can the standby take the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_cannot_renew_stops_before_its_lease_can_expire_and_exits_non_zero() {
    let (c, dir) = cluster_for_processes().await;
    let kubeconfig = dir.path().join("kubeconfig");
    let mut a = Operator::start(&kubeconfig, dir.path(), &["--leader-elect"]).await;
    let mut b = Operator::start(&kubeconfig, dir.path(), &["--leader-elect"]).await;
    let first = wait_holder(&c.client, "a first leader", |_| true).await;
    let (leader, standby) = if first == a.identity {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    leader
        .wait_log("the leader to lead", |l| message(l) == "became the leader")
        .await;

    let fault = c
        .sandbox
        .faults()
        .add(
            FaultRule::new(Fault::Status(500))
                .verbs(&["update"])
                .resources(&["leases"])
                .names(&["nmo-leader"]),
        )
        .unwrap();
    let injected = Instant::now();
    let (status, _) = leader.wait_exit(T).await;
    println!(
        "renewals failing: the leader exited {:.1}s after the fault (renew deadline 10s)",
        injected.elapsed().as_secs_f64()
    );
    assert_eq!(status.code(), Some(1), "{}", leader.stderr());
    let stderr = leader.stderr();
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: leader election lost: the lease could not be renewed within the renew deadline (10s)"),
        "{stderr}"
    );
    let lost = leader
        .wait_log("the leader to stop", |l| {
            message(l) == "leadership lost; stopped the controllers"
        })
        .await;
    assert!(c.sandbox.faults().hits(fault) > 0);
    c.sandbox.faults().remove(fault);

    let second = wait_holder(&c.client, "the standby to take over", |h| h != first).await;
    assert_eq!(second, standby.identity);
    let lease = leases(&c.client).get("nmo-leader").await.unwrap();
    let acquired = nmo::api::from_time(&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        lease.spec.unwrap().acquire_time.unwrap().0,
    ));
    let stopped = timestamp(&lost);
    println!(
        "the old leader stopped {:.1}s before the standby acquired the lease",
        (acquired - stopped).num_milliseconds() as f64 / 1000.0
    );
    assert!(
        stopped < acquired,
        "the old leader stopped at {stopped}, after the standby acquired at {acquired}"
    );
    let (status, _) = standby.terminate().await;
    assert!(status.success(), "{}", standby.stderr());
}

/// The config file changes the operator-wide cap live; a broken file keeps the last good one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_file_changes_the_cap_live_and_a_broken_file_keeps_the_last_good_one() {
    let (c, dir) = cluster_for_processes().await;
    for i in 1..=5 {
        c.sandbox
            .add_node(&format!("g{i}"), &[("pool", "green")])
            .unwrap();
    }
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("nmo.yaml");
    std::fs::write(&config, "maxConcurrentMaintenances: 1\n").unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let mut nmo = Operator::start(
        &kubeconfig,
        dir.path(),
        &["--config", config.to_str().unwrap()],
    )
    .await;
    create_window(
        &c.client,
        r#"
apiVersion: nodemaintenance.medik8s.io/v1alpha1
kind: MaintenanceWindow
metadata:
  name: green
  annotations: {nodemaintenance.medik8s.io/run-now: "1"}
spec:
  schedule: "0 0 1 1 *"
  duration: 1h
  nodeSelector: {matchLabels: {pool: green}}
  maxUnavailable: 100%
  release: {onReboot: true}
"#,
    )
    .await;
    // The plan that handled run-now "1" (written before it acted) started one node: the cap.
    let round = |value: &'static str| {
        let client = c.client.clone();
        async move {
            eventually(&format!("run-now {value} to be handled"), T, || async {
                let status = windows(&client).get("green").await.ok()?.status?;
                (status.last_handled_run_now.as_deref() == Some(value)).then_some(status.round?)
            })
            .await
        }
    };
    let generated = || async {
        c.nms()
            .list(&ListParams::default().labels(&format!("{WINDOW_LABEL}=green")))
            .await
            .unwrap()
            .items
            .len()
    };
    let first = round("1").await;
    assert_eq!((first.in_progress, first.pending), (1, 4), "{first:?}");

    std::fs::write(&config, "maxConcurrentMaintenances: 2\n").unwrap();
    nmo.wait_log("the reload", |l| message(l) == "config file reloaded")
        .await;
    // Status is written before the plan's creates are sent: wait for both.
    eventually("a second node to start under the new cap", T, || async {
        let round = windows(&c.client).get("green").await.ok()?.status?.round?;
        (round.in_progress == 2 && generated().await == 2).then_some(())
    })
    .await;

    std::fs::write(&config, "maxConcurrentMaintenances: 3\nbogus: true\n").unwrap();
    let refused = nmo
        .wait_log("the refused reload", |l| {
            message(l) == "config reload failed; keeping the last good configuration"
        })
        .await;
    let error = field(&refused, "error");
    assert!(error.contains(config.to_str().unwrap()), "{error}");
    assert!(error.contains("unknown field `bogus`"), "{error}");
    // A fresh plan after the refused reload still has the cap of 2.
    run_now(&c.client, "green", "2").await;
    let later = round("2").await;
    assert_eq!((later.in_progress, later.pending), (2, 3), "{later:?}");
    assert_eq!(generated().await, 2);

    let (status, _) = nmo.terminate().await;
    assert!(status.success(), "{}", nmo.stderr());
}

fn one_line_error(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_nmo"));
    command.args(args);
    for (key, _) in std::env::vars() {
        if key.starts_with("NMO_") {
            command.env_remove(key);
        }
    }
    for (key, value) in env {
        command.env(key, value);
    }
    let out = command.output().expect("nmo runs");
    assert!(!out.status.success(), "{args:?} succeeded");
    assert_ne!(out.status.code(), Some(101), "{args:?} panicked");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr:?}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    stderr
}

#[test]
fn bad_flags_and_bad_config_files_give_one_line_naming_the_flag_or_file() {
    type Row<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let table: [Row; 9] = [
        (
            &["run", "--metrics-bind-address", "8080"],
            &[],
            "--metrics-bind-address",
        ),
        (
            &["run", "--webhook-bind-address", ":99999"],
            &[],
            "--webhook-bind-address",
        ),
        (&["run", "--kube-api-qps", "-1"], &[], "--kube-api-qps"),
        (&["run", "--kube-api-burst", "0"], &[], "--kube-api-burst"),
        (&["run", "--leader-elect=perhaps"], &[], "--leader-elect"),
        (&["run", "--log-format", "xml"], &[], "--log-format"),
        (&["run", "--no-such-flag"], &[], "--no-such-flag"),
        (
            &["run"],
            &[("NMO_HEALTH_PROBE_BIND_ADDRESS", "nowhere")],
            "--health-probe-bind-address",
        ),
        (
            &["run", "--webhook-cert-dir", "/definitely/missing"],
            &[],
            "--webhook-cert-dir /definitely/missing",
        ),
    ];
    for (args, env, wanted) in table {
        let err = one_line_error(args, env);
        assert!(err.contains(wanted), "{args:?}: {err}");
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("nmo.yaml");
    std::fs::write(
        &config,
        "maxConcurrentMaintenances: 2\nleaderElection:\n  leaseDuraton: 20s\n",
    )
    .unwrap();
    let err = one_line_error(&["run", "--config", config.to_str().unwrap()], &[]);
    assert!(
        err.contains(&format!(
            "config file {}: leaderElection: unknown field `leaseDuraton`",
            config.display()
        )),
        "{err}"
    );
    assert!(err.contains("line 3"), "{err}");
    let err = one_line_error(&["run", "--config", "/definitely/missing.yaml"], &[]);
    assert!(
        err.contains("config file /definitely/missing.yaml: cannot read"),
        "{err}"
    );
}
