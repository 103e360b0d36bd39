//! The Redis backend: one set of limits shared by every runner that calls the same API with
//! the same credentials, admitted atomically by Lua scripts on a Redis server.
//!
//! Owns the scripts and the connection; the numbers they evaluate come from
//! [`SharedBucket`] (pure, in `limiter`); this file does the I/O. A runner
//! keeps its in-memory [`Limiter`](crate::limiter::Limiter) (provider feedback, learned limits,
//! status) and, with `[limiter] backend = "redis://..."`, also takes every admission from
//! here: [`RedisLimiter::admit`] after the local limiter admitted a job, and
//! [`RedisLimiter::settle_later`] when the job's actual usage is known.
//!
//! Invariants:
//! - Admission is one script run, so it is atomic across processes and across every bucket a
//!   job touches: all-or-nothing, or "not before" as a wait.
//! - Time is Redis `TIME` (µs), never a runner's clock, so runners' clocks may drift.
//! - Fail closed: an error admits nothing ([`Admission::Unreachable`]); the caller waits and
//!   asks again. A settle that fails leaves the estimate charged (the safe side).
//! - Lost state (a Redis restart without persistence, a flush) is detected through an epoch
//!   key: a runner that knew the old epoch re-creates every bucket *used up* (rolling buckets
//!   empty, windows full until their next boundary), because the requests admitted before
//!   the loss may still count at the provider. A runner that starts after the loss and
//!   before any runner that knew the old epoch cannot tell a loss from a first start.
//! - Keys live under [`namespace`](crate::limiter::shared::namespace) (a hash, never a credential);
//!   the URL's password never reaches a message ([`redact`]).

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Script, Value};
use smallvec::SmallVec;

use std::sync::Arc;

pub use super::{Admission, SharedDenial};
use super::{AdmitFuture, Learned, LearnedFuture, SharedLimiter};
use crate::config::redis_url::redact;
use crate::limiter::shared::{Micros, SharedBucket};
use crate::limiter::{Costs, LimitSpec, NeverFits, Route, Unit};

/// Admits across every configured bucket at Redis `TIME`, or says how long to wait.
///
/// KEYS: the epoch key, then one hash per configured limit. ARGV: the epoch this runner
/// knows (empty at first), a fresh epoch in case the key is missing, then per limit its
/// kind and parameters ([`SharedBucket::script_params`]) and the job's weight in it (0 when
/// the job does not touch it). Returns `{1, now_us, epoch, slot, mark, ...}` when admitted,
/// `{0, wait_us, binding index}` when not yet, `{2, index, spent}` when never.
///
/// The Lua mirror of the in-memory bucket maths, in µs of Redis `TIME`: `earliest` is
/// [`Gcra::earliest`](crate::limiter::Gcra::earliest) for `'r'` and
/// [`FixedWindow::earliest`](crate::limiter::FixedWindow::earliest) (guard included) for
/// `'w'`; the admission loop is [`Limiter::reserve`](crate::limiter::Limiter::reserve)'s
/// search for an instant every bucket accepts; the take is `Gcra::take` / `FixedWindow::take`.
/// A change to either side must be made to both: the CLI test
/// `redis::the_reserve_script_and_the_memory_limiter_agree` runs both on the same limits.
const RESERVE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local known = ARGV[1]
local epoch = redis.call('GET', KEYS[1])
local lost = false
if not epoch then
  epoch = ARGV[2]
  redis.call('SET', KEYS[1], epoch)
  lost = known ~= ''
elseif known ~= '' and known ~= epoch then
  lost = true
end
local function start_of(s, at)
  if s.period == 0 then return 0 end
  return at - ((at - s.phase) % s.period)
end
local n = #KEYS - 1
local b = {}
for i = 1, n do
  local o = 2 + (i - 1) * 6
  local s = {kind = ARGV[o + 1], limit = tonumber(ARGV[o + 2]), period = tonumber(ARGV[o + 3]),
             phase = tonumber(ARGV[o + 4]), guard = tonumber(ARGV[o + 5]), step = tonumber(ARGV[o + 6])}
  local h = redis.call('HMGET', KEYS[i + 1], 'a', 'b', 'e')
  local pessimize = (not h[3] and lost) or (h[3] and h[3] ~= epoch)
  if s.kind == 'r' then
    s.tat = tonumber(h[1]) or 0
    s.ref = tonumber(h[2]) or 0
    if pessimize then s.tat = math.max(s.tat, now + s.limit) end
  else
    s.start = tonumber(h[1]) or -1
    s.used = tonumber(h[2]) or 0
    if pessimize then
      local cur = start_of(s, now)
      if s.start ~= cur then s.start = cur; s.used = 0 end
      s.used = math.max(s.used, s.limit)
    end
  end
  b[i] = s
