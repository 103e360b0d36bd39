//! The run loop: take a job, reserve, send, classify, settle, checkpoint.
//!
//! Owns the one place where network, store and clock meet. A single dispatcher task owns the
//! limiter and the scheduler (so admission needs no lock): it sends the next job in priority
//! order whenever a worker slot is free and the limiter admits it, and otherwise sleeps until
//! the limiter's "not before" instant, a retry's instant, a completion or a stop request.
//! Each request runs on its own task and reports back through a channel; a multi-request
//! job runs its steps on one task (`steps.rs`) and comes back for each next page.
//!
//! Invariants: an item is marked done only through [`Writer::finish`], which stores its
//! result in the same transaction; a worker slot stays busy until its result is committed,
//! so a crash can resend at most `workers` requests; a 429 makes every dispatch wait for the
//! provider's `Retry-After` (no storm of doomed requests); quota exhaustion, a used-up quota
//! window or a spent budget stop dispatching at once and end the session as paused; a stop
//! request stops dispatching at once and the loop ends only when every request in flight has
//! come back and been recorded.

pub mod feedback;
mod steps;
#[cfg(test)]
mod steps_tests;
#[cfg(test)]
mod tests;
pub mod transport;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, watch};

use crate::clock::{Clock, Nanos, SystemClock, nanos, unix_ms};
use crate::headers::{self, Dialect};
use crate::job::{CostModel, Job};
use crate::limiter::redis::{Admission, RedisLimiter, SharedDenial};
use crate::limiter::{
    Costs, Denied, LimitKind, Limiter, NotUntil, Reservation, Route, Scope, Unit,
};
use crate::report::progress::{Progress, Snapshot};
use crate::retry::{self, OnQuota, Outcome, RetryPolicy, Storm};
use crate::scheduler::{AutoWorkers, Scheduler};
use crate::store::{AttemptRecord, ItemResult, ItemStatus, ProgressRow, Store, StoreError, Writer};
pub use feedback::Feedback;
pub use transport::{Response, Transport, TransportError};

/// A limiter wait at least this long on a quota window is a paused quota, not a rate.
const QUOTA_WAIT: Duration = Duration::from_secs(60);

/// How soon dispatch asks an unreachable shared limiter again.
const SHARED_RETRY: Duration = Duration::from_millis(250);

/// How often progress is written to the store and shown.
const HEARTBEAT: Duration = Duration::from_millis(500);

/// Settings of one run session.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Most requests in flight at once.
    pub workers: usize,
    /// `workers.max = "auto"`: the pool is sized from latency and the binding rate, up to
    /// `workers`.
    pub auto_workers: Option<AutoWorkers>,
    /// Retry policy for transient failures.
    pub retry: RetryPolicy,
    /// The rate-limit header dialect of the API (`auto` detects it).
    pub dialect: Dialect,
}

/// Counts carried over from earlier sessions of the same run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Before {
    /// Items in the run.
    pub total: u64,
    /// Items already done.
    pub done: u64,
    /// Items already failed.
    pub failed: u64,
    /// Requests sent in earlier sessions.
    pub sent: u64,
    /// 429s seen in earlier sessions.
    pub rate_limited: u64,
    /// Retries in earlier sessions.
    pub retries: u64,
    /// Active time of earlier sessions.
    pub elapsed: Duration,
}

/// How a session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// Every item is done or failed.
    Finished,
    /// A stop was requested; unfinished items stay pending.
    Interrupted,
    /// A budget is spent, a quota is used up (or reached its `pause_at`), or the provider
    /// says the account's quota is exhausted; items stay pending.
    Paused {
        /// What ran out, for the user.
        reason: String,
        /// When it resets, if known.
        until: Option<SystemTime>,
    },
    /// The API refused the credentials (401/403); items stay pending.
    AuthRefused {
        /// The status code.
        status: u16,
        /// The start of the response body.
        body: String,
    },
}

/// What a session did.
#[derive(Clone, Debug)]
pub struct Summary {
    /// How it ended.
    pub end: End,
    /// Totals, including earlier sessions.
    pub snapshot: Snapshot,
    /// This session's wall time.
    pub session: Duration,
    /// Requests sent in this session.
    pub session_sent: u64,
}

