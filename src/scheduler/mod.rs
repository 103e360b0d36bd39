//! Which job goes out next: strict priority, priority classes with reserved shares, fair
//! sharing across tenants, in-flight caps, and retries that wait their turn.
//!
//! Owns the queue of jobs not yet in flight. Every job queues in a [`Lane`]: its class, its
//! tenant and its endpoint group ([`Policy`]). The next job is chosen in three steps:
//! - the class: stride scheduling over the classes that have a job ready, each advancing
//!   by `1 / share` per dispatch, so while every class has work each gets its share of the
//!   dispatches, and an idle class's share goes to the others;
//! - the tenant inside the class: stride scheduling again, weighted by the tenants' weights
//!   (a fair queue: no tenant with work waits behind another's backlog);
//! - the job inside the tenant: strict priority (higher first; ties keep file order, by
//!   sequence number) among the endpoint groups that are under their cap.
//!
//! A class or tenant that comes back after having nothing ready starts at the current
//! virtual time, so idleness earns no credit to burst with later. A tenant at its
//! `max_in_flight`, or whose every ready job's endpoint group is at its cap, sits out until
//! [`Scheduler::finished`] frees a slot; a tenant held back by one of its own limits sits out
//! until the instant given to [`Scheduler::defer`]. A job sent back for a retry waits in a
//! timer queue until its instant, then rejoins its lane at its own priority.
//!
//! With the default [`Policy`] (one class, one tenant, no caps, no starvation guard) the
//! scheduler is a single priority heap: the fast path of a plain run and of `estimate`.
//!
//! Pure: time is an argument, nothing sleeps.

pub mod policy;
#[cfg(test)]
mod tests;
pub mod workers;

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use crate::clock::Nanos;
pub use policy::{ClassSpec, GroupSpec, Lane, Policy, TenantSpec};
pub use workers::AutoWorkers;

/// One unit of virtual time per dispatch at weight 1 (fixed point, so weights up to 2^32
/// divide it without rounding to zero).
const STRIDE: u64 = 1 << 32;

/// No cap.
const UNCAPPED: u32 = u32::MAX;

struct Ready<J> {
    priority: i64,
    seq: u64,
    /// When the job became ready, for the starvation guard.
    since: Nanos,
    job: J,
}

impl<J> PartialEq for Ready<J> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl<J> Eq for Ready<J> {}
impl<J> PartialOrd for Ready<J> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<J> Ord for Ready<J> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.priority, Reverse(self.seq)).cmp(&(other.priority, Reverse(other.seq)))
    }
}

/// A ready job of a plain scheduler: no wait is measured, so the heap moves less.
struct PlainReady<J> {
    priority: i64,
    seq: u64,
    job: J,
}

impl<J> PartialEq for PlainReady<J> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl<J> Eq for PlainReady<J> {}
impl<J> PartialOrd for PlainReady<J> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<J> Ord for PlainReady<J> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.priority, Reverse(self.seq)).cmp(&(other.priority, Reverse(other.seq)))
    }
}

impl<J> From<Ready<J>> for PlainReady<J> {
    fn from(r: Ready<J>) -> Self {
        PlainReady {
            priority: r.priority,
            seq: r.seq,
            job: r.job,
        }
    }
}

struct Delayed<J> {
    at: Nanos,
    lane: Lane,
    ready: Ready<J>,
}

impl<J> PartialEq for Delayed<J> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl<J> Eq for Delayed<J> {}
impl<J> PartialOrd for Delayed<J> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<J> Ord for Delayed<J> {
    fn cmp(&self, other: &Self) -> Ordering {
        // Earliest first in a max-heap.
        (Reverse(self.at), &self.ready).cmp(&(Reverse(other.at), &other.ready))
    }
}

/// Where a tenant of a class stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Nothing ready.
    Idle,
    /// In its class's active heap (exactly one entry there).
    Active,
    /// Held back by its own limits until `blocked_until`.
    Blocked,
    /// At its in-flight cap, or every ready job's group is at its cap.
    Capped,
}

