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
#[cfg(test)]
mod reach_tests;
#[cfg(test)]
mod search_tests;
#[cfg(test)]
mod shared_tests;
mod steps;
#[cfg(test)]
mod steps_tests;
#[cfg(test)]
mod tests;
pub mod transport;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, watch};

use crate::clock::{Clock, Nanos, SystemClock, nanos, unix_ms};
use crate::dispatch::{Decision, Dispatcher, Idle, Rules, SharedAnswer, Ticket};
use crate::headers::{self, Dialect, Observations};
use crate::job::{CostModel, Job};
use crate::limiter::{BucketState, Costs, Limiter, Reservation, Route, Unit};
use crate::report::progress::Progress;
use crate::retry::{self, Outcome, RetryPolicy, Storm};
use crate::scheduler::{AutoWorkers, Scheduler};
use crate::session::Snapshot;
pub use crate::session::{Before, End, RunState, Summary};
use crate::shared::{Admission, SharedDenial, SharedLimiter};
use crate::store::{AttemptRecord, ItemResult, ItemStatus, ProgressRow, Store, StoreError, Writer};
pub use feedback::{Bare, Feedback};
pub use transport::{Response, Transport, TransportError};

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
    /// Seed of the backoff jitter (tests fix it; `run` draws one per session).
    pub jitter_seed: u64,
}

/// Why a run could not go on.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The store failed; results since the last commit may need redoing.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The queue could not load the next page of jobs from the store.
    #[error("cannot load the next jobs from the queue")]
    Queue(#[source] crate::scheduler::FeedError),
}

struct Completion {
    job: Job,
    reservation: Reservation,
    /// What had been dispatched before the wave this request went out in.
    dispatched_before: Dispatched,
    /// Worker slots it holds: one per request it may have in flight at once.
    slots: usize,
    sent_at_ms: u64,
    /// When the deciding request went out (the runner's clock): what the rate search
    /// measures by, exact however long the completion waited to be read.
    sent_at: Nanos,
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
    /// taken there, after the local limiter's (awaited inside the loop's `select!`).
    pub shared: Option<Arc<dyn SharedLimiter>>,
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
    /// Draws the backoff jitter, from [`Settings::jitter_seed`].
    rng: StdRng,
    done: u64,
    failed: u64,
    sent: u64,
    rate_limited: u64,
    retries: u64,
    /// Everything dispatched in this session.
    dispatched: Dispatched,
    /// Requests dispatched when the run last reacted to a 429.
    reacted_to_429: u64,
    /// 429s in a row that each were a fresh signal.
    consecutive_429: u32,
    /// The recent share of failures, for failure storms.
    storm: Storm,
}

impl Counters {
    fn new(seed: u64) -> Counters {
        Counters {
            rng: StdRng::seed_from_u64(seed),
            done: 0,
            failed: 0,
            sent: 0,
            rate_limited: 0,
            retries: 0,
            dispatched: Dispatched::default(),
            reacted_to_429: 0,
            consecutive_429: 0,
            storm: Storm::default(),
        }
    }
}

/// A response (or a failure) read and classified, ready for its outcome's handler.
struct Answered {
    job: Job,
    reservation: Reservation,
    dispatched_before: Dispatched,
    /// What was really sent, to settle the reservation to.
    sent_costs: Costs,
    outcome: Outcome,
    observed: Observations,
    attempt: AttemptRecord,
    http_status: Option<u16>,
    body: Option<String>,
    latency_ms: u64,
    /// When the deciding request went out (the runner's clock; 0 if it never reached the
    /// API), for the rate search.
    sent_at: Nanos,
    error: Option<String>,
    /// The wall time the response was read at.
    wall: SystemTime,
}

impl Answered {
    /// A 503 with neither rate-limit headers nor `Retry-After`: load shed (nginx's
    /// `limit_req` answers so by default).
    fn is_shed(&self) -> bool {
        self.outcome == Outcome::Transient
            && self.http_status == Some(503)
            && self.observed.limits.is_empty()
            && self.observed.retry_after.is_none()
    }

