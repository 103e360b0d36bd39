//! The batch lane's loop: cut pending items into batches, take each batch one checkpointed
//! step further per turn, poll, and apply finished batches, until none is open.
//!
//! Owns the order of I/O and checkpoints: every step is written to the store before the
//! next begins (see `crate::store::BatchState`), so a kill at any instant and a rerun send
//! no batch twice (a create that may have been sent is looked up by its key first) and lose
//! no result (an ended batch is applied, in one transaction, before it is closed). The
//! decisions themselves are pure, in `lifecycle`.

use std::collections::{HashMap, HashSet};

use tokio::sync::watch;

use super::client::{BatchClient, ClientError, Input};
use super::dialect::{self, BatchView, LineResult};
use super::lifecycle::{self, Held, ItemSize, Step};
use crate::config::{BatchApi, BatchProvider};
use crate::retry::RetryPolicy;
use crate::store::{Applied, BatchRow, BatchSeen, LineApply, PendingRow, Store, StoreError};

/// One item rendered as a batch request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// HTTP method.
    pub method: String,
    /// Path the request calls (OpenAI's `url`, the batch's endpoint).
    pub path: String,
    /// The JSON body as text.
    pub body: String,
    /// Its estimated tokens.
    pub tokens: u64,
    /// Its estimated price online, in micro-dollars (0 without pricing).
    pub usd_micro: u64,
}

/// Renders a stored item into its request; an error names why it cannot be.
pub type Renderer = Box<dyn Fn(&PendingRow) -> Result<Rendered, String> + Send + Sync>;

/// Which pending items the lane cuts into new batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every pending item (`--via batch`).
    All,
    /// Only items that came back from one of its batches to be retried (`--via auto`, whose
    /// other items are the online lane's).
    Returned,
}

/// Why the batch lane stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum LaneError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The provider refused a call for good.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// An item cannot be rendered into its request.
    #[error("item `{id}` cannot be rendered for a batch: {reason}")]
    Render {
        /// The item's id.
        id: String,
        /// Why.
        reason: String,
    },
}

/// How the lane's session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LaneEnd {
    /// No batch is open and nothing is left to cut.
    Finished,
    /// Stopped on request; open batches stay with the provider for the next run.
    Interrupted,
}

/// What the lane did this session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaneSummary {
    /// How it ended.
    pub end: LaneEnd,
    /// Batches created at the provider this session.
    pub created: u64,
    /// Items applied, by fate.
    pub applied: Applied,
}

/// The batch lane over one run's store and one provider.
pub struct BatchLane {
    /// The provider's Batch API.
    pub client: BatchClient,
    /// The run's db (the lane's own connection).
    pub store: Store,
    /// `[batch]`.
    pub api: BatchApi,
    /// Retries of failed lines, as online.
    pub retry: RetryPolicy,
    /// The prefix of every batch key of this run.
    pub key_prefix: String,
    /// Renders items into requests.
    pub render: Renderer,
    /// Which pending items to cut.
    pub scope: Scope,
    /// Where one-line news goes (batch created, ended, applied).
    pub say: Box<dyn FnMut(String) + Send>,
}

/// Pending items read at a time while cutting batches (the memory of a cut is this page
/// plus the batch being filled).
const CUT_PAGE: usize = 10_000;

/// Per-session state of the loop.
#[derive(Default)]
struct Turn {
    /// Something moved (not just a poll): go round again at once.
    moved: bool,
    /// The provider refused a batch for its enqueued-token limit: submit nothing more
    /// until an open batch ends.
    blocked: bool,
    created: u64,
    applied: Applied,
}

impl BatchLane {
    /// Cuts every pending item of the scope into batches (in scheduler order); `only`, when
    /// given, restricts them to those seqs. Returns how many batches were cut.
    pub fn cut_pending(&mut self, only: Option<&HashSet<u64>>) -> Result<u64, LaneError> {
        let returned = match self.scope {
            Scope::All => None,
            Scope::Returned => Some(self.store.batch_returned()?),
        };
        // Read a page at a time; the batch being filled carries over to the next page.
        let mut cutter = lifecycle::Cutter::default();
        let mut cuts = 0;
        let mut after = None;
        loop {
            let page = self.store.pending_after(after, CUT_PAGE)?;
            let Some(last) = page.last() else { break };
            after = Some((last.priority, last.seq));
            let rows = (page.iter())
                .filter(|r| only.is_none_or(|o| o.contains(&r.seq)))
                .filter(|r| returned.as_ref().is_none_or(|s| s.contains(&r.seq)));
            for row in rows {
                if let Some(cut) = cutter.push(size(&self.api, &self.render, row)?, &self.api) {
                    self.cut_batch(&cut)?;
                    cuts += 1;
                }
            }
            if page.len() < CUT_PAGE {
                break;
            }
        }
        if let Some(cut) = cutter.finish() {
            self.cut_batch(&cut)?;
            cuts += 1;
        }
        Ok(cuts)
    }

