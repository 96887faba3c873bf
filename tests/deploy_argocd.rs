//! `deploy/argocd`: the health checks and resource actions, run in Lua 5.1 (the dialect Argo CD
//! embeds; Debian's `lua5.1`, which `.ci/run` installs) on real MaintenanceWindows and
//! NodeMaintenances:
//!
//! - captured from a sandbox run with the real controllers, one per state (no status, Running,
//!   stalled, suspended, Ready between windows, Ready with a round in progress), and committed
//!   in `tests/data/argocd/` (`NMO_CAPTURE_ARGOCD=1 cargo test --test deploy_argocd` rewrites
//!   them): exact health and message for each;
//! - live, in the same run: the health of each state as it happens, and the objects the
//!   actions return, applied to the sandbox, do what they say (run-now opens a window, suspend
//!   stops new nodes);
//! - `argocd-cm.yaml` holds exactly the Lua files.

#[path = "support/deploy.rs"]
mod deploy;

use deploy::repo;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use nmo::api::{MaintenanceWindow, NodeMaintenance};
use nmo::clock::VirtualClock;
use nmo::sandbox::{NewPod, Sandbox};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

const LUA: &str = "lua5.1";
const MW: &str = "deploy/argocd/nodemaintenance.medik8s.io/MaintenanceWindow";
const NM: &str = "deploy/argocd/nodemaintenance.medik8s.io/NodeMaintenance";

fn data_dir() -> PathBuf {
    repo().join("tests/data/argocd")
}

/// `value` as a Lua 5.1 table constructor (JSON null is nil: the key is left out).
fn lua_literal(value: &Value) -> String {
    match value {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => lua_string(s),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(lua_literal).collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Object(map) => {
            let fields: Vec<String> = map
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("[{}] = {}", lua_string(k), lua_literal(v)))
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
    }
}

fn lua_string(s: &str) -> String {
    let mut out = String::from("\"");
    for byte in s.bytes() {
        match byte {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            0x20..=0x7e => out.push(byte as char),
            // Lua 5.1 strings are bytes: a decimal escape keeps UTF-8 intact.
            _ => out.push_str(&format!("\\{byte}")),
        }
    }
    out.push('"');
    out
}

/// A JSON encoder in Lua 5.1, for what the scripts return.
const ENCODE: &str = r#"
local function is_array(t)
  local n = 0
  for k, _ in pairs(t) do
    if type(k) ~= "number" then return false end
    n = n + 1
  end
  return n > 0 and n == #t
