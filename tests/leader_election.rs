//! The leader elector in-process against the sandbox: candidates racing for a free lease, a
//! conflicting write while renewing, and a release handing over at the next look.

use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::Api;
use nmo::controller::leader::{LeaderElector, LeaderTimings};
use nmo::sandbox::{Fault, FaultRule, Sandbox};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

const NS: &str = "nmo-system";
const T: Duration = Duration::from_secs(30);

async fn sandbox() -> (Sandbox, Client) {
    let sandbox = Sandbox::builder().start().await.expect("sandbox starts");
    sandbox
        .apply_yaml("apiVersion: v1\nkind: Namespace\nmetadata: {name: nmo-system}\n")
        .expect("namespace created");
    let client = sandbox.client().expect("client");
    (sandbox, client)
}

fn elector(client: &Client, identity: &str) -> LeaderElector {
    LeaderElector::new(
        client.clone(),
        NS,
        identity,
        watch::channel(LeaderTimings::default()).1,
    )
}

async fn lease(client: &Client) -> Option<Lease> {
    Api::<Lease>::namespaced(client.clone(), NS)
        .get_opt("nmo-leader")
        .await
        .ok()
        .flatten()
}

async fn wait_for<T, Fut: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut check: impl FnMut() -> Fut,
) -> T {
    let deadline = Instant::now() + T;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_candidates_lead_one_at_a_time_and_a_release_hands_over_at_the_next_look() {
    let (_sandbox, client) = sandbox().await;
    let leading = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let led: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut step_down = std::collections::BTreeMap::new();
    for name in ["a", "b", "c"] {
        let (tx, rx) = oneshot::channel::<()>();
        step_down.insert(name.to_string(), tx);
        let mut candidate = elector(&client, name);
        let (leading, most, led) = (leading.clone(), most.clone(), led.clone());
        tokio::spawn(async move {
            candidate.acquire().await;
            let now = leading.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            led.lock().unwrap().push(name.to_string());
            tokio::select! {
                _ = rx => {}
                reason = candidate.hold() => panic!("{name} lost the lease: {reason}"),
            }
            leading.fetch_sub(1, Ordering::SeqCst);
            assert!(candidate.release().await.expect("released"), "{name}");
        });
    }
    for round in 1..=3 {
        let holder = wait_for(&format!("leader number {round}"), || async {
            let lease = lease(&client).await?;
            let holder = lease.spec?.holder_identity.filter(|h| !h.is_empty())?;
            (led.lock().unwrap().len() == round).then_some(holder)
        })
        .await;
        assert_eq!(led.lock().unwrap().last(), Some(&holder));
        let started = Instant::now();
        step_down.remove(&holder).unwrap().send(()).unwrap();
        if round < 3 {
            wait_for("the next leader after a release", || async {
                (led.lock().unwrap().len() == round + 1).then_some(())
            })
            .await;
            println!(
                "handover after a release: {:.2}s (retry period 2s)",
                started.elapsed().as_secs_f64()
            );
        }
    }
    assert_eq!(most.load(Ordering::SeqCst), 1, "never two leaders at once");
    let mut order = led.lock().unwrap().clone();
    order.sort();
    assert_eq!(order, ["a", "b", "c"], "each led once");
    let released = wait_for("the last release", || async {
        let spec = lease(&client).await?.spec?;
        (spec.holder_identity.as_deref() == Some("")).then_some(spec)
    })
    .await;
    assert_eq!(released.lease_transitions, Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_while_renewing_is_read_again_and_the_leader_keeps_its_lease() {
    let (sandbox, client) = sandbox().await;
    let mut leader = elector(&client, "leader");
    leader.acquire().await;
    let conflict = sandbox
        .faults()
        .add(
            FaultRule::new(Fault::Status(409))
                .verbs(&["update"])
                .resources(&["leases"])
                .names(&["nmo-leader"])
                .limit(1),
        )
        .unwrap();
    let renewals = Arc::new(Mutex::new(Vec::new()));
    let seen = renewals.clone();
    let watcher_client = client.clone();
    let recorder = tokio::spawn(async move {
        loop {
            if let Some(renewed) = lease(&watcher_client)
                .await
                .and_then(|l| l.spec?.renew_time)
            {
                let mut seen = seen.lock().unwrap();
                if seen.last() != Some(&renewed) {
                    seen.push(renewed);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let hits = sandbox.faults();
    tokio::select! {
        reason = leader.hold() => panic!("the leader gave up after a conflict: {reason}"),
        _ = async {
            wait_for("the conflict to be injected, then two more renewals", || async {
                let n = renewals.lock().unwrap().len();
                (hits.hits(conflict) == 1 && n >= 3).then_some(())
            })
            .await
        } => {}
    }
    recorder.abort();
    assert!(leader.is_leading());
    let holder = lease(&client).await.unwrap().spec.unwrap().holder_identity;
    assert_eq!(holder.as_deref(), Some("leader"));
    assert!(leader.release().await.unwrap());
}
