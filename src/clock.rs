//! Time for the controllers: the system clock in production, a virtual clock in tests and
//! `nmo simulate`.

use chrono::{DateTime, Duration, Utc};
use std::sync::{Arc, Mutex};

/// A source of "now". Every time-dependent decision takes its `now` from a `Clock`.
pub trait Clock: Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> DateTime<Utc>;
    /// How long a real-time sleep should be to let `virtual_duration` pass on this clock.
    fn real_duration(&self, virtual_duration: Duration) -> std::time::Duration {
        virtual_duration.to_std().unwrap_or_default()
    }
}

/// The wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that starts at a chosen instant and runs `speed` times faster than real time.
/// It can also be stepped forward by hand.
///
/// Its pace can be turned down ([`VirtualClock::set_pace`]): it then runs at `pace × speed`,
/// or stands still at pace 0, so that whoever drives it (`nmo simulate`'s governor, see
/// `crate::simulate::pace`) can hold virtual time back while the controllers lag. Sleeps
/// ([`Clock::real_duration`]) are always computed at the full `speed`: a timer then ends at or
/// before its virtual deadline, never after it, and its owner reads the clock again.
///
/// It can also be kept on a leash ([`VirtualClock::set_limit`]): it stops at the limit until
/// the limit is moved on, so a governor that is itself starved of CPU cannot let virtual time
/// run away while it is not looking.
#[derive(Clone, Debug)]
pub struct VirtualClock {
    inner: Arc<Mutex<VirtualState>>,
}

#[derive(Debug)]
struct VirtualState {
    base_virtual: DateTime<Utc>,
    base_real: std::time::Instant,
    speed: f64,
    /// The share of `speed` the clock runs at, 0 to 1.
    pace: f64,
    /// Virtual time run at the clock's pace before `base_real` (jumps not counted).
    played: Duration,
    /// The clock does not read past this instant.
    limit: Option<DateTime<Utc>>,
}

impl VirtualClock {
    /// A clock reading `start` now and advancing `speed` virtual seconds per real second.
    pub fn new(start: DateTime<Utc>, speed: f64) -> Self {
        let speed = if speed.is_finite() && speed > 0.0 {
            speed
        } else {
            1.0
        };
        VirtualClock {
            inner: Arc::new(Mutex::new(VirtualState {
                base_virtual: start,
                base_real: std::time::Instant::now(),
                speed,
                pace: 1.0,
                played: Duration::zero(),
                limit: None,
            })),
        }
    }

    /// Jump forward by `by` (in virtual time).
    pub fn advance(&self, by: Duration) {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        Self::rebase(&mut s);
        s.base_virtual += by;
        if let Some(limit) = s.limit.as_mut() {
            *limit += by;
        }
    }

    /// Let the clock run no further than `limit` (`None`: no limit) until this is called
    /// again; [`VirtualClock::advance`] moves the limit along with the clock. Reaching the
    /// limit holds virtual time still; a limit behind the clock holds it where it is (the
    /// clock never goes back).
    pub fn set_limit(&self, limit: Option<DateTime<Utc>>) {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        Self::rebase(&mut s);
        s.limit = limit;
    }

    /// Run at `pace` × the clock's speed from now on (clamped to 0..=1; 0 stops virtual time
    /// until the pace is raised again). The clock stays monotonic: what has run so far is
    /// kept.
    pub fn set_pace(&self, pace: f64) {
        let pace = if pace.is_finite() {
            pace.clamp(0.0, 1.0)
        } else {
            1.0
        };
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        Self::rebase(&mut s);
        s.pace = pace;
    }