    /// An attempt that never reached the API: only its job, reservation and error matter.
    fn unreached(
        job: Job,
        reservation: Reservation,
        result: Result<Response, TransportError>,
        wall: SystemTime,
    ) -> Answered {
        let error = result.err().map(|e| e.to_string());
        Answered {
            attempt: AttemptRecord {
                seq: job.seq,
                attempt: job.attempts,
                sent_at_ms: unix_ms(wall),
                latency_ms: 0,
                http_status: None,
                outcome: Outcome::Unreachable.as_str(),
                error: error.clone(),
            },
            job,
            reservation,
            dispatched_before: Dispatched::default(),
            sent_costs: Costs::default(),
            outcome: Outcome::Unreachable,
            observed: Observations::default(),
            http_status: None,
            body: None,
            latency_ms: 0,
            sent_at: 0,
            error,
            wall,
        }
    }
}

impl Ticket for Job {
    fn route(&self) -> &Route {
        &self.route
    }
    fn costs(&self) -> &Costs {
        &self.costs
    }
    fn seq(&self) -> u64 {
        self.seq
    }
}

/// The shared limiter's answer, awaited inside the loop's `select!`.
type Asking = Pin<Box<dyn Future<Output = SharedAnswer> + Send>>;

/// What the dispatch round does after one decision.
enum Flow {
    /// Ask the core again.
    Again,
    /// Nothing more goes out now.
    Idle,
    /// Wait for the shared limiter's answer.
    Ask(Asking),
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
        let session_start = self.clock.now();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Completion>();
        let Some(mut committed) = self.writer.take_committed() else {
            return Err(RunError::Store(StoreError::WriterGone {
                path: std::path::PathBuf::new(),
                message: "the writer's commit reports were already taken".into(),
            }));
        };
        let mut core = self.dispatcher();
        let mut c = Counters::new(self.settings.jitter_seed);
        // The shared limiter's answer being awaited, if any.
        let mut asking: Option<Asking> = None;
        loop {
            let now = self.clock.now();
            if let Some(ask) = self.dispatch_round(now, &mut core, &mut c, &done_tx)? {
                asking = Some(ask);
            }
            core.check_lane_quotas(now, &mut self.scheduler);
            if core.is_over(&self.scheduler) {
                // A stop while the shared limiter was slow: its answer no longer matters.
                core.abandon(now, &mut self.limiter);
                break;
            }
            if core.heartbeat_due(now) {
                self.beat(&mut core, &c, now, session_start)?;
            }
            let deadline = self.clock.instant_at(core.wake());
            tokio::select! {
                Some(first) = done_rx.recv() => {
                    let mut next = Some(first);
                    while let Some(done) = next {
                        core.completed(done.slots);
                        let now = self.clock.now();
                        self.complete(done, now, &mut c, &mut core)?;
                        next = done_rx.try_recv().ok();
                    }
                }
                answer = async {
                    match asking.as_mut() {
                        Some(ask) => ask.await,
                        None => std::future::pending().await,
                    }
                }, if asking.is_some() => {
                    asking = None;
                    let now = self.clock.now();
                    let decision =
                        core.shared_answer(now, answer, &mut self.limiter, &mut self.scheduler);
                    let wave = c.dispatched;
                    if let Flow::Ask(ask) = self.act(decision, now, wave, &mut c, &mut core, &done_tx)? {
                        asking = Some(ask);
                    }
                }
                Some(n) = committed.recv() => {
                    core.committed(usize::try_from(n).unwrap_or(usize::MAX));
                }
                () = tokio::time::sleep_until(deadline) => {}
                Ok(()) = stop.changed(), if !core.is_stopping() => {
                    core.stop(End::Interrupted);
                }
            }
        }
        self.finish(&core, &c, session_start).await
    }

    /// The dispatch core with this session's rules.
    fn dispatcher(&self) -> Dispatcher {
        Dispatcher::new(Rules {
            on_quota: self.settings.retry.on_quota,
            refunds_reopen_budget: true,
            shared: self.shared.is_some(),
            wall_origin: self.clock.wall_at(0),
            max_wait: self.settings.retry.max_wait,
            unreachable_after: self.settings.retry.unreachable_after,
        })
    }

    /// Ends the session: its last heartbeat with the final state, every result durable,
    /// the summary of how it ended.
    async fn finish(
        &mut self,
        core: &Dispatcher,
        c: &Counters,
        session_start: Nanos,
    ) -> Result<Summary, RunError> {
        let feed_error = self.scheduler.take_feed_error();
        let mut end = core.end(&self.scheduler);
        if end == End::Finished && feed_error.is_some() {
            end = End::Interrupted;
        }
        let state = RunState::of_end(&end, self.scheduler.is_empty() && feed_error.is_none());
        let snapshot = self.heartbeat(c, core, state, session_start, None)?;
        self.writer.flush().await?;
        self.progress.finish(&snapshot);
        if let Some(e) = feed_error {
            return Err(RunError::Queue(e));
        }
        Ok(Summary {
            end,
            snapshot,
            session: Duration::from_nanos(self.clock.now().saturating_sub(session_start)),
            session_sent: c.sent,
        })
    }

    /// One round of dispatch decisions at `now`: sends what the core admits until it says
    /// nothing more goes out now. Returns the shared limiter's pending answer, if it was
    /// asked.
    fn dispatch_round(
        &mut self,
        now: Nanos,
        core: &mut Dispatcher,
        c: &mut Counters,
        done_tx: &mpsc::UnboundedSender<Completion>,
    ) -> Result<Option<Asking>, RunError> {
        core.begin(now, &self.scheduler);
        core.hold(self.hold_after_storm);
        // What went out before this wave: a response's headers may not count the rest.
        let wave = c.dispatched;
        loop {
            // A session that knows nothing of the provider's buckets sends one request
            // and lets its response size the first wave.
            let workers = self.feedback.workers_cap(self.workers());
            let decision = core.next(now, workers, &mut self.limiter, &mut self.scheduler);
            match self.act(decision, now, wave, c, core, done_tx)? {
                Flow::Again => {}
                Flow::Idle => return Ok(None),
                Flow::Ask(ask) => return Ok(Some(ask)),
            }
        }
    }

    /// Carries out one decision of the core.
    fn act(
        &mut self,
        decision: Decision<Job>,
        now: Nanos,
        wave: Dispatched,
        c: &mut Counters,
        core: &mut Dispatcher,
        done_tx: &mpsc::UnboundedSender<Completion>,
    ) -> Result<Flow, RunError> {
        match decision {
            Decision::Dispatch {
                popped,
                reservation,
                slots,
            } => {
                if popped.starved {
                    self.report_starved(&popped.job, popped.waited);
                }
                c.dispatched.requests += popped.job.costs.get(&Unit::Requests).max(1);
                c.dispatched.tokens += popped.job.costs.get(&Unit::Tokens);
                self.dispatch(popped.job, reservation, wave, slots, done_tx);
            }
            Decision::Unsendable { popped, why } => {
                self.scheduler.finished(popped.lane);
                self.fail_unsendable(&popped.job, &why.to_string())?;
                c.failed += 1;
                core.handed_to_writer(1);
            }
            Decision::AskShared { seq } => return Ok(Flow::Ask(self.ask_shared(seq, now))),
            Decision::ReturnShared { seq } => {
                if let Some(shared) = &self.shared {
                    shared.settle_later(seq, &Costs::default());
                }
            }
            Decision::Deferred { .. } => {}
            Decision::Idle(Idle::Limited { .. }) => {
                if let Some(auto) = &mut self.settings.auto_workers {
                    auto.on_limited();
                }
                return Ok(Flow::Idle);
            }
            Decision::Idle(_) => return Ok(Flow::Idle),
        }
        Ok(Flow::Again)
    }

    /// Asks the shared limiter to admit job `seq` (the queue's next at `now`): the one
    /// async step of admission, atomic across runners. The answer is awaited in the loop's
    /// `select!`, so completions, heartbeats and a stop are handled meanwhile.
    fn ask_shared(&mut self, seq: u64, now: Nanos) -> Asking {
        let shared = self.shared.clone();
        let job = self.scheduler.peek(now);
        let (route, costs) = job.map_or_else(
            || (Route::all(0), Costs::default()),
            |j| (j.route.clone(), j.costs.clone()),
        );
        let clock = self.clock.clone();
        Box::pin(async move {
            let Some(shared) = shared else {
                return SharedAnswer::Granted { recovered: false };
            };
            match shared.admit(seq, route, costs).await {
                Admission::Granted { recovered } => SharedAnswer::Granted { recovered },
                Admission::Denied(SharedDenial::Wait { wait, limit }) => SharedAnswer::Wait {
                    at: clock.now() + nanos(wait),
                    limit,
                },
                Admission::Denied(SharedDenial::Never(never)) => SharedAnswer::Never(never),
                Admission::Unreachable(e) => SharedAnswer::Unreachable(e),
            }
        })
    }

    /// A heartbeat: the pause flag, starving tenants, then progress to the store and screen.
    fn beat(
        &mut self,
        core: &mut Dispatcher,
        c: &Counters,
        now: Nanos,
        session_start: Nanos,
    ) -> Result<(), RunError> {
        if let Some(control) = &self.control {
            let asked = control.is_paused()?;
            if asked != core.is_paused() {
                core.set_paused(asked);
                tracing::info!(paused = asked, "pause flag changed");
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
            let waited = humantime::format_duration(Duration::from_secs(s.waited / 1_000_000_000));
            tracing::warn!(class, tenant, waited = %waited, "starving: work waiting longer than starvation_after without a dispatch");
            core.set_note(Some(format!(
                "starving: tenant `{tenant}` (class `{class}`) has waited {waited} without a dispatch"
            )));
        }
        let state = if core.is_paused() {
            RunState::Paused
        } else {
            RunState::Running
        };
        let note = core.note().map(str::to_string);
        self.heartbeat(c, core, state, session_start, note)?;
        Ok(())
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
        if let Some(shared) = &self.shared {
            shared.settle_later(seq, used);
        }
    }

    /// Logs a job that waited longer than `starvation_after` for its turn.
    fn report_starved(&self, job: &Job, waited: Nanos) {
        let waited = humantime::format_duration(Duration::from_millis(waited / 1_000_000));
        tracing::warn!(item = %job.id, waited = %waited, "starved: the item waited longer than starvation_after");
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
        let clock = self.clock.clone();
        tokio::spawn(async move {
            let started = clock.now();
            let result = transport.send(&job.request).await;
            // The receiver is gone only when the run was aborted; nothing to record then.
            let _ = done_tx.send(Completion {
                job,
                reservation,
                dispatched_before,
                slots,
                sent_at_ms,
                sent_at: started,
                latency: Duration::from_nanos(clock.now().saturating_sub(started)),
                result,
                earlier: Vec::new(),
                sent_costs: None,
                broken: None,
            });
        });
    }

    /// A request came back (or a multi-request job's dispatch ended): record it, settle its
    /// reservation and decide what happens to its job.
    fn complete(
        &mut self,
        done: Completion,
        now: Nanos,
        c: &mut Counters,
        core: &mut Dispatcher,
    ) -> Result<(), RunError> {
        let Some(a) = self.answer(done, now, c, core)? else {
            return Ok(());
        };
        if a.outcome != Outcome::RateLimited {
            c.consecutive_429 = 0;
        }
        // A bare 503 slows the rate search down instead of counting toward a storm (the
        // storm's pause would let a full burst through after it).
        if !a.is_shed() {
            self.watch_storm(a.outcome, now, c);
        }
        match a.outcome {
            Outcome::Done => self.on_done(a, now, c),
            Outcome::RateLimited => self.on_rate_limited(a, now, c, core),
            Outcome::Transient => self.on_transient(a, now, c),
            Outcome::Unreachable => {
                // Nothing reached the provider: nothing stays charged, nothing is recorded.
                self.settle(a.reservation, a.job.seq, &Costs::default(), now);
                let error = a.error.unwrap_or_default();
                let draw = 0.5 + c.rng.random::<f64>() / 2.0;
                let policy = &self.settings.retry;
                core.unreachable(now, &error, |streak| policy.backoff(streak, draw, None));
                let job = a.job;
                self.scheduler
                    .enqueue(now, job.lane, job.priority, job.seq, job);
                Ok(())
            }
            Outcome::Failed => {
                self.settle(a.reservation, a.job.seq, &a.sent_costs, now);
                // A body over `max_response_bytes` says so; a 4xx is the API's refusal.
                let why = (a.error.clone()).unwrap_or_else(|| {
                    let status = a.http_status.unwrap_or(0);
                    format!("HTTP {status}: the API refused this item")
                });
                self.finish_failed(a.job, a.attempt, a.http_status, a.body, a.latency_ms, why)?;
                c.failed += 1;
                Ok(())
            }
            Outcome::QuotaExhausted => {
                let until = (a.observed.longest_wait()).and_then(|w| a.wall.checked_add(w));
                self.put_back(a, now)?;
                core.stop(End::Paused {
                    reason: "the API says the account's quota is exhausted (or asks to wait longer than [retry] max_wait)".to_string(),
                    until,
                });
                Ok(())
            }
            Outcome::Fatal => {
                let status = a.http_status.unwrap_or(0);
                let excerpt: String = (a.body.clone().unwrap_or_default().chars())
                    .take(300)
                    .collect();
                self.put_back(a, now)?;
                core.stop(End::AuthRefused {
                    status,
                    body: excerpt,
                });
                Ok(())
            }
        }
    }

    /// Reads a completion: records the requests a multi-request job sent before its
    /// deciding one, counts the attempt, classifies it and applies its headers to the
    /// limiter. `None` when the job cannot go on (it is failed here).
    fn answer(
        &mut self,
        done: Completion,
        now: Nanos,
        c: &mut Counters,
        core: &mut Dispatcher,
    ) -> Result<Option<Answered>, RunError> {
        let Completion {
            mut job,
            reservation,
            dispatched_before,
            slots: _,
            sent_at_ms,
            sent_at,
            latency,
            result,
            earlier,
            sent_costs,
            broken,
        } = done;
        let sent_costs = sent_costs.unwrap_or_else(|| job.costs.clone());
        // The job is out of flight on every path below: its lane's caps take it off.
        self.scheduler.finished(job.lane);
        let earlier_sent = !earlier.is_empty();
        if job.steps.is_some()
            && let Some(why) = self.absorb_steps(&mut job, earlier, broken, c, core)?
        {
            self.settle(reservation, job.seq, &sent_costs, now);
            self.fail_unsendable(&job, &why)?;
            c.failed += 1;
            return Ok(None);
        }
        let Some(response) = reached(&result, earlier_sent, core) else {
            // Nothing reached the API: no attempt is spent, nothing is counted as sent.
            let wall = self.clock.wall();
            return Ok(Some(Answered::unreached(job, reservation, result, wall)));
        };
        self.count_attempt(&mut job, latency, c);
        let (http_status, headers, body) = parts_of(&result);
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
        let outcome = (self.settings.retry).declared_rate_limit(response, outcome);
        let outcome = (self.settings.retry).ceiling(outcome, observed.longest_wait());
        self.feedback.on_response();
        let unseen = c.dispatched.since(dispatched_before, &job.costs);
        self.feedback
            .apply(&observed, &mut self.limiter, now, &unseen);
        let error = result.as_ref().err().map(ToString::to_string);
        let latency_ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        let attempt = AttemptRecord {
            latency_ms,
            http_status,
            outcome: outcome.as_str(),
            error: error.clone(),
            ..attempt_of(&job, sent_at_ms)
        };
        Ok(Some(Answered {
            job,
            reservation,
            dispatched_before,
            sent_costs,
            outcome,
            observed,
            attempt,
            http_status,
            body,
            latency_ms,
            sent_at,
            error,
            wall,
        }))
    }

    /// Counts an attempt of `job` that reached the API (or may have): one more sent, and a
    /// retry when it follows one that did not succeed.
    fn count_attempt(&mut self, job: &mut Job, latency: Duration, c: &mut Counters) {
        job.attempts += 1;
        c.sent += 1;
        if let Some(auto) = &mut self.settings.auto_workers {
            auto.observe(latency);
        }
        if job.attempts > 1 && job.steps.as_deref().is_none_or(|s| s.retrying) {
            c.retries += 1;
        }
    }

    /// A failure storm (most recent responses failed) holds all dispatch for a backoff.
    fn watch_storm(&mut self, outcome: Outcome, now: Nanos, c: &mut Counters) {
        let failing = outcome == Outcome::Transient;
        if matches!(outcome, Outcome::Done | Outcome::Transient)
            && c.storm.record(failing, self.settings.retry.storm_share)
        {
            let wait = self
                .settings
                .retry
                .backoff(c.storm.pauses, 0.5 + c.rng.random::<f64>() / 2.0, None)
                .max(Duration::from_secs(1));
            tracing::warn!(
                pause_s = wait.as_secs_f64(),
                "failure storm: most recent responses failed; pausing dispatch"
            );
            self.hold_after_storm = now + nanos(wait);
        }
    }

    /// A success: settle to the usage, then store the result (or queue a next page).
    fn on_done(&mut self, a: Answered, now: Nanos, c: &mut Counters) -> Result<(), RunError> {
        if a.observed.limits.is_empty() {
            (self.feedback).on_bare(&mut self.limiter, now, a.sent_at, Bare::Accepted);
        }
        let job = a.job;
        let usage = a.body.as_deref().and_then(usage_of);
        let actual = match &usage {
            Some(u) => (self.cost_model).actual(&a.sent_costs, job.model.as_deref(), u),
            None => a.sent_costs,
        };
        self.settle(a.reservation, job.seq, &actual, now);
        let body = match job.steps.as_deref() {
            Some(steps) if !steps.is_finished() => {
                // A next page, or steps past the window the job was admitted in: the rest
                // comes back through the limiter.
                self.writer.attempt(a.attempt)?;
                self.scheduler
                    .enqueue(now, job.lane, job.priority, job.seq, job);
                return Ok(());
            }
            Some(steps) => Some(steps.result_body()),
            None => a.body,
        };
        self.writer.finish(ItemResult {
            seq: job.seq,
            status: ItemStatus::Done,
            attempts: job.attempts,
            http_status: a.http_status,
            body,
            usage: usage.map(|u| u.to_string()),
            latency_ms: a.latency_ms,
            error: None,
            last_attempt: a.attempt,
        })?;
        c.done += 1;
        Ok(())
    }

    /// A 429: keep the request charged, then retry the item after `Retry-After` (or a
    /// backoff); a fresh signal the headers do not explain holds all dispatch.
    fn on_rate_limited(
        &mut self,
        a: Answered,
        now: Nanos,
        c: &mut Counters,
        core: &mut Dispatcher,
    ) -> Result<(), RunError> {
        // A rejected request consumed nothing at the provider's token bucket, but the
        // request bucket is evidently empty: keep the request, refund tokens.
        let keep = Costs::default().with(Unit::Requests, a.sent_costs.get(&Unit::Requests));
        self.settle(a.reservation, a.job.seq, &keep, now);
        c.rate_limited += 1;
        self.writer.attempt(a.attempt)?;
        let job = a.job;
        let retry_after = a.observed.retry_after;
        if a.observed.limits.is_empty() && retry_after.is_none() {
            // No headers at all: the search slows dispatch down; only this item waits, a
            // jittered interval at the searched rate.
            (self.feedback).on_bare(&mut self.limiter, now, a.sent_at, Bare::Refused);
            let wait = self.feedback.retry_delay(c.rng.random::<f64>());
            self.scheduler
                .enqueue_at(now + nanos(wait), job.lane, job.priority, job.seq, job);
            return Ok(());
        }
        // 429s to requests already in flight when the run reacted to a 429 are the same
        // signal, not a new one: they neither grow the backoff nor hold all dispatch again
        // (a refused wave would otherwise back off exponentially).
        let fresh = a.dispatched_before.requests >= c.reacted_to_429;
        if fresh {
            c.consecutive_429 += 1;
            c.reacted_to_429 = c.dispatched.requests;
        }
        let wait = (self.settings.retry)
            .backoff(c.consecutive_429, c.rng.random::<f64>(), retry_after)
            .max(Duration::from_millis(50));
        let until = now + nanos(wait);
        self.scheduler
            .enqueue_at(until, job.lane, job.priority, job.seq, job);
        // The 429's own rate-limit headers have just resynced the limiter, which now holds
        // back what the provider would refuse: only this item waits for `Retry-After`
        // (often whole seconds for a wait of milliseconds). A second 429 in a row means the
        // headers do not tell the whole story: then all dispatch waits.
        if fresh && (a.observed.limits.is_empty() || c.consecutive_429 != 1) {
            core.hold(until);
        }
        Ok(())
    }

    /// A transient failure: retry after a backoff while the policy allows, else fail.
    fn on_transient(&mut self, a: Answered, now: Nanos, c: &mut Counters) -> Result<(), RunError> {
        let shed = a.is_shed();
        self.settle(a.reservation, a.job.seq, &a.sent_costs, now);
        if shed {
            // Load shed with no word of when to come back: a sign to slow down.
            (self.feedback).on_bare(&mut self.limiter, now, a.sent_at, Bare::SlowDown);
        }
        let mut job = a.job;
        job.failures += 1;
        if self.settings.retry.allows_another(job.failures) {
            let wait = (self.settings.retry).backoff(
                job.failures,
                c.rng.random::<f64>(),
                a.observed.retry_after,
            );
            self.writer.attempt(a.attempt)?;
            let at = now + nanos(wait);
            self.scheduler
                .enqueue_at(at, job.lane, job.priority, job.seq, job);
        } else {
            let last =
                (a.error.clone()).unwrap_or_else(|| format!("HTTP {}", a.http_status.unwrap_or(0)));
            let why = format!(
                "gave up after {} transient failures; last: {last}",
                job.failures
            );
            self.finish_failed(job, a.attempt, a.http_status, a.body, a.latency_ms, why)?;
            c.failed += 1;
        }
        Ok(())
    }

    /// Settles to what was sent, records the attempt and puts the job back as pending (the
    /// session is about to stop).
    fn put_back(&mut self, a: Answered, now: Nanos) -> Result<(), RunError> {
        self.settle(a.reservation, a.job.seq, &a.sent_costs, now);
        self.writer.attempt(a.attempt)?;
        let job = a.job;
        self.scheduler
            .enqueue(now, job.lane, job.priority, job.seq, job);
        Ok(())
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
        core: &Dispatcher,
        state: RunState,
        session_start: Nanos,
        note: Option<String>,
    ) -> Result<Snapshot, StoreError> {
        let now = self.clock.now();
        let session = Duration::from_nanos(now.saturating_sub(session_start));
        let elapsed = self.before.elapsed + session;
        let snapshot = Snapshot {
            total: self.before.total,
            done: self.before.done + c.done,
            failed: self.before.failed + c.failed,
            in_flight: core.in_flight as u64,
            sent: self.before.sent + c.sent,
            rate_limited: self.before.rate_limited + c.rate_limited,
            retries: self.before.retries + c.retries,
            elapsed,
            limits: self.feedback.shown(self.limiter.usage(now)),
            note,
        };
        let mut limiter_state = self.limiter.save(&self.clock);
        self.feedback.save(&mut limiter_state, now);
        self.publish_learned(&limiter_state);
        self.writer.progress(ProgressRow {
            state,
            pid: std::process::id(),
            heartbeat_ms: unix_ms(self.clock.wall()),
            elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            in_flight: core.in_flight as u64,
            limits: snapshot.limits.clone(),
            limiter_state,
        })?;
        self.progress.update(&snapshot);
        Ok(snapshot)
    }
}

