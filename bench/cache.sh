#!/usr/bin/env bash
# Caching, measured. Part 1: the response cache with llmop pinned to core 0
# (bench-upstream and bench-load on core 1): a fixed 1,000 req/s open loop (latency from
# each request's scheduled time) and saturation (closed loop, 64 in flight) for a route
# without a cache rule, every request a hit (one body, temperature 0), and every request
# a miss (a unique body each time, each answer kept). Reports p50/p99, throughput and
# llmop's CPU per request.
# Part 2: a cascade over a staged dataset of 200 questions (70 % routine, 30 % hard): a
# cheap model that answers the routine ones in JSON and hedges on the hard ones, an
# expensive one that answers everything; the cascade route against always sending to
# the expensive target: cost, acceptance rate of the cheap answers, escalations.
#
# Usage: bench/cache.sh [seconds-per-run]   (SKIP_BUILD=1 reuses target/release)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
source bench/lib.sh
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --locked -p llmop -p llmop-bench >&2

taskset -c 1 $BIN/bench-upstream > "$WORK/up.out" & pids+=($!)
UP=$(url_of "$WORK/up.out")
dir="$WORK/gw"; mkdir -p "$dir"
cat > "$dir/llmop.toml" <<TOML
[server]
listen = "127.0.0.1:0"
[store]
url = "sqlite://$dir/llmop.db"
[providers.up]
kind = "openai"
base_url = "$UP/v1"
[routes.bench]
targets = [{ provider = "up", model = "bench-model" }]
[routes.cached]
targets = [{ provider = "up", model = "bench-model" }]
[cache.routes.cached]
response = true
ttl_s = 3600
TOML
LLMOP_LOG=error taskset -c 0 $BIN/llmop serve --config "$dir/llmop.toml" > "$dir/out" 2> "$dir/log" & pid=$!; pids+=($pid)
url=$(url_of "$dir/out")

HIT='{"model":"cached","temperature":0,"max_tokens":64,"messages":[{"role":"user","content":"Write one sentence about foxes and dogs."}]}'
MISS='{"model":"cached","temperature":0,"max_tokens":64,"messages":[{"role":"user","content":"Write one sentence about foxes and dogs, #{i}."}]}'
OFF='{"model":"bench","temperature":0,"max_tokens":64,"messages":[{"role":"user","content":"Write one sentence about foxes and dogs."}]}'
OUT=bench/results/cache.json
mkdir -p bench/results; : > "$OUT"
run() { # label body extra-args...   (TARGET=url overrides the gateway)
  local label=$1 body=$2; shift 2
  measure "$label" "$pid" "$OUT" --body "$body" "$@"
}
# The method's floor: the load generator straight to the upstream (no gateway).
TARGET=$UP run "direct, 1000/s" "$OFF" --rate 1000
run "no cache, 1000/s" "$OFF" --rate 1000
run "hit, 1000/s" "$HIT" --rate 1000
run "miss, 1000/s" "$MISS" --vary --rate 1000
run "no cache, saturation" "$OFF" --max --concurrency 64
run "hit, saturation" "$HIT" --max --concurrency 64
TARGET=$UP run "direct, saturation" "$OFF" --max --concurrency 64
curl -s "$url/metrics" | grep '^llmop_cache_lookups_total' >&2 || true
kill $pid; wait $pid 2>/dev/null || true

python3 - "$OUT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("| run | req/s | p50 ms | p99 ms | CPU µs/req | errors |")
print("|---|---:|---:|---:|---:|---:|")
for r in rows:
    cpu = "-" if r['label'].startswith("direct") else f"{r['cpu_us_per_req']:.0f}"
    print(f"| {r['label']} | {r.get('rps', 0):.0f} | {r.get('p50_ms', 0):.2f} | {r.get('p99_ms', 0):.2f} | {cpu} | {r.get('errors', 0)} |")
by = {r['label']: r for r in rows}
d = by["direct, 1000/s"]
for k in ("hit, 1000/s", "miss, 1000/s", "no cache, 1000/s"):
    print(f"p99 added over direct at 1,000 req/s, {k.split(',')[0]}: {by[k]['p99_ms'] - d['p99_ms']:+.2f} ms (p50 {by[k]['p50_ms'] - d['p50_ms']:+.2f} ms)")
PY