    /// The share of its speed the clock runs at now (1 unless [`VirtualClock::set_pace`]
    /// turned it down).
    pub fn pace(&self) -> f64 {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).pace
    }

    /// The virtual time that has passed by running (at the clock's pace), leaving out the
    /// jumps of [`VirtualClock::advance`]: divided by the real time, the effective speed.
    pub fn played(&self) -> Duration {
        let s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        s.played + Self::ran(&s)
    }

    /// Fold the time run since `base_real` into `base_virtual` and `played`.
    fn rebase(s: &mut VirtualState) {
        let ran = Self::ran(s);
        s.base_virtual += ran;
        s.played += ran;
        s.base_real = std::time::Instant::now();
    }

    /// Virtual time run since `base_real`, up to the limit.
    fn ran(s: &VirtualState) -> Duration {
        let real = s.base_real.elapsed().as_secs_f64() * s.speed * s.pace;
        let ran = Duration::microseconds((real * 1e6) as i64);
        match s.limit {
            Some(limit) => ran.min(limit - s.base_virtual).max(Duration::zero()),
            None => ran,
        }
    }

    /// Virtual seconds per real second.
    pub fn speed(&self) -> f64 {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).speed
    }

    fn read(s: &VirtualState) -> DateTime<Utc> {
        s.base_virtual + Self::ran(s)
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> DateTime<Utc> {
        Self::read(&self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }
    fn real_duration(&self, virtual_duration: Duration) -> std::time::Duration {
        let secs = virtual_duration.num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6;
        std::time::Duration::from_secs_f64((secs / self.speed()).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn virtual_clock_advances_by_hand_and_scales_sleeps() {
        let start = Utc.with_ymd_and_hms(2026, 3, 29, 0, 0, 0).unwrap();
        let clock = VirtualClock::new(start, 60.0);
        clock.advance(Duration::hours(2));
        assert!(clock.now() >= start + Duration::hours(2));
        assert!(clock.now() < start + Duration::hours(3));
        assert_eq!(
            clock.real_duration(Duration::minutes(1)),
            std::time::Duration::from_secs(1)
        );
    }

    #[test]
    fn a_paused_clock_stands_still_and_resumes_where_it_stopped() {
        let start = Utc.with_ymd_and_hms(2026, 3, 29, 0, 0, 0).unwrap();
        let clock = VirtualClock::new(start, 1e6);
        clock.set_pace(0.0);
        let held = clock.now();
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(clock.now(), held, "virtual time stands still at pace 0");
        assert_eq!(clock.pace(), 0.0);
        // Sleeps are still computed at the full speed.
        assert_eq!(
            clock.real_duration(Duration::seconds(1)),
            std::time::Duration::from_micros(1)
        );
        clock.set_pace(1.0);
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(
            clock.now() >= held + Duration::seconds(5_000),
            "it runs again"
        );
    }

    #[test]
    fn played_time_leaves_out_the_jumps() {
        let start = Utc.with_ymd_and_hms(2026, 3, 29, 0, 0, 0).unwrap();
        let clock = VirtualClock::new(start, 1.0);
        clock.set_pace(0.0);
        let held = clock.now();
        clock.advance(Duration::hours(5));
        assert_eq!(clock.now(), held + Duration::hours(5));
        assert!(clock.played() < Duration::seconds(1));
        clock.set_pace(2.0);
        assert_eq!(clock.pace(), 1.0, "the pace is at most 1");
    }

    #[test]
    fn a_clock_on_a_leash_stops_at_its_limit_and_never_goes_back() {
        let start = Utc.with_ymd_and_hms(2026, 3, 29, 0, 0, 0).unwrap();
        let clock = VirtualClock::new(start, 1e6);
        clock.set_pace(0.0);
        let t0 = clock.now();
        clock.set_limit(Some(t0 + Duration::seconds(10)));
        clock.set_pace(1.0);
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(clock.now(), t0 + Duration::seconds(10));
        clock.advance(Duration::hours(1));
        assert_eq!(
            clock.now(),
            t0 + Duration::seconds(3_610),
            "the jump moves the limit"
        );
        clock.set_limit(Some(t0));
        assert_eq!(clock.now(), t0 + Duration::seconds(3_610), "never back");
        clock.set_limit(None);
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(clock.now() > t0 + Duration::seconds(3_620));
    }
}
