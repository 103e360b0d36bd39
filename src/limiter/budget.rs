//! Money as a limit: the pricing table and the `usd` unit.
//!
//! A budget is a window limit counted in [`Unit::Usd`](super::Unit) whose amounts are
//! micro-dollars, so that costs stay whole numbers and sums stay exact. A job reserves its
//! worst case before it is sent (every prompt token plus `max_tokens` output tokens at the
//! model's prices) and settles to the response's usage afterwards, so requests in flight can
//! never push spending past the cap.

use std::collections::BTreeMap;

/// Micro-dollars per dollar: the `usd` unit's amounts are micro-dollars.
pub const MICRO_USD_PER_USD: f64 = 1_000_000.0;

/// Converts dollars to whole micro-dollars, rounding up (costs are never under-counted).
pub fn micro_usd(usd: f64) -> u64 {
    if usd.is_finite() && usd > 0.0 {
        (usd * MICRO_USD_PER_USD).ceil() as u64
    } else {
        0
    }
}

/// Converts micro-dollars to dollars, for display.
pub fn usd(micro: u64) -> f64 {
    micro as f64 / MICRO_USD_PER_USD
}

/// A model's prices in dollars per million tokens.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Price {
    /// Input (prompt) tokens.
    pub input: f64,
    /// Output (completion) tokens.
    pub output: f64,
}

impl Price {
    /// The cost of `input` and `output` tokens, in micro-dollars, rounded up.
    pub fn cost(&self, input: u64, output: u64) -> u64 {
        micro_usd((input as f64 * self.input + output as f64 * self.output) / 1_000_000.0)
    }
}

/// Prices per model name, from the config's `[pricing."model"]` tables.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pricing(BTreeMap<String, Price>);

impl Pricing {
    /// A table from `(model, price)` pairs.
    pub fn new(prices: impl IntoIterator<Item = (String, Price)>) -> Pricing {
        Pricing(prices.into_iter().collect())
    }

    /// The price of `model`, if the table has it.
    pub fn get(&self, model: &str) -> Option<&Price> {
        self.0.get(model)
    }

    /// Whether no model is priced.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_are_whole_micro_dollars_rounded_up() {
        let price = Price {
            input: 0.15,
            output: 0.60,
        };
        // 1,000 input tokens = $0.00015, 200 output tokens = $0.00012.
        assert_eq!(price.cost(1_000, 200), 270);
        assert_eq!(
            price.cost(1, 0),
            1,
            "a fraction of a micro-dollar rounds up"
        );
        assert_eq!(micro_usd(25.0), 25_000_000);
        assert_eq!(usd(270), 0.00027);
    }
}