/// One tenant's ready jobs in one class.
struct TenantQueue<J> {
    /// One heap per endpoint group (index = [`Lane::group`]).
    groups: Vec<BinaryHeap<Ready<J>>>,
    len: usize,
    pass: u64,
    state: State,
    blocked_until: Nanos,
    /// Since when it has had work without a dispatch.
    waiting_since: Nanos,
    /// Its current wait was already reported as starving.
    reported: bool,
}

impl<J> TenantQueue<J> {
    fn new() -> Self {
        TenantQueue {
            groups: vec![BinaryHeap::new()],
            len: 0,
            pass: 0,
            state: State::Idle,
            blocked_until: 0,
            waiting_since: 0,
            reported: false,
        }
    }
}

/// One class: its tenants and the stride state among them.
struct ClassQueue<J> {
    stride: u64,
    pass: u64,
    /// Had a job ready at the last decision (a class coming back starts at virtual time).
    eligible: bool,
    /// Indexed by tenant; grown on first use.
    tenants: Vec<TenantQueue<J>>,
    /// Active tenants by pass (min first), ties by tenant index.
    active: BinaryHeap<Reverse<(u64, u32)>>,
    /// The pass of the tenant served last.
    vtime: u64,
}

/// A job taken from the queue, with where it queued and how long it waited.
pub struct Popped<J> {
    /// The job.
    pub job: J,
    /// Its lane, to hand back to [`Scheduler::finished`] when it completes.
    pub lane: Lane,
    /// How long it was ready before it was taken, in nanoseconds (0 from a plain scheduler,
    /// which does not measure waits).
    pub waited: Nanos,
    /// It waited longer than the policy's `starvation_after`.
    pub starved: bool,
}

/// A tenant of a class that has had work without a dispatch for longer than
/// `starvation_after`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Starving {
    /// The class's index in the policy.
    pub class: u16,
    /// The tenant's index in the policy.
    pub tenant: u32,
    /// How long it has waited, in nanoseconds.
    pub waited: Nanos,
}

/// The queue of jobs waiting to be sent.
pub struct Scheduler<J> {
    plain: bool,
    /// The one heap of a plain scheduler (empty otherwise).
    plain_ready: BinaryHeap<PlainReady<J>>,
    policy: Policy,
    classes: Vec<ClassQueue<J>>,
    delayed: BinaryHeap<Delayed<J>>,
    /// Blocked tenants' wake-up instants: (at, class, tenant).
    wakeups: BinaryHeap<Reverse<(Nanos, u16, u32)>>,
    tenant_stride: Vec<u64>,
    tenant_cap: Vec<u32>,
    tenant_in_flight: Vec<u32>,
    /// Classes in which a tenant sits out at its cap.
    tenant_waiters: Vec<Vec<u16>>,
    group_cap: Vec<u32>,
    group_in_flight: Vec<u32>,
    /// (class, tenant) pairs sitting out because a group is at its cap.
    group_waiters: Vec<Vec<(u16, u32)>>,
    /// The pass of the class served last.
    vtime: u64,
    /// Ready jobs in lanes (not counting delayed ones, nor those of a plain scheduler).
    ready: usize,
}

impl<J> Default for Scheduler<J> {
    fn default() -> Self {
        Scheduler::with_policy(Policy::default())
    }
}

impl<J> Scheduler<J> {
    /// An empty queue with the plain policy: strict priority.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty queue sharing out dispatches by `policy`.
    pub fn with_policy(mut policy: Policy) -> Self {
        if policy.classes.is_empty() {
            policy.classes = Policy::default().classes;
        }
        if policy.tenants.is_empty() {
            policy.tenants = Policy::default().tenants;
        }
        let classes = policy
            .classes
            .iter()
            .map(|c| ClassQueue {
                stride: STRIDE / u64::from(c.share.get()),
                pass: 0,
                eligible: false,
                tenants: Vec::new(),
                active: BinaryHeap::new(),
                vtime: 0,
            })
            .collect();
        let tenants = policy.tenants.len();
        let groups = policy.groups.len() + 1;
        Scheduler {
            plain: policy.is_plain(),
            plain_ready: BinaryHeap::new(),
            classes,
            delayed: BinaryHeap::new(),
            wakeups: BinaryHeap::new(),
            tenant_stride: policy
                .tenants
                .iter()
                .map(|t| STRIDE / u64::from(t.weight.get()))
                .collect(),
            tenant_cap: policy
                .tenants
                .iter()
                .map(|t| t.max_in_flight.map_or(UNCAPPED, |m| m.get()))
                .collect(),
            tenant_in_flight: vec![0; tenants],
            tenant_waiters: vec![Vec::new(); tenants],
            group_cap: std::iter::once(UNCAPPED)
                .chain(policy.groups.iter().map(|g| g.max_in_flight.get()))
                .collect(),
            group_in_flight: vec![0; groups],
            group_waiters: vec![Vec::new(); groups],
            vtime: 0,
            ready: 0,
            policy,
        }
    }