end
local function save()
  for i = 1, n do
    local s = b[i]
    local key = KEYS[i + 1]
    if s.kind == 'r' then
      redis.call('HSET', key, 'a', string.format('%d', s.tat), 'b', string.format('%d', s.ref), 'e', epoch)
      redis.call('PEXPIRE', key, math.max(math.ceil((s.tat - now) / 1000), 0) + 1000)
    else
      redis.call('HSET', key, 'a', string.format('%d', s.start), 'b', string.format('%d', s.used), 'e', epoch)
      if s.period == 0 then
        redis.call('PERSIST', key)
      else
        redis.call('PEXPIRE', key, math.max(math.ceil((s.start + s.period - now) / 1000), 0) + 1000)
      end
    end
  end
end
local function earliest(s, at)
  if s.step == 0 then return at end
  if s.step > s.limit then return nil end
  if s.kind == 'r' then
    return math.max(math.max(s.tat, at) + s.step - s.limit, at)
  end
  local start = start_of(s, at)
  local used = 0
  if start == s.start then used = s.used end
  local nxt = nil
  if s.period > 0 then nxt = start + s.period end
  local in_guard = nxt ~= nil and at + s.guard >= nxt
  if used + s.step <= s.limit and not in_guard then return at end
  return nxt
end
local at = now
local bind = 0
for i = 1, n do
  local e = earliest(b[i], now)
  if not e then
    save()
    local s = b[i]
    local spent = 0
    if s.kind == 'w' and s.period == 0 and s.step <= s.limit then spent = 1 end
    return {2, i - 1, spent}
  end
  if e > at then at = e; bind = i - 1 end
end
if at > now then
  for _ = 1, 16 do
    local nxt = at
    for i = 1, n do
      local e = earliest(b[i], at)
      if e and e > nxt then nxt = e end
    end
    if nxt == at then break end
    at = nxt
  end
  save()
  return {0, at - now, bind}
end
local out = {1, now, epoch}
for i = 1, n do
  local s = b[i]
  if s.step == 0 then
    table.insert(out, 0)
    table.insert(out, 0)
  elseif s.kind == 'r' then
    s.tat = math.max(s.tat, now) + s.step
    table.insert(out, s.tat)
    table.insert(out, s.ref)
  else
    local cur = start_of(s, now)
    if s.start ~= cur then s.start = cur; s.used = 0 end
    s.used = s.used + s.step
    table.insert(out, cur)
    table.insert(out, 0)
  end
end
save()
return out
"#;

