//! The dispatch core: what goes out next, and when, as a pure state machine.
//!
//! Owns the decisions of the dispatch loop that `run` drives in real time and `estimate`
//! in virtual time: worker slots, holds after failure storms and 429s, lanes deferred by
//! their own limits, long waits on a calendar quota (a paused quota), a spent budget, jobs
//! that can never be sent, the heartbeat's cadence, and stop and pause requests.
//!
//! Inputs come in as calls: the time (`now` on every call), admission answers (the local
//! [`Limiter`]'s, and the shared limiter's through [`Dispatcher::shared_answer`]),
//! completions ([`Dispatcher::completed`]) and control ([`Dispatcher::stop`],
//! [`Dispatcher::set_paused`], [`Dispatcher::hold`]). Outputs are [`Decision`]s: dispatch
//! this job with this reservation, fail this one as unsendable, ask the shared limiter,
//! or nothing more now (with the instant to wake at, [`Dispatcher::wake`]). The drivers
//! own the I/O: the runner sends, records and sleeps; the simulation jumps to the next
//! event.
//!
//! Pure: no I/O, no clock; the queue is anything that implements [`Queue`] (the
//! [`Scheduler`], or the estimate's fixed order).
//!
//! Invariants: nothing is dispatched while stopping, paused, held or with every slot busy;
//! a job is taken from the queue only with a reservation from every limiter that admits
//! it; a local reservation the shared limiter refuses is handed back.

use std::time::{Duration, SystemTime};

use crate::clock::{Nanos, nanos};
use crate::limiter::{
    Costs, Denied, LimitKind, LimitSpec, Limiter, NeverFits, NotUntil, Reservation, Route, Scope,
    Unit,
};
use crate::retry::OnQuota;
use crate::scheduler::{Popped, Scheduler};
use crate::session::End;

mod outage;
#[cfg(test)]
mod tests;

/// A limiter wait at least this long on a quota window is a paused quota, not a rate.
pub const QUOTA_WAIT: Duration = Duration::from_secs(60);

/// How soon dispatch asks an unreachable shared limiter again.
pub const SHARED_RETRY: Duration = Duration::from_millis(250);

/// How often progress is written to the store and shown.
pub const HEARTBEAT: Duration = Duration::from_millis(500);

/// What the core needs to know of a queued job.
pub trait Ticket {
    /// The limits it falls under.
    fn route(&self) -> &Route;
    /// What it reserves.
    fn costs(&self) -> &Costs;
    /// Its file order (the shared limiter keys its grant by it).
    fn seq(&self) -> u64;
    /// Worker slots it holds while in flight, out of `workers`.
    fn slots(&self, workers: usize) -> usize {
        let requests = usize::try_from(self.costs().get(&Unit::Requests)).unwrap_or(usize::MAX);
        requests.clamp(1, workers.max(1))
    }
}

/// The jobs waiting to be dispatched, in the order they go out.
pub trait Queue {
    /// What it holds.
    type Job: Ticket;
    /// The job that goes out next at `now`, without removing it.
    fn peek(&mut self, now: Nanos) -> Option<&Self::Job>;
    /// Removes the job [`Queue::peek`] returned.
    fn take(&mut self, now: Nanos) -> Option<Popped<Self::Job>>;
    /// Holds back the lane of the next job until `until` (nothing for a single lane).
    fn defer(&mut self, now: Nanos, until: Nanos);
    /// When a waiting job becomes ready or a held lane may go again.
    fn next_at(&self) -> Option<Nanos>;
    /// Whether nothing is queued.
    fn is_empty(&self) -> bool;
    /// Whether jobs queue in lanes that can be held back one at a time.
    fn has_lanes(&self) -> bool;
}

impl<J: Ticket> Queue for Scheduler<J> {
    type Job = J;
    fn peek(&mut self, now: Nanos) -> Option<&J> {
        Scheduler::peek(self, now)
    }
    fn take(&mut self, now: Nanos) -> Option<Popped<J>> {
        self.pop_timed(now)
    }
    fn defer(&mut self, now: Nanos, until: Nanos) {
        Scheduler::defer(self, now, until);
    }
    fn next_at(&self) -> Option<Nanos> {
        Scheduler::next_at(self)
    }
    fn is_empty(&self) -> bool {
        Scheduler::is_empty(self)
    }
    fn has_lanes(&self) -> bool {
        !self.is_plain()
    }
}

