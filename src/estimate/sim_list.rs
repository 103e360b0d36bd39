//! The work list as the simulation holds it: compact, in dispatch order.
//!
//! Owns the memory an estimate takes per item. A [`SimItem`] is split into what sets its
//! place in the queue (priority and file order, an [`Entry`] of 24 bytes) and everything
//! else (costs, limits, lane, usage and price: its [`Shape`]). Items of a work list share a
//! few shapes (one per distinct token count, say), so each shape is kept once and the
//! entries point at it. Entries beyond a million are sorted on disk ([`spill`]): an
//! estimate of ten million items holds about one million entries' worth of memory, whatever
//! their prompts.
//!
//! Invariant: [`SimList::entries`] come in the order a plain scheduler sends them (priority
//! first, then file order), sorted once when the list is built. Totals over the whole list
//! (tokens, price, what each limit is charged) are sums over shapes times their counts.
//!
//! [`spill`]: crate::spill

use std::cmp::{Ordering, Reverse};
use std::hash::{Hash, Hasher};
use std::io;
use std::time::Duration;

use rustc_hash::FxHashMap;

use crate::limiter::{Costs, Route, Unit};
use crate::scheduler::Lane;
use crate::spill::{self, Record, Sorted, Spill};

use super::SimItem;

/// What items with the same costs, limits, lane, usage and price have in common.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Estimated cost, reserved at admission.
    pub costs: Costs,
    /// The limits it falls under.
    pub route: Route,
    /// Where it queues under a scheduling policy.
    pub lane: Lane,
    /// Tokens each item is expected to use.
    pub tokens: u64,
    /// Expected price per item in micro-dollars through the normal API.
    pub usd_micro: u64,
    /// Price in micro-dollars and completion window through the batch API, if offered.
    pub batch: Option<(u64, Duration)>,
    /// Whether `tokens` and the price come from a previous run's usage.
    pub recorded: bool,
    /// What a reservation of `costs` settles to when the response arrives.
    pub settled: Costs,
}

impl Shape {
    fn of(item: SimItem) -> Shape {
        let settled = item.settled_costs();
        Shape {
            costs: item.costs,
            route: item.route,
            lane: item.lane,
            tokens: item.tokens,
            usd_micro: item.usd_micro,
            batch: item.batch,
            recorded: item.recorded,
            settled,
        }
    }

    /// The amount of `unit` a reservation settles to.
    pub fn settled(&self, unit: &Unit) -> u64 {
        self.settled.get(unit)
    }
}

// Hashes every field but the route (which has no hash): equal shapes hash equally, and
// shapes differing only in route share a bucket, told apart by `Eq`.
impl Hash for Shape {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.costs.iter().for_each(|c| c.hash(state));
        self.lane.hash(state);
        self.tokens.hash(state);
        self.usd_micro.hash(state);
        self.batch.hash(state);
        self.recorded.hash(state);
    }
}

/// One item's place in the queue and the index of its [`Shape`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Higher first.
    pub priority: i64,
    /// File order.
    pub seq: u64,
    shape: u32,
}

