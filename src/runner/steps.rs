//! Sending a multi-request job: its steps in waves, each wave's requests at once.
//!
//! Owns the worker side of a job whose kind has steps. The dispatcher reserved the cost of
//! every unfinished step (one request each) before this runs, so the job never starts
//! unless all of it fits the limits. Here the steps go out wave after wave (a wave is every
//! step whose predecessors are finished, sent concurrently), each rendered from the item
//! and the earlier responses, until the job is finished, a request fails, or a paginated
//! step has another page. A next page is not sent here: it goes back to the dispatcher as
//! a continuation of the job, so every page passes through the limiter like any request.
//!
//! Left to the dispatcher ([`super::Runner::complete`]): classifying the deciding response,
//! settling the reservation to what was really sent, storing attempts, progress and the
//! result, and queueing the continuation.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use super::{Completion, Counters, Dispatched, Response, Runner, Transport, TransportError};
use crate::clock::unix_ms;
use crate::clock::{Clock, Nanos, SystemClock};
use crate::dispatch::Dispatcher;
use crate::job::steps::{Absorbed, Steps};
use crate::job::{Job, Request};
use crate::limiter::{Reservation, Unit};
use crate::retry;
use crate::store::{AttemptRecord, StoreError};

impl<T: Transport> Runner<T> {
    /// Records the requests a multi-request job sent before its deciding one and stores how
    /// far the job got. Returns why it cannot go on, if a step could not be rendered.
    pub(super) fn absorb_steps(
        &mut self,
        job: &mut Job,
        earlier: Vec<Sent>,
        broken: Option<String>,
        c: &mut Counters,
        core: &mut Dispatcher,
    ) -> Result<Option<String>, StoreError> {
        for sent in earlier {
            job.attempts += 1;
            c.sent += 1;
            core.handed_to_writer(1);
            let (http_status, error) = match &sent.result {
                Ok(r) => (Some(r.status), None),
                Err(e) => (None, Some(e.to_string())),
            };
            let body = match &sent.result {
                Ok(r) => String::from_utf8_lossy(&r.body).into_owned(),
                Err(_) => String::new(),
            };
            let outcome = retry::classify_body(
                super::response_of(&sent.result),
                &body,
                &self.settings.retry.quota_markers,
            );
            self.writer.attempt(AttemptRecord {
                seq: job.seq,
                attempt: job.attempts,
                sent_at_ms: sent.sent_at_ms,
                latency_ms: u64::try_from(sent.latency.as_millis()).unwrap_or(u64::MAX),
                http_status,
                outcome: outcome.as_str(),
                error,
            })?;
        }
        if let Some(steps) = job.steps.as_deref_mut().filter(|s| !s.is_finished()) {
            let pages = steps.unsaved_pages();
            let progress = serde_json::to_string(&steps.progress).unwrap_or_default();
            self.writer.steps(job.seq, progress, pages)?;
            core.handed_to_writer(1);
        }
        Ok(broken)
    }
}

/// One request of a multi-request job and what came back.
pub(super) struct Sent {
    /// Unix ms when it was sent.
    pub(super) sent_at_ms: u64,
    /// Time to response or failure.
    pub(super) latency: Duration,
    /// The response or the transport failure.
    pub(super) result: Result<Response, TransportError>,
}

impl Sent {
    fn succeeded(&self) -> bool {
        self.result
            .as_ref()
            .is_ok_and(|r| (200..300).contains(&r.status))
    }
}

/// Sends `job`'s steps until it is finished, a request fails, a page needs another, or a
/// later wave would go out after `window_end` (it would count in a calendar window the
/// reservation did not charge: the rest of the job goes back to be admitted again); the
/// completion's `result` is the first failure of the last wave (or its last response),
/// every other request sent is in `earlier`.
pub(super) async fn run<T: Transport>(
    transport: Arc<T>,
    clock: SystemClock,
    mut job: Job,
    reservation: Reservation,
    window_end: Option<Nanos>,
) -> Completion {
    let reserved = job.costs.clone();
    let mut sent: Vec<Sent> = Vec::new();
    let mut broken = None;
    if let Some(steps) = job.steps.as_deref_mut() {
        let headers = &job.request.headers;
        broken = run_waves(&transport, &clock, steps, headers, window_end, &mut sent).await;
        job.costs = steps.remaining_costs();
    }
    let requests = u64::try_from(sent.len()).unwrap_or(u64::MAX);
    let deciding = sent.iter().position(|s| !s.succeeded());
    let last = match (&broken, deciding) {
        // Every request is recorded as an earlier one; the job fails unsent.
        (Some(_), _) => None,
        (None, Some(i)) => Some(sent.remove(i)),
        (None, None) => sent.pop(),
    };
    let (sent_at_ms, latency, result) = match last {
        Some(s) => (s.sent_at_ms, s.latency, s.result),
        None => (
            unix_ms(clock.wall()),
            Duration::ZERO,
            Err(TransportError::Connection("nothing was sent".into())),
        ),
    };
    Completion {
        job,
        reservation,
        // The dispatcher fills in its own counts.
        dispatched_before: Dispatched::default(),
        slots: 1,
        sent_at_ms,
        sent_at: clock.now().saturating_sub(crate::clock::nanos(latency)),
        latency,
        result,
        earlier: sent,
        sent_costs: Some(reserved.with(Unit::Requests, requests)),
        broken,
    }
}

