#!/usr/bin/env bash
# Issue 13's measurements: ratebound on a work list of N items (default 1,000,000; N=10000000
# for ten million), each `id, priority, prompt` with a prompt of 20-400 characters, generated
# deterministically (the same N, the same file), against an API allowing 400 requests/s.
#
# The API is a small Python server on 127.0.0.1 that answers every request at once with an
# OpenAI-style body and notes the wall time of the first request it sees: "time to first
# request" is that instant minus the start of the command, whatever the binary logs. Reports:
#   import items/s       N / (start -> the `work list imported` log line, or the first
#                        request when the binary does not log it)
#   first request        start -> first request at the API, fresh db
#   run VmHWM            peak RSS of `run` (GNU time's "Maximum resident set size"), after a
#                        few seconds of requests and a SIGINT
#   resume first request start -> first request of a rerun after that SIGINT
#   status               `status --json` wall time, live (during the rerun) and stopped
#   export rows/s        every item marked done in the db (sqlite3, counters too), then `export -o FILE`
#                        (JSONL), `export --format csv --with-input -o FILE` and
#                        `export -o -` into /dev/null; rows/s and VmHWM of each
#   status, old db       `status --json` of a copy of that db as an earlier version made it:
#                        no `counters` table, the one index `items_lane` over every item
#                        (a db made before them: counted from the rows)
#   estimate             wall time and VmHWM of `estimate --json`
#
# ONLY=estimate skips the run, the status and the exports (no db needed): just the estimate.
#
# Usage, from the project root after `cargo build --release`:
#   bash benches/scale.sh [path/to/ratebound]          # N=1000000
#   N=10000000 bash benches/scale.sh
# The generated list is kept in $BENCH_DIR (default /tmp/ratebound-scale) for the next run.
set -euo pipefail
BIN=$(realpath "${1:-target/release/ratebound}")
N=${N:-1000000}
RUN_S=${RUN_S:-3}
ONLY=${ONLY:-}
BENCH_DIR=${BENCH_DIR:-/tmp/ratebound-scale}
mkdir -p "$BENCH_DIR"
exec python3 - "$BIN" "$N" "$RUN_S" "$BENCH_DIR" "$ONLY" <<'PY'
import http.server, json, os, re, shutil, signal, socketserver, statistics
import subprocess, sys, tempfile, threading, time

BIN, N, RUN_S, DIR, ONLY = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]
LIST = os.path.join(DIR, f"list-{N}.csv")

def generate():
    if os.path.exists(LIST):
        return
    words = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi "
             "omicron pi rho sigma tau upsilon phi chi psi omega").split()
    text = " ".join(words * 20)
    x = 12345
    tmp = LIST + ".tmp"
    with open(tmp, "w", buffering=1 << 20) as f:
        f.write("id,priority,prompt\n")
        out = []
        for i in range(N):
            x = (x * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
            length = 20 + (x >> 33) % 381
            start = (x >> 13) % 200
            out.append(f"item-{i},{(x >> 50) % 5},{text[start:start + length]}\n")
            if len(out) == 10000:
                f.write("".join(out)); out = []
        f.write("".join(out))
    os.replace(tmp, LIST)

BODY = json.dumps({"id": "c", "object": "chat.completion",
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}],
                   "usage": {"prompt_tokens": 50, "completion_tokens": 2, "total_tokens": 52}}).encode()
FIRST = {"at": None}
LOCK = threading.Lock()

class Api(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def do_POST(self):
        n = int(self.headers.get("content-length") or 0)
        if n:
            self.rfile.read(n)
        with LOCK:
            if FIRST["at"] is None:
                FIRST["at"] = time.time()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True

def config(path, port):
    open(path, "w").write(f'''[api]
base_url = "http://127.0.0.1:{port}"
timeout = "30s"

[request]
path = "/v1/chat/completions"
body = '{{"model": "m", "max_tokens": 16, "messages": [{{"role": "user", "content": "{{{{prompt}}}}"}}]}}'

[[limits]]
name = "rps"
rate = 400
per = "1s"

[workers]
max = 64
''')

def hwm_mb(timefile):
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(timefile).read())
    return int(m.group(1)) / 1024 if m else float("nan")

