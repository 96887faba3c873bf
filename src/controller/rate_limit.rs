//! Client-side rate limiting of every request the operator sends to the API server.
//!
//! kube-rs has no client-side limiter, so without one a drain of a large window could flood the
//! API server with evictions. This is client-go's: a token bucket of `qps` tokens per second
//! holding at most `burst`, one token per request, requests waiting in arrival order
//! (controller-runtime's defaults, `--kube-api-qps 20 --kube-api-burst 30`). A watch takes one
//! token when it starts, however long it then streams.
//!
//! [`TokenBucket`] is the pure arithmetic, with an explicit `now`. [`RateLimiter`] shares one
//! bucket between clients (the operator's API client and its eviction client draw from the
//! same budget), and [`RateLimitLayer`] puts it in a client's tower stack.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// Queries per second and burst of the client-side limiter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    /// Tokens added per second: the sustained request rate.
    pub qps: f64,
    /// Most tokens held: how many requests may go at once after a quiet spell.
    pub burst: u32,
}

impl Default for RateLimit {
    /// controller-runtime's defaults: 20 requests per second, bursts of 30.
    fn default() -> Self {
        RateLimit {
            qps: 20.0,
            burst: 30,
        }
    }
}

/// A rate limit that cannot work.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum RateLimitError {
    /// `qps` is zero, negative or not a number.
    #[error("--kube-api-qps must be a positive number of requests per second, got {0}")]
    Qps(f64),
    /// `burst` is zero.
    #[error("--kube-api-burst must be at least 1, got 0")]
    Burst,
}

impl RateLimit {
    /// A limit of `qps` requests per second with bursts of `burst`; refused when no request
    /// could ever be sent.
    pub fn new(qps: f64, burst: u32) -> Result<Self, RateLimitError> {
        if !(qps.is_finite() && qps > 0.0) {
            return Err(RateLimitError::Qps(qps));
        }
        if burst == 0 {
            return Err(RateLimitError::Burst);
        }
        Ok(RateLimit { qps, burst })
    }
}

/// The token bucket: full at the start, refilled at `qps` per second up to `burst`. A request
/// always takes its token at once; when none is left the balance goes negative, and the request
/// waits until the refill has paid its debt. So the requests reserved by time `t` never exceed
/// `burst + qps * t`, and they go in the order they asked.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    limit: RateLimit,
    /// Tokens at `at`; negative when requests wait.
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn new(limit: RateLimit, now: Instant) -> Self {
        TokenBucket {
            limit,
            tokens: f64::from(limit.burst),
            at: now,
        }
    }

    /// Take a token for a request arriving at `now`: how long it must wait before it may go.
    /// A `now` earlier than the last call is taken as the last call's time.
    pub fn reserve(&mut self, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.limit.qps)
        }
    }

    /// Add what was refilled since the last call, up to `burst`. A `now` earlier than the
    /// last call is taken as the last call's time.
    fn refill(&mut self, now: Instant) {
        let now = now.max(self.at);
        let refill = now.duration_since(self.at).as_secs_f64() * self.limit.qps;
        self.tokens = (self.tokens + refill).min(f64::from(self.limit.burst));
        self.at = now;
    }

    /// Take a token for a request that goes ahead of those waiting: it waits only for its own
    /// token to refill, as if nobody were queued. Its token is still taken, so the requests
    /// reserved after it wait the longer for it and the rate over time holds. For the few
    /// requests whose latency is the user-visible pace (a window's next create), when many
    /// more (a drain's evictions and reads) queue behind the limit.
    pub fn reserve_first(&mut self, now: Instant) -> Duration {
        self.refill(now);
        let queued = (-self.tokens).max(0.0);
        self.tokens -= 1.0;
        let own = self.tokens + queued;
        if own >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-own / self.limit.qps)
        }
    }
}

/// A token bucket shared by every client built with it. Cloning shares it.
#[derive(Clone, Debug)]
pub struct RateLimiter {
    bucket: Arc<Mutex<TokenBucket>>,
    limit: RateLimit,
}

impl RateLimiter {
    /// A full bucket for `limit`.
    pub fn new(limit: RateLimit) -> Self {
        RateLimiter {
            bucket: Arc::new(Mutex::new(TokenBucket::new(limit, Instant::now()))),
            limit,
        }
    }

