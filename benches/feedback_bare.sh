#!/usr/bin/env bash
# Issue 14's measurement: providers that send NO rate-limit headers (nginx's limit_req,
# gateways), answering a bare 429 or a 503, with no limit in the config: the rate search
# must find the rate. Also the first wave against a bucket another client drained.
#
#   bash benches/feedback_bare.sh [case ...]     # default: every case
#
# Cases (utilization = bound / wall; refusals = 429s and 503s over all responses):
#   leaky      1,000 items, mock://leaky?rate=50r/s&burst=10&nodelay (bare 429), 16
#              workers; bound (N - 11) / 50 s.
#   leaky503   the same answering 503.
#   bucket     1,500 items, a bucket of 500 refilled at 50/s (500 per 10 s: leaky with
#              burst=499), 50 ms latency (the mock's latency is fixed: no ±20 ms), 64
#              workers; bound (N - 500) / 50 s.
#   bucket503  the same answering 503.
#   full/empty 1,500 items told "3,600 per minute" against OpenAI's bucket of 60 per 1 s
#              (600 per 10 s compressed tenfold, as tests/cli/redis.rs does; the mock's
#              buckets refill per second or minute) with headers, 150 ms latency, 64
#              workers, full at the start or drained by another client (fill=0); bound
#              (N - 60) / 60 s full, N / 60 s empty.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin="$PWD/target/release/ratebound"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
cases=("$@")
[ ${#cases[@]} -eq 0 ] && cases=(leaky leaky503 bucket bucket503 full empty)
for c in "${cases[@]}"; do
  limits=""
  case "$c" in
    leaky) n=1000; w=16; url="mock://leaky?rate=50r/s&burst=10&nodelay"; bound="($n - 11) / 50" ;;
    leaky503) n=1000; w=16; url="mock://leaky?rate=50r/s&burst=10&nodelay&status=503"; bound="($n - 11) / 50" ;;
    bucket) n=1500; w=64; url="mock://leaky?rate=50r/s&burst=499&nodelay&latency=50ms"; bound="($n - 500) / 50" ;;
    bucket503) n=1500; w=64; url="mock://leaky?rate=50r/s&burst=499&nodelay&status=503&latency=50ms"; bound="($n - 500) / 50" ;;
    full|empty)
      n=1500; w=64; bound="($n - 60) / 60"
      url="mock://openai?rps=60&latency=150ms"
      if [ "$c" = empty ]; then url="$url&fill=0"; bound="$n / 60"; fi
      limits=$'[[limits]]\nname = "rpm"\nunit = "requests"\nrate = 3600\nper = "1m"' ;;
    *) echo "unknown case $c" >&2; exit 2 ;;
  esac
  { echo "id,prompt"; for i in $(seq 1 "$n"); do echo "d$i,hello $i"; done; } > "$dir/w.csv"
  cat > "$dir/c.toml" <<TOML
[api]
base_url = "$url"
[request]
path = "/v1/chat/completions"
body = '{"model": "m", "max_tokens": 20, "messages": [{"role": "user", "content": "{{prompt}}"}]}'
$limits
[workers]
max = $w
[retry]
max_attempts = 1000
TOML
  rm -f "$dir"/r.db*
  start=$(date +%s.%N)
  rc=0; "$bin" run "$dir/w.csv" -c "$dir/c.toml" --db "$dir/r.db" --quiet >/dev/null 2>&1 || rc=$?
  end=$(date +%s.%N)
  python3 - "$dir/r.db" <<PY
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
sent, refused = db.execute("SELECT count(*), sum(http_status IN (429, 503)) FROM attempts").fetchone()
done = db.execute("SELECT count(*) FROM items WHERE status = 'done'").fetchone()[0]
wall = $end - $start
bound = $bound
print('%-9s exit %d done %d wall %6.2fs bound %5.2fs utilization %.3f refused %d/%d = %.2f%%  (load %s)' % (
    '$c', $rc, done, wall, bound, bound / wall, refused or 0, sent, 100.0 * (refused or 0) / max(sent, 1),
    open('/proc/loadavg').read().split()[0]))
PY
done