/// What the driver does next.
pub enum Decision<J> {
    /// Send `popped.job` with `reservation`; it holds `slots` worker slots.
    Dispatch {
        /// The job, its lane and its wait.
        popped: Popped<J>,
        /// What the limiter charged for it.
        reservation: Reservation,
        /// Worker slots it holds until its result is committed.
        slots: usize,
    },
    /// Fail `popped.job` without sending it: it can never fit `why`'s limit.
    Unsendable {
        /// The job.
        popped: Popped<J>,
        /// The limit it exceeds.
        why: Box<NeverFits>,
    },
    /// Ask the shared limiter for the job [`Queue::peek`] returns, then hand the answer to
    /// [`Dispatcher::shared_answer`]. Nothing is dispatched meanwhile.
    AskShared {
        /// The job's file order.
        seq: u64,
    },
    /// A lane was held back by one of its own limits (`binding`, an index among the
    /// limiter's limits); ask again.
    Deferred {
        /// The limit that holds the lane back.
        binding: Option<usize>,
    },
    /// The shared limiter granted job `seq` but it no longer goes out next: hand the grant
    /// back (settle it to nothing), then ask again.
    ReturnShared {
        /// The job's file order.
        seq: u64,
    },
    /// Nothing more now.
    Idle(Idle),
}

/// Why nothing more goes out now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Idle {
    /// Stopping, paused, or waiting for the shared limiter's answer.
    Blocked,
    /// Every worker slot is busy.
    Full,
    /// Held after a failure storm or a 429 until [`Dispatcher::wake`].
    Held,
    /// Nothing is ready.
    Empty,
    /// The limiter admits the next job at `at`; `binding` holds it back longest.
    Limited {
        /// When the next job fits.
        at: Nanos,
        /// The limit that holds it back (an index among the limiter's limits).
        binding: Option<usize>,
    },
    /// A run budget is spent.
    Spent,
}

/// The shared limiter's answer to [`Decision::AskShared`].
#[derive(Debug)]
pub enum SharedAnswer {
    /// Admitted; `recovered` says it had been unreachable until now.
    Granted {
        /// It answered again after an outage.
        recovered: bool,
    },
    /// Every bucket fits at `at`; `limit` (an index in config order) holds the job longest.
    Wait {
        /// When the job fits.
        at: Nanos,
        /// The binding limit's index.
        limit: usize,
    },
    /// Never: the job exceeds a shared bucket's burst, or a shared budget is spent.
    Never(Box<NeverFits>),
    /// It did not answer (the reason, without secrets).
    Unreachable(String),
}

/// How the core treats waits and budgets: the runner pauses on long quota waits and lets
/// refunds reopen a spent budget; the estimate waits through quotas and ends a spent
/// budget at once.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    /// What a long wait on a calendar quota does.
    pub on_quota: OnQuota,
    /// A spent budget waits for the requests in flight (which may refund) before it ends
    /// the session; otherwise it ends dispatch at once.
    pub refunds_reopen_budget: bool,
    /// Whether admission also asks a shared limiter.
    pub shared: bool,
    /// The wall time of limiter time 0, for the reset instants of quota notes.
    pub wall_origin: SystemTime,
    /// `[retry] max_wait`: a wait longer than this on a limit learned from the provider's
    /// headers pauses the run like a quota (the estimate waits through everything).
    pub max_wait: Duration,
    /// `[retry] unreachable_after`: how long every attempt may fail to connect before the
    /// session ends as unreachable.
    pub unreachable_after: Duration,
}

/// A local reservation waiting for the shared limiter's answer.
struct Pending {
    seq: u64,
    reservation: Reservation,
    slots: usize,
}

/// A long wait on a quota: what to show while waiting, and how the run ends if it may not
/// wait.
struct LongWait {
    note: String,
    end: End,
}