/// Settles a grant at Redis `TIME`: refunds what is still ahead of now, charges extra usage.
///
/// KEYS: the epoch key, then the hashes the grant touched. ARGV: the grant's epoch, then per
/// hash its kind, the refund and charge (µs for rolling buckets, units for windows), the
/// slot end (rolling) or window start (window), the refund mark, the window's period and
/// phase. A grant from another epoch settles nothing: that state is gone.
///
/// The Lua mirror of [`Gcra::refund`](crate::limiter::Gcra::refund) / `Gcra::charge` and
/// `FixedWindow::refund` / `FixedWindow::charge`, in µs of Redis `TIME`.
const SETTLE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local epoch = redis.call('GET', KEYS[1])
if epoch ~= ARGV[1] then return 0 end
for i = 1, #KEYS - 1 do
  local o = 1 + (i - 1) * 7
  local kind = ARGV[o + 1]
  local refund = tonumber(ARGV[o + 2])
  local charge = tonumber(ARGV[o + 3])
  local slot = tonumber(ARGV[o + 4])
  local mark = tonumber(ARGV[o + 5])
  local period = tonumber(ARGV[o + 6])
  local phase = tonumber(ARGV[o + 7])
  local key = KEYS[i + 1]
  local h = redis.call('HMGET', key, 'a', 'b', 'e')
  if not h[3] or h[3] == epoch then
    if kind == 'r' then
      local tat = tonumber(h[1]) or 0
      local ref = tonumber(h[2]) or 0
      if refund > 0 then
        local moved = math.max(ref - mark, 0)
        local ahead = math.max(math.max(slot - moved, 0) - now, 0)
        local back = math.min(refund, ahead)
        local nt = math.max(tat - back, math.min(tat, now))
        ref = ref + (tat - nt)
        tat = nt
      end
      if charge > 0 then tat = math.max(tat, now) + charge end
      redis.call('HSET', key, 'a', string.format('%d', tat), 'b', string.format('%d', ref), 'e', epoch)
      redis.call('PEXPIRE', key, math.max(math.ceil((tat - now) / 1000), 0) + 1000)
    else
      local start = tonumber(h[1]) or -1
      local used = tonumber(h[2]) or 0
      local cur = 0
      if period > 0 then cur = now - ((now - phase) % period) end
      if start ~= cur then start = cur; used = 0 end
      if refund > 0 and slot == cur then used = math.max(used - refund, 0) end
      used = used + charge
      redis.call('HSET', key, 'a', string.format('%d', start), 'b', string.format('%d', used), 'e', epoch)
      if period == 0 then
        redis.call('PERSIST', key)
      else
        redis.call('PEXPIRE', key, math.max(math.ceil((start + period - now) / 1000), 0) + 1000)
      end
    end
  end
end
return 1
"#;

/// A non-negative integer of a script's reply, `None` when absent or of another type.
fn reply_int(v: Option<&Value>) -> Option<u64> {
    match v {
        Some(Value::Int(n)) => u64::try_from(*n).ok(),
        _ => None,
    }
}

/// Why the Redis backend could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RedisLimiterError {
    /// The backend URL does not parse.
    #[error("`{url}` is not a Redis URL: {message}")]
    BadUrl {
        /// The URL with any password replaced.
        url: String,
        /// What the parser said.
        message: String,
    },
    /// Redis did not answer (down, unreachable, timed out) or refused the script.
    #[error("redis at {target} is unreachable: {source}")]
    Unreachable {
        /// The URL with any password replaced.
        target: String,
        /// The client's error.
        #[source]
        source: redis::RedisError,
    },
    /// Redis answered something the scripts never return.
    #[error("redis at {target} answered unexpectedly: {what}")]
    Protocol {
        /// The URL with any password replaced.
        target: String,
        /// What was wrong.
        what: String,
    },
}

/// What a shared admission took from each bucket, to settle it later.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    epoch: String,
    taken: SmallVec<[SharedTaken; 2]>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SharedTaken {
    bucket: u16,
    amount: u64,
    /// Rolling: the bucket's full-again instant after the take; window: the window start.
    slot: Micros,
    /// Rolling: the bucket's refund total at the take.
    mark: Micros,
}

/// The configured limits, shared through one Redis server.
pub struct RedisLimiter {
    conn: ConnectionManager,
    target: String,
    epoch_key: String,
    /// Where the runners' learned limits are published.
    learned_key: String,
    keys: Vec<String>,
    buckets: Vec<(SharedBucket, Unit)>,
    names: Vec<String>,
    epoch: String,
    down: bool,
    reserve: Script,
    settle: Script,
    grants: HashMap<u64, Grant>,
}

impl RedisLimiter {
    /// A backend for `specs` (in config order, as the runner's routes index them) under
    /// `namespace`, connecting to `url` lazily: an unreachable server is reported by
    /// [`RedisLimiter::admit`], not here. Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`RedisLimiterError::BadUrl`] if `url` does not parse.
    pub fn new(
        url: &str,
        namespace: &str,
        specs: &[LimitSpec],
        jitter: Duration,
    ) -> Result<RedisLimiter, RedisLimiterError> {
        let target = redact(url);
        let bad = |e: redis::RedisError| RedisLimiterError::BadUrl {
            url: target.clone(),
            message: e.to_string(),
        };
        let client = redis::Client::open(url).map_err(bad)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(bad)?;
        Ok(RedisLimiter {
            conn,
            target,
            epoch_key: format!("{namespace}:epoch"),
            learned_key: format!("{namespace}:learned"),
            keys: specs
                .iter()
                .map(|s| format!("{namespace}:limit:{}", s.name))
                .collect(),
            buckets: specs
                .iter()
                .map(|s| (SharedBucket::from_spec(s, jitter), s.unit.clone()))
                .collect(),
            names: specs.iter().map(|s| s.name.clone()).collect(),
            epoch: String::new(),
            down: false,
            reserve: Script::new(RESERVE),
            settle: Script::new(SETTLE),
            grants: HashMap::new(),
        })
    }