impl<T: Transport> Runner<T> {
    /// Publishes the learned limits among `states` to the runners sharing the limit, so
    /// that one starting later begins at them instead of searching (and bursting) again.
    fn publish_learned(&self, states: &[BucketState]) {
        let Some(shared) = &self.shared else { return };
        let learned: Vec<BucketState> = (states.iter())
            .filter(|s| s.learned.is_some())
            .cloned()
            .collect();
        if !learned.is_empty() {
            shared.publish_learned(crate::shared::Learned {
                at_unix_ms: unix_ms(self.clock.wall()),
                states: learned,
            });
        }
    }
}

/// The record of `job`'s latest attempt, sent at `sent_at_ms`, before its outcome is known.
fn attempt_of(job: &Job, sent_at_ms: u64) -> AttemptRecord {
    AttemptRecord {
        seq: job.seq,
        attempt: job.attempts,
        sent_at_ms,
        latency_ms: 0,
        http_status: None,
        outcome: Outcome::Failed.as_str(),
        error: None,
    }
}

/// A response's status, headers and body (as text); nothing for a transport failure.
fn parts_of(
    result: &Result<Response, TransportError>,
) -> (Option<u16>, &[(String, String)], Option<String>) {
    match result {
        Ok(r) => (
            Some(r.status),
            r.headers.as_slice(),
            Some(String::from_utf8_lossy(&r.body).into_owned()),
        ),
        Err(_) => (None, &[][..], None),
    }
}