    /// The policy this scheduler shares out by.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Whether this is a plain priority queue (one lane, nothing to defer or free).
    pub fn is_plain(&self) -> bool {
        self.plain
    }

    /// Queues a job in the default lane that may go out at once.
    pub fn push(&mut self, priority: i64, seq: u64, job: J) {
        self.enqueue(0, Lane::default(), priority, seq, job);
    }

    /// Queues a job in the default lane that may go out at `at` or later.
    pub fn push_at(&mut self, at: Nanos, priority: i64, seq: u64, job: J) {
        self.enqueue_at(at, Lane::default(), priority, seq, job);
    }

    /// Queues a job in `lane` that may go out at once; `now` starts its wait.
    pub fn enqueue(&mut self, now: Nanos, lane: Lane, priority: i64, seq: u64, job: J) {
        if self.plain {
            self.plain_ready.push(PlainReady { priority, seq, job });
            return;
        }
        self.ready += 1;
        let ready = Ready {
            priority,
            seq,
            since: now,
            job,
        };
        self.insert(now, lane, ready);
    }

    /// Queues a job in `lane` that may go out at `at` or later.
    pub fn enqueue_at(&mut self, at: Nanos, lane: Lane, priority: i64, seq: u64, job: J) {
        self.delayed.push(Delayed {
            at,
            lane,
            ready: Ready {
                priority,
                seq,
                since: at,
                job,
            },
        });
    }

    /// Clamps a lane to the policy's lists, so a stray index queues somewhere valid.
    fn clamp(&self, lane: Lane) -> Lane {
        let top = |n: usize| n.saturating_sub(1);
        Lane {
            class: lane
                .class
                .min(u16::try_from(top(self.classes.len())).unwrap_or(0)),
            tenant: lane
                .tenant
                .min(u32::try_from(top(self.tenant_cap.len())).unwrap_or(0)),
            group: lane
                .group
                .min(u16::try_from(top(self.group_cap.len())).unwrap_or(0)),
        }
    }

    fn insert(&mut self, now: Nanos, lane: Lane, ready: Ready<J>) {
        let lane = self.clamp(lane);
        let class = &mut self.classes[usize::from(lane.class)];
        let t = lane.tenant as usize;
        if class.tenants.len() <= t {
            class.tenants.resize_with(t + 1, TenantQueue::new);
        }
        let tq = &mut class.tenants[t];
        let g = usize::from(lane.group);
        if tq.groups.len() <= g {
            tq.groups.resize_with(g + 1, BinaryHeap::new);
        }
        tq.groups[g].push(ready);
        tq.len += 1;
        if tq.len == 1 {
            tq.waiting_since = now;
            tq.reported = false;
        }
        match tq.state {
            State::Idle | State::Capped => Self::activate(class, lane.tenant),
            State::Active | State::Blocked => {}
        }
    }

    /// Puts a tenant with work back into its class's active heap, at no earlier virtual
    /// time than the class's.
    fn activate(class: &mut ClassQueue<J>, tenant: u32) {
        let vtime = class.vtime;
        let Some(tq) = class.tenants.get_mut(tenant as usize) else {
            return;
        };
        if tq.state == State::Active {
            return;
        }
        if tq.len == 0 {
            tq.state = State::Idle;
            return;
        }
        tq.state = State::Active;
        tq.pass = tq.pass.max(vtime);
        class.active.push(Reverse((tq.pass, tenant)));
    }