def run_once(work, label):
    """Starts `run`, waits for its first request, lets it run RUN_S s, stops it with SIGINT."""
    FIRST["at"] = None
    tf = os.path.join(work, f"time-{label}.txt")
    env = dict(os.environ, RATEBOUND_LOG="ratebound=info")
    t0 = time.time()
    p = subprocess.Popen(["/usr/bin/time", "-v", "-o", tf, BIN, "run", LIST, "-c", "cfg.toml",
                          "--db", "run.db", "--quiet"], cwd=work, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    imported = {"at": None}
    def read_log():
        for line in p.stderr:
            if "work list imported" in line and imported["at"] is None:
                imported["at"] = time.time()
    reader = threading.Thread(target=read_log, daemon=True); reader.start()
    while FIRST["at"] is None and p.poll() is None:
        time.sleep(0.005)
    if FIRST["at"] is None:
        sys.exit(f"{label}: ratebound exited with {p.returncode} before any request")
    first = FIRST["at"] - t0
    time.sleep(RUN_S / 2)
    live = status_s(work)
    time.sleep(RUN_S / 2)
    # GNU time does not pass SIGINT on: signal ratebound itself, time's one child.
    children = open(f"/proc/{p.pid}/task/{p.pid}/children").read().split()
    os.kill(int(children[0]), signal.SIGINT)
    p.wait(); reader.join()
    return {"first": first, "imported": (imported["at"] or FIRST["at"]) - t0,
            "hwm": hwm_mb(tf), "live_status": live}

def status_s(work, times=5, db="run.db"):
    spent = []
    for _ in range(times):
        t = time.time()
        subprocess.run([BIN, "status", "--db", db, "--json"], cwd=work, check=True,
                       stdout=subprocess.DEVNULL)
        spent.append(time.time() - t)
    return statistics.median(spent)

def timed(work, label, args):
    tf = os.path.join(work, f"time-{label}.txt")
    t = time.time()
    subprocess.run(["/usr/bin/time", "-v", "-o", tf, BIN, *args], cwd=work, check=True,
                   stdout=subprocess.DEVNULL)
    return time.time() - t, hwm_mb(tf)

def estimate_rows(work):
    est_s, est_mb = timed(work, "estimate", ["estimate", LIST, "-c", "cfg.toml", "--json"])
    return [("estimate", f"{est_s:.1f} s"), ("estimate VmHWM", f"{est_mb:,.0f} MB")]

def export_rows(work):
    rows = []
    for label, args in [
        ("export rows/s", ["-o", "out.jsonl"]),
        ("export --format csv --with-input rows/s", ["--format", "csv", "--with-input", "-o", "out.csv"]),
        ("export -o - rows/s", ["-o", "-"]),
    ]:
        s, mb = timed(work, "export", ["export", "--db", "run.db", *args])
        rows.append((label, f"{N / s:,.0f} ({s:.1f} s, VmHWM {mb:,.0f} MB)"))
        for f in ("out.jsonl", "out.csv"):
            if os.path.exists(os.path.join(work, f)):
                os.remove(os.path.join(work, f))
    return rows

def old_db_status(work):
    shutil.copy(os.path.join(work, "run.db"), os.path.join(work, "old.db"))
    # As a db of that version was: no counters, one index over every item's status and lane.
    subprocess.run(["sqlite3", "old.db", "DROP TABLE counters; DROP INDEX IF EXISTS items_pending; "
                    "DROP INDEX IF EXISTS items_finished; CREATE INDEX IF NOT EXISTS items_lane "
                    "ON items (status, class, tenant, grp, priority DESC, seq);"], cwd=work, check=True)
    return [("status --json, old db (no counters)", f"{status_s(work, 3, 'old.db') * 1000:,.0f} ms")]

def main():
    t = time.time(); generate(); gen_s = time.time() - t
    mb = os.path.getsize(LIST) / 1e6
    print(f"list: {LIST} ({N:,} items, {mb:,.0f} MB; generated in {gen_s:.1f} s)", flush=True)
    if ONLY == "estimate":
        work = tempfile.mkdtemp(prefix="ratebound-scale-")
        try:
            config(os.path.join(work, "cfg.toml"), 9)
            print(f"| {N:,} items | |\n| --- | --- |")
            for k, v in estimate_rows(work):
                print(f"| {k} | {v} |")
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return
    server = Server(("127.0.0.1", 0), Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    work = tempfile.mkdtemp(prefix="ratebound-scale-")
    try:
        config(os.path.join(work, "cfg.toml"), server.server_address[1])
        fresh = run_once(work, "fresh")
        stopped = status_s(work)
        again = run_once(work, "resume")
        done = subprocess.run(["sqlite3", "run.db",
            "UPDATE items SET status = 'done', http_status = 200, attempts = 1, latency_ms = 5, "
            "body = '{\"choices\":[{\"message\":{\"content\":\"ok\"}}]}', "
            "usage = '{\"total_tokens\":52}', finished_at_ms = 0 WHERE status = 'pending'; "
            # The counters as a run keeps them (export reads them to choose its scan).
            "UPDATE counters SET n = (SELECT count(*) FROM items WHERE status = 'done') "
            "WHERE name = 'done';"],
            cwd=work, check=True)
        rows = [
            ("import items/s", f"{N / fresh['imported']:,.0f}"),
            ("first request (fresh db)", f"{fresh['first']:.2f} s"),
            ("run VmHWM (fresh)", f"{fresh['hwm']:,.0f} MB"),
            ("resume: first request", f"{again['first']:.2f} s"),
            ("run VmHWM (resume)", f"{again['hwm']:,.0f} MB"),
            ("status --json, live", f"{again['live_status'] * 1000:,.0f} ms"),
            ("status --json, stopped", f"{stopped * 1000:,.0f} ms"),
        ]
        rows += old_db_status(work) + export_rows(work) + estimate_rows(work)
        print(f"| {N:,} items | |\n| --- | --- |")
        for k, v in rows:
            print(f"| {k} | {v} |")
    finally:
        server.shutdown()
        shutil.rmtree(work, ignore_errors=True)

main()
PY