/// The dispatch loop's state.
pub struct Dispatcher {
    rules: Rules,
    /// Worker slots of requests in flight.
    pub in_flight: usize,
    /// Results handed to the store's writer and not yet committed: their slots stay busy,
    /// so a crash can resend at most `workers` requests.
    pub uncommitted: usize,
    hold_until: Nanos,
    stopping: bool,
    paused: bool,
    end: End,
    note: Option<String>,
    lane_quota: Option<LongWait>,
    spent: Option<String>,
    pending: Option<Pending>,
    wake: Option<Nanos>,
    next_heartbeat: Nanos,
    outage: outage::Outage,
}

impl Dispatcher {
    /// A core with nothing in flight, following `rules`.
    pub fn new(rules: Rules) -> Dispatcher {
        Dispatcher {
            rules,
            in_flight: 0,
            uncommitted: 0,
            hold_until: 0,
            stopping: false,
            paused: false,
            end: End::Finished,
            note: None,
            lane_quota: None,
            spent: None,
            pending: None,
            wake: None,
            next_heartbeat: 0,
            outage: outage::Outage::default(),
        }
    }

    /// Starts a round of decisions at `now`: the wake-up instant starts from the queue's.
    pub fn begin(&mut self, now: Nanos, queue: &impl Queue) {
        // A retry already due is promoted by the next dispatch attempt; waking for it
        // again now would spin while dispatch is held.
        self.wake = queue.next_at().filter(|&t| t > now);
    }

    /// The next decision at `now` with `workers` slots: call until it is [`Decision::Idle`]
    /// (or [`Decision::AskShared`]).
    pub fn next<Q: Queue>(
        &mut self,
        now: Nanos,
        workers: usize,
        limiter: &mut Limiter,
        queue: &mut Q,
    ) -> Decision<Q::Job> {
        if self.stopping || self.paused || self.pending.is_some() {
            return Decision::Idle(Idle::Blocked);
        }
        if self.spent.is_some() && !self.rules.refunds_reopen_budget {
            return Decision::Idle(Idle::Spent);
        }
        let workers = self.probing(workers);
        if self.busy() >= workers {
            return Decision::Idle(Idle::Full);
        }
        if now < self.hold_until {
            self.wake_at(self.hold_until);
            return Decision::Idle(Idle::Held);
        }
        let Some(job) = queue.peek(now) else {
            return self.idle(now, queue, Idle::Empty);
        };
        let slots = job.slots(workers);
        if self.busy() + slots > workers {
            return self.idle(now, queue, Idle::Full);
        }
        match limiter.reserve(job.route(), job.costs(), now) {
            Ok(reservation) if self.rules.shared => {
                self.pending = Some(Pending {
                    seq: job.seq(),
                    reservation,
                    slots,
                });
                Decision::AskShared { seq: job.seq() }
            }
            Ok(reservation) => self.take(now, queue, reservation, slots),
            Err(denied) => self.denied(now, limiter, queue, denied, None),
        }
    }

    /// The shared limiter answered the last [`Decision::AskShared`] at `now`.
    pub fn shared_answer<Q: Queue>(
        &mut self,
        now: Nanos,
        answer: SharedAnswer,
        limiter: &mut Limiter,
        queue: &mut Q,
    ) -> Decision<Q::Job> {
        let Some(pending) = self.pending.take() else {
            return Decision::Idle(Idle::Blocked);
        };
        // Completions may have reordered the queue meanwhile: the answer is for `seq` only.
        let same = queue.peek(now).is_some_and(|j| j.seq() == pending.seq);
        let (denied, shared) = match answer {
            SharedAnswer::Granted { recovered } => {
                if recovered {
                    self.note = None;
                }
                if same && !self.stopping && !self.paused {
                    return self.take(now, queue, pending.reservation, pending.slots);
                }
                limiter.cancel(pending.reservation, now);
                return Decision::ReturnShared { seq: pending.seq };
            }
            SharedAnswer::Wait { at, limit } => (Denied::NotUntil(NotUntil { at }), Some(limit)),
            SharedAnswer::Never(never) => (Denied::Never(never), None),
            SharedAnswer::Unreachable(e) => {
                limiter.cancel(pending.reservation, now);
                self.note = Some(format!(
                    "dispatch paused: {e}; retrying (nothing is admitted meanwhile)"
                ));
                // Asking again at once would spin: nothing goes out before the retry.
                self.hold(now + nanos(SHARED_RETRY));
                self.wake_at(now + nanos(SHARED_RETRY));
                return Decision::Idle(Idle::Blocked);
            }
        };
        limiter.cancel(pending.reservation, now);
        if !same || self.stopping || self.paused {
            return Decision::Idle(Idle::Blocked);
        }
        self.denied(now, limiter, queue, denied, shared)
    }

