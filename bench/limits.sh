#!/usr/bin/env bash
# What the check stage costs: the same in-process mock (priced, recording on) called
# with no budgets, with a global + per-user budget counted in process, and the same
# counted in Redis (127.0.0.1:6379, keys under a bench prefix, deleted afterwards).
# Each: p50/p99 at 1,000 req/s, then max throughput (64 in flight).
# Results in bench/results/limits.json.
#
# Usage: bench/limits.sh [seconds-per-run]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-8}
cargo build --release --locked -p llmop -p llmop-bench
BIN=$PWD/target/release
WORK=$(mktemp -d)
mkdir -p bench/results
pid=
PREFIX="llmop-bench-$$:"
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  redis-cli --scan --pattern "$PREFIX*" 2>/dev/null | xargs -r redis-cli del > /dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

base='[server]
listen = "127.0.0.1:0"
[providers.sim]
kind = "mock"
[prices."sim/*"]
input = 0.15
output = 0.60
'
budgets='[[budgets]]
scope = "global"
hard_usd = 1000000
[[budgets]]
scope = "user:*"
soft_usd = 100000
hard_usd = 200000
'
OUT=bench/results/limits.json
echo "[" > "$OUT"; first=1
for setup in none local redis; do
  mkdir -p "$WORK/$setup"
  case $setup in
    none) printf '%s' "$base" > "$WORK/$setup/llmop.toml" ;;
    local) printf '%s%s' "$base" "$budgets" > "$WORK/$setup/llmop.toml" ;;
    redis) printf '%s%s[counters]\nurl = "redis://127.0.0.1:6379"\n' "$base" "$budgets" > "$WORK/$setup/llmop.toml" ;;
  esac
  LLMOP_COUNTERS_PREFIX="$PREFIX" LLMOP_LOG=warn $BIN/llmop serve --config "$WORK/$setup/llmop.toml" > "$WORK/$setup/out" 2> "$WORK/$setup/log" & pid=$!
  for _ in $(seq 100); do grep -q listening "$WORK/$setup/out" 2>/dev/null && break; sleep 0.05; done
  URL=$(grep -o 'http://[0-9.:]*' "$WORK/$setup/out")
  for mode in "--rate 1000" "--max --concurrency 64"; do
    line=$($BIN/bench-load --url "$URL" --model sim/echo $mode --seconds "$SECS" --label "$setup $(echo "$mode" | cut -d' ' -f1-2)")
    echo "$line" >&2
    [ $first -eq 0 ] && echo "," >> "$OUT"; first=0; echo "$line" >> "$OUT"
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
done
echo "]" >> "$OUT"
python3 - "$OUT" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
print("| counters | load | req/s | p50 ms | p99 ms | errors |")
print("|---|---|---:|---:|---:|---:|")
for r in rows:
    setup, load = r["label"].split(" ", 1)
    print(f'| {setup} | {load} | {r["rps"]:.0f} | {r["p50_ms"]:.2f} | {r["p99_ms"]:.2f} | {r["errors"]} |')
PY
