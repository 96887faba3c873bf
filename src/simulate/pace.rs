//! The governor of `nmo simulate`'s virtual clock: virtual time runs at `--speed` only while
//! the controllers keep up.
//!
//! At `--speed 600`, one real second is ten virtual minutes. Everything the controllers and the
//! simulated kubelet do (evictions, pod terminations, status writes, the window's next start)
//! is CPU work that takes real time, while the deadlines they are judged by (`nodeTimeout`,
//! `release.after`, a window's end) are virtual. On a machine that cannot do the work at that
//! pace, the clock would outrun the controllers and nodes would fail their `nodeTimeout` for
//! no reason but the simulator. So the governor measures, every [`PaceConfig::tick`], how far
//! behind the process is:
//!
//! - **runtime lag**: how late the governor's own tick timer fires. When the controllers, the
//!   sandbox and the watchers have more ready work than the cores can run, every task, this
//!   one included, waits in the runtime's queues;
//! - **API lag**: the round trip of a small GET through the API server (the sandbox's store
//!   lock, its serving tasks, the TLS connection), which grows when the server is busy with
//!   the controllers' writes and their watch events.
//!
//! Their sum is the lag: how long a reaction of the controllers takes in real time, beyond
//! the work itself. At `speed`, that lag is `speed × lag` of virtual time, and a node's
//! maintenance is a chain of such reactions. So the clock runs at most at
//! [`PaceConfig::lag_budget`] / lag: a round trip never costs more than that budget of
//! virtual time (5 s by default, comfortably inside any `nodeTimeout`), and never faster than
//! `--speed`. On a fast machine with a 2 ms lag that is 2,500x (so `--speed 600` runs at
//! 600x); when the process is saturated and the lag is 100 ms, 50x. Its floor is
//! [`PaceConfig::floor_speed`] (real time by default: the controllers are built to keep up
//! with that). The pace drops at once when the lag rises and comes back gradually
//! ([`PaceConfig::recovery`] per tick), so one quiet tick in a busy stretch does not let the
//! clock race ahead. The idle jump-ahead of the scenario loop is not affected: when nothing
//! is in flight, the clock still skips to the next window.
//!
//! The governor also keeps the clock on a leash ([`VirtualClock::set_limit`]): each tick lets
//! it run only one tick (plus [`PaceConfig::slack`]) further at the pace it sets, so when the
//! governor itself is starved, or its probe waits a second for a busy server, virtual time
//! stops instead of running on at the last pace.
//!
//! [`next_pace`] is the pure rule; [`govern`] runs it against the clock. [`PaceStats`]
//! collects what the report shows: the virtual time played at the clock's pace, the real time,
//! their ratio (the effective speed) and the share of ticks spent held back.

use crate::clock::{Clock, VirtualClock};
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The governor's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct PaceConfig {
    /// How often the lag is measured and the pace set.
    pub tick: Duration,
    /// How much longer than a tick the leash lets the clock run.
    pub slack: Duration,
    /// The most virtual time one lag may cost: the clock runs at most `lag_budget / lag`.
    pub lag_budget: Duration,
    /// The factor by which the pace may rise per tick (it falls at once).
    pub recovery: f64,
    /// The slowest the clock runs, in virtual seconds per real second (never 0, so that a
    /// machine loaded by something else still gets through the scenario).
    pub floor_speed: f64,
}

impl Default for PaceConfig {
    fn default() -> Self {
        PaceConfig {
            tick: Duration::from_millis(20),
            slack: Duration::from_millis(10),
            lag_budget: Duration::from_secs(5),
            recovery: 1.25,
            floor_speed: 1.0,
        }
    }
}

/// The pace (share of the clock's speed, 0 to 1) after a tick that measured `lag`, from the
/// pace `current`, for a clock of `speed`.
pub fn next_pace(current: f64, lag: Duration, speed: f64, config: &PaceConfig) -> f64 {
    let floor = (config.floor_speed / speed).clamp(0.0, 1.0);
    let lag = lag.max(Duration::from_micros(100)).as_secs_f64();
    let allowed = config.lag_budget.as_secs_f64() / lag;
    let target = (allowed / speed).clamp(floor, 1.0);
    if target <= current {
        target
    } else {
        (current.max(floor) * config.recovery).min(target)
    }
}

/// What the governor saw over a run.
#[derive(Debug, Default)]
pub struct PaceStats {
    inner: Mutex<PaceCounts>,
}

#[derive(Debug, Default, Clone, Copy)]
struct PaceCounts {
    ticks: u64,
    held_ticks: u64,
    max_lag: Duration,
    last_pace: f64,
}

