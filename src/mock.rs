//! The built-in mock of a rate-limited API, as ratebound uses it: the `ratebound-mock`
//! crate (`crates/ratebound-mock`) under ratebound's `mock` path, and ratebound's clocks as
//! the mock's clocks.
//!
//! The mock is its own crate so that it stays an independent oracle (it shares no code with
//! the limiter it judges) and so that a new profile is one file there. It names the little
//! it needs of a clock ([`ratebound_mock::clock::Clock`]); ratebound's [`SystemClock`] and
//! [`ManualClock`] implement it here, so a runner test and the mock it drives share one
//! clock, as `Provider<SystemClock>` in the runner's in-memory transport does.

pub use ratebound_mock::*;

use std::time::SystemTime;

use crate::clock::{Clock, ManualClock, Nanos, SystemClock};

impl ratebound_mock::clock::Clock for SystemClock {
    fn now(&self) -> Nanos {
        Clock::now(self)
    }
    fn wall(&self) -> SystemTime {
        Clock::wall(self)
    }
}

impl ratebound_mock::clock::Clock for ManualClock {
    fn now(&self) -> Nanos {
        Clock::now(self)
    }
    fn wall(&self) -> SystemTime {
        Clock::wall(self)
    }
}

#[cfg(test)]
mod tests;
