//! A chaos scenario as plain data, generated from a seed: the cluster at the start, the
//! MaintenanceWindows, and the steps (an action and a pause). The same seed gives the same
//! scenario; what the operator does in between depends on timing, so a replay runs the same
//! actions at the same points, and the step log says what each one resolved to.

use chrono::{DateTime, Duration, TimeZone, Utc};
use std::collections::BTreeSet;
use std::fmt;

/// Virtual seconds per real second for the controllers' clock (and the sandbox's).
pub const SPEED: f64 = 60.0;

/// A small deterministic generator (SplitMix64): the scenarios must not change when a
/// dependency's generator does.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 > 1.0 - p
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// Node label giving the scenario (windows select only their own scenario's nodes).
pub const SCENARIO_LABEL: &str = "chaos.nmo.dev/scenario";
/// Node label giving the pool (`a` or `b`) a window may select.
pub const POOL_LABEL: &str = "chaos.nmo.dev/pool";

/// A MaintenanceWindow of the scenario. Its schedule is `*/every * * * *` in UTC and it stays
/// open `open` minutes, so the harness knows when it is open without nmo's cron engine.
#[derive(Clone, Debug)]
pub struct WindowPlan {
    pub name: String,
    /// `Some(pool)`: the nodes of that pool; `None`: every node of the scenario.
    pub pool: Option<&'static str>,
    pub every_min: u32,
    pub open_min: u32,
    pub max_unavailable: u32,
    pub release_after_secs: u32,
    pub on_reboot: bool,
    pub abort: bool,
    pub min_ready_secs: u32,
    /// `nodeTimeout`, when short enough to matter in a scenario.
    pub node_timeout_secs: Option<u32>,
}

impl WindowPlan {
    /// The opening of the occurrence that contains or last started before `t`.
    pub fn occurrence_start(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        let period = i64::from(self.every_min) * 60;
        let secs = t.timestamp();
        Utc.timestamp_opt(secs - secs.rem_euclid(period), 0)
            .single()
            .expect("a valid instant")
    }

    pub fn open_for(&self) -> Duration {
        Duration::minutes(i64::from(self.open_min))
    }

    /// Whether some opening `[start, start + open]` meets the interval `[lo, hi]`.
    pub fn open_during(&self, lo: DateTime<Utc>, hi: DateTime<Utc>) -> bool {
        // The last opening at or before `hi` meets it exactly when it is still open at `lo`
        // (an earlier one closed earlier still).
        lo <= self.occurrence_start(hi) + self.open_for()
    }

    /// When the occurrence in which `t` falls closes (`None`: `t` is between occurrences).
    pub fn closes_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let start = self.occurrence_start(t);
        (t < start + self.open_for()).then(|| start + self.open_for())
    }

    pub fn yaml(&self, scenario: &str) -> String {
        let mut labels = format!("{SCENARIO_LABEL}: \"{scenario}\"");
        if let Some(pool) = self.pool {
            labels.push_str(&format!(", {POOL_LABEL}: \"{pool}\""));
        }
        let mut release = format!("after: {}s", self.release_after_secs);
        if self.on_reboot {
            release.push_str(", onReboot: true");
        }
        let mut extra = String::new();
        if let Some(t) = self.node_timeout_secs {
            extra.push_str(&format!("  nodeTimeout: {t}s\n  maxFailures: 100\n"));
        }
        format!(
            "apiVersion: nodemaintenance.medik8s.io/v1alpha1\nkind: MaintenanceWindow\n\
             metadata: {{name: {name}}}\nspec:\n  schedule: \"*/{every} * * * *\"\n  \
             duration: {open}m\n  nodeSelector: {{matchLabels: {{{labels}}}}}\n  \
             maxUnavailable: {max}\n  release: {{{release}}}\n  minReadySeconds: {ready}\n  \
             onWindowEnd: {end}\n  reason: chaos\n{extra}",
            name = self.name,
            every = self.every_min,
            open = self.open_min,
            max = self.max_unavailable,
            ready = self.min_ready_secs,
            end = if self.abort {
                "Abort"
            } else {
                "FinishInFlight"
            },
        )
    }
}

