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
#[derive(Clone, Debug)]
pub struct VirtualClock {
    inner: Arc<Mutex<VirtualState>>,
}

#[derive(Debug)]
struct VirtualState {
    base_virtual: DateTime<Utc>,
    base_real: std::time::Instant,
    speed: f64,
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
            })),
        }
    }

    /// Jump forward by `by` (in virtual time).
    pub fn advance(&self, by: Duration) {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let now = Self::read(&s);
        s.base_virtual = now + by;
        s.base_real = std::time::Instant::now();
    }

    /// Virtual seconds per real second.
    pub fn speed(&self) -> f64 {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).speed
    }

    fn read(s: &VirtualState) -> DateTime<Utc> {
        let real = s.base_real.elapsed().as_secs_f64() * s.speed;
        s.base_virtual + Duration::microseconds((real * 1e6) as i64)
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
}
