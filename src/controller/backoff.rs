//! Error requeue delays: exponential backoff with jitter and a cap, per object.

use std::time::Duration;

/// The delay before retry number `attempts` (1 for the first retry): `base` doubled for
/// each earlier attempt, capped at `cap`, then spread by `jitter` (a sample in `[0, 1]`,
/// clamped) over the upper half: `d/2 + d/2 * jitter`. So it never exceeds `cap`, never
/// drops below half the un-jittered delay, and objects that failed together retry apart.
/// `attempts == 0` gives zero.
pub fn backoff(attempts: u32, base: Duration, cap: Duration, jitter: f64) -> Duration {
    if attempts == 0 {
        return Duration::ZERO;
    }
    let factor = 2u32.saturating_pow(attempts - 1);
    let full = base.saturating_mul(factor).min(cap);
    let jitter = if jitter.is_nan() {
        0.0
    } else {
        jitter.clamp(0.0, 1.0)
    };
    full / 2 + full.mul_f64(jitter / 2.0)
}

/// A jitter sample in `[0, 1)` from the operating system's randomness (via a v4 UUID, to
/// need no extra dependency).
pub fn jitter() -> f64 {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let n = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    f64::from(n) / (f64::from(u32::MAX) + 1.0)
}

/// A jitter sample in `[0, 1)` drawn from `seed` and `attempt` (splitmix64): the same for the
/// same inputs, so a retry schedule can be reproduced and tested.
pub fn seeded_jitter(seed: u64, attempt: u32) -> f64 {
    let mut z = seed ^ u64::from(attempt).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// A seed stable across runs (FNV-1a; std's `RandomState` is not) from an object's name.
pub fn seed_of(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn delays_double_per_attempt_up_to_the_cap() {
        let cap = Duration::from_secs(60);
        let table = [
            (0, 0.0, Duration::ZERO),
            (1, 1.0, S),
            (2, 1.0, 2 * S),
            (3, 1.0, 4 * S),
            (6, 1.0, 32 * S),
            (7, 1.0, cap),
            (40, 1.0, cap),
            (u32::MAX, 1.0, cap),
        ];
        for (attempts, jitter, want) in table {
            assert_eq!(
                backoff(attempts, S, cap, jitter),
                want,
                "attempt {attempts}"
            );
        }
    }

    #[test]
    fn jitter_spreads_over_the_upper_half() {
        let cap = Duration::from_secs(60);
        let table = [
            (3, 0.0, 2 * S),
            (3, 0.5, 3 * S),
            (3, 1.0, 4 * S),
            (40, 0.0, 30 * S),
            // Out-of-range samples are clamped.
            (3, -1.0, 2 * S),
            (3, 7.0, 4 * S),
            (3, f64::NAN, 2 * S),
        ];
        for (attempts, jitter, want) in table {
            assert_eq!(
                backoff(attempts, S, cap, jitter),
                want,
                "{attempts} {jitter}"
            );
        }
    }

    #[test]
    fn jitter_samples_are_in_the_unit_interval() {
        for _ in 0..1000 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j), "{j}");
        }
    }
}