/// What came back, if it reached the API (`None`: nothing did). A job whose earlier steps
/// reached it turns a failure to connect into an ordinary connection failure; anything that
/// reached the API tells the core it is reachable.
fn reached(
    result: &Result<Response, TransportError>,
    earlier_sent: bool,
    core: &mut Dispatcher,
) -> Option<retry::Response> {
    let mut response = response_of(result);
    if response == retry::Response::Unreachable {
        if !earlier_sent {
            return None;
        }
        response = retry::Response::Connection;
    }
    if earlier_sent
        || matches!(
            response,
            retry::Response::Status(_) | retry::Response::TooLarge
        )
    {
        core.reached();
    }
    Some(response)
}

/// What came back, as the retry policy classifies it.
fn response_of(result: &Result<Response, TransportError>) -> retry::Response {
    match result {
        Ok(r) => retry::Response::Status(r.status),
        Err(TransportError::Timeout) => retry::Response::Timeout,
        Err(TransportError::TooLarge { .. }) => retry::Response::TooLarge,
        Err(TransportError::Connection(text)) if retry::is_unreachable(text) => {
            retry::Response::Unreachable
        }
        Err(TransportError::Connection(_)) => retry::Response::Connection,
    }
}

fn usage_of(body: &str) -> Option<serde_json::Value> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    value.get("usage").filter(|u| !u.is_null()).cloned()
}