    /// Takes the next job with its reservation.
    fn take<Q: Queue>(
        &mut self,
        now: Nanos,
        queue: &mut Q,
        reservation: Reservation,
        slots: usize,
    ) -> Decision<Q::Job> {
        let Some(popped) = queue.take(now) else {
            return Decision::Idle(Idle::Empty);
        };
        self.in_flight += slots;
        Decision::Dispatch {
            popped,
            reservation,
            slots,
        }
    }

    /// The next job is refused by the limiter (or, with `shared`, the shared limiter's
    /// binding limit said "not yet").
    fn denied<Q: Queue>(
        &mut self,
        now: Nanos,
        limiter: &Limiter,
        queue: &mut Q,
        denied: Denied,
        shared: Option<usize>,
    ) -> Decision<Q::Job> {
        match denied {
            Denied::NotUntil(n) => self.not_until(now, n.at, limiter, queue, shared),
            Denied::Never(never) if never.spent => {
                if self.rules.refunds_reopen_budget {
                    // Requests in flight may still refund their worst case.
                    if self.in_flight == 0 {
                        let reason = format!("budget `{}` is spent for this run", never.limit);
                        self.stop(End::Paused {
                            reason,
                            until: None,
                        });
                    }
                } else {
                    self.spent = Some(never.limit.clone());
                }
                Decision::Idle(Idle::Spent)
            }
            Denied::Never(why) => match queue.take(now) {
                Some(popped) => Decision::Unsendable { popped, why },
                None => Decision::Idle(Idle::Empty),
            },
        }
    }

    /// The next job fits at `at`: its lane waits if one of its own limits holds it back,
    /// else all dispatch waits (and a long wait on a quota pauses the run).
    fn not_until<Q: Queue>(
        &mut self,
        now: Nanos,
        at: Nanos,
        limiter: &Limiter,
        queue: &mut Q,
        shared: Option<usize>,
    ) -> Decision<Q::Job> {
        let (binding, own_lane) = {
            let Some(job) = queue.peek(now) else {
                return Decision::Idle(Idle::Empty);
            };
            let local = binding_of(limiter, job.route(), job.costs(), now);
            let scoped = |i: Option<usize>| {
                i.and_then(|i| limiter.specs().nth(i))
                    .is_some_and(|spec| spec.scope != Scope::All)
            };
            (local, scoped(local.map(|(i, _)| i)) || scoped(shared))
        };
        let wait = at.saturating_sub(now);
        let long = wait >= nanos(QUOTA_WAIT) || wait > nanos(self.rules.max_wait);
        let binding_index = binding.map(|(i, _)| i);
        if queue.has_lanes() && at > now && own_lane {
            // One of this lane's own limits (a tenant's tier, a kind, a path) holds it
            // back: the other lanes go on meanwhile.
            if long {
                let wait = self.long_wait(limiter, now, binding, shared.map(|i| (i, at)));
                self.lane_quota = wait.or(self.lane_quota.take());
            }
            queue.defer(now, at);
            return Decision::Deferred {
                binding: binding_index,
            };
        }
        self.wake_at(at);
        if shared.is_some() {
            // The shared limiter's "not yet" is known only after asking: asking again
            // before `at` would only hear it again.
            self.hold(at);
        }
        if long {
            if let Some(pause) = self.long_wait(limiter, now, binding, shared.map(|i| (i, at))) {
                self.quota_pause(pause);
            }
        } else {
            self.note = None;
        }
        Decision::Idle(Idle::Limited {
            at,
            binding: binding_index,
        })
    }

