#!/usr/bin/env bash
# What online evaluation costs the gateway: max throughput of a feature's invoke (closed
# loop, 32 in flight) with three deterministic online evaluators scoring every call
# (sampled and scored where each record is built, the scores kept in the record's row)
# vs. the same gateway without them. Gateway pinned to core 0, load generator to core 1;
# ROUNDS (default 5) interleaved rounds each; throughput and the gateway's CPU per call.
# Results in bench/results/online.json.
#
# Usage: bench/online.sh [seconds-per-run]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-8}
source bench/lib.sh
[ -n "${NO_BUILD:-}" ] || cargo build --release --locked -p llmop -p llmop-bench
mkdir -p bench/results
BIN=$(cd "$BIN" && pwd)

for mode in on off; do
  mkdir -p "$WORK/$mode/evals"
  cat > "$WORK/$mode/llmop.toml" <<'TOML'
[server]
listen = "127.0.0.1:0"
[store]
url = "sqlite://llmop.db"
[providers.sim]
kind = "mock"
rules = [{ when = 'Question: (\w+)', reply = '$1' }]
TOML
  echo -e "[online]\nbusy_share = ${BUSY_SHARE:-0.05}" >> "$WORK/$mode/llmop.toml"
  cat > "$WORK/$mode/qa.toml" <<'TOML'
name = "qa"
model = "sim/echo"
[variables]
q = { type = "string" }
[[messages]]
role = "user"
template = "Question: {{ q }}"
TOML
done
cat > "$WORK/on/evals/qa.toml" <<'TOML'
feature = "qa"
[[evaluators]]
name = "one-word"
kind = "regex"
pattern = '^\w+$'
[[evaluators]]
name = "short"
kind = "length"
max_words = 3
[[evaluators]]
name = "polite"
kind = "not_contains"
values = ["stupid"]
[online]
TOML

run() {
  local mode=$1
  (cd "$WORK/$mode" && rm -f llmop.db*)
  (cd "$WORK/$mode" && exec taskset -c 0 "$BIN/llmop" serve --config llmop.toml > gw.out 2> gw.log) &
  local pid=$!
  pids+=($pid)
  local url
  url=$(url_of "$WORK/$mode/gw.out")
  (cd "$WORK/$mode" && "$BIN/llmop" --config llmop.toml feature push qa.toml > /dev/null)
  local out t0 t1
  t0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  out=$(taskset -c 1 "$BIN/bench-load" --url "$url" --max --concurrency 32 --seconds "$SECS" --warmup 1 \
    --path /v1/features/qa/invoke --body '{"variables":{"q":"hello"},"version":1}' --label "$mode")
  t1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  local scored
  scored=$(cd "$WORK/$mode" && "$BIN/llmop" --config llmop.toml query "SELECT COUNT(*) FROM all_scores" --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["rows"][0][0])' || echo 0)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "$out" | python3 -c "import json,sys; d=json.load(sys.stdin); d['scores_stored']=$scored; d['cpu_ticks']=$((t1 - t0)); print(json.dumps(d))"
}

{
  for round in $(seq "${ROUNDS:-5}"); do
    run on
    run off
  done
} | tee "$WORK/runs.jsonl"
python3 - "$WORK/runs.jsonl" <<'PY' | tee bench/results/online.json
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
on = [r["rps"] for r in runs if r["label"] == "on"]
off = [r["rps"] for r in runs if r["label"] == "off"]
med = lambda xs: sorted(xs)[len(xs) // 2]
print(json.dumps({
    "on_rps": [round(x) for x in on], "off_rps": [round(x) for x in off],
    "difference_pct": round((sum(on) / len(on) / (sum(off) / len(off)) - 1) * 100, 1),
    "median_difference_pct": round((med(on) / med(off) - 1) * 100, 1),
    # The gateway's CPU time (utime + stime, warm-up included, the same in both modes)
    # per completed call: time stolen by the host is not in it, so it is steadier than
    # throughput on a shared machine.
    "cpu_us_per_req_on": [round(r["cpu_ticks"] * 1e4 / r["completed"], 1) for r in runs if r["label"] == "on"],
    "cpu_us_per_req_off": [round(r["cpu_ticks"] * 1e4 / r["completed"], 1) for r in runs if r["label"] == "off"],
    # Each round's on/off pair (run back to back), the median of the rounds: what is
    # left of the host's drift between rounds.
    "paired_median_rps_difference_pct": round((med([a / b for a, b in zip(on, off)]) - 1) * 100, 1),
    "paired_median_cpu_difference_pct": round((med([
        (a["cpu_ticks"] / a["completed"]) / (b["cpu_ticks"] / b["completed"])
        for a, b in zip([r for r in runs if r["label"] == "on"], [r for r in runs if r["label"] == "off"])
    ]) - 1) * 100, 1),
    "scores_stored_on": [r["scores_stored"] for r in runs if r["label"] == "on"],
}, indent=1))
PY
