#!/usr/bin/env bash
# What the agent policy costs the gateway on a tool-calling answer: the same llmop config
# with and without `[agents]` (three tools declared, the rule of two as `deny`, an
# argument constraint on the sending tool), in interleaved rounds (ROUNDS, default 5).
# The upstream answers every call with a `send_email` tool call; every request offers
# the three tools and carries one session header (the taint is read from the store on
# every call, as for an agent's turns). Gateway pinned to core 0; the load generator and
# the upstream to core 1. Each round:
#   - a fixed 1,000 req/s, open loop (latency from each request's scheduled time),
#     non-stream and stream (the stream's tool call is held until the answer ends);
#   - saturation: closed loop, 64 in flight, non-stream;
# with the gateway's CPU per call. Results: bench/results/agents.json (paired medians).
#
# Usage: bench/agents.sh [seconds-per-run]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-5}
source bench/lib.sh
[ -n "${NO_BUILD:-}" ] || cargo build --release --locked -p llmop -p llmop-bench >&2
mkdir -p bench/results
BIN=$(cd "$BIN" && pwd)
TCK=$(getconf CLK_TCK)

taskset -c 1 "$BIN/bench-upstream" --tool-call > "$WORK/up.out" & pids+=($!)
UP=$(url_of "$WORK/up.out")

for mode in on off; do
  mkdir -p "$WORK/$mode"
  cat > "$WORK/$mode/llmop.toml" <<TOML
[server]
listen = "127.0.0.1:0"
[providers.up]
kind = "openai"
base_url = "$UP/v1"
[routes.bench]
targets = [{ provider = "up", model = "bench-model" }]
TOML
done
cat >> "$WORK/on/llmop.toml" <<'TOML'
[agents.tools.fetch_url]
capabilities = ["reads_untrusted"]
[agents.tools.read_inbox]
capabilities = ["reads_private"]
[agents.tools.send_email]
capabilities = ["sends_external"]
args = [{ path = "to", domain_in = ["example.com"] }]
[[agents.policies]]
name = "rule_of_two"
when_tainted = ["reads_untrusted", "reads_private"]
tools_with = ["sends_external"]
action = "deny"
TOML

body() { # stream(true|false)
  python3 -c 'import json,sys
tool = lambda n: {"type":"function","function":{"name":n,"parameters":{"type":"object","properties":{"to":{"type":"string"},"body":{"type":"string"}}}}}
print(json.dumps({"model":"bench","stream":sys.argv[1]=="true","messages":[{"role":"system","content":"You are an email assistant."},{"role":"user","content":"Send the weekly report to the team ({i})."}],"tools":[tool("fetch_url"),tool("read_inbox"),tool("send_email")]}))' "$1"
}
WHOLE=$(body false); STREAM=$(body true)

run() { # mode label load-args...
  local mode=$1 label=$2; shift 2
  (cd "$WORK/$mode" && LLMOP_LOG=warn exec taskset -c 0 "$BIN/llmop" serve --config llmop.toml > gw.out 2> gw.log) &
  local pid=$!
  pids+=($pid)
  local url
  url=$(url_of "$WORK/$mode/gw.out")
  taskset -c 1 "$BIN/bench-load" --url "$url" --seconds 2 --warmup 0 --label warm --header "x-llmop-session:bench-$label" "$@" > /dev/null
  local t0 t1 out
  t0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  out=$(taskset -c 1 "$BIN/bench-load" --url "$url" --seconds "$SECS" --warmup 0 --label "$label" --header "x-llmop-session:bench-$label" "$@")
  t1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  (cd "$WORK/$mode" && rm -f llmop.db*)
  echo "$out" | python3 -c "import json,sys; d=json.load(sys.stdin); d['agents']='$mode'; d['cpu_us_per_req']=($t1-$t0)*1e6/$TCK/max(d['completed'],1); print(json.dumps(d))"
}

{
  for round in $(seq "${ROUNDS:-5}"); do
    for mode in on off; do
      run "$mode" rate --rate 1000 --vary --body "$WHOLE"
      run "$mode" rate-stream --rate 1000 --vary --body "$STREAM"
      run "$mode" max --max --concurrency 64 --vary --body "$WHOLE"
    done
  done
} | tee "$WORK/runs.jsonl" >&2
python3 - "$WORK/runs.jsonl" <<'PY' | tee bench/results/agents.json
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
med = lambda xs: sorted(xs)[len(xs) // 2]
def pairs(label, key):
    on = [r[key] for r in runs if r["label"] == label and r["agents"] == "on"]
    off = [r[key] for r in runs if r["label"] == label and r["agents"] == "off"]
    return on, off
out = {}
for label, key in (("rate", "p99_ms"), ("rate", "p50_ms"), ("rate-stream", "p99_ms"), ("rate-stream", "ttfb_p99_ms")):
    on, off = pairs(label, key)
    out[f"{label}_{key}_on"], out[f"{label}_{key}_off"] = [round(x, 3) for x in on], [round(x, 3) for x in off]
    out[f"{label}_{key}_paired_median_added_ms"] = round(med([a - b for a, b in zip(on, off)]), 3)
on, off = pairs("max", "rps")
out["max_rps_on"], out["max_rps_off"] = [round(x) for x in on], [round(x) for x in off]
out["max_rps_paired_median_difference_pct"] = round((med([a / b for a, b in zip(on, off)]) - 1) * 100, 1)
for label in ("rate", "max"):
    on, off = pairs(label, "cpu_us_per_req")
    out[f"{label}_cpu_paired_median_added_us"] = round(med([a - b for a, b in zip(on, off)]), 1)
out["errors"] = sum(r["errors"] for r in runs)
print(json.dumps(out, indent=1))
PY
