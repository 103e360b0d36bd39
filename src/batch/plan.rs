//! Which items go online and which through batches, and what that costs and when it ends:
//! the model behind `run --via auto` and `estimate --via batch|auto`. Pure.
//!
//! The batch lane's capacity before a deadline: batches take `turnaround` each (`[batch]`,
//! the completion window unless set) and the provider holds at most `enqueued_tokens` at
//! once, so `floor(deadline / turnaround)` rounds of at most that many tokens finish in
//! time. `auto` hands the batch lane all it can finish by the deadline (it is the cheaper
//! lane) and sends online exactly the rest; without a deadline, or with one beyond what
//! batches need, everything goes through batches.

use std::time::Duration;

use serde::Serialize;

use crate::config::BatchApi;

/// What the plan is computed from.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanInput {
    /// Items to send.
    pub items: u64,
    /// Their estimated tokens in all.
    pub tokens: u64,
    /// How long the online lane alone takes for all of them.
    pub online_makespan: Duration,
    /// What all of them cost online, in dollars.
    pub online_cost_usd: f64,
    /// Share of the price the batch API takes off (0.5: half price).
    pub batch_discount: f64,
    /// When the run must be finished, from its start.
    pub deadline: Option<Duration>,
}

/// A split of the work between the lanes, with its expected cost and finish.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Split {
    /// Items sent online.
    pub online_items: u64,
    /// Items sent through batches.
    pub batch_items: u64,
    /// Batches expected (without retries).
    pub batches: u64,
    /// Expected cost, in dollars.
    pub cost_usd: f64,
    /// The same work all online, in dollars.
    pub online_only_cost_usd: f64,
    /// Expected finish from the start, in seconds (the later lane's).
    pub finish_s: f64,
    /// Whether that is within the deadline (`None` without one).
    pub meets_deadline: Option<bool>,
}

fn batch_shape(input: &PlanInput, api: &BatchApi, n: u64) -> (u64, u64, Duration) {
    if n == 0 {
        return (0, 0, Duration::ZERO);
    }
    let mean_tokens = (input.tokens as f64 / input.items.max(1) as f64).max(1.0);
    let by_tokens = api.enqueued_tokens.map_or(u64::MAX, |e| {
        ((e.get() as f64 / mean_tokens).floor() as u64).max(1)
    });
    let per_batch = api.max_requests.get().min(by_tokens);
    let batches = n.div_ceil(per_batch);
    // Rounds: how many times the enqueued-token limit fills up.
    let per_round = by_tokens.max(per_batch);
    let rounds = n.div_ceil(per_round).max(1);
    (
        batches,
        rounds,
        round(api).saturating_mul(u32::try_from(rounds).unwrap_or(u32::MAX)),
    )
}

/// One round of batches: the expected turnaround, plus a poll to notice the end.
fn round(api: &BatchApi) -> Duration {
    api.turnaround.unwrap_or(api.window) + api.poll
}

/// The split with `batch_items` of the items (the last ones) through batches.
pub fn split(input: &PlanInput, api: &BatchApi, batch_items: u64) -> Split {
    let online_items = input.items - batch_items;
    let per_item = input.online_cost_usd / input.items.max(1) as f64;
    let (batches, _, batch_finish) = batch_shape(input, api, batch_items);
    let online_finish = input
        .online_makespan
        .mul_f64(online_items as f64 / input.items.max(1) as f64);
    let finish = batch_finish.max(online_finish);
    Split {
        online_items,
        batch_items,
        batches,
        cost_usd: per_item
            * (online_items as f64 + batch_items as f64 * (1.0 - input.batch_discount)),
        online_only_cost_usd: input.online_cost_usd,
        finish_s: finish.as_secs_f64(),
        meets_deadline: input.deadline.map(|d| finish <= d),
    }
}

/// Everything through batches.
pub fn all_batch(input: &PlanInput, api: &BatchApi) -> Split {
    split(input, api, input.items)
}

/// As many items through batches as finish by the deadline, the rest online; everything
/// through batches without a deadline.
pub fn auto(input: &PlanInput, api: &BatchApi) -> Split {
    let Some(deadline) = input.deadline else {
        return all_batch(input, api);
    };
    let rounds = (deadline.as_secs_f64() / round(api).as_secs_f64()).floor() as u64;
    let mean_tokens = (input.tokens as f64 / input.items.max(1) as f64).max(1.0);
    let per_round = api.enqueued_tokens.map_or(u64::MAX, |e| {
        ((e.get() as f64 / mean_tokens).floor() as u64).max(1)
    });
    let capacity = rounds.saturating_mul(per_round).min(input.items);
    split(input, api, capacity)
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU64;

    use super::*;
    use crate::config::BatchProvider;

    fn input(deadline_s: Option<u64>) -> PlanInput {
        PlanInput {
            items: 1_000,
            tokens: 100_000,
            online_makespan: Duration::from_secs(1_000),
            online_cost_usd: 10.0,
            batch_discount: 0.5,
            deadline: deadline_s.map(Duration::from_secs),
        }
    }

    fn api(turnaround_s: u64, enqueued: Option<u64>) -> BatchApi {
        BatchApi {
            turnaround: Some(Duration::from_secs(turnaround_s)),
            enqueued_tokens: enqueued.and_then(NonZeroU64::new),
            poll: Duration::ZERO,
            ..BatchApi::new(BatchProvider::OpenAi)
        }
    }

    #[test]
    fn auto_batches_what_finishes_by_the_deadline_and_sends_the_rest_online() {
        // 100 tokens an item, 20,000 enqueued: 200 items a round of 300 s; a 1,200 s
        // deadline fits 4 rounds: 800 items batched, 200 online (200 s of online time).
        let s = auto(&input(Some(1_200)), &api(300, Some(20_000)));
        assert_eq!((s.online_items, s.batch_items, s.batches), (200, 800, 4));
        assert!((s.cost_usd - (2.0 + 4.0)).abs() < 1e-9, "{s:?}");
        assert_eq!(s.meets_deadline, Some(true));
        assert!((s.finish_s - 1_200.0).abs() < 1e-9, "{s:?}");
    }

    #[test]
    fn a_deadline_shorter_than_a_batch_sends_everything_online() {
        let s = auto(&input(Some(200)), &api(300, None));
        assert_eq!((s.online_items, s.batch_items), (1_000, 0));
        assert_eq!(s.meets_deadline, Some(false), "online alone takes 1,000 s");
        let s = auto(&input(None), &api(300, None));
        assert_eq!((s.online_items, s.batch_items, s.batches), (0, 1_000, 1));
        assert!((s.cost_usd - 5.0).abs() < 1e-9);
    }
}
