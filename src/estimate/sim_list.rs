//! The work list as the simulation holds it: compact, in dispatch order.
//!
//! Owns the memory an estimate takes per item. A [`SimItem`] is split into what sets its
//! place in the queue (priority and file order, an [`Entry`] of 24 bytes) and everything
//! else (costs, limits, lane, usage and price: its [`Shape`]). Items of a work list share a
//! few shapes (one per distinct token count, say), so each shape is kept once and the
//! entries point at it: ten million items take about 240 MB, whatever their prompts.
//!
//! Invariant: [`SimList::entries`] are in the order a plain scheduler sends them (priority
//! first, then file order), sorted once when the list is built. Totals over the whole list
//! (tokens, price, what each limit is charged) are sums over shapes times their counts.

use std::cmp::Reverse;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use rustc_hash::FxHashMap;

use crate::limiter::{Costs, Route, Unit};
use crate::scheduler::Lane;

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

/// The items of a work list in dispatch order, each pointing at its shape.
#[derive(Clone, Debug, Default)]
pub struct SimList {
    entries: Vec<Entry>,
    shapes: Vec<Shape>,
    /// Items per shape.
    counts: Vec<u64>,
}

impl SimList {
    /// Items in the list.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the list has no item.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The items, in dispatch order: priority first, then file order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
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
#[derive(Debug, Default)]
pub struct SimListBuilder {
    list: SimList,
    index: FxHashMap<Shape, u32>,
}

impl SimListBuilder {
    /// Adds the next item of the work list.
    pub fn push(&mut self, item: SimItem) {
        let (priority, seq) = (item.priority, item.seq);
        let shape = Shape::of(item);
        let list = &mut self.list;
        let shape = match self.index.get(&shape) {
            Some(&i) => i,
            None => {
                let i = u32::try_from(list.shapes.len())
                    .expect("a work list has fewer than 2^32 distinct item shapes");
                list.shapes.push(shape.clone());
                list.counts.push(0);
                self.index.insert(shape, i);
                i
            }
        };
        list.counts[shape as usize] += 1;
        list.entries.push(Entry {
            priority,
            seq,
            shape,
        });
    }

    /// The list, sorted into dispatch order.
    pub fn build(self) -> SimList {
        let mut list = self.list;
        // Sorted in place: no second copy of the entries (their spare capacity is never
        // touched, so it takes no memory).
        list.entries
            .sort_unstable_by_key(|e| (Reverse(e.priority), e.seq));
        list
    }
}

impl FromIterator<SimItem> for SimList {
    fn from_iter<I: IntoIterator<Item = SimItem>>(items: I) -> SimList {
        let mut builder = SimListBuilder::default();
        items.into_iter().for_each(|item| builder.push(item));
        builder.build()
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
        let order: Vec<u64> = list.entries().iter().map(|e| e.seq).collect();
        assert_eq!(order, [1, 3, 0, 2], "priority first, then file order");
        let counts: Vec<u64> = list.shapes().map(|(_, n)| n).collect();
        assert_eq!(
            counts,
            [3, 1],
            "the 10-token shape first, as the file first used it"
        );
        assert_eq!(list.sum(|s| s.tokens), 50);
        assert_eq!(list.shape(&list.entries()[0]).tokens, 20);
    }
}