/// Why a run could not go on.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The store failed; results since the last commit may need redoing.
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct Completion {
    job: Job,
    reservation: Reservation,
    /// What had been dispatched before the wave this request went out in.
    dispatched_before: Dispatched,
    /// Worker slots it holds: one per request it may have in flight at once.
    slots: usize,
    sent_at_ms: u64,
    latency: Duration,
    result: Result<Response, TransportError>,
    /// A multi-request job's other requests of this dispatch, sent before `result`'s.
    earlier: Vec<steps::Sent>,
    /// What was really sent, to settle the reservation to (`None`: `job.costs`).
    sent_costs: Option<Costs>,
    /// Why a multi-request job cannot go on (a step could not be rendered).
    broken: Option<String>,
}

/// One session of a run over `jobs`, until all are finished or a stop is requested.
pub struct Runner<T: Transport> {
    /// Sends the requests.
    pub transport: Arc<T>,
    /// Real (or paused tokio) time.
    pub clock: SystemClock,
    /// Admission across every configured limit.
    pub limiter: Limiter,
    /// The limits shared with other runners (`[limiter] backend`): every admission is also
    /// taken there, after the local limiter's.
    pub shared: Option<RedisLimiter>,
    /// Jobs waiting to be sent.
    pub scheduler: Scheduler<Job>,
    /// The store's single writer.
    pub writer: Writer,
    /// Progress display.
    pub progress: Progress,
    /// Session settings.
    pub settings: Settings,
    /// Turns responses' usage into actual costs.
    pub cost_model: CostModel,
    /// Counts from earlier sessions.
    pub before: Before,
    /// A reader of the run's db for control flags (`ratebound pause` / `resume`), if any.
    pub control: Option<Store>,
    /// Provider feedback: what the rate-limit headers taught the limiter.
    pub feedback: Feedback,
    /// No dispatch before this instant after a failure storm.
    pub hold_after_storm: Nanos,
}

struct Counters {
    done: u64,
    failed: u64,
    sent: u64,
    rate_limited: u64,
    retries: u64,
    in_flight: usize,
    /// Attempts and results handed to the writer but not yet committed.
    uncommitted: usize,
    /// Everything dispatched in this session.
    dispatched: Dispatched,
    /// Requests dispatched when the run last reacted to a 429.
    reacted_to_429: u64,
}

/// Worker slots `job` needs: its requests (all of a multi-request job's may go out at
/// once), at least one, at most every worker.
fn slots_of(job: &Job, workers: usize) -> usize {
    let requests = usize::try_from(job.costs.get(&Unit::Requests)).unwrap_or(usize::MAX);
    requests.clamp(1, workers.max(1))
}

/// Running totals of what was dispatched, so that a response's rate-limit headers can be
/// corrected for the requests the provider had not counted yet when it answered.
#[derive(Clone, Copy, Debug, Default)]
struct Dispatched {
    requests: u64,
    tokens: u64,
}

impl Dispatched {
    /// What went out since `before`, not counting the request itself: requests sent in the
    /// same wave may reach the provider in any order, so all of them count as unseen.
    fn since(self, before: Dispatched, own: &Costs) -> Costs {
        let own_tokens = own.get(&Unit::Tokens);
        Costs::default()
            .with(
                Unit::Requests,
                (self.requests - before.requests).saturating_sub(1),
            )
            .with(
                Unit::Tokens,
                (self.tokens - before.tokens).saturating_sub(own_tokens),
            )
    }
}