/// What a step does.
#[derive(Clone, Debug)]
pub enum Action {
    /// A person creates an ad-hoc NodeMaintenance `name` for `node`.
    CreateNm { name: String, node: String },
    /// A person deletes the `pick`-th NodeMaintenance (by name) of the scenario, if any.
    DeleteNm { pick: u64 },
    /// The node's kubelet stops.
    NodeDown(String),
    /// The node's kubelet comes back.
    NodeUp(String),
    /// The node reboots: a new bootID, Ready.
    Reboot(String),
    /// A node joins.
    AddNode { name: String, pool: &'static str },
    /// A node leaves (deleted with its pods).
    RemoveNode(String),
    /// A person cordons the node, if it is schedulable (as `kubectl cordon`).
    Cordon(String),
    /// A person uncordons the node (one they cordoned, or one nmo cordoned).
    Uncordon(String),
    /// The replica that leads is killed.
    KillLeader,
    /// A replica (leader or standby) is killed.
    KillReplica { pick: u64 },
    /// A replica starts (a new pod, or the same identity restarted).
    StartReplica { reuse_identity: bool },
    /// The leader's renewals fail for a while (sandbox only): it loses the lead to the other.
    LoseLeaderLease,
    /// The sandbox forgets its watch history: resuming watches get 410 (sandbox only).
    ExpireHistory,
    /// Every open watch ends now (sandbox only).
    CloseWatches,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::CreateNm { name, node } => {
                write!(f, "create NodeMaintenance {name} for {node}")
            }
            Action::DeleteNm { pick } => write!(f, "delete NodeMaintenance number {pick}"),
            Action::NodeDown(n) => write!(f, "node {n} NotReady"),
            Action::NodeUp(n) => write!(f, "node {n} Ready"),
            Action::Reboot(n) => write!(f, "reboot {n}"),
            Action::AddNode { name, pool } => write!(f, "node {name} joins pool {pool}"),
            Action::RemoveNode(n) => write!(f, "node {n} leaves"),
            Action::Cordon(n) => write!(f, "a person cordons {n}"),
            Action::Uncordon(n) => write!(f, "a person uncordons {n}"),
            Action::KillLeader => write!(f, "kill the leader"),
            Action::KillReplica { pick } => write!(f, "kill replica number {pick}"),
            Action::StartReplica { reuse_identity } => {
                write!(f, "start a replica (reuse identity: {reuse_identity})")
            }
            Action::LoseLeaderLease => write!(f, "fail the leader's lease renewals"),
            Action::ExpireHistory => write!(f, "expire the watch history"),
            Action::CloseWatches => write!(f, "close every watch"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Step {
    pub action: Action,
    /// Real milliseconds to let pass after the action.
    pub pause_ms: u64,
}

/// One scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub seed: u64,
    /// Short unique name: label value, prefix of node and object names.
    pub id: String,
    /// The nodes at the start and their pools.
    pub nodes: Vec<(String, &'static str)>,
    pub windows: Vec<WindowPlan>,
    pub steps: Vec<Step>,
    /// The controllers' virtual clock starts here.
    pub start: DateTime<Utc>,
    /// Sandbox faults on (500/409/429 on writes, some reads, latency, short watches).
    pub faults: bool,
}

impl Scenario {
    /// The scenario of `seed`. `sandbox`: the target can inject faults.
    pub fn generate(seed: u64, sandbox: bool) -> Scenario {
        let mut rng = Rng::new(seed);
        let id = format!("c{:x}", seed & 0xff_ffff);
        let mut present: Vec<String> = Vec::new();
        let mut ever: BTreeSet<String> = BTreeSet::new();
        let mut nodes = Vec::new();
        let initial = rng.range(3, 6);
        for i in 0..initial {
            let name = format!("{id}-n{i}");
            let pool = if rng.chance(0.5) { "a" } else { "b" };
            nodes.push((name.clone(), pool));
            present.push(name.clone());
            ever.insert(name);
        }
        let mut windows = Vec::new();
        for w in 0..rng.range(1, 2) {
            // Closed at least 4 minutes between openings: more than the harness's slack.
            let every_min = *rng.pick(&[6u32, 10, 12]);
            let open_min = rng.range(2, u64::from(every_min) - 4) as u32;
            windows.push(WindowPlan {
                name: format!("{id}-w{w}"),
                pool: *rng.pick(&[None, Some("a"), Some("b")]),
                every_min,
                open_min,
                max_unavailable: rng.range(1, 2) as u32,
                release_after_secs: rng.range(20, 80) as u32,
                on_reboot: rng.chance(0.3),
                abort: rng.chance(0.35),
                min_ready_secs: *rng.pick(&[0u32, 0, 15]),
                node_timeout_secs: rng.chance(0.2).then(|| rng.range(60, 180) as u32),
            });
        }
        // Start up to two minutes before the first opening of the first window.
        let base = Utc.with_ymd_and_hms(2026, 6, 1, 2, 0, 0).unwrap();
        let start = base - Duration::seconds(rng.range(20, 120) as i64);
        let mut steps = Vec::new();
        let mut created = 0u32;
        let mut added = initial;
        for _ in 0..rng.range(14, 26) {
            let node = |rng: &mut Rng, present: &[String]| -> Option<String> {
                (!present.is_empty()).then(|| rng.pick(present).clone())
            };
            let roll = rng.below(100);
            let action = match roll {
                0..=9 => node(&mut rng, &present).map(|node| {
                    created += 1;
                    Action::CreateNm {
                        name: format!("{id}-adhoc-{created}"),
                        node,
                    }
                }),
                10..=17 => Some(Action::DeleteNm {
                    pick: rng.next_u64(),
                }),
                18..=25 => node(&mut rng, &present).map(Action::NodeDown),
                26..=33 => node(&mut rng, &present).map(Action::NodeUp),
                34..=41 => node(&mut rng, &present).map(Action::Reboot),
                42..=46 => {
                    // A new node, or one that left coming back under its old name.
                    let gone: Vec<String> = ever
                        .iter()
                        .filter(|n| !present.contains(n))
                        .cloned()
                        .collect();
                    let name = if !gone.is_empty() && rng.chance(0.5) {
                        rng.pick(&gone).clone()
                    } else {
                        added += 1;
                        format!("{id}-n{}", added - 1)
                    };
                    present.push(name.clone());
                    ever.insert(name.clone());
                    let pool = if rng.chance(0.5) { "a" } else { "b" };
                    Some(Action::AddNode { name, pool })
                }
                47..=50 if present.len() > 2 => {
                    let i = rng.below(present.len() as u64) as usize;
                    Some(Action::RemoveNode(present.remove(i)))
                }
                51..=58 => node(&mut rng, &present).map(Action::Cordon),
                59..=65 => node(&mut rng, &present).map(Action::Uncordon),
                66..=72 => Some(Action::KillLeader),
                73..=76 => Some(Action::KillReplica {
                    pick: rng.next_u64(),
                }),
                77..=86 => Some(Action::StartReplica {
                    reuse_identity: rng.chance(0.4),
                }),
                87..=91 if sandbox => Some(Action::LoseLeaderLease),
                92..=95 if sandbox => Some(Action::ExpireHistory),
                96..=99 if sandbox => Some(Action::CloseWatches),
                _ => None,
            };
            if let Some(action) = action {
                steps.push(Step {
                    action,
                    pause_ms: rng.range(100, 900),
                });
            }
        }
        Scenario {
            seed,
            id,
            nodes,
            windows,
            steps,
            start,
            faults: sandbox,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(every: u32, open: u32) -> WindowPlan {
        WindowPlan {
            name: "w".into(),
            pool: None,
            every_min: every,
            open_min: open,
            max_unavailable: 1,
            release_after_secs: 30,
            on_reboot: false,
            abort: false,
            min_ready_secs: 0,
            node_timeout_secs: None,
        }
    }

    fn t(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 6, 1, h, m, s).unwrap()
    }

    #[test]
    fn a_window_every_six_minutes_open_for_two_is_open_only_in_its_first_two_minutes() {
        let w = window(6, 2);
        assert!(w.open_during(t(2, 0, 0), t(2, 0, 0)));
        assert!(w.open_during(t(2, 7, 59), t(2, 7, 59)));
        assert!(!w.open_during(t(2, 8, 1), t(2, 11, 59)));
        assert!(w.open_during(t(2, 11, 59), t(2, 12, 0)));
        assert!(
            w.open_during(t(2, 4, 0), t(2, 8, 0)),
            "interval reaching into it"
        );
        assert_eq!(w.closes_after(t(2, 13, 0)), Some(t(2, 14, 0)));
        assert_eq!(w.closes_after(t(2, 14, 0)), None);
    }

    #[test]
    fn the_same_seed_gives_the_same_scenario() {
        let a = Scenario::generate(42, true);
        let b = Scenario::generate(42, true);
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        assert_ne!(
            format!("{:?}", Scenario::generate(43, true).steps),
            format!("{a:?}")
        );
    }
}