    /// The server, with any password replaced, for messages.
    pub fn target(&self) -> &str {
        &self.target
    }

    fn unreachable(&self, source: redis::RedisError) -> RedisLimiterError {
        RedisLimiterError::Unreachable {
            target: self.target.clone(),
            source,
        }
    }

    fn protocol(&self, what: &str) -> RedisLimiterError {
        RedisLimiterError::Protocol {
            target: self.target.clone(),
            what: what.to_string(),
        }
    }

    /// Admits `costs` across the configured buckets on `route`, atomically across every
    /// runner sharing this Redis, or says when (or that never) it would fit.
    ///
    /// # Errors
    /// [`RedisLimiterError`] when Redis does not answer as the script does: nothing was
    /// admitted then.
    pub async fn reserve(
        &mut self,
        route: &Route,
        costs: &Costs,
    ) -> Result<Result<Grant, SharedDenial>, RedisLimiterError> {
        // A clone shares the one connection (as settle's does); the invocation borrows self.
        let mut conn = self.conn.clone();
        let reply: Vec<Value> = self
            .reserve_invocation(route, costs)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.unreachable(e))?;
        match reply_int(reply.first()) {
            Some(1) => self.granted(&reply, route, costs).map(Ok),
            Some(0) => {
                let wait = reply_int(reply.get(1)).ok_or_else(|| self.protocol("no wait"))?;
                let limit = reply_int(reply.get(2))
                    .and_then(|i| usize::try_from(i).ok())
                    .ok_or_else(|| self.protocol("no binding limit"))?;
                Ok(Err(SharedDenial::Wait {
                    wait: Duration::from_micros(wait),
                    limit,
                }))
            }
            Some(2) => self.never_fits(&reply, costs).map(Err),
            _ => Err(self.protocol("an unknown admission code")),
        }
    }

    /// The reserve script's call for `costs` on `route`: the epoch keys, then each bucket's
    /// key, parameters and the job's weight in it (0 off the route).
    fn reserve_invocation(&self, route: &Route, costs: &Costs) -> redis::ScriptInvocation<'_> {
        let fresh = format!("{:016x}", rand::random::<u64>());
        let mut invocation = self.reserve.prepare_invoke();
        invocation.key(&self.epoch_key);
        invocation.arg(&self.epoch).arg(&fresh);
        for (i, (bucket, unit)) in self.buckets.iter().enumerate() {
            invocation.key(&self.keys[i]);
            let step = if route.contains(i) {
                bucket.step_us(costs.get(unit))
            } else {
                0
            };
            for p in bucket.script_params() {
                invocation.arg(p);
            }
            invocation.arg(step);
        }
        invocation
    }

    /// The grant an admitted reply (`{1, now_us, epoch, slot, mark, ...}`) records: what
    /// each bucket on `route` took, to settle later. Remembers the epoch.
    fn granted(
        &mut self,
        reply: &[Value],
        route: &Route,
        costs: &Costs,
    ) -> Result<Grant, RedisLimiterError> {
        let epoch = match reply.get(2) {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            _ => return Err(self.protocol("no epoch in an admission")),
        };
        self.epoch.clone_from(&epoch);
        let mut taken = SmallVec::new();
        for (i, (_, unit)) in self.buckets.iter().enumerate() {
            let amount = costs.get(unit);
            if !route.contains(i) || amount == 0 {
                continue;
            }
            let (Some(slot), Some(mark)) = (
                reply_int(reply.get(3 + 2 * i)),
                reply_int(reply.get(4 + 2 * i)),
            ) else {
                return Err(self.protocol("a bucket's slot is missing"));
            };
            taken.push(SharedTaken {
                bucket: u16::try_from(i).unwrap_or(u16::MAX),
                amount,
                slot,
                mark,
            });
        }
        Ok(Grant { epoch, taken })
    }

    /// The denial a "never" reply (`{2, index, spent}`) means: the cost exceeds what the
    /// bucket can ever admit at once, or a run budget is spent.
    fn never_fits(
        &self,
        reply: &[Value],
        costs: &Costs,
    ) -> Result<SharedDenial, RedisLimiterError> {
        let i = reply_int(reply.get(1))
            .and_then(|i| usize::try_from(i).ok())
            .filter(|&i| i < self.buckets.len())
            .ok_or_else(|| self.protocol("no such bucket"))?;
        let (bucket, unit) = &self.buckets[i];
        Ok(SharedDenial::Never(Box::new(NeverFits {
            limit: self.names[i].clone(),
            unit: unit.clone(),
            cost: costs.get(unit),
            max: bucket.max_cost(),
            spent: reply_int(reply.get(2)) == Some(1),
        })))
    }

    /// Settles `grant` to `actual` usage: refunds an over-estimate (only what is still ahead
    /// of Redis's clock), charges an under-estimate. Sends nothing when they match.
    ///
    /// # Errors
    /// [`RedisLimiterError`] when Redis does not answer; the estimate then stays charged.
    pub async fn settle(&self, grant: &Grant, actual: &Costs) -> Result<(), RedisLimiterError> {
        let Some((keys, args)) = self.settle_args(grant, actual) else {
            return Ok(());
        };
        let mut conn = self.conn.clone();
        run_settle(&self.settle, &mut conn, &keys, &args)
            .await
            .map_err(|e| self.unreachable(e))
    }

    /// Refunds a grant whose request was never sent.
    ///
    /// # Errors
    /// As [`RedisLimiter::settle`].
    pub async fn cancel(&self, grant: &Grant) -> Result<(), RedisLimiterError> {
        self.settle(grant, &Costs::default()).await
    }

    /// The settle script's keys and arguments, `None` when nothing changes.
    fn settle_args(&self, grant: &Grant, actual: &Costs) -> Option<(Vec<String>, Vec<String>)> {
        let mut keys = vec![self.epoch_key.clone()];
        let mut args = vec![grant.epoch.clone()];
        for t in &grant.taken {
            let Some((bucket, unit)) = self.buckets.get(usize::from(t.bucket)) else {
                continue;
            };
            let used = actual.get(unit);
            let (refund, charge) = match used.cmp(&t.amount) {
                std::cmp::Ordering::Less => (bucket.step_us(t.amount - used), 0),
                std::cmp::Ordering::Greater => (0, bucket.step_us(used - t.amount)),
                std::cmp::Ordering::Equal => continue,
            };
            let (kind, period, phase) = match bucket {
                SharedBucket::Rolling { .. } => ("r", 0, 0),
                SharedBucket::Window {
                    period_us,
                    phase_us,
                    ..
                } => ("w", *period_us, *phase_us),
            };
            keys.push(self.keys[usize::from(t.bucket)].clone());
            args.push(kind.to_string());
            args.extend([refund, charge, t.slot, t.mark, period, phase].map(|n| n.to_string()));
        }
        (keys.len() > 1).then_some((keys, args))
    }

    /// The runner's admission step for job `seq`, after its local limiter admitted it: the
    /// grant is kept until [`RedisLimiter::settle_later`]. An unreachable Redis is logged
    /// once per outage (with the server, never its password) and admits nothing.
    pub async fn admit(&mut self, seq: u64, route: &Route, costs: &Costs) -> Admission {
        match self.reserve(route, costs).await {
            Ok(result) => {
                let recovered = std::mem::replace(&mut self.down, false);
                if recovered {
                    tracing::warn!(target = %self.target, "redis is reachable again; dispatch resumes");
                }
                match result {
                    Ok(grant) => {
                        self.grants.insert(seq, grant);
                        Admission::Granted { recovered }
                    }
                    Err(denial) => Admission::Denied(denial),
                }
            }
            Err(e) => {
                if !std::mem::replace(&mut self.down, true) {
                    tracing::warn!(error = %e, "shared limiter unavailable; dispatch paused until redis answers (no limit is exceeded meanwhile)");
                }
                Admission::Unreachable(e.to_string())
            }
        }
    }

    /// Settles job `seq`'s grant to `actual` in the background (the dispatcher never waits
    /// for it). A grant never settled stays charged: the safe side. Must be called inside a
    /// tokio runtime.
    pub fn settle_later(&mut self, seq: u64, actual: &Costs) {
        let Some(grant) = self.grants.remove(&seq) else {
            return;
        };
        let Some((keys, args)) = self.settle_args(&grant, actual) else {
            return;
        };
        let script = self.settle.clone();
        let mut conn = self.conn.clone();
        let target = self.target.clone();
        tokio::spawn(async move {
            if let Err(e) = run_settle(&script, &mut conn, &keys, &args).await {
                tracing::debug!(%target, error = %e, "a settle did not reach redis; the estimate stays charged");
            }
        });
    }
}