    fn promote(&mut self, now: Nanos) {
        while self.delayed.peek().is_some_and(|d| d.at <= now) {
            if let Some(d) = self.delayed.pop() {
                if self.plain {
                    self.plain_ready.push(d.ready.into());
                } else {
                    self.ready += 1;
                    self.insert(d.at, d.lane, d.ready);
                }
            }
        }
        while let Some(&Reverse((at, c, t))) = self.wakeups.peek() {
            if at > now {
                break;
            }
            self.wakeups.pop();
            let Some(class) = self.classes.get_mut(usize::from(c)) else {
                continue;
            };
            let due = class
                .tenants
                .get(t as usize)
                .is_some_and(|tq| tq.state == State::Blocked && tq.blocked_until <= now);
            if due {
                if let Some(tq) = class.tenants.get_mut(t as usize) {
                    tq.state = State::Idle;
                }
                Self::activate(class, t);
            }
        }
    }

    /// The lane whose job goes out next at `now`: the class with the lowest pass among
    /// those with a job ready, then its first eligible tenant.
    fn select(&mut self, now: Nanos) -> Option<Lane> {
        self.promote(now);
        let mut best: Option<(u64, Lane)> = None;
        for c in 0..self.classes.len() {
            let found = self.eligible_top(c);
            let class = &mut self.classes[c];
            let Some((tenant, group)) = found else {
                class.eligible = false;
                continue;
            };
            if !class.eligible {
                class.eligible = true;
                class.pass = class.pass.max(self.vtime);
            }
            if best.is_none_or(|(pass, _)| class.pass < pass) {
                let class = u16::try_from(c).unwrap_or(0);
                best = Some((
                    self.classes[c].pass,
                    Lane {
                        class,
                        tenant,
                        group,
                    },
                ));
            }
        }
        best.map(|(_, lane)| lane)
    }

    /// Drops tenants that cannot send from the top of class `c`'s active heap (moving them
    /// to the waiters of the cap that holds them) until the top one can; returns it and the
    /// group of its best job.
    fn eligible_top(&mut self, c: usize) -> Option<(u32, u16)> {
        let class = &mut self.classes[c];
        loop {
            let &Reverse((_, t)) = class.active.peek()?;
            let ti = t as usize;
            let tq = &mut class.tenants[ti];
            if self.tenant_in_flight[ti] >= self.tenant_cap[ti] {
                class.active.pop();
                tq.state = State::Capped;
                self.tenant_waiters[ti].push(u16::try_from(c).unwrap_or(0));
                continue;
            }
            let mut best: Option<(usize, &Ready<J>)> = None;
            for (g, heap) in tq.groups.iter().enumerate() {
                let Some(top) = heap.peek() else {
                    continue;
                };
                if self.group_in_flight[g] < self.group_cap[g] && best.is_none_or(|(_, b)| top > b)
                {
                    best = Some((g, top));
                }
            }
            if let Some((g, _)) = best {
                return Some((t, u16::try_from(g).unwrap_or(0)));
            }
            class.active.pop();
            if tq.len == 0 {
                tq.state = State::Idle;
                continue;
            }
            tq.state = State::Capped;
            for (g, heap) in tq.groups.iter().enumerate() {
                if !heap.is_empty() {
                    self.group_waiters[g].push((u16::try_from(c).unwrap_or(0), t));
                }
            }
        }
    }

    /// The job that goes out next at `now`, without removing it.
    pub fn peek(&mut self, now: Nanos) -> Option<&J> {
        if self.plain {
            self.promote(now);
            return self.plain_ready.peek().map(|r| &r.job);
        }
        let lane = self.select(now)?;
        self.classes[usize::from(lane.class)].tenants[lane.tenant as usize].groups
            [usize::from(lane.group)]
        .peek()
        .map(|r| &r.job)
    }

    /// Removes and returns the job that goes out next at `now`.
    pub fn pop(&mut self, now: Nanos) -> Option<J> {
        self.pop_timed(now).map(|p| p.job)
    }

