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
        let rebuild = job::Rebuild {
            spec: &self.request,
            cost_model: &self.cost_model,
            limiter: &self.limiter,
            idempotency: self.idempotency.as_deref(),
        };
        let mut job = (rebuild.job(&row, |_| lane))
            .map_err(|e| anyhow::anyhow!("{db}: item `{}` cannot be rebuilt: {e}", row.id))?;
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;
    use crate::scheduler::{Policy, Scheduler};
    use crate::worklist::{Item, Payload};

    const CONFIG: &str = r#"
[api]
base_url = "mock://openai"

[request]
path = "/v1/chat/completions"
body = '{"model": "m", "messages": [{"role": "user", "content": "{{prompt}}"}]}'
"#;

    fn item(seq: u64) -> Item {
        let mut vars = serde_json::Map::new();
        vars.insert("prompt".into(), format!("hello {seq}").into());
        Item {
            seq,
            line: seq + 2,
            id: format!("i{seq}"),
            priority: (seq % 5) as i64,
            tokens: None,
            payload: Payload::Vars(vars),
        }
    }

    #[test]
    fn a_run_from_the_store_holds_a_page_not_the_list() {
        const ITEMS: u64 = 20_000;
        const WORKERS: usize = 16;
        const PAGE: usize = 64;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("q.db");
        let mut store = Store::open(&db).unwrap();
        store.import((0..ITEMS).map(item)).unwrap();
        let config = Config::parse(Path::new("c.toml"), CONFIG).unwrap();
        let feed = StoreFeed {
            store: Store::open(&db).unwrap(),
            request: config.request.clone(),
            cost_model: CostModel::from_config(&config),
            limiter: Limiter::new(&config.limits),
            idempotency: None,
        };
        let mut s = Scheduler::with_feed(Policy::default(), 0, PAGE, Box::new(feed));
        // Dispatch with WORKERS in flight; every tenth job comes back for a retry later.
        let mut flight = std::collections::VecDeque::new();
        let (mut now, mut sent, mut retried) = (0, 0u64, 0u64);
        let mut last = (i64::MAX, 0u64);
        loop {
            now += 1;
            while flight.len() < WORKERS {
                let Some(job) = s.pop(now) else { break };
                if job.attempts == 0 {
                    assert!(
                        (job.priority, std::cmp::Reverse(job.seq))
                            < (last.0, std::cmp::Reverse(last.1)),
                        "queue order: priority descending, then file order"
                    );
                    last = (job.priority, job.seq);
                }
                flight.push_back(job);
            }
            let Some(mut job) = flight.pop_front() else {
                match s.next_at() {
                    Some(at) => {
                        now = at;
                        continue;
                    }
                    None => break,
                }
            };
            sent += 1;
            if job.attempts == 0 && job.seq % 10 == 0 {
                job.attempts = 1;
                retried += 1;
                s.enqueue_at(now + 50, job.lane, job.priority, job.seq, job);
            }
            // A retry due now sorts before the fresh jobs: the order check skips it.
        }
        assert_eq!(sent, ITEMS + retried);
        assert!(s.take_feed_error().is_none());
        // A page of look-ahead, plus the retries waiting (at most 50 ticks' worth).
        let bound = 2 * PAGE + 50;
        assert!(s.peak_held() <= bound, "held {} > {bound}", s.peak_held());
    }
}