/// A summary of the governor's work, for the live display and the report.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PaceSummary {
    /// The share of ticks at which the clock ran below full speed.
    pub held_share: f64,
    /// The largest lag measured.
    pub max_lag: Duration,
    /// The pace at the last tick.
    pub pace: f64,
}

impl PaceStats {
    fn record(&self, lag: Duration, pace: f64) {
        let mut c = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        c.ticks += 1;
        if pace < 1.0 {
            c.held_ticks += 1;
        }
        c.max_lag = c.max_lag.max(lag);
        c.last_pace = pace;
    }

    /// The summary so far.
    pub fn summary(&self) -> PaceSummary {
        let c = *self.inner.lock().unwrap_or_else(|e| e.into_inner());
        PaceSummary {
            held_share: if c.ticks == 0 {
                0.0
            } else {
                c.held_ticks as f64 / c.ticks as f64
            },
            max_lag: c.max_lag,
            pace: if c.ticks == 0 { 1.0 } else { c.last_pace },
        }
    }
}

/// Set `clock`'s pace from the measured lag every tick, for ever (abort the task to stop).
/// `probe` is one small API round trip; its errors do not matter, only how long it takes.
pub async fn govern<F, Fut>(clock: VirtualClock, config: PaceConfig, stats: &PaceStats, probe: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    let speed = clock.speed();
    let mut pace = 1.0;
    // The leash: each tick lets the clock run one tick and the probe's allowance further at
    // the pace it sets; a governor that does not get to run stops the clock there.
    let lease = |pace: f64| {
        let real = (config.tick + config.slack).as_secs_f64() * speed * pace;
        chrono::Duration::microseconds((real * 1e6) as i64)
    };
    clock.set_limit(Some(clock.now() + lease(pace)));
    loop {
        let asked = Instant::now();
        tokio::time::sleep(config.tick).await;
        // The timer wheel has a 1 ms grain: up to that is not lag.
        let runtime_lag = asked
            .elapsed()
            .saturating_sub(config.tick + Duration::from_millis(1));
        let sent = Instant::now();
        probe().await;
        let api_lag = sent.elapsed();
        let lag = runtime_lag + api_lag;
        pace = next_pace(pace, lag, speed, &config);
        clock.set_pace(pace);
        clock.set_limit(Some(clock.now() + lease(pace)));
        stats.record(lag, pace);
    }
}

/// `virtual_played` over `real`, in virtual seconds per real second.
pub fn effective_speed(virtual_played: chrono::Duration, real: Duration) -> f64 {
    let real = real.as_secs_f64();
    if real <= 0.0 {
        return 0.0;
    }
    virtual_played.num_milliseconds() as f64 / 1000.0 / real
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_small_lag_keeps_full_speed() {
        let c = PaceConfig::default();
        assert_eq!(next_pace(1.0, ms(0), 600.0, &c), 1.0);
        assert_eq!(next_pace(1.0, ms(8), 600.0, &c), 1.0, "5 s / 8 ms = 625x");
    }

    #[test]
    fn a_lag_costs_at_most_the_budget_of_virtual_time() {
        let c = PaceConfig::default();
        let p = next_pace(1.0, ms(100), 600.0, &c);
        assert!((p * 600.0 - 50.0).abs() < 1e-9, "5 s / 100 ms = 50x: {p}");
    }

    #[test]
    fn a_stall_drops_to_the_floor_at_once() {
        let c = PaceConfig::default();
        let p = next_pace(1.0, ms(60_000), 600.0, &c);
        assert!((p - 1.0 / 600.0).abs() < 1e-12, "{p}");
    }

    #[test]
    fn the_pace_comes_back_gradually() {
        let c = PaceConfig::default();
        let mut p = next_pace(1.0, ms(60_000), 600.0, &c);
        let mut ticks = 0;
        while p < 1.0 {
            p = next_pace(p, ms(0), 600.0, &c);
            ticks += 1;
        }
        // 1.25^29 > 600 > 1.25^28.
        assert_eq!(ticks, 29);
    }

    #[test]
    fn a_clock_slower_than_the_floor_is_never_held() {
        let c = PaceConfig::default();
        assert_eq!(next_pace(1.0, ms(60_000), 0.5, &c), 1.0);
    }

    #[test]
    fn effective_speed_is_virtual_over_real() {
        let v = chrono::Duration::minutes(10);
        assert_eq!(effective_speed(v, Duration::from_secs(2)), 300.0);
        assert_eq!(effective_speed(v, Duration::ZERO), 0.0);
    }
}