/// Sends waves of `steps` with `headers` added to each request, recording every request
/// in `sent`; a wave after the first goes out only before `window_end`. Returns why the
/// job cannot go on, if a step cannot be rendered.
async fn run_waves<T: Transport>(
    transport: &Arc<T>,
    clock: &SystemClock,
    steps: &mut Steps,
    headers: &[(String, String)],
    window_end: Option<Nanos>,
    sent: &mut Vec<Sent>,
) -> Option<String> {
    steps.failed_step = None;
    loop {
        let wave = steps.wave();
        let late = window_end.is_some_and(|end| clock.now() >= end);
        if wave.is_empty() || (late && !sent.is_empty()) {
            return None;
        }
        let mut requests = Vec::with_capacity(wave.len());
        for &index in &wave {
            match steps.request(index) {
                Ok(request) => requests.push((index, with_headers(request, headers, steps, index))),
                Err(e) => return Some(format!("step `{}`: {e}", steps.name(index))),
            }
        }
        let mut results = send_all(transport, clock, &requests).await;
        let mut go_on = true;
        for ((index, request), s) in requests.iter().zip(results.iter()) {
            if let Some(r) = s.result.as_ref().ok().filter(|_| s.succeeded()) {
                match steps.absorb(*index, &request.path, r.status, &r.headers, &r.body) {
                    Ok(Absorbed::Finished) => {}
                    Ok(Absorbed::MorePages) => go_on = false,
                    Err(e) => return Some(format!("step `{}`: {e}", steps.name(*index))),
                }
            } else {
                go_on = false;
                if steps.failed_step.is_none() {
                    steps.failed_step = Some(steps.name(*index).to_string());
                }
            }
        }
        sent.append(&mut results);
        if !go_on {
            return None;
        }
    }
}

/// `request` with the headers every step sends first; an `Idempotency-Key` among them is
/// made distinct per step and page.
fn with_headers(
    mut request: Request,
    headers: &[(String, String)],
    steps: &Steps,
    index: usize,
) -> Request {
    let page = steps
        .progress
        .paging
        .get(steps.name(index))
        .map_or(0, |p| p.pages);
    let mut all: Vec<(String, String)> = headers
        .iter()
        .map(|(name, value)| {
            if name.eq_ignore_ascii_case("idempotency-key") {
                (
                    name.clone(),
                    format!("{value}-{}-{page}", steps.name(index)),
                )
            } else {
                (name.clone(), value.clone())
            }
        })
        .collect();
    all.append(&mut request.headers);
    request.headers = all;
    request
}

/// Sends every request at once; the results in the requests' order.
async fn send_all<T: Transport>(
    transport: &Arc<T>,
    clock: &SystemClock,
    requests: &[(usize, Request)],
) -> Vec<Sent> {
    if let [(_, only)] = requests {
        return vec![send_one(&**transport, clock, only).await];
    }
    let mut set = JoinSet::new();
    for (slot, (_, request)) in requests.iter().enumerate() {
        let (transport, clock, request) = (Arc::clone(transport), clock.clone(), request.clone());
        set.spawn(async move { (slot, send_one(&*transport, &clock, &request).await) });
    }
    let mut slots: Vec<Option<Sent>> = (0..requests.len()).map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((slot, s)) => slots[slot] = Some(s),
            // A send task cannot panic short of a bug in the transport; count it as a
            // failed request of an unknown step so the job is retried.
            Err(e) => tracing::error!(error = %e, "a step's send task failed"),
        }
    }
    slots
        .into_iter()
        .map(|s| {
            s.unwrap_or_else(|| Sent {
                sent_at_ms: unix_ms(clock.wall()),
                latency: Duration::ZERO,
                result: Err(TransportError::Connection("the send task failed".into())),
            })
        })
        .collect()
}

async fn send_one<T: Transport>(transport: &T, clock: &SystemClock, request: &Request) -> Sent {
    let sent_at_ms = unix_ms(clock.wall());
    let started = clock.now();
    let result = transport.send(request).await;
    Sent {
        sent_at_ms,
        latency: Duration::from_nanos(clock.now().saturating_sub(started)),
        result,
    }
}