async fn run_settle(
    script: &Script,
    conn: &mut ConnectionManager,
    keys: &[String],
    args: &[String],
) -> redis::RedisResult<()> {
    let mut invocation = script.prepare_invoke();
    for k in keys {
        invocation.key(k);
    }
    for a in args {
        invocation.arg(a);
    }
    invocation.invoke_async::<i64>(conn).await.map(drop)
}

/// The Redis backend as a [`SharedLimiter`]: admissions take turns on the one connection
/// state (the epoch, the grants); settles never wait for an admission.
pub struct SharedRedis(Arc<tokio::sync::Mutex<RedisLimiter>>);

impl SharedRedis {
    /// Shares `limiter` with the runner.
    pub fn new(limiter: RedisLimiter) -> SharedRedis {
        SharedRedis(Arc::new(tokio::sync::Mutex::new(limiter)))
    }
}

impl RedisLimiter {
    /// This backend as the runner's [`SharedLimiter`].
    pub fn into_shared(self) -> Arc<dyn SharedLimiter> {
        Arc::new(SharedRedis::new(self))
    }
}

/// How long published learned limits live in Redis without a new publication.
const LEARNED_TTL_MS: u64 = 10 * 60 * 1000;

impl RedisLimiter {
    /// Publishes `learned` under the namespace's `learned` key, in the background.
    fn publish_learned(&self, learned: &Learned) {
        let Ok(json) = serde_json::to_string(learned) else {
            return;
        };
        let (mut conn, key) = (self.conn.clone(), self.learned_key.clone());
        tokio::spawn(async move {
            let set = redis::cmd("SET")
                .arg(&key)
                .arg(json)
                .arg("PX")
                .arg(LEARNED_TTL_MS)
                .query_async::<()>(&mut conn)
                .await;
            if let Err(e) = set {
                tracing::debug!(error = %e, "could not publish the learned limits");
            }
        });
    }

