//! Where queued jobs come from when the work list is not all in memory: the [`Feed`].
//!
//! Owns the contract between the [`Scheduler`](super::Scheduler) and its source (the store
//! in a run, [`VecFeed`] in tests): every lane's items come out in queue order (priority
//! descending, then sequence number), a page at a time, after a cursor. The scheduler keeps
//! at least one loaded item in every lane that has more in the source, and loads a lane's
//! next page only when its last loaded item leaves; since everything loaded sorts before
//! everything not yet loaded, the job it picks is the one it would pick with the whole list
//! in memory. Pure.

use super::Lane;

/// A queued item handed over by a [`Feed`]: where it queues, its place in the order, and
/// the job.
#[derive(Clone, Debug, PartialEq)]
pub struct Queued<J> {
    /// Its lane.
    pub lane: Lane,
    /// Higher first.
    pub priority: i64,
    /// Ties by sequence number (file order), lower first.
    pub seq: u64,
    /// The job.
    pub job: J,
}

/// Why a feed could not hand over items (the store failed, a stored item is unreadable).
pub type FeedError = Box<dyn std::error::Error + Send + Sync>;

/// A cursor in a lane: the last (priority, seq) handed over.
pub type After = Option<(i64, u64)>;

/// A source of queued items, read in pages per lane in queue order.
pub trait Feed<J> {
    /// Every lane with at least one queued item, each once.
    ///
    /// # Errors
    /// When the source cannot be read.
    fn lanes(&mut self) -> Result<Vec<Lane>, FeedError>;

    /// Up to `n` items of `lane` that come after `after` (all of them from the start when
    /// `None`), in queue order: priority descending, then sequence number. Fewer than `n`
    /// means the lane has no more.
    ///
    /// # Errors
    /// When the source cannot be read or an item cannot be turned into a job.
    fn page(&mut self, lane: Lane, after: After, n: usize) -> Result<Vec<Queued<J>>, FeedError>;
}

/// Whether `(priority, seq)` comes after the cursor `after` in queue order.
pub fn is_after(priority: i64, seq: u64, after: After) -> bool {
    after.is_none_or(|(p, s)| priority < p || (priority == p && seq > s))
}

/// A feed over items held in memory: for tests, and for callers that have the list anyway.
pub struct VecFeed<J> {
    /// Items sorted by lane, then queue order.
    items: Vec<Queued<J>>,
}

impl<J: Clone> VecFeed<J> {
    /// A feed of `items`, in any order.
    pub fn new(mut items: Vec<Queued<J>>) -> VecFeed<J> {
        items.sort_by_key(order);
        VecFeed { items }
    }
}

/// Where an item sorts in a [`VecFeed`]: by lane, then in queue order.
fn order<J>(q: &Queued<J>) -> (u16, u32, u16, std::cmp::Reverse<i64>, u64) {
    (
        q.lane.class,
        q.lane.tenant,
        q.lane.group,
        std::cmp::Reverse(q.priority),
        q.seq,
    )
}

impl<J: Clone> Feed<J> for VecFeed<J> {
    fn lanes(&mut self) -> Result<Vec<Lane>, FeedError> {
        let mut lanes: Vec<Lane> = self.items.iter().map(|q| q.lane).collect();
        lanes.dedup();
        Ok(lanes)
    }

    fn page(&mut self, lane: Lane, after: After, n: usize) -> Result<Vec<Queued<J>>, FeedError> {
        let key = |q: &Queued<J>| (q.lane.class, q.lane.tenant, q.lane.group);
        let lane_key = (lane.class, lane.tenant, lane.group);
        let start = self.items.partition_point(|q| {
            key(q) < lane_key || (key(q) == lane_key && !is_after(q.priority, q.seq, after))
        });
        Ok(self.items[start..]
            .iter()
            .take_while(|q| q.lane == lane)
            .take(n)
            .cloned()
            .collect())
    }
}
