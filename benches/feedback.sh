#!/usr/bin/env bash
# Issue 4's measurement: utilization of the provider's true limit and the share of 429s
# when the config states NO limit, so everything is learned from each dialect's headers
# (or, with headers=false, searched for by the rate search of runner/feedback/search.rs).
#
#   bash benches/feedback.sh [profile ...]     # default: every dialect profile
#
# Each profile runs N items (default 1500) against mock://PROFILE?rps=50 in-process with 16
# workers; the lower bound is (N - 50) / 50 s (a full bucket of 50, then 50/s). Zendesk
# documents per-minute account limits, so it runs at rpm=600 with bound (N - 600) / 10 s;
# X counts fixed UTC-aligned windows, so it runs at window=50/1s. GitHub's rps=50 is 50 per
# 1 s window anchored at the first request after the last one ended: the same bound.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin="$PWD/target/release/ratebound"
n="${N:-1500}"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
{ echo "id,prompt"; for i in $(seq 1 "$n"); do echo "d$i,hello $i"; done; } > "$dir/w.csv"
profiles=("$@")
[ ${#profiles[@]} -eq 0 ] && profiles=(openai anthropic github x generic ietf zendesk no-headers)
for p in "${profiles[@]}"; do
  case "$p" in
    zendesk) url="mock://zendesk?rpm=600"; bound=$(( (n - 600) / 10 )) ;;
    x) url="mock://x?window=50/1s"; bound=$(( (n - 50) / 50 )) ;;
    no-headers) url="mock://openai?rps=50&headers=false"; bound=$(( (n - 50) / 50 )) ;;
    *) url="mock://$p?rps=50"; bound=$(( (n - 50) / 50 )) ;;
  esac
  cat > "$dir/c.toml" <<TOML
[api]
base_url = "$url"
[request]
path = "/v1/chat/completions"
body = '{"model": "m", "max_tokens": 20, "messages": [{"role": "user", "content": "{{prompt}}"}]}'
[workers]
max = 16
TOML
  rm -f "$dir"/r.db*
  start=$(date +%s.%N)
  rc=0; "$bin" run "$dir/w.csv" -c "$dir/c.toml" --db "$dir/r.db" --quiet >/dev/null 2>&1 || rc=$?
  end=$(date +%s.%N)
  "$bin" status --db "$dir/r.db" --json | python3 -c "
import json, sys
s = json.load(sys.stdin)
wall = $end - $start
print('%-10s exit %d done %d wall %6.2fs bound %ds utilization %.3f 429s %d/%d = %.2f%%' % (
    '$p', $rc, s['done'], wall, $bound, $bound / wall, s['responses_429'], s['requests_sent'],
    100.0 * s['responses_429'] / s['requests_sent']))"
done