end
local function esc(s)
  return (string.gsub(s, '[%c"\\]', function(c)
    local named = {['"'] = '\\"', ['\\'] = '\\\\', ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t'}
    return named[c] or string.format('\\u%04x', string.byte(c))
  end))
end
local function encode(v)
  local t = type(v)
  if t == "nil" then return "null"
  elseif t == "boolean" then return tostring(v)
  elseif t == "number" then
    if v == math.floor(v) and v > -1e15 and v < 1e15 then return string.format("%d", v) end
    return tostring(v)
  elseif t == "string" then return '"' .. esc(v) .. '"'
  elseif t == "table" then
    local parts = {}
    if is_array(v) then
      for _, x in ipairs(v) do table.insert(parts, encode(x)) end
      return "[" .. table.concat(parts, ",") .. "]"
    end
    local keys = {}
    for k in pairs(v) do table.insert(keys, k) end
    table.sort(keys)
    for _, k in ipairs(keys) do table.insert(parts, '"' .. esc(k) .. '":' .. encode(v[k])) end
    return "{" .. table.concat(parts, ",") .. "}"
  end
  error("cannot encode a " .. t)
end
"#;

/// Run the Lua file `script` (relative to the repository) with the global `obj`, as Argo CD
/// does, and return what it returns, as JSON. Fails (never skips) without lua5.1.
fn run_lua(script: &str, obj: &Value) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let harness = dir.path().join("harness.lua");
    let script = repo().join(script);
    std::fs::write(
        &harness,
        format!(
            "{ENCODE}\nobj = {}\nlocal result = dofile({})\nio.write(encode(result))\n",
            lua_literal(obj),
            lua_string(script.to_str().unwrap())
        ),
    )
    .unwrap();
    let out = Command::new(LUA)
        .arg(&harness)
        .output()
        .unwrap_or_else(|e| {
            panic!("{LUA} must be installed (Debian package lua5.1; .ci/run installs it): {e}")
        });
    assert!(
        out.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{} returned no JSON ({e}): {}",
            script.display(),
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// (status, message) of the health script `dir/health.lua` for `obj`.
fn health(dir: &str, obj: &Value) -> (String, String) {
    let hs = run_lua(&format!("{dir}/health.lua"), obj);
    (
        hs["status"].as_str().expect("hs.status").to_string(),
        hs["message"].as_str().expect("hs.message").to_string(),
    )
}

fn captured(file: &str) -> Value {
    let path = data_dir().join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; capture with NMO_CAPTURE_ARGOCD=1", path.display()));
    serde_json::from_str(&text).expect("captured JSON")
}

/// Each captured state, its health and message, exactly.
#[test]
fn the_health_scripts_give_each_captured_state_its_argo_cd_health() {
    let mw_table = [
        (
            "maintenancewindow-no-status.json",
            "Progressing",
            "waiting for nmo to observe generation 1",
        ),
        (
            "maintenancewindow-suspended.json",
            "Suspended",
            "suspended: no new nodes are started",
        ),
        (
            "maintenancewindow-stalled.json",
            "Degraded",
            "spec.nodeSelector matches no node",
        ),
        (
            "maintenancewindow-ready-between-windows.json",
            "Healthy",
            "next window Tue 2026-06-02 02:00 CEST",
        ),
        (
            "maintenancewindow-ready-round-in-progress.json",
            "Healthy",
            "window open until 2026-06-01T13:01:01Z, round 1: 0/3 nodes done, 1 in progress",
        ),
    ];
    for (file, status, message) in mw_table {
        assert_eq!(
            health(MW, &captured(file)),
            (status.to_string(), message.to_string()),
            "{file}"
        );
    }
    let nm_table = [
        (
            "nodemaintenance-no-status.json",
            "Progressing",
            "waiting for the operator to start the maintenance of node ghost",
        ),
        (
            "nodemaintenance-running.json",
            "Progressing",
            "draining node argo-1: 0%, waiting for web-0",
        ),
        (
            "nodemaintenance-failed.json",
            "Degraded",
            "nodes \"ghost\" not found",
        ),
        (
            "nodemaintenance-succeeded.json",
            "Healthy",
            "node argo-3 is in maintenance: cordoned and drained",
        ),
    ];
    for (file, status, message) in nm_table {
        assert_eq!(
            health(NM, &captured(file)),
            (status.to_string(), message.to_string()),
            "{file}"
        );
    }
}

#[test]
fn a_window_whose_new_generation_is_not_observed_yet_is_progressing() {
    let mut window = captured("maintenancewindow-ready-between-windows.json");
    window["metadata"]["generation"] = json!(2);
    assert_eq!(
        health(MW, &window),
        (
            "Progressing".into(),
            "waiting for nmo to observe generation 2".into()
        )
    );
}

#[test]
fn discovery_offers_suspend_or_resume_and_run_now_unless_suspended() {
    let running = run_lua(
        &format!("{MW}/actions/discovery.lua"),
        &captured("maintenancewindow-ready-between-windows.json"),
    );
    let mut names: Vec<&String> = running.as_object().unwrap().keys().collect();
    names.sort();
    assert_eq!(names, ["run-now", "suspend"]);
    assert_eq!(running["run-now"]["disabled"], false);

    let suspended = run_lua(
        &format!("{MW}/actions/discovery.lua"),
        &captured("maintenancewindow-suspended.json"),
    );
    let mut names: Vec<&String> = suspended.as_object().unwrap().keys().collect();
    names.sort();
    assert_eq!(names, ["resume", "run-now"]);
    assert_eq!(suspended["run-now"]["disabled"], true);
}

#[test]
fn the_actions_change_only_what_they_name() {
    let window = captured("maintenancewindow-ready-between-windows.json");
    let suspended = run_lua(&format!("{MW}/actions/suspend/action.lua"), &window);
    let mut expected = window.clone();
    expected["spec"]["suspend"] = json!(true);
    assert_eq!(without_nulls(&suspended), without_nulls(&expected));

    let resumed = run_lua(
        &format!("{MW}/actions/resume/action.lua"),
        &captured("maintenancewindow-suspended.json"),
    );
    assert_eq!(resumed["spec"]["suspend"], false);

    let ran = run_lua(&format!("{MW}/actions/run-now/action.lua"), &window);
    let value = ran["metadata"]["annotations"]["nodemaintenance.medik8s.io/run-now"]
        .as_str()
        .expect("run-now annotation");
    chrono::DateTime::parse_from_rfc3339(value).expect("an RFC 3339 time, new on every click");
    let mut rest = ran.clone();
    rest["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove("nodemaintenance.medik8s.io/run-now");
    let mut before = window.clone();
    if let Some(a) = before["metadata"]["annotations"].as_object_mut() {
        a.remove("nodemaintenance.medik8s.io/run-now");
    }
    assert_eq!(
        without_nulls(&rest)["spec"],
        without_nulls(&before)["spec"],
        "run-now leaves the spec alone"
    );
}

/// JSON as it comes back from Lua: nulls and empty objects cannot be told apart there.
fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

#[test]
fn argocd_cm_holds_exactly_the_lua_files() {
    let cm = deploy::parse_documents(
        &std::fs::read_to_string(repo().join("deploy/argocd/argocd-cm.yaml")).unwrap(),
    )
    .remove(0);
    let data = &cm["data"];
    let file = |path: &str| std::fs::read_to_string(repo().join(path)).unwrap();
    assert_eq!(
        data["resource.customizations.health.nodemaintenance.medik8s.io_MaintenanceWindow"],
        file(&format!("{MW}/health.lua")).as_str(),
        "regenerate with deploy/argocd/argocd-cm.sh > deploy/argocd/argocd-cm.yaml"
    );
    assert_eq!(
        data["resource.customizations.health.nodemaintenance.medik8s.io_NodeMaintenance"],
        file(&format!("{NM}/health.lua")).as_str()
    );
    let actions = deploy::parse_documents(
        data["resource.customizations.actions.nodemaintenance.medik8s.io_MaintenanceWindow"]
            .as_str()
            .unwrap(),
    )
    .remove(0);
    assert_eq!(
        actions["discovery.lua"],
        file(&format!("{MW}/actions/discovery.lua")).as_str()
    );
    let definitions = actions["definitions"].as_array().unwrap();
    let names: Vec<&str> = definitions
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["suspend", "resume", "run-now"]);
    for d in definitions {
        let name = d["name"].as_str().unwrap();
        assert_eq!(
            d["action.lua"],
            file(&format!("{MW}/actions/{name}/action.lua")).as_str(),
            "action {name}"
        );
    }
    // The script that writes it gives the committed file.
    let out = Command::new("bash")
        .arg(repo().join("deploy/argocd/argocd-cm.sh"))
        .output()
        .expect("bash");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        file("deploy/argocd/argocd-cm.yaml"),
        "regenerate with deploy/argocd/argocd-cm.sh > deploy/argocd/argocd-cm.yaml"
    );
}

// ---- the live run that captures the states ----

const SPEED: f64 = 60.0;

async fn wait_for<T, F, Fut>(what: &str, secs: u64, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

fn is_true(obj: &Value, type_: &str) -> bool {
    condition(obj, type_).is_some_and(|c| c["status"] == "True")
}

struct Capture {
    client: Client,
    write: bool,
}

impl Capture {
    async fn window(&self, name: &str) -> Value {
        let w = Api::<MaintenanceWindow>::all(self.client.clone())
            .get(name)
            .await
            .unwrap();
        serde_json::to_value(w).unwrap()
    }

    async fn nm(&self, name: &str) -> Value {
        let nm = Api::<NodeMaintenance>::all(self.client.clone())
            .get(name)
            .await
            .unwrap();
        serde_json::to_value(nm).unwrap()
    }

    /// Keep `obj` as the captured `file` (with NMO_CAPTURE_ARGOCD=1) and check its health now.
    fn keep(&self, file: &str, dir: &str, obj: &Value, status: &str) {
        let (got, message) = health(dir, obj);
        assert_eq!(got, status, "{file}: live health ({message})");
        eprintln!("{file}: {got}: {message}");
        if self.write {
            let path = data_dir().join(file);
            std::fs::create_dir_all(data_dir()).unwrap();
            std::fs::write(&path, serde_json::to_string_pretty(obj).unwrap() + "\n").unwrap();
        }
    }
}

async fn create_window(client: &Client, yaml: Value) {
    let window: MaintenanceWindow = serde_json::from_value(yaml).unwrap();
    Api::<MaintenanceWindow>::all(client.clone())
        .create(&PostParams::default(), &window)
        .await
        .unwrap();
}

fn window(name: &str, pool: &str, extra: Value) -> Value {
    let mut w = json!({
        "apiVersion": "nodemaintenance.medik8s.io/v1alpha1", "kind": "MaintenanceWindow",
        "metadata": {"name": name},
        "spec": {"schedule": "0 2 * * *", "timeZone": "Europe/Berlin", "duration": "3h",
            "nodeSelector": {"matchLabels": {"pool": pool}}, "maxUnavailable": 1,
            "release": {"after": "30m"}}
    });
    for (k, v) in extra.as_object().unwrap() {
        if k == "metadata" {
            w["metadata"]
                .as_object_mut()
                .unwrap()
                .extend(v.as_object().unwrap().clone());
        } else {
            w["spec"][k] = v.clone();
        }
    }
    w
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_state_captured_live_from_the_sandbox_has_its_health_and_the_actions_work() {
    let write = std::env::var("NMO_CAPTURE_ARGOCD").is_ok_and(|v| v == "1");
    let start = chrono::DateTime::parse_from_rfc3339("2026-06-01T10:00:00Z")
        .unwrap()
        .to_utc();
    let clock = VirtualClock::new(start, SPEED);
    let sandbox = Sandbox::builder()
        .speed(SPEED)
        .clock(Arc::new(clock.clone()))
        .start()
        .await
        .expect("sandbox starts");
    sandbox.install_crds().unwrap();
    for node in ["argo-1", "argo-2", "argo-3"] {
        sandbox.add_node(node, &[("pool", "argo")]).unwrap();
    }
    // argo-1 holds a pod whose budget allows no disruption: its drain stays Running.
    sandbox
        .create_pod(
            NewPod::new("web-0")
                .on_node("argo-1")
                .label("app", "web")
                .replica_set("web"),
        )
        .unwrap();
    let client = sandbox.client().unwrap();
    let pdb: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}
    }))
    .unwrap();
    Api::<PodDisruptionBudget>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &pdb)
        .await
        .unwrap();
    let capture = Capture {
        client: client.clone(),
        write,
    };

    // Before the operator runs: no status.
    create_window(&client, window("nightly", "argo", json!({}))).await;
    let ghost: NodeMaintenance = serde_json::from_value(json!({
        "apiVersion": "nodemaintenance.medik8s.io/v1beta1", "kind": "NodeMaintenance",
        "metadata": {"name": "fix-ghost"}, "spec": {"nodeName": "ghost", "reason": "Argo CD test"}
    }))
    .unwrap();
    let nms: Api<NodeMaintenance> = Api::all(client.clone());
    nms.create(&PostParams::default(), &ghost).await.unwrap();
    capture.keep(
        "maintenancewindow-no-status.json",
        MW,
        &capture.window("nightly").await,
        "Progressing",
    );
    capture.keep(
        "nodemaintenance-no-status.json",
        NM,
        &capture.nm("fix-ghost").await,
        "Progressing",
    );

    let controllers = nmo::controller::start(
        client.clone(),
        Arc::new(clock.clone()),
        nmo::controller::ControllerConfig::default(),
    );
    create_window(&client, window("paused", "argo", json!({"suspend": true}))).await;
    create_window(&client, window("nowhere", "none", json!({}))).await;

    // Ready between windows: observed, Ready, the next window at 02:00 Berlin.
    let nightly = wait_for("nightly Ready", 30, || async {
        let w = capture.window("nightly").await;
        (w["status"]["observedGeneration"] == 1 && is_true(&w, "Ready")).then_some(w)
    })
    .await;
    capture.keep(
        "maintenancewindow-ready-between-windows.json",
        MW,
        &nightly,
        "Healthy",
    );
    let paused = wait_for("paused observed", 30, || async {
        let w = capture.window("paused").await;
        (w["status"]["observedGeneration"] == 1).then_some(w)
    })
    .await;
    capture.keep("maintenancewindow-suspended.json", MW, &paused, "Suspended");
    let nowhere = wait_for("nowhere Stalled", 30, || async {
        let w = capture.window("nowhere").await;
        is_true(&w, "Stalled").then_some(w)
    })
    .await;
    capture.keep("maintenancewindow-stalled.json", MW, &nowhere, "Degraded");
    let failed = wait_for("fix-ghost Failed", 30, || async {
        let nm = capture.nm("fix-ghost").await;
        (nm["status"]["phase"] == "Failed").then_some(nm)
    })
    .await;
    capture.keep("nodemaintenance-failed.json", NM, &failed, "Degraded");

    // The run-now action's object, applied as Argo CD applies it, opens a window: a round
    // in progress, its first node held Running by the budget.
    let ran = run_lua(&format!("{MW}/actions/run-now/action.lua"), &nightly);
    let value = ran["metadata"]["annotations"]["nodemaintenance.medik8s.io/run-now"]
        .as_str()
        .unwrap()
        .to_string();
    let ran: MaintenanceWindow = serde_json::from_value(ran).unwrap();
    let windows: Api<MaintenanceWindow> = Api::all(client.clone());
    windows
        .replace("nightly", &PostParams::default(), &ran)
        .await
        .expect("the action's object is a valid update");
    let in_progress = wait_for("nightly's round in progress", 30, || async {
        let w = capture.window("nightly").await;
        let handled = w["status"]["lastHandledRunNow"] == value.as_str();
        (handled && is_true(&w, "WindowOpen") && w["status"]["round"]["inProgress"] == 1)
            .then_some(w)
    })
    .await;
    let running_nm = wait_for("argo-1's NodeMaintenance draining", 30, || async {
        let list = nms.list(&Default::default()).await.ok()?;
        let nm = list
            .items
            .into_iter()
            .find(|nm| nm.spec.node_name == "argo-1")?;
        let value = serde_json::to_value(&nm).unwrap();
        let blocked = value["status"]["phase"] == "Running"
            && value["status"]["pendingPods"] == json!(["web-0"]);
        blocked.then_some(value)
    })
    .await;
    // The window as it is with its first node Running (read after the node's status).
    let in_progress = {
        let latest = capture.window("nightly").await;
        assert_eq!(
            latest["status"]["round"]["number"],
            in_progress["status"]["round"]["number"]
        );
        assert_eq!(latest["status"]["round"]["inProgress"], 1);
        latest
    };
    capture.keep(
        "maintenancewindow-ready-round-in-progress.json",
        MW,
        &in_progress,
        "Healthy",
    );
    capture.keep(
        "nodemaintenance-running.json",
        NM,
        &running_nm,
        "Progressing",
    );

    // An ad-hoc NodeMaintenance of a node without pods: Succeeded.
    let adhoc: NodeMaintenance = serde_json::from_value(json!({
        "apiVersion": "nodemaintenance.medik8s.io/v1beta1", "kind": "NodeMaintenance",
        "metadata": {"name": "fix-argo-3"}, "spec": {"nodeName": "argo-3", "reason": "Argo CD test"}
    }))
    .unwrap();
    nms.create(&PostParams::default(), &adhoc).await.unwrap();
    let succeeded = wait_for("fix-argo-3 Succeeded", 30, || async {
        let nm = capture.nm("fix-argo-3").await;
        (nm["status"]["phase"] == "Succeeded" && is_true(&nm, "Ready")).then_some(nm)
    })
    .await;
    capture.keep("nodemaintenance-succeeded.json", NM, &succeeded, "Healthy");

    // The suspend action's object, applied: Suspended, and no new node starts although the
    // window is open and the budget frees up.
    let suspend = run_lua(
        &format!("{MW}/actions/suspend/action.lua"),
        &capture.window("nightly").await,
    );
    let suspend: MaintenanceWindow = serde_json::from_value(suspend).unwrap();
    windows
        .replace("nightly", &PostParams::default(), &suspend)
        .await
        .expect("the suspend action's object is a valid update");
    let suspended = wait_for("nightly suspended and observed", 30, || async {
        let w = capture.window("nightly").await;
        (w["status"]["observedGeneration"] == 2).then_some(w)
    })
    .await;
    assert_eq!(health(MW, &suspended).0, "Suspended");
    let before = nms.list(&Default::default()).await.unwrap().items.len();
    nms.delete(
        running_nm["metadata"]["name"].as_str().unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    wait_for("the released NodeMaintenance gone", 30, || async {
        let list = nms.list(&Default::default()).await.ok()?;
        (list.items.len() == before - 1).then_some(())
    })
    .await;
    // Once the window has seen the release (no node in progress, nodes still pending), a
    // running window would have started the next node in that same reconcile.
    let after = wait_for("nightly saw the release", 30, || async {
        let w = capture.window("nightly").await;
        let round = &w["status"]["round"];
        (round["inProgress"] == 0 && round["pending"].as_i64() > Some(0)).then_some(w)
    })
    .await;
    let generated: Vec<String> = nms
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|nm| {
            nm.labels()
                .get("nodemaintenance.medik8s.io/window")
                .map(String::as_str)
                == Some("nightly")
        })
        .map(|nm| nm.name_any())
        .collect();
    assert!(
        generated.is_empty(),
        "a suspended window starts no new node: {generated:?}, {}",
        after["status"]
    );

    controllers.stop().await;
    sandbox.shutdown().await;
}
