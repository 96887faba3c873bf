//! The operator as `nmo run --leader-elect` runs it, in-process: replicas that stand by for
//! the leader Lease, run both controllers while they lead and kill them when the lead is lost,
//! then stand by again (as a restarted pod would). A kill aborts a replica wherever it is.

use nmo::clock::{Clock, VirtualClock};
use nmo::controller::leader::{LeaderElector, LeaderTimings};
use nmo::controller::{Clients, ControllerConfig, ControllerHandle};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

/// Short leader timings, so that a failover takes about four seconds. (Two seconds made
/// leaders on a machine loaded by twenty scenarios and other builds miss their renew deadline
/// over and over, so that nothing got done.)
pub fn timings() -> LeaderTimings {
    LeaderTimings {
        lease_duration: Duration::from_secs(4),
        renew_deadline: Duration::from_secs(3),
        retry_period: Duration::from_millis(500),
    }
}

/// Quick retries, as in the other controller tests.
pub fn config() -> ControllerConfig {
    let mut config = ControllerConfig::default();
    let nm = &mut config.node_maintenance;
    nm.lease_retry = Duration::from_millis(300);
    nm.error_retry = Duration::from_millis(300);
    nm.error_retry_max = Duration::from_secs(2);
    nm.missing_node_retry = Duration::from_secs(1);
    nm.drain.retry_initial = Duration::from_millis(100);
    nm.drain.retry_max = Duration::from_millis(400);
    config
}

/// How many replicas run controllers, and since when (virtual) one has without a break.
pub type Leading = Arc<Mutex<(usize, Option<chrono::DateTime<chrono::Utc>>)>>;

struct Replica {
    identity: String,
    task: JoinHandle<()>,
    controllers: Arc<Mutex<Option<ControllerHandle>>>,
    leading: Leading,
}

fn stop_leading(slot: &Mutex<Option<ControllerHandle>>, leading: &Leading) {
    if let Some(c) = slot.lock().unwrap().take() {
        c.kill();
        let mut l = leading.lock().unwrap();
        l.0 -= 1;
        if l.0 == 0 {
            l.1 = None;
        }
    }
}

impl Replica {
    fn leading(&self) -> bool {
        self.controllers.lock().unwrap().is_some()
    }

    fn kill(self) {
        self.task.abort();
        stop_leading(&self.controllers, &self.leading);
    }
}

/// The replicas of one scenario.
pub struct Operator {
    kubeconfig: String,
    namespace: String,
    clock: VirtualClock,
    replicas: Vec<Replica>,
    started: usize,
    /// How many replicas lead, and since when.
    pub leading: Leading,
    /// What happened to the lead, for the step log.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Operator {
    pub fn new(kubeconfig: String, namespace: &str, clock: VirtualClock) -> Self {
        Operator {
            kubeconfig,
            namespace: namespace.to_string(),
            clock,
            replicas: Vec::new(),
            started: 0,
            leading: Arc::default(),
            log: Arc::default(),
        }
    }

    pub fn running(&self) -> usize {
        self.replicas.len()
    }

    /// Start a replica: a new identity, or the one of the last replica started (a pod
    /// restarted in place), when that one is not running.
    pub async fn start(&mut self, reuse_identity: bool) -> String {
        let last = format!("replica-{}", self.started);
        let identity = if reuse_identity
            && self.started > 0
            && !self.replicas.iter().any(|r| r.identity == last)
        {
            last
        } else {
            self.started += 1;
            format!("replica-{}", self.started)
        };
        let clients = Clients::from_kubeconfig_yaml(&self.kubeconfig)
            .await
            .expect("clients from the kubeconfig");
        let controllers: Arc<Mutex<Option<ControllerHandle>>> = Arc::default();
        let slot = controllers.clone();
        let (clock, namespace, log, id, leading) = (
            self.clock.clone(),
            self.namespace.clone(),
            self.log.clone(),
            identity.clone(),
            self.leading.clone(),
        );
        let task = tokio::spawn(async move {
            loop {
                let mut elector = LeaderElector::new(
                    clients.api.clone(),
                    &namespace,
                    id.clone(),
                    tokio::sync::watch::channel(timings()).1,
                );
                elector.acquire().await;
                log.lock().unwrap().push(format!("{id} leads"));
                let handle =
                    nmo::controller::start(clients.clone(), Arc::new(clock.clone()), config());
                *slot.lock().unwrap() = Some(handle);
                {
                    let mut l = leading.lock().unwrap();
                    l.0 += 1;
                    l.1.get_or_insert_with(|| clock.now());
                }
                let reason = elector.hold().await;
                stop_leading(&slot, &leading);
                log.lock()
                    .unwrap()
                    .push(format!("{id} lost the lead: {reason}"));
            }
        });
        self.replicas.push(Replica {
            identity: identity.clone(),
            task,
            controllers,
            leading: self.leading.clone(),
        });
        identity
    }

    /// Kill the leader, if one leads. Returns its identity.
    pub fn kill_leader(&mut self) -> Option<String> {
        let i = self.replicas.iter().position(|r| r.leading())?;
        let r = self.replicas.remove(i);
        let id = r.identity.clone();
        r.kill();
        Some(id)
    }

    /// Kill the `pick`-th replica (modulo how many run).
    pub fn kill(&mut self, pick: u64) -> Option<String> {
        if self.replicas.is_empty() {
            return None;
        }
        let r = self
            .replicas
            .remove((pick % self.replicas.len() as u64) as usize);
        let id = r.identity.clone();
        r.kill();
        Some(id)
    }

    /// Kill every replica.
    pub fn kill_all(&mut self) {
        for r in self.replicas.drain(..) {
            r.kill();
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill_all();
    }
}