impl Entry {
    /// Dispatch order: higher priority first, then file order.
    fn key(&self) -> (Reverse<i64>, u64, u32) {
        (Reverse(self.priority), self.seq, self.shape)
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Record for Entry {
    const SIZE: usize = 20;
    fn encode(&self, out: &mut [u8]) {
        out[..8].copy_from_slice(&self.priority.to_le_bytes());
        out[8..16].copy_from_slice(&self.seq.to_le_bytes());
        out[16..20].copy_from_slice(&self.shape.to_le_bytes());
    }
    fn decode(bytes: &[u8]) -> Self {
        let mut b8 = [0u8; 8];
        let mut b4 = [0u8; 4];
        b8.copy_from_slice(&bytes[..8]);
        let priority = i64::from_le_bytes(b8);
        b8.copy_from_slice(&bytes[8..16]);
        b4.copy_from_slice(&bytes[16..20]);
        Entry {
            priority,
            seq: u64::from_le_bytes(b8),
            shape: u32::from_le_bytes(b4),
        }
    }
}

/// The items of a work list in dispatch order, each pointing at its shape.
#[derive(Debug)]
pub struct SimList {
    entries: Sorted<Entry>,
    shapes: Vec<Shape>,
    /// Items per shape.
    counts: Vec<u64>,
}

impl SimList {
    /// Items in the list.
    pub fn len(&self) -> usize {
        usize::try_from(self.entries.len()).unwrap_or(usize::MAX)
    }

    /// Whether the list has no item.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The items, in dispatch order: priority first, then file order (a pass over them,
    /// read back from disk when the list was spilled; any number of passes).
    pub fn entries(&self) -> spill::Iter<'_, Entry> {
        self.entries.iter()
    }

    /// The first read of the spilled entries that failed, if any: a simulation that met it
    /// saw only part of the list, and its figures must not be reported.
    pub fn read_error(&self) -> Option<io::Error> {
        self.entries.read_error()
    }

    /// The shape of `entry`, an entry of this list.
    pub fn shape(&self, entry: &Entry) -> &Shape {
        &self.shapes[entry.shape as usize]
    }

    /// Each distinct shape with the number of items that have it, in the order the work
    /// list first used them.
    pub fn shapes(&self) -> impl Iterator<Item = (&Shape, u64)> {
        self.shapes.iter().zip(self.counts.iter().copied())
    }

    /// The sum over all items of `f` of their shape.
    pub fn sum(&self, f: impl Fn(&Shape) -> u64) -> u64 {
        self.shapes().map(|(s, n)| f(s).saturating_mul(n)).sum()
    }
}

/// Builds a [`SimList`] one item at a time (the work list is read once, streaming).
#[derive(Debug)]
pub struct SimListBuilder {
    entries: Spill<Entry>,
    shapes: Vec<Shape>,
    counts: Vec<u64>,
    index: FxHashMap<Shape, u32>,
}

impl Default for SimListBuilder {
    /// A builder that sorts entries beyond [`spill::CHUNK`] on disk.
    fn default() -> Self {
        SimListBuilder::spilling_every(spill::CHUNK)
    }
}

impl SimListBuilder {
    /// A builder that writes a sorted run every `chunk` entries (`usize::MAX`: never).
    pub fn spilling_every(chunk: usize) -> Self {
        SimListBuilder {
            entries: Spill::new(chunk),
            shapes: Vec::new(),
            counts: Vec::new(),
            index: FxHashMap::default(),
        }
    }

    /// Adds the next item of the work list.
    pub fn push(&mut self, item: SimItem) {
        let entry = self.entry(item);
        self.entries.push(entry);
    }

    /// The entry of `item`, its shape kept (once) and counted.
    fn entry(&mut self, item: SimItem) -> Entry {
        let (priority, seq) = (item.priority, item.seq);
        let shape = Shape::of(item);
        let shape = match self.index.get(&shape) {
            Some(&i) => i,
            None => {
                let i = u32::try_from(self.shapes.len())
                    .expect("a work list has fewer than 2^32 distinct item shapes");
                self.shapes.push(shape.clone());
                self.counts.push(0);
                self.index.insert(shape, i);
                i
            }
        };
        self.counts[shape as usize] += 1;
        Entry {
            priority,
            seq,
            shape,
        }
    }

    /// The list, sorted into dispatch order.
    ///
    /// # Errors
    /// When entries could not be written to (or sorted in) the temporary file.
    pub fn build(self) -> io::Result<SimList> {
        Ok(SimList {
            entries: self.entries.finish()?,
            shapes: self.shapes,
            counts: self.counts,
        })
    }
}

impl FromIterator<SimItem> for SimList {
    /// A list held in memory (no temporary file, so nothing can fail): for tests and
    /// benches.
    fn from_iter<I: IntoIterator<Item = SimItem>>(items: I) -> SimList {
        let mut builder = SimListBuilder::default();
        let entries = items.into_iter().map(|item| builder.entry(item)).collect();
        SimList {
            entries: Sorted::from_vec(entries),
            shapes: builder.shapes,
            counts: builder.counts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_in_dispatch_order_and_share_shapes() {
        let items =
            [(0, 0, 10), (5, 1, 20), (0, 2, 10), (5, 3, 10)].map(|(priority, seq, tokens)| {
                SimItem::new(priority, seq, Costs::request(tokens), Route::all(1))
            });
        let list: SimList = items.into_iter().collect();
        let order: Vec<u64> = list.entries().map(|e| e.seq).collect();
        assert_eq!(order, [1, 3, 0, 2], "priority first, then file order");
        let counts: Vec<u64> = list.shapes().map(|(_, n)| n).collect();
        assert_eq!(
            counts,
            [3, 1],
            "the 10-token shape first, as the file first used it"
        );
        assert_eq!(list.sum(|s| s.tokens), 50);
        let first = list.entries().next().unwrap();
        assert_eq!(list.shape(&first).tokens, 20);
    }
}