    /// The limit it enforces.
    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Take a token now; how long to wait before sending.
    pub fn reserve(&self) -> Duration {
        self.bucket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .reserve(Instant::now())
    }

    /// Take a token now, ahead of those waiting ([`TokenBucket::reserve_first`]).
    pub fn reserve_first(&self) -> Duration {
        self.bucket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .reserve_first(Instant::now())
    }
}

/// A tower layer that makes every request through it take a token of a [`RateLimiter`].
#[derive(Clone, Debug)]
pub struct RateLimitLayer {
    limiter: RateLimiter,
    first: bool,
}

impl RateLimitLayer {
    /// Limit requests with `limiter`.
    pub fn new(limiter: RateLimiter) -> Self {
        RateLimitLayer {
            limiter,
            first: false,
        }
    }

    /// Limit requests with `limiter`, each going ahead of the requests of the other layers
    /// waiting on it ([`RateLimiter::reserve_first`]).
    pub fn first(limiter: RateLimiter) -> Self {
        RateLimitLayer {
            limiter,
            first: true,
        }
    }
}

impl<S> tower::Layer<S> for RateLimitLayer {
    type Service = RateLimited<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimited {
            inner,
            limiter: self.limiter.clone(),
            first: self.first,
            state: State::Idle,
        }
    }
}

enum State {
    /// No token taken.
    Idle,
    /// A token is taken; waiting for it to become due.
    Waiting(Pin<Box<Sleep>>),
    /// A token is taken and due: the next `call` may go.
    Granted,
}

/// A service whose requests each wait for a token (see [`RateLimitLayer`]).
///
/// The token is taken in `poll_ready`, so a caller that is ready sends at once. kube's client
/// calls it from behind a buffer whose worker polls readiness only when it holds a request, so
/// no token is taken for a request that does not exist.
pub struct RateLimited<S> {
    inner: S,
    limiter: RateLimiter,
    first: bool,
    state: State,
}

impl<S: Clone> Clone for RateLimited<S> {
    fn clone(&self) -> Self {
        // A clone has taken no token yet.
        RateLimited {
            inner: self.inner.clone(),
            limiter: self.limiter.clone(),
            first: self.first,
            state: State::Idle,
        }
    }
}