# --- Part 2: the cascade simulation -------------------------------------------------
CHEAP_PORT=$(free_port); BIG_PORT=$(free_port)
python3 - "$CHEAP_PORT" "$BIG_PORT" <<'PY' & pids+=($!)
import json, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
def handler(kind):
    class H(BaseHTTPRequestHandler):
        def log_message(self, *a): pass
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            q = body["messages"][-1]["content"]
            if kind == "big" or q.startswith("routine"):
                text = json.dumps({"answer": q.split(":")[0], "by": kind})
            else:
                text = "I am not sure about this one."
            out = json.dumps({"id": "chatcmpl-s", "object": "chat.completion", "created": 1, "model": kind,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 400, "completion_tokens": 60, "total_tokens": 460}}).encode()
            self.send_response(200); self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(out))); self.end_headers(); self.wfile.write(out)
    return H
threading.Thread(target=ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), handler("cheap")).serve_forever, daemon=True).start()
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), handler("big")).serve_forever()
PY
cdir="$WORK/cascade"; mkdir -p "$cdir"
cat > "$cdir/llmop.toml" <<TOML
[server]
listen = "127.0.0.1:0"
[store]
url = "sqlite://$cdir/llmop.db"
[providers.cheap]
kind = "openai"
base_url = "http://127.0.0.1:$CHEAP_PORT/v1"
[providers.big]
kind = "openai"
base_url = "http://127.0.0.1:$BIG_PORT/v1"
[prices."cheap/*"]
input = 0.15
output = 0.60
[prices."big/*"]
input = 3.0
output = 15.0
[routes.tiered]
strategy = "cascade"
targets = [{ provider = "cheap", model = "small" }, { provider = "big", model = "large" }]
accept = { json = true, reject_patterns = ["not sure"] }
[routes.always-big]
targets = [{ provider = "big", model = "large" }]
TOML
LLMOP_LOG=error $BIN/llmop serve --config "$cdir/llmop.toml" > "$cdir/out" 2> "$cdir/log" & cpid=$!; pids+=($cpid)
curl_url=$(url_of "$cdir/out")
python3 - "$curl_url" <<'PY'
import json, random, sys, urllib.request
url = sys.argv[1]
random.seed(7)
# The staged dataset: 140 routine questions, 60 hard ones, shuffled.
items = [f"routine:{i}" for i in range(140)] + [f"hard:{i}" for i in range(60)]
random.shuffle(items)
for route in ("tiered", "always-big"):
    for q in items:
        req = urllib.request.Request(url + "/v1/chat/completions", method="POST",
            data=json.dumps({"model": route, "messages": [{"role": "user", "content": q}]}).encode(),
            headers={"content-type": "application/json", "x-llmop-tags": f"run={route}"})
        urllib.request.urlopen(req).read()
PY
sleep 0.3
$BIN/llmop cost --savings --json --config "$cdir/llmop.toml" > "$cdir/savings.json"
$BIN/llmop query --config "$cdir/llmop.toml" --json "SELECT route, COUNT(*) AS calls, SUM(cost_usd) AS cost, SUM(CASE WHEN provider = 'cheap' THEN 1 ELSE 0 END) AS by_cheap FROM records GROUP BY route" > "$cdir/routes.json"
python3 - "$cdir/savings.json" "$cdir/routes.json" <<'PY'
import json, sys
sav = json.load(open(sys.argv[1]))
q = json.load(open(sys.argv[2]))
routes = {row[0]: dict(zip(q["columns"], row)) for row in q["rows"]}
cc = sum(r["cascade_calls"] for r in sav); esc = sum(r["cascade_escalated"] for r in sav)
base = sum(r["cascade_baseline_usd"] for r in sav); paid = sum(r["cascade_cost_usd"] for r in sav)
t, b = routes["tiered"], routes["always-big"]
print()
print("| cascade simulation (200 questions, 30 % hard) | cost (USD) | answered by the cheap model | escalated |")
print("|---|---:|---:|---:|")
print(f"| cascade (cheap → expensive) | {t['cost']:.6f} | {t['by_cheap']} ({100*t['by_cheap']/t['calls']:.0f} %) | {esc} ({100*esc/cc:.0f} %) |")
print(f"| always the expensive target | {b['cost']:.6f} | 0 | - |")
print(f"| `llmop cost --savings`: cascade {paid:.6f} vs last target {base:.6f} | saving {100*(1-paid/base):.0f} % (measured vs always-big: {100*(1-t['cost']/b['cost']):.0f} %) | | |")
PY
