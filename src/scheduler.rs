//! Which job goes out next: strict priority order, and retries that wait their turn.
//!
//! Owns the queue of jobs not yet in flight. Ready jobs leave in priority order (higher
//! first; ties keep file order, by sequence number). A job sent back for a retry waits in a
//! timer queue until its instant, then rejoins the ready jobs at its own priority. Pure: time
//! is an argument, nothing sleeps.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use crate::clock::Nanos;

struct Ready<J> {
    priority: i64,
    seq: u64,
    job: J,
}

impl<J> PartialEq for Ready<J> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl<J> Eq for Ready<J> {}
impl<J> PartialOrd for Ready<J> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<J> Ord for Ready<J> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.priority, Reverse(self.seq)).cmp(&(other.priority, Reverse(other.seq)))
    }
}

struct Delayed<J> {
    at: Nanos,
    ready: Ready<J>,
}

impl<J> PartialEq for Delayed<J> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl<J> Eq for Delayed<J> {}
impl<J> PartialOrd for Delayed<J> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<J> Ord for Delayed<J> {
    fn cmp(&self, other: &Self) -> Ordering {
        // Earliest first in a max-heap.
        (Reverse(self.at), &self.ready).cmp(&(Reverse(other.at), &other.ready))
    }
}

/// The queue of jobs waiting to be sent.
pub struct Scheduler<J> {
    ready: BinaryHeap<Ready<J>>,
    delayed: BinaryHeap<Delayed<J>>,
}

impl<J> Default for Scheduler<J> {
    fn default() -> Self {
        Scheduler {
            ready: BinaryHeap::new(),
            delayed: BinaryHeap::new(),
        }
    }
}

impl<J> Scheduler<J> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues a job that may go out at once.
    pub fn push(&mut self, priority: i64, seq: u64, job: J) {
        self.ready.push(Ready { priority, seq, job });
    }

    /// Queues a job that may go out at `at` or later.
    pub fn push_at(&mut self, at: Nanos, priority: i64, seq: u64, job: J) {
        self.delayed.push(Delayed {
            at,
            ready: Ready { priority, seq, job },
        });
    }

    fn promote(&mut self, now: Nanos) {
        while self.delayed.peek().is_some_and(|d| d.at <= now) {
            if let Some(d) = self.delayed.pop() {
                self.ready.push(d.ready);
            }
        }
    }

    /// The job that goes out next at `now`, without removing it.
    pub fn peek(&mut self, now: Nanos) -> Option<&J> {
        self.promote(now);
        self.ready.peek().map(|r| &r.job)
    }

    /// Removes and returns the job that goes out next at `now`.
    pub fn pop(&mut self, now: Nanos) -> Option<J> {
        self.promote(now);
        self.ready.pop().map(|r| r.job)
    }

    /// When the earliest waiting job becomes ready, if any job is waiting.
    pub fn next_at(&self) -> Option<Nanos> {
        self.delayed.peek().map(|d| d.at)
    }

    /// Jobs queued, ready or waiting.
    pub fn len(&self) -> usize {
        self.ready.len() + self.delayed.len()
    }

    /// Whether no job is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn higher_priority_first_and_ties_keep_file_order() {
        let mut s = Scheduler::new();
        for (seq, priority) in [(0, 1), (1, 5), (2, 1), (3, 5), (4, -2)] {
            s.push(priority, seq, seq);
        }
        let order: Vec<u64> = std::iter::from_fn(|| s.pop(0)).collect();
        assert_eq!(order, vec![1, 3, 0, 2, 4]);
    }

    #[test]
    fn a_delayed_job_waits_for_its_instant_then_rejoins_by_priority() {
        let mut s = Scheduler::new();
        s.push(0, 5, "low");
        s.push_at(100, 9, 1, "retry");
        assert_eq!(s.next_at(), Some(100));
        assert_eq!(s.peek(99), Some(&"low"), "not due at 99");
        assert_eq!(s.pop(100), Some("retry"), "due at 100 and outranks");
        assert_eq!(s.pop(100), Some("low"));
        assert!(s.is_empty());
    }
}
