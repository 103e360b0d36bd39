//! The mock's profiles: one file per provider it imitates, each implementing [`Dialect`].
//!
//! A dialect says which limits it takes, builds them, answers a request against them, and
//! words its answers: its rate-limit headers, its 429 body, its `retry-after`. The provider
//! ([`crate::provider`]) owns everything else (faults, the quota, records, counts), so a
//! profile never sees another. The defaults serve the request-limited APIs (any method and
//! path, a page of a [`listing`](crate::listing) for a query with `total`, else a small
//! JSON body with a fresh `id`), so most profiles only format their headers.
//!
//! Adding a profile: a new file here with a unit struct implementing [`Dialect`], its
//! `mod` line below and its entry in [`ALL`]. Its name is then taken by `mock://NAME` and
//! `ratebound mock --profile NAME`, its keys are checked, and hints list it.

mod anthropic;
mod generic;
mod github;
mod ietf;
mod leaky;
pub(crate) mod openai;
mod x;
mod zendesk;

use serde_json::{Value, json};

use crate::MockSpec;
use crate::clock::Nanos;
use crate::limits::Limits;
use crate::listing;
use crate::provider::MockRequest;

/// Every profile, in the order hints list them.
pub(crate) const ALL: &[&dyn Dialect] = &[
    &openai::OpenAi,
    &anthropic::Anthropic,
    &github::GitHub,
    &x::X,
    &generic::Generic,
    &ietf::Ietf,
    &zendesk::Zendesk,
    &leaky::Leaky,
];

/// The limit keys of the profiles that limit requests only, in buckets that `fill` fills.
pub(crate) const REQUEST_KEYS: &[&str] = &["rpm", "rps", "window", "fill"];

/// A provider's batch API, in compressed time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BatchApi {
    /// OpenAI's `/v1/files` and `/v1/batches`.
    OpenAi,
    /// Anthropic's `/v1/messages/batches`.
    Anthropic,
}

/// When a request arrived, and how many were answered 200 before it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Arrival<'a> {
    /// The mock's spec, for the options a profile reads (a leaky bucket's `nodelay`).
    pub(crate) spec: &'a MockSpec,
    /// The provider clock's monotonic reading.
    pub(crate) now: Nanos,
    /// Nanoseconds since the UNIX epoch, for windows and resets given as times.
    pub(crate) wall_ns: u64,
    /// Requests answered 200 before this one: the next fresh `id` is this plus one.
    pub(crate) served: u64,
}

/// A profile's answer to a request that got no fault.
#[derive(Clone, Debug)]
pub(crate) struct Reply {
    /// HTTP status.
    pub(crate) status: u16,
    /// Its rate-limit headers (and a `link`), names lower case; dropped under
    /// `headers=false`.
    pub(crate) headers: Vec<(String, String)>,
    /// The JSON body.
    pub(crate) body: Value,
    /// For a refusal that can be retried: nanoseconds until it would be admitted, which
    /// [`Dialect::retry_headers`] words.
    pub(crate) retry: Option<Nanos>,
    /// Nanoseconds an admitted request waits in the server's queue before its answer
    /// (a leaky bucket without `nodelay`), on top of the latency.
    pub(crate) queued: Nanos,
    /// A body that is not one JSON value (JSONL results), sent instead of `body` as
    /// `application/x-jsonl`.
    pub(crate) text: Option<String>,
}

impl Reply {
    /// An answer with no retry time and no queueing.
    pub(crate) fn new(status: u16, headers: Vec<(String, String)>, body: Value) -> Reply {
        Reply {
            status,
            headers,
            body,
            retry: None,
            queued: 0,
            text: None,
        }
    }
}

/// One provider the mock imitates: its limits, its paths and bodies, its headers.
pub(crate) trait Dialect: Sync + 'static {
    /// The name in `mock://NAME` and `--profile NAME`: its header dialect's name.
    fn name(&self) -> &'static str;

    /// The limit keys of a `mock://` URL this profile takes (every profile also takes
    /// `latency` and the fault keys).
    fn limit_keys(&self) -> &'static [&'static str];

    /// Its limits at `now`: by default `rpm`, `rps`, `tpm` as buckets and `window` as a
    /// UTC-aligned fixed window, those of [`Dialect::limit_keys`].
    fn limits(&self, spec: &MockSpec, now: Nanos) -> Limits {
        Limits::standard(spec, self.limit_keys(), now)
    }

    /// The answer to `req`, which got no fault: by default any method and path is served
    /// against the request limits ([`any_path`]).
    fn reply(&self, limits: &mut Limits, req: &MockRequest, at: Arrival<'_>) -> Reply {
        any_path(self, limits, req, at)
    }

    /// The rate-limit headers of `limits` as they stand at `wall_ns` (epoch nanoseconds).
    fn rate_limit_headers(&self, limits: &Limits, wall_ns: u64) -> Vec<(String, String)>;

    /// The body of its 429.
    fn too_many_requests(&self) -> Value {
        json!({"message": "Too Many Requests"})
    }

    /// Which batch API it serves, if any.
    fn batch_api(&self) -> Option<BatchApi> {
        None
    }

    /// The headers of a refusal that can be retried in `wait`: by default `retry-after`.
    fn retry_headers(&self, wait: Nanos) -> Vec<(String, String)> {
        vec![retry_after(wait)]
    }
}

/// `retry-after` in whole seconds, rounded up (a "not before") and at least 1.
pub(crate) fn retry_after(wait: Nanos) -> (String, String) {
    let wait_s = wait.div_ceil(1_000_000_000).max(1);
    ("retry-after".to_string(), wait_s.to_string())
}

/// The answer of a profile that serves any method and path with request limits only: a
/// page of a [`listing`] when the query has `total`, else a small JSON body naming the
/// request with a fresh `id` (for a later step to chain on), or the dialect's 429.
pub(crate) fn any_path<D: Dialect + ?Sized>(
    dialect: &D,
    limits: &mut Limits,
    req: &MockRequest,
    at: Arrival<'_>,
) -> Reply {
    let page = listing::page(&req.path);
    if let Some(Err(refusal)) = page {
        return Reply::new(400, Vec::new(), refusal);
    }
    let admitted = limits.admit(0, at.now, at.wall_ns);
    let mut headers = dialect.rate_limit_headers(limits, at.wall_ns);
    let Err(refusal) = admitted else {
        if let Some(Ok(page)) = page {
            headers.extend(page.link.map(|l| ("link".to_string(), l)));
            return Reply::new(200, headers, page.body);
        }
        let path = req.path.split('?').next().unwrap_or_default();
        let id = (at.served + 1).to_string();
        return Reply::new(200, headers, json!({"id": id, "path": path}));
    };
    Reply {
        retry: refusal.wait,
        ..Reply::new(429, headers, dialect.too_many_requests())
    }
}