    /// Ends a round: a lane deferred just now comes back at its own instant.
    fn idle<Q: Queue, J>(&mut self, now: Nanos, queue: &Q, why: Idle) -> Decision<J> {
        if let Some(at) = queue.next_at().filter(|&t| t > now) {
            self.wake_at(at);
        }
        Decision::Idle(why)
    }

    /// After a round: when every lane left is held back by its own quota, pause like a
    /// run-wide quota.
    pub fn check_lane_quotas(&mut self, now: Nanos, queue: &mut impl Queue) {
        if let Some(at) = queue.next_at().filter(|&t| t > now) {
            self.wake_at(at);
        }
        if self.stopping || self.paused || self.busy() > 0 || queue.is_empty() {
            return;
        }
        let held = queue.peek(now).is_none()
            && queue
                .next_at()
                .is_some_and(|at| at.saturating_sub(now) >= nanos(QUOTA_WAIT));
        if held && let Some(pause) = self.lane_quota.take() {
            self.quota_pause(pause);
        }
    }

    fn quota_pause(&mut self, pause: LongWait) {
        self.note = Some(pause.note);
        if self.rules.on_quota == OnQuota::Exit {
            self.stop(pause.end);
        }
    }

    /// Explains a long wait: which quota holds the next job back and until when. `None`
    /// when the binding limit is not a calendar quota (a slow rate is no reason to pause).
    /// `shared` is the shared limiter's binding limit and instant, if it said "not yet".
    fn long_wait(
        &self,
        limiter: &Limiter,
        now: Nanos,
        local: Option<(usize, Nanos)>,
        shared: Option<(usize, Nanos)>,
    ) -> Option<LongWait> {
        let (spec, at) = [local, shared]
            .into_iter()
            .flatten()
            .filter_map(|(i, at)| Some((limiter.specs().nth(i)?, at)))
            .max_by_key(|(_, at)| *at)?;
        if matches!(spec.kind, LimitKind::Window { per: Some(_), .. })
            && at.saturating_sub(now) >= nanos(QUOTA_WAIT)
        {
            return Some(quota_wait(spec, self.rules.wall_origin, now, at));
        }
        // A limit the provider's headers set (a reset of 300h with nothing remaining)
        // asking for longer than `max_wait` is a quota too; a configured rate that slow is
        // the user's own choice.
        if spec.learn && at.saturating_sub(now) > nanos(self.rules.max_wait) {
            return Some(provider_wait(spec, &self.rules, now, at));
        }
        None
    }

    /// The driver gave up waiting for the shared limiter's answer (the session is over):
    /// the local reservation goes back.
    pub fn abandon(&mut self, now: Nanos, limiter: &mut Limiter) {
        if let Some(pending) = self.pending.take() {
            limiter.cancel(pending.reservation, now);
        }
    }

    /// Whether the session is over: nothing in flight, and stopping or nothing left.
    pub fn is_over(&self, queue: &impl Queue) -> bool {
        self.in_flight == 0 && (self.stopping || queue.is_empty())
    }

    /// A response came back for a job holding `slots`; its result is not committed yet.
    pub fn completed(&mut self, slots: usize) {
        self.in_flight = self.in_flight.saturating_sub(slots);
        self.uncommitted += 1;
    }

    /// The writer committed `n` results: their slots are free.
    pub fn committed(&mut self, n: usize) {
        self.uncommitted = self.uncommitted.saturating_sub(n);
    }

    /// A request's slots are free at once (the estimate, which commits nothing).
    pub fn released(&mut self, slots: usize) {
        self.in_flight = self.in_flight.saturating_sub(slots);
    }

    /// `n` more writes (a failure, an attempt) were handed to the writer: each holds a
    /// slot until committed.
    pub fn handed_to_writer(&mut self, n: usize) {
        self.uncommitted += n;
    }

    /// No dispatch before `until` (a failure storm, or a 429 every request must respect).
    pub fn hold(&mut self, until: Nanos) {
        self.hold_until = self.hold_until.max(until);
    }

