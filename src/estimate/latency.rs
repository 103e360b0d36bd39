//! How long each simulated request takes: a fixed value, a lognormal fitted to p50/p95, or
//! the latencies a previous run recorded.
//!
//! Owns parsing `--latency` and drawing one latency per request. Draws come from a seeded
//! generator, so the same inputs always give the same estimate. Pure: no clock, no I/O.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::clock::{Nanos, nanos};

/// z-score of the 95th percentile of a standard normal distribution.
const Z95: f64 = 1.644_853_626_951_472_2;

/// The latency of a request, as the simulation draws it.
#[derive(Clone, Debug, PartialEq)]
pub enum Latency {
    /// Every request takes this long.
    Fixed(Duration),
    /// Lognormal with this median and 95th percentile (`p95 >= p50`).
    LogNormal {
        /// Median.
        p50: Duration,
        /// 95th percentile.
        p95: Duration,
    },
    /// Drawn uniformly from these recorded latencies (never empty).
    Recorded(Vec<Duration>),
}

/// `--latency` could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "--latency `{value}`: {problem}\n  hint: write a duration such as `800ms`, or `p50=800ms,p95=2s` for a lognormal fitted to two percentiles"
)]
pub struct LatencyError {
    /// What was given.
    pub value: String,
    /// What is wrong with it.
    pub problem: String,
}

impl Latency {
    /// Parses `800ms` (fixed) or `p50=800ms,p95=2s` (lognormal).
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratebound::estimate::Latency;
    /// assert_eq!(Latency::parse("250ms").unwrap(), Latency::Fixed(Duration::from_millis(250)));
    /// assert!(matches!(Latency::parse("p50=1s,p95=3s").unwrap(), Latency::LogNormal { .. }));
    /// assert!(Latency::parse("p50=3s,p95=1s").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<Latency, LatencyError> {
        let err = |problem: String| LatencyError {
            value: text.to_string(),
            problem,
        };
        let duration = |s: &str| {
            humantime::parse_duration(s.trim())
                .map_err(|e| err(format!("`{}` is not a duration ({e})", s.trim())))
        };
        if !text.contains('=') {
            return duration(text).map(Latency::Fixed);
        }
        let (mut p50, mut p95) = (None, None);
        for part in text.split(',') {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| err(format!("`{part}` is not KEY=DURATION")))?;
            match key.trim() {
                "p50" => p50 = Some(duration(value)?),
                "p95" => p95 = Some(duration(value)?),
                other => {
                    return Err(err(format!(
                        "unknown percentile `{other}` (p50 and p95 are known)"
                    )));
                }
            }
        }
        match (p50, p95) {
            (Some(p50), Some(p95)) if p95 >= p50 && !p50.is_zero() => {
                Ok(Latency::LogNormal { p50, p95 })
            }
            (Some(_), Some(_)) => Err(err("p50 must be above zero and p95 at least p50".into())),
            _ => Err(err("both p50 and p95 are needed".into())),
        }
    }

    /// The parameters (mu, sigma) of the lognormal, in ln(seconds).
    fn lognormal(p50: Duration, p95: Duration) -> (f64, f64) {
        let mu = p50.as_secs_f64().ln();
        let sigma = (p95.as_secs_f64() / p50.as_secs_f64()).ln() / Z95;
        (mu, sigma)
    }

    /// The mean latency (for Little's law).
    pub fn mean(&self) -> Duration {
        match self {
            Latency::Fixed(d) => *d,
            Latency::LogNormal { p50, p95 } => {
                let (mu, sigma) = Latency::lognormal(*p50, *p95);
                Duration::from_secs_f64((mu + sigma * sigma / 2.0).exp())
            }
            Latency::Recorded(all) => {
                let n = u32::try_from(all.len().max(1)).unwrap_or(u32::MAX);
                all.iter().sum::<Duration>() / n
            }
        }
    }

    /// A deterministic stream of latencies drawn from this model, seeded by `seed`.
    pub fn sampler(&self, seed: u64) -> Sampler<'_> {
        let params = match self {
            Latency::LogNormal { p50, p95 } => Latency::lognormal(*p50, *p95),
            _ => (0.0, 0.0),
        };
        Sampler {
            latency: self,
            rng: StdRng::seed_from_u64(seed),
            params,
        }
    }

    /// A short description for people and the JSON: `fixed`, `lognormal` or `recorded`.
    pub fn model(&self) -> &'static str {
        match self {
            Latency::Fixed(_) => "fixed",
            Latency::LogNormal { .. } => "lognormal",
            Latency::Recorded(_) => "recorded",
        }
    }
}

/// Draws one latency per request from a [`Latency`].
pub struct Sampler<'a> {
    latency: &'a Latency,
    rng: StdRng,
    params: (f64, f64),
}

impl Sampler<'_> {
    /// The next request's latency.
    pub fn next_latency(&mut self) -> Nanos {
        match self.latency {
            Latency::Fixed(d) => nanos(*d),
            Latency::LogNormal { .. } => {
                // Box-Muller: one standard normal from two uniforms in (0, 1].
                let u1 = 1.0 - self.rng.random::<f64>();
                let u2 = self.rng.random::<f64>();
                let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                let (mu, sigma) = self.params;
                ((mu + sigma * z).exp() * 1e9).min(u64::MAX as f64) as Nanos
            }
            Latency::Recorded(all) => {
                let i = self.rng.random_range(0..all.len().max(1));
                all.get(i).map_or(0, |d| nanos(*d))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lognormal_draws_its_percentiles() {
        let model = Latency::parse("p50=800ms, p95=2s").unwrap();
        let mut s = model.sampler(7);
        let mut draws: Vec<Nanos> = (0..20_000).map(|_| s.next_latency()).collect();
        draws.sort_unstable();
        let p50 = draws[10_000] as f64 / 1e9;
        let p95 = draws[19_000] as f64 / 1e9;
        assert!((p50 - 0.8).abs() < 0.03, "p50 {p50}");
        assert!((p95 - 2.0).abs() < 0.1, "p95 {p95}");
        // Mean of a lognormal: exp(mu + sigma^2 / 2).
        let mean = draws.iter().sum::<u64>() as f64 / 20_000.0 / 1e9;
        assert!(
            (mean - model.mean().as_secs_f64()).abs() < 0.03,
            "{mean} vs {:?}",
            model.mean()
        );
    }

    #[test]
    fn the_same_seed_draws_the_same_latencies() {
        let model = Latency::parse("p50=100ms,p95=1s").unwrap();
        let a: Vec<Nanos> = {
            let mut s = model.sampler(1);
            (0..50).map(|_| s.next_latency()).collect()
        };
        let mut s = model.sampler(1);
        assert!(a.iter().all(|&x| x == s.next_latency()));
    }

    #[test]
    fn bad_latencies_say_what_to_write() {
        for bad in ["fast", "p50=1s", "p50=2s,p95=1s", "p99=1s,p50=1s"] {
            let e = Latency::parse(bad).unwrap_err();
            assert!(e.to_string().contains("hint:"), "{e}");
        }
    }
}