impl<S, R> tower::Service<R> for RateLimited<S>
where
    S: tower::Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        loop {
            match &mut self.state {
                State::Idle => {
                    let wait = if self.first {
                        self.limiter.reserve_first()
                    } else {
                        self.limiter.reserve()
                    };
                    self.state = if wait.is_zero() {
                        State::Granted
                    } else {
                        State::Waiting(Box::pin(tokio::time::sleep(wait)))
                    };
                }
                State::Waiting(sleep) => {
                    ready!(sleep.as_mut().poll(cx));
                    self.state = State::Granted;
                }
                State::Granted => return self.inner.poll_ready(cx),
            }
        }
    }

    fn call(&mut self, req: R) -> Self::Future {
        // `poll_ready` granted this call its token; the next request takes a new one.
        self.state = State::Idle;
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn limit(qps: f64, burst: u32) -> RateLimit {
        RateLimit::new(qps, burst).unwrap()
    }

    #[test]
    fn a_first_request_waits_only_for_its_own_token_and_the_queue_pays_for_it() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(limit(10.0, 2), t0);
        // A full bucket: no wait either way.
        assert_eq!(bucket.reserve_first(t0), ms(0));
        assert_eq!(bucket.reserve(t0), ms(0));
        // Ten requests queue: the last waits a second.
        let queued: Vec<Duration> = (0..10).map(|_| bucket.reserve(t0)).collect();
        assert_eq!(queued[9], ms(1000));
        // A first request goes after one refill (100 ms), not after the queue.
        let first = bucket.reserve_first(t0);
        assert!((first.as_secs_f64() - 0.1).abs() < 1e-9, "{first:?}");
        // Its token was taken: the next queued request waits one refill more.
        let next = bucket.reserve(t0);
        assert!((next.as_secs_f64() - 1.2).abs() < 1e-9, "{next:?}");
        // Once the queue is paid, first and queued requests are alike.
        let later = t0 + Duration::from_secs(5);
        assert_eq!(bucket.reserve_first(later), ms(0));
    }

    #[test]
    fn the_bucket_lets_a_burst_through_then_paces_at_qps() {
        // (arrival after t0 in ms, expected wait in ms), qps 10 burst 3.
        let table: &[(u64, u64)] = &[
            (0, 0),
            (0, 0),
            (0, 0),    // burst used up
            (0, 100),  // one token every 100 ms
            (0, 200),  // queued behind the previous one
            (50, 250), // 50 ms later: still waits for the sixth token at 300
            (1000, 0), // long after: refilled (to the burst at most)
            (1000, 0), //
            (1000, 0), // three tokens, not more: the burst caps the refill
            (1000, 100),
        ];
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(limit(10.0, 3), t0);
        for (i, (at, wait)) in table.iter().enumerate() {
            let got = bucket.reserve(t0 + ms(*at));
            assert!(
                got.abs_diff(ms(*wait)) < Duration::from_micros(10),
                "request {i} at {at} ms waited {got:?}, expected {wait} ms"
            );
        }
    }

    #[test]
    fn a_clock_going_backwards_refills_nothing() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(limit(1.0, 1), t0 + ms(500));
        assert_eq!(bucket.reserve(t0 + ms(500)), Duration::ZERO);
        let wait = bucket.reserve(t0);
        assert!(wait.abs_diff(Duration::from_secs(1)) < Duration::from_micros(10));
    }

    #[test]
    fn limits_that_could_never_send_are_refused() {
        assert_eq!(RateLimit::new(0.0, 5), Err(RateLimitError::Qps(0.0)));
        assert_eq!(RateLimit::new(-1.0, 5), Err(RateLimitError::Qps(-1.0)));
        assert!(matches!(
            RateLimit::new(f64::NAN, 5),
            Err(RateLimitError::Qps(_))
        ));
        assert_eq!(RateLimit::new(5.0, 0), Err(RateLimitError::Burst));
        assert_eq!(
            RateLimitError::Qps(0.0).to_string(),
            "--kube-api-qps must be a positive number of requests per second, got 0"
        );
        assert_eq!(RateLimit::default(), limit(20.0, 30));
    }

    proptest! {
        /// However requests arrive, the ones allowed to go within any span of time are at most
        /// `burst + qps * span`.
        #[test]
        fn no_span_of_time_lets_more_than_burst_plus_qps_times_span_through(
            qps in 1u32..50,
            burst in 1u32..20,
            gaps in proptest::collection::vec(0u64..300, 1..120),
        ) {
            let t0 = Instant::now();
            let mut bucket = TokenBucket::new(limit(f64::from(qps), burst), t0);
            let mut at = t0;
            let mut sent = Vec::new();
            for gap in gaps {
                at += ms(gap);
                sent.push(at + bucket.reserve(at));
            }
            prop_assert!(sent.windows(2).all(|w| w[0] <= w[1] + Duration::from_micros(1)), "in order");
            for i in 0..sent.len() {
                for j in i..sent.len() {
                    let span = sent[j].saturating_duration_since(sent[i]).as_secs_f64();
                    let allowed = f64::from(burst) + f64::from(qps) * span + 1e-6;
                    prop_assert!(((j - i + 1) as f64) <= allowed,
                        "{} requests in {span} s with qps {qps} burst {burst}", j - i + 1);
                }
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_layer_makes_each_request_wait_for_its_token() {
        use tower::{Layer, Service, ServiceExt};
        let limiter = RateLimiter::new(limit(2.0, 1));
        let layer = RateLimitLayer::new(limiter.clone());
        let mut a = layer.layer(tower::service_fn(|x: u32| async move { Ok::<_, ()>(x) }));
        // A second client on the same limiter shares its budget.
        let mut b = RateLimitLayer::new(limiter)
            .layer(tower::service_fn(|x: u32| async move { Ok::<_, ()>(x) }));
        let t0 = Instant::now();
        assert_eq!(a.ready().await.unwrap().call(1).await, Ok(1));
        assert_eq!(Instant::now() - t0, Duration::ZERO, "the burst");
        assert_eq!(b.ready().await.unwrap().call(2).await, Ok(2));
        assert_eq!(
            Instant::now() - t0,
            ms(500),
            "the other client waited for a token"
        );
        assert_eq!(a.ready().await.unwrap().call(3).await, Ok(3));
        assert_eq!(Instant::now() - t0, ms(1000));
    }
}