impl<T: Transport> Runner<T> {
    /// Runs until every job is finished, a stop is requested through `stop` (any change of
    /// its value), or the API refuses the credentials.
    pub async fn run(mut self, mut stop: watch::Receiver<u32>) -> Result<Summary, RunError> {
        let session_start = Instant::now();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Completion>();
        let Some(mut committed) = self.writer.take_committed() else {
            return Err(RunError::Store(StoreError::WriterGone {
                path: std::path::PathBuf::new(),
                message: "the writer's commit reports were already taken".into(),
            }));
        };
        let mut c = Counters {
            done: 0,
            failed: 0,
            sent: 0,
            rate_limited: 0,
            retries: 0,
            in_flight: 0,
            uncommitted: 0,
            dispatched: Dispatched::default(),
            reacted_to_429: 0,
        };
        let mut stopping = false;
        let mut paused = false;
        let mut note: Option<String> = None;
        let mut storm = Storm::default();
        let mut end = End::Finished;
        let mut hold_until: Nanos = 0;
        let mut consecutive_429 = 0u32;
        let mut next_heartbeat: Nanos = 0;
        // The latest lane held back by one of its own quotas for a long wait.
        let mut lane_quota: Option<LongWait> = None;
        loop {
            let now = self.clock.now();
            // A retry already due is promoted by the next dispatch attempt; waking for it
            // again now would spin while dispatch is held.
            let mut wake = self.scheduler.next_at().filter(|&t| t > now);
            if !stopping && !paused {
                // A worker slot is busy from sending until the result is durable, so a crash
                // can only lose (and a rerun resend) at most `workers` requests.
                let wave = c.dispatched;
                while c.in_flight + c.uncommitted < self.workers() {
                    hold_until = hold_until.max(self.hold_after_storm);
                    if now < hold_until {
                        wake = earliest(wake, hold_until);
                        break;
                    }
                    let lanes = !self.scheduler.is_plain();
                    let workers = self.workers();
                    let Some(job) = self.scheduler.peek(now) else {
                        break;
                    };
                    // A multi-request job may send all its requests at once: one slot each.
                    let slots = slots_of(job, workers);
                    if c.in_flight + c.uncommitted + slots > workers {
                        break;
                    }
                    let mut admitted = self.limiter.reserve(&job.route, &job.costs, now);
                    let mut shared_binding = None;
                    if admitted.is_ok()
                        && let Some(shared) = self.shared.as_mut()
                    {
                        // The one async step of admission: the shared limits, atomically
                        // across runners. Any answer but a grant hands the local one back.
                        let answer = shared.admit(job.seq, &job.route, &job.costs).await;
                        if !matches!(answer, Admission::Granted { .. })
                            && let Ok(reservation) = admitted
                        {
                            self.limiter.cancel(reservation, now);
                            admitted = Err(Denied::NotUntil(NotUntil { at: now }));
                        }
                        match answer {
                            Admission::Granted { recovered } => {
                                if recovered {
                                    note = None;
                                }
                            }
                            Admission::Denied(SharedDenial::Wait { wait, limit }) => {
                                let at = self.clock.now() + nanos(wait);
                                admitted = Err(Denied::NotUntil(NotUntil { at }));
                                shared_binding = Some((limit, at));
                            }
                            Admission::Denied(SharedDenial::Never(never)) => {
                                admitted = Err(Denied::Never(never));
                            }
                            Admission::Unreachable(e) => {
                                note = Some(format!(
                                    "dispatch paused: {e}; retrying (nothing is admitted meanwhile)"
                                ));
                                wake = earliest(wake, now + nanos(SHARED_RETRY));
                                break;
                            }
                        }
                    }
                    match admitted {
                        Ok(reservation) => {
                            let Some(popped) = self.scheduler.pop_timed(now) else {
                                break;
                            };
                            if popped.starved {
                                self.report_starved(&popped.job, popped.waited);
                            }
                            c.dispatched.requests += popped.job.costs.get(&Unit::Requests).max(1);
                            c.dispatched.tokens += popped.job.costs.get(&Unit::Tokens);
                            self.dispatch(popped.job, reservation, wave, slots, &done_tx);
                            c.in_flight += slots;
                        }
                        Err(Denied::NotUntil(n))
                            if lanes
                                && (self
                                    .limiter
                                    .binding(&job.route, &job.costs, now)
                                    .is_some_and(|(spec, _)| spec.scope != Scope::All)
                                    // Or the shared limiter's answer names a scoped limit.
                                    || shared_binding
                                        .and_then(|(i, _)| self.limiter.specs().nth(i))
                                        .is_some_and(|spec| spec.scope != Scope::All)) =>
                        {
                            // One of this lane's own limits (a tenant's tier, a kind, a
                            // path) holds it back: the other lanes go on meanwhile.
                            if n.at.saturating_sub(now) >= nanos(QUOTA_WAIT) {
                                let (route, costs) = (job.route.clone(), job.costs.clone());
                                lane_quota = self
                                    .long_wait(&route, &costs, now, shared_binding)
                                    .or(lane_quota);
                            }
                            self.scheduler.defer(now, n.at);
                        }
                        Err(Denied::NotUntil(n)) => {
                            if let Some(auto) = &mut self.settings.auto_workers {
                                auto.on_limited();
                            }
                            wake = earliest(wake, n.at);
                            if n.at.saturating_sub(now) >= nanos(QUOTA_WAIT) {
                                let (route, costs) = (job.route.clone(), job.costs.clone());
                                if let Some(pause) =
                                    self.long_wait(&route, &costs, now, shared_binding)
                                {
                                    note = Some(pause.note);
                                    if self.settings.retry.on_quota == OnQuota::Exit {
                                        stopping = true;
                                        end = pause.end;
                                    }
                                }
                            } else {
                                note = None;
                            }
                            break;
                        }
                        Err(Denied::Never(never)) if never.spent => {
                            // Requests in flight may still refund their worst case.
                            if c.in_flight == 0 {
                                stopping = true;
                                end = End::Paused {
                                    reason: format!(
                                        "budget `{}` is spent for this run",
                                        never.limit
                                    ),
                                    until: None,
                                };
                            }
                            break;
                        }
                        Err(Denied::Never(never)) => {
                            let Some(popped) = self.scheduler.pop_timed(now) else {
                                break;
                            };
                            self.scheduler.finished(popped.lane);
                            let job = popped.job;
                            self.fail_unsendable(&job, &never.to_string())?;
                            c.failed += 1;
                            c.uncommitted += 1;
                        }
                    }
                }
                // A lane deferred just now comes back at its own instant.
                if let Some(at) = self.scheduler.next_at().filter(|&t| t > now) {
                    wake = earliest(wake, at);
                }
            }
            // Every lane left is held back by its own quota: pause like a run-wide quota.
            if !stopping
                && !paused
                && c.in_flight + c.uncommitted == 0
                && !self.scheduler.is_empty()
                && self.scheduler.peek(now).is_none()
                && self
                    .scheduler
                    .next_at()
                    .is_some_and(|at| at.saturating_sub(now) >= nanos(QUOTA_WAIT))
                && let Some(pause) = lane_quota.take()
            {
                note = Some(pause.note);
                if self.settings.retry.on_quota == OnQuota::Exit {
                    stopping = true;
                    end = pause.end;
                }
            }
            if c.in_flight == 0 && (stopping || self.scheduler.is_empty()) {
                break;
            }
            if now >= next_heartbeat {
                if let Some(control) = &self.control {
                    let asked = control.is_paused()?;
                    if asked != paused {
                        paused = asked;
                        tracing::info!(paused, "pause flag changed");
                    }
                }
                for s in self.scheduler.starving(now) {
                    let policy = self.scheduler.policy();
                    let class = policy
                        .classes
                        .get(usize::from(s.class))
                        .map_or("", |c| c.name.as_str());
                    let tenant = policy
                        .tenants
                        .get(s.tenant as usize)
                        .map_or("", |t| t.name.as_str());
                    let waited =
                        humantime::format_duration(Duration::from_secs(s.waited / 1_000_000_000));
                    tracing::warn!(class, tenant, waited = %waited, "starving: work waiting longer than starvation_after without a dispatch");
                    note = Some(format!(
                        "starving: tenant `{tenant}` (class `{class}`) has waited {waited} without a dispatch"
                    ));
                }
                let state = if paused { "paused" } else { "running" };
                self.heartbeat(&c, state, session_start, note.clone())?;
                next_heartbeat = now + nanos(HEARTBEAT);
            }
            wake = earliest(wake, next_heartbeat);
            let deadline = self.clock.instant_at(wake.unwrap_or(next_heartbeat));
            tokio::select! {
                Some(first) = done_rx.recv() => {
                    let mut next = Some(first);
                    while let Some(done) = next {
                        c.in_flight -= done.slots;
                        c.uncommitted += 1;
                        let now = self.clock.now();
                        match self.complete(done, now, &mut c, &mut consecutive_429, &mut storm)? {
                            Step::Continue => {}
                            Step::Hold(until) => hold_until = hold_until.max(until),
                            Step::Stop(why) => {
                                stopping = true;
                                end = why;
                            }
                        }
                        next = done_rx.try_recv().ok();
                    }
                }
                Some(n) = committed.recv() => {
                    c.uncommitted = c.uncommitted.saturating_sub(usize::try_from(n).unwrap_or(usize::MAX));
                }
                () = tokio::time::sleep_until(deadline) => {}
                Ok(()) = stop.changed(), if !stopping => {
                    stopping = true;
                    end = End::Interrupted;
                }
            }
        }
        if end == End::Finished && !self.scheduler.is_empty() {
            end = End::Interrupted;
        }
        let state = match &end {
            End::Finished if self.scheduler.is_empty() => "finished",
            End::Paused { .. } => "paused",
            _ => "stopped",
        };
        let snapshot = self.heartbeat(&c, state, session_start, None)?;
        self.writer.flush().await?;
        self.progress.finish(&snapshot);
        Ok(Summary {
            end,
            snapshot,
            session: session_start.elapsed(),
            session_sent: c.sent,
        })
    }