    /// Removes the job that goes out next at `now`, with its lane and wait. Unless the
    /// scheduler is plain, the caller hands the lane to [`Scheduler::finished`] when the job
    /// is no longer in flight.
    pub fn pop_timed(&mut self, now: Nanos) -> Option<Popped<J>> {
        if self.plain {
            self.promote(now);
            let r = self.plain_ready.pop()?;
            return Some(Popped {
                waited: 0,
                starved: false,
                lane: Lane::default(),
                job: r.job,
            });
        }
        let lane = self.select(now)?;
        let (c, t, g) = (
            usize::from(lane.class),
            lane.tenant as usize,
            usize::from(lane.group),
        );
        let class = &mut self.classes[c];
        class.active.pop();
        let tq = &mut class.tenants[t];
        let r = tq.groups[g].pop()?;
        tq.len -= 1;
        self.ready -= 1;
        class.vtime = tq.pass;
        tq.pass = tq.pass.saturating_add(self.tenant_stride[t]);
        tq.waiting_since = now;
        tq.reported = false;
        if tq.len > 0 {
            class.active.push(Reverse((tq.pass, lane.tenant)));
        } else {
            tq.state = State::Idle;
        }
        self.vtime = class.pass;
        class.pass = class.pass.saturating_add(class.stride);
        self.tenant_in_flight[t] += 1;
        self.group_in_flight[g] += 1;
        let waited = now.saturating_sub(r.since);
        Some(Popped {
            job: r.job,
            lane,
            waited,
            starved: self
                .policy
                .starvation_after
                .is_some_and(|after| waited > after),
        })
    }

    /// Holds back the tenant of the job [`Scheduler::peek`] would return at `now` (in its
    /// class) until `until`: one of its own limits does not admit it before then. Other
    /// tenants go on. Does nothing on a plain scheduler, whose one lane the caller waits
    /// for instead.
    pub fn defer(&mut self, now: Nanos, until: Nanos) {
        if self.plain || until <= now {
            return;
        }
        let Some(lane) = self.select(now) else {
            return;
        };
        let class = &mut self.classes[usize::from(lane.class)];
        class.active.pop();
        let tq = &mut class.tenants[lane.tenant as usize];
        tq.state = State::Blocked;
        tq.blocked_until = until;
        self.wakeups.push(Reverse((until, lane.class, lane.tenant)));
    }

    /// A job taken from `lane` is no longer in flight: its tenant and group have a slot
    /// free again.
    pub fn finished(&mut self, lane: Lane) {
        if self.plain {
            return;
        }
        let lane = self.clamp(lane);
        let (t, g) = (lane.tenant as usize, usize::from(lane.group));
        self.tenant_in_flight[t] = self.tenant_in_flight[t].saturating_sub(1);
        self.group_in_flight[g] = self.group_in_flight[g].saturating_sub(1);
        for c in std::mem::take(&mut self.tenant_waiters[t]) {
            self.wake_capped(c, lane.tenant);
        }
        for (c, tenant) in std::mem::take(&mut self.group_waiters[g]) {
            self.wake_capped(c, tenant);
        }
    }

    fn wake_capped(&mut self, c: u16, tenant: u32) {
        if let Some(class) = self.classes.get_mut(usize::from(c))
            && class
                .tenants
                .get(tenant as usize)
                .is_some_and(|tq| tq.state == State::Capped)
        {
            Self::activate(class, tenant);
        }
    }

    /// The tenants (per class) that have had work without a dispatch for longer than the
    /// policy's `starvation_after` at `now`, each reported once per wait.
    pub fn starving(&mut self, now: Nanos) -> Vec<Starving> {
        let Some(after) = self.policy.starvation_after else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (c, class) in self.classes.iter_mut().enumerate() {
            for (t, tq) in class.tenants.iter_mut().enumerate() {
                let waited = now.saturating_sub(tq.waiting_since);
                if tq.len > 0 && !tq.reported && waited > after {
                    tq.reported = true;
                    out.push(Starving {
                        class: u16::try_from(c).unwrap_or(0),
                        tenant: u32::try_from(t).unwrap_or(0),
                        waited,
                    });
                }
            }
        }
        out
    }

    /// When the earliest waiting job becomes ready or a held-back tenant may go again, if
    /// any.
    pub fn next_at(&self) -> Option<Nanos> {
        let delayed = self.delayed.peek().map(|d| d.at);
        let wakeup = self.wakeups.peek().map(|Reverse((at, _, _))| *at);
        match (delayed, wakeup) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Jobs queued, ready or waiting.
    pub fn len(&self) -> usize {
        self.plain_ready.len() + self.ready + self.delayed.len()
    }

    /// Whether no job is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