    fn cut_batch(&mut self, cut: &lifecycle::Cut) -> Result<(), LaneError> {
        let prefix = &self.key_prefix;
        (self.store).cut_batch(prefix, &cut.seqs, cut.tokens, cut.bytes)?;
        Ok(())
    }

    fn rendered(&self, row: &PendingRow) -> Result<Rendered, LaneError> {
        render(&self.render, row)
    }

    /// Runs until no batch is open (and, for [`Scope::All`], nothing is pending) or `stop`
    /// is raised. `ratebound pause` holds back uploads and creates; polls and applies go on.
    pub async fn run(mut self, mut stop: watch::Receiver<u32>) -> Result<LaneSummary, LaneError> {
        let mut turn = Turn::default();
        let mut recut = true;
        loop {
            if *stop.borrow() > 0 {
                return Ok(self.summary(LaneEnd::Interrupted, &turn));
            }
            let paused = self.store.is_paused()?;
            if recut && !paused {
                self.cut_pending(None)?;
                recut = false;
            }
            let open = self.store.batches(true)?;
            if open.is_empty() && !paused {
                return Ok(self.summary(LaneEnd::Finished, &turn));
            }
            turn.moved = false;
            let before = turn.applied;
            for row in &open {
                if *stop.borrow() > 0 {
                    break;
                }
                let enqueued = lifecycle::enqueued(&self.store.batches(true)?);
                match self.step(row, enqueued, paused, &mut turn).await {
                    Ok(()) => {}
                    Err(LaneError::Client(e)) if e.is_transient() => {
                        (self.say)(format!("batch {}: {e}; trying again", row.local_id));
                    }
                    Err(e) => return Err(e),
                }
            }
            recut |= turn.applied != before;
            if !turn.moved {
                tokio::select! {
                    () = tokio::time::sleep(self.api.poll) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }

    fn summary(&self, end: LaneEnd, turn: &Turn) -> LaneSummary {
        LaneSummary {
            end,
            created: turn.created,
            applied: turn.applied,
        }
    }

    /// Takes batch `row` one step further.
    async fn step(
        &mut self,
        row: &BatchRow,
        enqueued: u64,
        paused: bool,
        turn: &mut Turn,
    ) -> Result<(), LaneError> {
        let step = lifecycle::next_step(self.api.provider, row);
        let submitting = matches!(step, Step::Upload | Step::Create);
        if submitting
            && (paused
                || (turn.blocked && enqueued > 0)
                || !lifecycle::may_submit(&self.api, enqueued, row.tokens))
        {
            return Ok(());
        }
        match step {
            Step::Upload => {
                let (lines, _) = self.lines(row)?;
                let file_id = self.client.upload(&row.key, &lines).await?;
                crash_at("upload");
                self.store.batch_uploaded(row.local_id, &file_id)?;
                turn.moved = true;
            }
            Step::Create => self.create(row, turn).await?,
            Step::LookUpThenCreate => match self.look_up(row).await? {
                Some(view) => {
                    self.store.batch_created(row.local_id, &view.id)?;
                    (self.say)(format!(
                        "batch {}: found {} after a restart",
                        row.local_id, view.id
                    ));
                    turn.moved = true;
                }
                None => self.create(row, turn).await?,
            },
            Step::Poll => {
                let id = row.batch_id.as_deref().unwrap_or_default();
                let view = self.client.get(id).await?;
                self.store.batch_seen(row.local_id, &seen(&view))?;
                crash_at("poll");
                if view.ended {
                    (self.say)(format!(
                        "batch {}: {} {} ({} succeeded, {} failed)",
                        row.local_id, view.id, view.status, view.completed, view.failed
                    ));
                    // A batch refused for the enqueued-token limit waits for another to end.
                    turn.blocked = view.failure.as_deref() == Some("token_limit_exceeded");
                    turn.moved = true;
                }
            }
            Step::Apply => {
                let applied = self.apply(row).await?;
                (self.say)(format!(
                    "batch {}: applied: {} done, {} failed, {} to retry, {} back in the queue",
                    row.local_id, applied.done, applied.failed, applied.retried, applied.requeued
                ));
                turn.applied.done += applied.done;
                turn.applied.failed += applied.failed;
                turn.applied.retried += applied.retried;
                turn.applied.requeued += applied.requeued;
                turn.moved = true;
            }
            Step::None => {}
        }
        Ok(())
    }

    /// The request lines of batch `row` and their endpoint.
    fn lines(&self, row: &BatchRow) -> Result<(Vec<String>, String), LaneError> {
        let items = self.store.batch_items(row.local_id)?;
        let mut endpoint = String::new();
        let mut lines = Vec::with_capacity(items.len());
        for item in &items {
            let r = self.rendered(item)?;
            if endpoint.is_empty() {
                endpoint.clone_from(&r.path);
            }
            lines.push(dialect::request_line(
                self.api.provider,
                &item.id,
                &r.method,
                &r.path,
                &r.body,
            ));
        }
        Ok((lines, endpoint))
    }

    /// Records the intent, then creates batch `row`; a refusal for the enqueued-token limit
    /// puts it back to wait.
    async fn create(&mut self, row: &BatchRow, turn: &mut Turn) -> Result<(), LaneError> {
        self.store.batch_creating(row.local_id)?;
        let (lines, endpoint) = self.lines(row)?;
        let input = match (self.api.provider, row.file_id.as_deref()) {
            (BatchProvider::OpenAi, Some(file_id)) => Input::File {
                file_id,
                endpoint: &endpoint,
            },
            _ => Input::Lines(&lines),
        };
        match self.client.create(&row.key, input).await {
            Ok(view) => {
                crash_at("create");
                self.store.batch_created(row.local_id, &view.id)?;
                (self.say)(format!(
                    "batch {}: created {} ({} requests, ~{} tokens)",
                    row.local_id, view.id, row.requests, row.tokens
                ));
                turn.created += 1;
                turn.moved = true;
                Ok(())
            }
            Err(e) if e.is_token_limit() => {
                // Refused before it existed: it waits, uncreated, for enqueued tokens to drain.
                match &row.file_id {
                    Some(file_id) => self.store.batch_uploaded(row.local_id, file_id)?,
                    None => self.store.batch_recut(row.local_id)?,
                }
                (self.say)(format!(
                    "batch {}: the enqueued-token limit is full; waiting for a batch to end",
                    row.local_id
                ));
                turn.blocked = true;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The provider's batch created for `row` before a kill, if any: by its key (OpenAI's
    /// metadata), or (Anthropic, which keeps no metadata) the newest batch of the same size
    /// that no batch of this run claims.
    async fn look_up(&mut self, row: &BatchRow) -> Result<Option<BatchView>, LaneError> {
        let listed = self.client.list(10).await?;
        if self.api.provider == BatchProvider::OpenAi {
            return Ok(listed
                .into_iter()
                .find(|b| b.key.as_deref() == Some(&row.key)));
        }
        let known: HashSet<String> = (self.store.batches(false)?)
            .into_iter()
            .filter_map(|b| b.batch_id)
            .collect();
        Ok(listed
            .into_iter()
            .find(|b| b.total == row.requests && !known.contains(&b.id)))
    }

    /// Downloads an ended batch's results and applies them in one transaction.
    async fn apply(&mut self, row: &BatchRow) -> Result<Applied, LaneError> {
        let mut results: HashMap<String, LineResult> = HashMap::new();
        for file in [&row.output_file_id, &row.error_file_id]
            .into_iter()
            .flatten()
        {
            let text = self.client.download(file).await?;
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                if let Some((id, result)) = dialect::parse_line(self.api.provider, line) {
                    results.insert(id, result);
                }
            }
        }
        if row.status.as_deref() == Some("failed") {
            (self.say)(format!(
                "batch {}: the provider refused it; its items go back in the queue",
                row.local_id
            ));
        }
        let held: Vec<Held> = (self.store.batch_items(row.local_id)?)
            .into_iter()
            .map(|r| Held {
                id: r.id,
                seq: r.seq,
                failures: r.failures,
            })
            .collect();
        let fates: Vec<LineApply> = lifecycle::fates(&held, results, &self.retry);
        crash_at("download");
        let applied = self.store.apply_batch(row.local_id, &fates)?;
        crash_at("apply");
        Ok(applied)
    }
}

fn render(renderer: &Renderer, row: &PendingRow) -> Result<Rendered, LaneError> {
    renderer(row).map_err(|reason| LaneError::Render {
        id: row.id.clone(),
        reason,
    })
}

/// Every pending item (in scheduler order, read a page at a time) as a request line of a
/// batch, with the sum of their online prices in micro-dollars: 24 bytes an item, whatever
/// its payload.
pub fn pending_sizes(
    store: &Store,
    api: &BatchApi,
    renderer: &Renderer,
) -> Result<(Vec<ItemSize>, u64), LaneError> {
    let (mut sizes, mut usd_micro) = (Vec::new(), 0u64);
    let mut after = None;
    loop {
        let page = store.pending_after(after, CUT_PAGE)?;
        for row in &page {
            let (size, r) = size_of(api, renderer, row)?;
            sizes.push(size);
            usd_micro += r.usd_micro;
        }
        match page.last() {
            Some(last) if page.len() == CUT_PAGE => after = Some((last.priority, last.seq)),
            _ => return Ok((sizes, usd_micro)),
        }
    }
}

/// The size of `row` as a request line of a batch.
fn size(api: &BatchApi, renderer: &Renderer, row: &PendingRow) -> Result<ItemSize, LaneError> {
    Ok(size_of(api, renderer, row)?.0)
}

/// The size of `row` as a request line of a batch, and its rendered request.
fn size_of(
    api: &BatchApi,
    renderer: &Renderer,
    row: &PendingRow,
) -> Result<(ItemSize, Rendered), LaneError> {
    let r = render(renderer, row)?;
    let line = dialect::request_line(api.provider, &row.id, &r.method, &r.path, &r.body);
    let size = ItemSize {
        seq: row.seq,
        bytes: line.len() as u64 + 1,
        tokens: r.tokens,
    };
    Ok((size, r))
}

/// Cuts the items `sizes` (in scheduler order) into batches recorded in `store` under
/// `key_prefix`; returns how many.
pub fn cut_sizes(
    store: &mut Store,
    api: &BatchApi,
    key_prefix: &str,
    sizes: &[ItemSize],
) -> Result<u64, LaneError> {
    let cuts = lifecycle::cut(sizes.iter().copied(), api);
    for cut in &cuts {
        store.cut_batch(key_prefix, &cut.seqs, cut.tokens, cut.bytes)?;
    }
    Ok(cuts.len() as u64)
}

/// The crash-test hook: with `RATEBOUND_BATCH_CRASH_AT=NAME` in the environment the process
/// dies at once (as by kill -9: nothing flushed, nothing said) at checkpoint boundary `NAME`:
/// `upload` (file uploaded, not recorded), `create` (batch created, not recorded), `poll`
/// (a status recorded), `download` (results downloaded, not applied), `apply` (applied).
fn crash_at(name: &str) {
    if std::env::var_os("RATEBOUND_BATCH_CRASH_AT").is_some_and(|v| v == name) {
        std::process::abort();
    }
}

fn seen(view: &BatchView) -> BatchSeen {
    BatchSeen {
        status: view.status.clone(),
        completed: view.completed,
        failed: view.failed,
        ended: view.ended,
        output: view.output.clone(),
        errors: view.errors.clone(),
    }
}

/// Cancels every open batch of the run in `store` that the provider holds; returns how many
/// were asked. Batches not yet sent are closed with their items back in the queue.
pub async fn cancel_open(client: &BatchClient, store: &mut Store) -> Result<u64, LaneError> {
    let mut cancelled = 0;
    for row in store.batches(true)? {
        match (&row.batch_id, row.state) {
            (Some(id), crate::store::BatchState::Created) => {
                let view = client.cancel(id).await?;
                store.batch_seen(row.local_id, &seen(&view))?;
                cancelled += 1;
            }
            (None, crate::store::BatchState::Cut | crate::store::BatchState::Uploaded) => {
                store.batch_drop(row.local_id)?;
            }
            // A create may be on its way: the next run looks it up by its key.
            _ => {}
        }
    }
    Ok(cancelled)
}