    /// Requests in flight allowed now: the configured pool, or the auto-sized one.
    fn workers(&self) -> usize {
        self.settings
            .auto_workers
            .as_ref()
            .map_or(self.settings.workers, AutoWorkers::target)
    }

    /// Settles job `seq`'s reservation to `used`, in the local limiter and the shared one.
    /// A failed attempt keeps charged what went out (the provider may have counted it): the
    /// whole estimate of a one-request job, only the sent requests of a multi-request job,
    /// whose unsent steps go back.
    fn settle(&mut self, reservation: Reservation, seq: u64, used: &Costs, now: Nanos) {
        self.limiter.settle(reservation, used, now);
        if let Some(shared) = self.shared.as_mut() {
            shared.settle_later(seq, used);
        }
    }

    /// Logs a job that waited longer than `starvation_after` for its turn.
    fn report_starved(&self, job: &Job, waited: Nanos) {
        let waited = humantime::format_duration(Duration::from_millis(waited / 1_000_000));
        tracing::warn!(item = %job.id, waited = %waited, "starved: the item waited longer than starvation_after");
    }

    /// Explains a long wait: which quota holds the next job back and until when. `None`
    /// when the binding limit is not a calendar quota (a slow rate is no reason to pause).
    /// `shared` is the shared limiter's binding limit (config index) and instant, if it
    /// said "not yet".
    fn long_wait(
        &self,
        route: &Route,
        costs: &Costs,
        now: Nanos,
        shared: Option<(usize, Nanos)>,
    ) -> Option<LongWait> {
        let local = self.limiter.binding(route, costs, now);
        let shared = shared.and_then(|(i, at)| Some((self.limiter.specs().nth(i)?, at)));
        let (spec, at) = [local, shared]
            .into_iter()
            .flatten()
            .max_by_key(|(_, at)| *at)?;
        if !matches!(spec.kind, LimitKind::Window { per: Some(_), .. }) {
            return None;
        }
        let until = self.clock.wall_at(at);
        let stamp = humantime::format_rfc3339_seconds(until);
        let left =
            humantime::format_duration(Duration::from_secs(at.saturating_sub(now) / 1_000_000_000));
        Some(LongWait {
            note: format!(
                "waiting for quota `{}` to reset at {stamp} (in {left})",
                spec.name
            ),
            end: End::Paused {
                reason: format!("quota `{}` is used up until {stamp}", spec.name),
                until: Some(until),
            },
        })
    }

