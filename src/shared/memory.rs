//! An in-process [`SharedLimiter`]: one [`Limiter`] behind a lock, with knobs that make it
//! slow or unreachable.
//!
//! Owns nothing durable. It lets paused-time runner tests cover the shared paths (a shared
//! "not yet", an outage and its recovery, a slow answer while Ctrl-C arrives) without a
//! Redis server. Time is tokio's (through [`SystemClock`]), so a paused runtime drives it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::{Admission, AdmitFuture, Learned, LearnedFuture, SharedDenial, SharedLimiter};
use crate::clock::{Clock, SystemClock};
use crate::limiter::{Costs, Denied, LimitSpec, Limiter, Reservation, Route};

/// Shared limits held in this process.
pub struct MemoryLimiter {
    limiter: Mutex<Limiter>,
    grants: Mutex<HashMap<u64, Reservation>>,
    clock: SystemClock,
    down: AtomicBool,
    was_down: AtomicBool,
    delay_ns: AtomicU64,
    /// Admissions that answer at once before `delay_ns` applies.
    fast: AtomicU64,
    asked: AtomicU64,
    learned: Mutex<Option<Learned>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemoryLimiter {
    /// Shared limits `specs` (in config order), on tokio's clock.
    pub fn new(specs: &[LimitSpec]) -> MemoryLimiter {
        MemoryLimiter {
            limiter: Mutex::new(Limiter::new(specs)),
            grants: Mutex::new(HashMap::new()),
            clock: SystemClock::new(),
            down: AtomicBool::new(false),
            was_down: AtomicBool::new(false),
            delay_ns: AtomicU64::new(0),
            fast: AtomicU64::new(0),
            asked: AtomicU64::new(0),
            learned: Mutex::new(None),
        }
    }

    /// Makes every later admission answer "unreachable" (`true`) or work again.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Makes every admission after the first `fast` take `delay` before it answers.
    pub fn set_delay_after(&self, fast: u64, delay: Duration) {
        let ns = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
        self.fast.store(fast, Ordering::SeqCst);
        self.delay_ns.store(ns, Ordering::SeqCst);
    }

    /// How many admissions were asked for so far.
    pub fn asked(&self) -> u64 {
        self.asked.load(Ordering::SeqCst)
    }

    fn decide(&self, seq: u64, route: &Route, costs: &Costs) -> Admission {
        if self.down.load(Ordering::SeqCst) {
            self.was_down.store(true, Ordering::SeqCst);
            return Admission::Unreachable("the in-memory shared limiter is down".into());
        }
        let recovered = self.was_down.swap(false, Ordering::SeqCst);
        let now = self.clock.now();
        let mut limiter = lock(&self.limiter);
        match limiter.reserve(route, costs, now) {
            Ok(reservation) => {
                lock(&self.grants).insert(seq, reservation);
                Admission::Granted { recovered }
            }
            Err(Denied::NotUntil(n)) => {
                let limit = limiter
                    .binding(route, costs, now)
                    .and_then(|(spec, _)| limiter.specs().position(|s| std::ptr::eq(s, spec)))
                    .unwrap_or(0);
                Admission::Denied(SharedDenial::Wait {
                    wait: Duration::from_nanos(n.at.saturating_sub(now)),
                    limit,
                })
            }
            Err(Denied::Never(never)) => Admission::Denied(SharedDenial::Never(never)),
        }
    }
}

impl SharedLimiter for MemoryLimiter {
    fn admit(self: Arc<Self>, seq: u64, route: Route, costs: Costs) -> AdmitFuture {
        let nth = self.asked.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            let delay = self.delay_ns.load(Ordering::SeqCst);
            if delay > 0 && nth >= self.fast.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_nanos(delay)).await;
            }
            self.decide(seq, &route, &costs)
        })
    }

    fn settle_later(&self, seq: u64, actual: &Costs) {
        if let Some(reservation) = lock(&self.grants).remove(&seq) {
            let now = self.clock.now();
            lock(&self.limiter).settle(reservation, actual, now);
        }
    }

    fn publish_learned(&self, learned: Learned) {
        *lock(&self.learned) = Some(learned);
    }

    fn learned(self: Arc<Self>) -> LearnedFuture {
        Box::pin(async move { lock(&self.learned).clone() })
    }
}