    /// Stops dispatching for good; the session ends with `end` once nothing is in flight.
    /// A later reason (a 401 after Ctrl-C) replaces an earlier one.
    pub fn stop(&mut self, end: End) {
        self.stopping = true;
        self.end = end;
    }

    /// Whether a stop was requested or decided.
    pub fn is_stopping(&self) -> bool {
        self.stopping
    }

    /// `ratebound pause` / `resume`: whether dispatch is paused.
    pub fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
    }

    /// Whether dispatch is paused by request.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Replaces the note shown with progress (`None` clears it).
    pub fn set_note(&mut self, note: Option<String>) {
        self.note = note;
    }

    /// The note shown with progress: a quota wait, an outage, starvation.
    pub fn note(&self) -> Option<&str> {
        self.note.as_deref()
    }

    /// The run budget that ended dispatch, when budgets end it at once.
    pub fn spent(&self) -> Option<&str> {
        self.spent.as_deref()
    }

    /// How the session ends: `Finished` turns `Interrupted` when items are left.
    pub fn end(&self, queue: &impl Queue) -> End {
        match &self.end {
            End::Finished if !queue.is_empty() => End::Interrupted,
            end => end.clone(),
        }
    }

    /// Whether a heartbeat is due at `now`; if so, the next is due one [`HEARTBEAT`] later.
    pub fn heartbeat_due(&mut self, now: Nanos) -> bool {
        if now < self.next_heartbeat {
            return false;
        }
        self.next_heartbeat = now + nanos(HEARTBEAT);
        true
    }

    /// When the driver wakes if no input comes first: the earliest of the limiter's "not
    /// before", a hold, a lane's or a retry's instant, and the next heartbeat.
    pub fn wake(&self) -> Nanos {
        self.wake
            .map_or(self.next_heartbeat, |w| w.min(self.next_heartbeat))
    }

    fn wake_at(&mut self, at: Nanos) {
        self.wake = Some(self.wake.map_or(at, |w| w.min(at)));
    }

    fn busy(&self) -> usize {
        self.in_flight + self.uncommitted
    }
}

/// The limit that holds `costs` back longest at `now` (its index among the limiter's
/// limits), and when it lets them through.
fn binding_of(
    limiter: &Limiter,
    route: &Route,
    costs: &Costs,
    now: Nanos,
) -> Option<(usize, Nanos)> {
    let (spec, at) = limiter.binding(route, costs, now)?;
    let index = limiter.specs().position(|s| std::ptr::eq(s, spec))?;
    Some((index, at))
}

/// The note and the end of a wait until `at`, longer than `[retry] max_wait`, on `spec`,
/// a limit the provider's headers set.
fn provider_wait(spec: &LimitSpec, rules: &Rules, now: Nanos, at: Nanos) -> LongWait {
    let until = rules.wall_origin + Duration::from_nanos(at);
    let stamp = humantime::format_rfc3339_seconds(until);
    let left =
        humantime::format_duration(Duration::from_secs(at.saturating_sub(now) / 1_000_000_000));
    let max = humantime::format_duration(rules.max_wait);
    LongWait {
        note: format!(
            "waiting for quota `{}` to reset at {stamp} (in {left}): the API's headers ask for longer than [retry] max_wait ({max})",
            spec.name
        ),
        end: End::Paused {
            reason: format!(
                "the API's limit `{}` admits nothing more until {stamp}, longer than [retry] max_wait ({max})",
                spec.name
            ),
            until: Some(until),
        },
    }
}

/// The note and the end of a wait until `at` on calendar quota `spec`.
fn quota_wait(spec: &LimitSpec, wall_origin: SystemTime, now: Nanos, at: Nanos) -> LongWait {
    let until = wall_origin + Duration::from_nanos(at);
    let stamp = humantime::format_rfc3339_seconds(until);
    let left =
        humantime::format_duration(Duration::from_secs(at.saturating_sub(now) / 1_000_000_000));
    LongWait {
        note: format!(
            "waiting for quota `{}` to reset at {stamp} (in {left})",
            spec.name
        ),
        end: End::Paused {
            reason: format!("quota `{}` is used up until {stamp}", spec.name),
            until: Some(until),
        },
    }
}
