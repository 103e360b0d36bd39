//! [`StoreFeed`]: the scheduler's [`Feed`] over the run's db, building each page's jobs.
//!
//! Owns turning a stored pending row back into a [`Job`] at the moment the scheduler needs
//! it: the request rendered from the stored payload, its costs, its route through the
//! limits, its idempotency key, and how far a multi-request job got in earlier sessions.
//! Jobs are built a page at a time, so only the scheduler's look-ahead is ever rendered.

use std::path::PathBuf;

use crate::config::RequestSpec;
use crate::job::{self, CostModel, Job};
use crate::limiter::Limiter;
use crate::scheduler::{After, Feed, FeedError, Lane, Queued};
use crate::store::{PendingRow, Store};

/// Pages of pending items from the store, as jobs.
pub struct StoreFeed {
    /// A read connection of its own (the writer thread has the other).
    pub store: Store,
    /// The request template.
    pub request: RequestSpec,
    /// Costs per kind, prices, plans.
    pub cost_model: CostModel,
    /// The limits, to route each job (only its specs are read, never its state).
    pub limiter: Limiter,
    /// The run's fingerprint, when requests carry an `Idempotency-Key`.
    pub idempotency: Option<String>,
}

impl StoreFeed {
    /// The job of a stored row queued in `lane`.
    ///
    /// # Errors
    /// When the stored payload or step progress cannot be read back.
    pub fn job(&self, row: PendingRow, lane: Lane) -> anyhow::Result<Job> {
        let db = self.store.path().display();
        let built = job::from_stored(&self.request, &row.payload, row.tokens, &self.cost_model)
            .map_err(|e| anyhow::anyhow!("{db}: item `{}` cannot be rebuilt: {e}", row.id))?;
        let route = built.route(&self.limiter);
        let mut request = built.request;
        if let Some(fingerprint) = &self.idempotency {
            request.headers.push((
                "Idempotency-Key".to_string(),
                job::idempotency_key(fingerprint, &row.id),
            ));
        }
        let mut job = Job {
            seq: row.seq,
            id: row.id,
            priority: row.priority,
            request,
            costs: built.costs,
            route,
            lane,
            model: built.model,
            attempts: row.attempts,
            failures: row.failures,
            steps: built.steps.map(|(steps, _)| Box::new(steps)),
        };
        if let Some(progress) = &row.steps {
            job.resume(progress, &row.pages)
                .map_err(|e| anyhow::anyhow!("{db}: item `{}` cannot be resumed: {e}", job.id))?;
        }
        Ok(job)
    }

    /// The db this feed reads.
    pub fn path(&self) -> PathBuf {
        self.store.path().to_path_buf()
    }

    /// Up to `n` pending jobs, the first of each lane in turn: a sample of what the queue
    /// holds (for the mean cost of a job).
    ///
    /// # Errors
    /// When the store cannot be read or a job cannot be rebuilt.
    pub fn sample(&mut self, n: usize) -> anyhow::Result<Vec<Job>> {
        let mut jobs = Vec::new();
        for lane in self.store.pending_lanes()? {
            let left = n.saturating_sub(jobs.len());
            if left == 0 {
                break;
            }
            for row in self.store.pending_page(lane, None, left)? {
                jobs.push(self.job(row, lane)?);
            }
        }
        Ok(jobs)
    }
}

impl Feed<Job> for StoreFeed {
    fn lanes(&mut self) -> Result<Vec<Lane>, FeedError> {
        Ok(self.store.pending_lanes()?)
    }

    fn page(&mut self, lane: Lane, after: After, n: usize) -> Result<Vec<Queued<Job>>, FeedError> {
        let rows = self.store.pending_page(lane, after, n)?;
        let mut page = Vec::with_capacity(rows.len());
        for row in rows {
            let (priority, seq) = (row.priority, row.seq);
            let job = self.job(row, lane).map_err(FeedError::from)?;
            page.push(Queued {
                lane,
                priority,
                seq,
                job,
            });
        }
        Ok(page)
    }
}
