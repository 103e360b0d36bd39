#!/usr/bin/env bash
# Issue 6's measurements: how far `ratebound estimate` is from real runs on the built-in mock
# for a request-bound, a token-bound and a concurrency-bound work list (about 30 s of real
# time each) and a request-bound one with 10% transient failures, and how long estimating a
# 1,000,000-item work list takes.
# Usage, from the project root after `cargo build --release`:
#   bash benches/estimate_error.sh [path/to/ratebound]
set -euo pipefail
BIN=$(realpath "${1:-target/release/ratebound}")
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
cd "$T"
python3 - <<'PY'
def worklist(name, n, chars):
    rows = ["id,prompt"]
    for i in range(1, n + 1):
        base = f"Say hello to number {i}. "
        rows.append(f'item-{i:05},"{(base * (chars // len(base) + 1))[:chars]}"')
    open(name, "w").write("\n".join(rows) + "\n")

def config(name, url, limits, workers):
    open(name, "w").write(f'''[api]
base_url = "{url}"
timeout = "10s"

[request]
path = "/v1/chat/completions"
body = '{{"model": "m", "max_tokens": 16, "messages": [{{"role": "user", "content": "{{{{prompt}}}}"}}]}}'

{limits}

[workers]
max = {workers}
''')

worklist("rpm.csv", 1500, 22)    # 50/s after a burst of 50: ~29 s
worklist("tpm.csv", 175, 2000)   # 516 tokens each, 60,000/min after a full bucket: ~30 s
worklist("conc.csv", 600, 22)    # 4 workers x 200 ms, no limit: 30 s
worklist("fail.csv", 800, 22)    # 50/s with 10% answered 500 and retried: ~17 s
config("rpm.toml", "mock://openai?rps=50&latency=50ms", '[[limits]]\nname = "rps"\nrate = 50\nper = "1s"', 16)
config("tpm.toml", "mock://openai?tpm=60000&latency=50ms", '[[limits]]\nname = "tpm"\nunit = "tokens"\nrate = 60000\nper = "1m"', 16)
config("conc.toml", "mock://openai?latency=200ms", "", 4)
config("fail.toml", "mock://openai?rps=50&latency=50ms&fail_rate=0.1", '[[limits]]\nname = "rps"\nrate = 50\nper = "1s"', 16)
open("1m.csv", "w").write("id,prompt\n" + "".join(f"i{i},Say hello to number {i}\n" for i in range(1_000_000)))
config("1m.toml", "mock://openai", '[[limits]]\nname = "rpm"\nrate = 30000\nper = "1m"\n\n[[limits]]\nname = "tpm"\nunit = "tokens"\nrate = 10000000\nper = "1m"', 64)
PY
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
# fail: only --from-db knows the failure share (the plain estimate assumes none).
for w in rpm tpm conc fail; do
  lat=50ms; [ $w = conc ] && lat=200ms
  est=$("$BIN" estimate $w.csv -c $w.toml --latency $lat --json | field makespan_s)
  "$BIN" run $w.csv -c $w.toml --db $w.db --quiet
  real=$("$BIN" status --db $w.db --json | field elapsed_s)
  fromdb=$("$BIN" estimate $w.csv -c $w.toml --from-db $w.db --json | field makespan_s)
  python3 -c "
e, r, f = $est, $real, $fromdb
print(f'$w: estimate {e:.2f} s (--latency $lat), from-db {f:.2f} s, real {r:.2f} s: error {100 * (e / r - 1):+.1f}%, from-db {100 * (f / r - 1):+.1f}%')"
done
/usr/bin/time -f "1,000,000 items: estimate took %e s wall, %M KB max RSS" \
  "$BIN" estimate 1m.csv -c 1m.toml --latency p50=800ms,p95=3s >/dev/null