    /// Reads what was published last (`None` if nothing, unreadable or no answer).
    fn read_learned(&self) -> impl Future<Output = Option<Learned>> + Send + 'static {
        let (mut conn, key) = (self.conn.clone(), self.learned_key.clone());
        async move {
            let json: Option<String> = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .ok()
                .flatten();
            json.and_then(|j| serde_json::from_str(&j).ok())
        }
    }
}

impl SharedLimiter for SharedRedis {
    fn admit(self: Arc<Self>, seq: u64, route: Route, costs: Costs) -> AdmitFuture {
        Box::pin(async move { self.0.lock().await.admit(seq, &route, &costs).await })
    }

    fn settle_later(&self, seq: u64, actual: &Costs) {
        if let Ok(mut limiter) = self.0.try_lock() {
            limiter.settle_later(seq, actual);
            return;
        }
        // An admission is waiting on Redis: settle right after it.
        let (limiter, actual) = (Arc::clone(&self.0), actual.clone());
        tokio::spawn(async move { limiter.lock().await.settle_later(seq, &actual) });
    }

    fn publish_learned(&self, learned: Learned) {
        let limiter = Arc::clone(&self.0);
        tokio::spawn(async move { limiter.lock().await.publish_learned(&learned) });
    }

    fn learned(self: Arc<Self>) -> LearnedFuture {
        Box::pin(async move {
            let read = self.0.lock().await.read_learned();
            read.await
        })
    }
}