    fn dispatch(
        &self,
        job: Job,
        reservation: Reservation,
        dispatched_before: Dispatched,
        slots: usize,
        done_tx: &mpsc::UnboundedSender<Completion>,
    ) {
        let transport = Arc::clone(&self.transport);
        let done_tx = done_tx.clone();
        let sent_at_ms = unix_ms(self.clock.wall());
        if job.steps.is_some() {
            let clock = self.clock.clone();
            let window_end = self.limiter.window_end(&job.route, self.clock.now());
            tokio::spawn(async move {
                let done = steps::run(transport, clock, job, reservation, window_end).await;
                let done = Completion {
                    dispatched_before,
                    slots,
                    ..done
                };
                let _ = done_tx.send(done);
            });
            return;
        }
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let result = transport.send(&job.request).await;
            // The receiver is gone only when the run was aborted; nothing to record then.
            let _ = done_tx.send(Completion {
                job,
                reservation,
                dispatched_before,
                slots,
                sent_at_ms,
                latency: started.elapsed(),
                result,
                earlier: Vec::new(),
                sent_costs: None,
                broken: None,
            });
        });
    }

    fn complete(
        &mut self,
        done: Completion,
        now: Nanos,
        c: &mut Counters,
        consecutive_429: &mut u32,
        storm: &mut Storm,
    ) -> Result<Step, RunError> {
        let Completion {
            mut job,
            reservation,
            dispatched_before,
            slots: _,
            sent_at_ms,
            latency,
            result,
            earlier,
            sent_costs,
            broken,
        } = done;
        let sent_costs = sent_costs.unwrap_or_else(|| job.costs.clone());
        // The job is out of flight on every path below: its lane's caps take it off.
        self.scheduler.finished(job.lane);
        if job.steps.is_some()
            && let Some(why) = self.absorb_steps(&mut job, earlier, broken, c)?
        {
            self.settle(reservation, job.seq, &sent_costs, now);
            self.fail_unsendable(&job, &why)?;
            c.failed += 1;
            return Ok(Step::Continue);
        }
        job.attempts += 1;
        c.sent += 1;
        if let Some(auto) = &mut self.settings.auto_workers {
            auto.observe(latency);
        }
        if job.attempts > 1 && job.steps.as_deref().is_none_or(|s| s.retrying) {
            c.retries += 1;
        }
        let response = match &result {
            Ok(r) => retry::Response::Status(r.status),
            Err(TransportError::Timeout) => retry::Response::Timeout,
            Err(TransportError::Connection(_)) => retry::Response::Connection,
        };
        let latency_ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        let (http_status, headers, body) = match &result {
            Ok(r) => (
                Some(r.status),
                r.headers.as_slice(),
                Some(String::from_utf8_lossy(&r.body).into_owned()),
            ),
            Err(_) => (None, &[][..], None),
        };
        let outcome = retry::classify_body(
            response,
            body.as_deref().unwrap_or_default(),
            &self.settings.retry.quota_markers,
        );
        if let Some(steps) = job.steps.as_deref_mut() {
            steps.retrying = outcome != Outcome::Done;
        }
        let wall = self.clock.wall();
        let observed = headers::observe(headers, wall, self.settings.dialect);
        let unseen = c.dispatched.since(dispatched_before, &job.costs);
        self.feedback
            .apply(&observed, &mut self.limiter, now, &unseen);
        let error = result.as_ref().err().map(ToString::to_string);
        let attempt = AttemptRecord {
            seq: job.seq,
            attempt: job.attempts,
            sent_at_ms,
            latency_ms,
            http_status,
            outcome: outcome_name(outcome),
            error: error.clone(),
        };
        let retry_after = observed.retry_after;
        if outcome != Outcome::RateLimited {
            *consecutive_429 = 0;
        }
        let failing = outcome == Outcome::Transient;
        if matches!(outcome, Outcome::Done | Outcome::Transient)
            && storm.record(failing, self.settings.retry.storm_share)
        {
            let wait = self
                .settings
                .retry
                .backoff(storm.pauses, 0.5 + rand::random::<f64>() / 2.0, None)
                .max(Duration::from_secs(1));
            tracing::warn!(
                pause_s = wait.as_secs_f64(),
                "failure storm: most recent responses failed; pausing dispatch"
            );
            self.hold_after_storm = now + nanos(wait);
        }
        match outcome {
            Outcome::Done => {
                if observed.limits.is_empty() {
                    self.feedback
                        .on_success_without_headers(&mut self.limiter, now);
                }
                let usage = body.as_deref().and_then(usage_of);
                let actual = match &usage {
                    Some(u) => self.cost_model.actual(&sent_costs, job.model.as_deref(), u),
                    None => sent_costs,
                };
                self.settle(reservation, job.seq, &actual, now);
                let body = match job.steps.as_deref() {
                    Some(steps) if !steps.is_finished() => {
                        // A next page, or steps past the window the job was admitted in:
                        // the rest comes back through the limiter.
                        self.writer.attempt(attempt)?;
                        self.scheduler
                            .enqueue(now, job.lane, job.priority, job.seq, job);
                        return Ok(Step::Continue);
                    }
                    Some(steps) => Some(steps.result_body()),
                    None => body,
                };
                self.writer.finish(ItemResult {
                    seq: job.seq,
                    status: ItemStatus::Done,
                    attempts: job.attempts,
                    http_status,
                    body,
                    usage: usage.map(|u| u.to_string()),
                    latency_ms,
                    error: None,
                    last_attempt: attempt,
                })?;
                c.done += 1;
                Ok(Step::Continue)
            }
            Outcome::RateLimited => {
                // A rejected request consumed nothing at the provider's token bucket, but
                // the request bucket is evidently empty: keep the request, refund tokens.
                let keep = Costs::default().with(Unit::Requests, sent_costs.get(&Unit::Requests));
                self.settle(reservation, job.seq, &keep, now);
                c.rate_limited += 1;
                self.writer.attempt(attempt)?;
                if observed.limits.is_empty() && retry_after.is_none() {
                    // No headers at all: search for the sustainable rate instead of backing
                    // off in whole seconds.
                    self.feedback
                        .on_rate_limited_without_headers(&mut self.limiter, now);
                    self.scheduler
                        .enqueue(now, job.lane, job.priority, job.seq, job);
                    return Ok(Step::Continue);
                }
                // 429s to requests already in flight when the run reacted to a 429 are the
                // same signal, not a new one: they neither grow the backoff nor hold all
                // dispatch again (a refused wave would otherwise back off exponentially).
                let fresh = dispatched_before.requests >= c.reacted_to_429;
                if fresh {
                    *consecutive_429 += 1;
                    c.reacted_to_429 = c.dispatched.requests;
                }
                let wait = self
                    .settings
                    .retry
                    .backoff(*consecutive_429, rand::random::<f64>(), retry_after)
                    .max(Duration::from_millis(50));
                let until = now + nanos(wait);
                self.scheduler
                    .enqueue_at(until, job.lane, job.priority, job.seq, job);
                if !fresh || (!observed.limits.is_empty() && *consecutive_429 == 1) {
                    // The 429's own rate-limit headers have just resynced the limiter, which
                    // now holds back what the provider would refuse: only this item waits
                    // for `Retry-After` (often whole seconds for a wait of milliseconds). A
                    // second 429 in a row means the headers do not tell the whole story:
                    // then all dispatch waits.
                    return Ok(Step::Continue);
                }
                Ok(Step::Hold(until))
            }
            Outcome::Transient => {
                self.settle(reservation, job.seq, &sent_costs, now);
                job.failures += 1;
                if self.settings.retry.allows_another(job.failures) {
                    let wait = self.settings.retry.backoff(
                        job.failures,
                        rand::random::<f64>(),
                        retry_after,
                    );
                    self.writer.attempt(attempt)?;
                    self.scheduler.enqueue_at(
                        now + nanos(wait),
                        job.lane,
                        job.priority,
                        job.seq,
                        job,
                    );
                } else {
                    let why = format!(
                        "gave up after {} transient failures; last: {}",
                        job.failures,
                        error
                            .clone()
                            .unwrap_or_else(|| format!("HTTP {}", http_status.unwrap_or(0)))
                    );
                    self.finish_failed(job, attempt, http_status, body, latency_ms, why)?;
                    c.failed += 1;
                }
                Ok(Step::Continue)
            }
            Outcome::Failed => {
                self.settle(reservation, job.seq, &sent_costs, now);
                let why = format!(
                    "HTTP {}: the API refused this item",
                    http_status.unwrap_or(0)
                );
                self.finish_failed(job, attempt, http_status, body, latency_ms, why)?;
                c.failed += 1;
                Ok(Step::Continue)
            }
            Outcome::QuotaExhausted => {
                self.settle(reservation, job.seq, &sent_costs, now);
                self.writer.attempt(attempt)?;
                let until = observed
                    .limits
                    .iter()
                    .filter(|o| o.remaining == Some(0))
                    .filter_map(|o| o.reset)
                    .max()
                    .map(|reset| wall + reset);
                self.scheduler
                    .enqueue(now, job.lane, job.priority, job.seq, job);
                Ok(Step::Stop(End::Paused {
                    reason: "the API says the account's quota is exhausted".to_string(),
                    until,
                }))
            }
            Outcome::Fatal => {
                self.settle(reservation, job.seq, &sent_costs, now);
                self.writer.attempt(attempt)?;
                let status = http_status.unwrap_or(0);
                let excerpt: String = body.unwrap_or_default().chars().take(300).collect();
                self.scheduler
                    .enqueue(now, job.lane, job.priority, job.seq, job);
                Ok(Step::Stop(End::AuthRefused {
                    status,
                    body: excerpt,
                }))
            }
        }
    }

    fn finish_failed(
        &mut self,
        job: Job,
        attempt: AttemptRecord,
        http_status: Option<u16>,
        body: Option<String>,
        latency_ms: u64,
        why: String,
    ) -> Result<(), StoreError> {
        let why = match job.steps.as_deref().and_then(|s| s.failed_step.as_deref()) {
            Some(step) => format!("step `{step}`: {why}"),
            None => why,
        };
        self.writer.finish(ItemResult {
            seq: job.seq,
            status: ItemStatus::Failed,
            attempts: job.attempts,
            http_status,
            body,
            usage: None,
            latency_ms,
            error: Some(why),
            last_attempt: attempt,
        })
    }

    fn fail_unsendable(&mut self, job: &Job, why: &str) -> Result<(), StoreError> {
        let attempt = AttemptRecord {
            seq: job.seq,
            attempt: job.attempts,
            sent_at_ms: unix_ms(self.clock.wall()),
            latency_ms: 0,
            http_status: None,
            outcome: "failed",
            error: Some(why.to_string()),
        };
        self.finish_failed(
            job.clone(),
            attempt,
            None,
            None,
            0,
            format!("not sent: {why}"),
        )
    }

    fn heartbeat(
        &mut self,
        c: &Counters,
        state: &str,
        session_start: Instant,
        note: Option<String>,
    ) -> Result<Snapshot, StoreError> {
        let now = self.clock.now();
        let elapsed = self.before.elapsed + session_start.elapsed();
        let snapshot = Snapshot {
            total: self.before.total,
            done: self.before.done + c.done,
            failed: self.before.failed + c.failed,
            in_flight: c.in_flight as u64,
            sent: self.before.sent + c.sent,
            rate_limited: self.before.rate_limited + c.rate_limited,
            retries: self.before.retries + c.retries,
            elapsed,
            limits: self.limiter.usage(now),
            note,
        };
        self.writer.progress(ProgressRow {
            state: state.to_string(),
            pid: std::process::id(),
            heartbeat_ms: unix_ms(self.clock.wall()),
            elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            in_flight: c.in_flight as u64,
            limits: snapshot.limits.clone(),
            limiter_state: self.limiter.save(&self.clock),
        })?;
        self.progress.update(&snapshot);
        Ok(snapshot)
    }
}

/// A long wait on a quota: what to show while waiting, and how the run ends if it may not
/// wait.
struct LongWait {
    note: String,
    end: End,
}

enum Step {
    Continue,
    Hold(Nanos),
    Stop(End),
}

fn earliest(a: Option<Nanos>, b: Nanos) -> Option<Nanos> {
    Some(a.map_or(b, |a| a.min(b)))
}

fn outcome_name(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Done => "done",
        Outcome::RateLimited => "rate_limited",
        Outcome::Transient => "transient",
        Outcome::Failed => "failed",
        Outcome::Fatal => "fatal",
        Outcome::QuotaExhausted => "quota_exhausted",
    }
}

fn usage_of(body: &str) -> Option<serde_json::Value> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    value.get("usage").filter(|u| !u.is_null()).cloned()
}
