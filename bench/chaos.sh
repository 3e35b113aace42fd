#!/usr/bin/env bash
# Failure handling under load: mock providers that fail on purpose behind llmop routes,
# 200 req/s open loop with a distinct prompt per request (mock failures are drawn per
# conversation). Prints success rate and latency per scenario; results in
# bench/results/chaos.json.
#
# Usage: bench/chaos.sh [seconds-per-scenario]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
cargo build --release --locked -p llmop -p llmop-bench
BIN=target/release
WORK=$(mktemp -d)
mkdir -p bench/results
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

cat > "$WORK/llmop.toml" <<'TOML'
[server]
listen = "127.0.0.1:0"
[store]
enabled = false
[providers.flaky]          # fails 30% of calls with 503
kind = "mock"
latency_ms = 20
error_rate = 0.3
error_status = 503
[providers.dead]           # fails every call
kind = "mock"
latency_ms = 20
error_rate = 1.0
error_status = 503
[providers.healthy]
kind = "mock"
latency_ms = 20
[routes.flaky_alone]
targets = [{ provider = "flaky", model = "m" }]
[routes.flaky_then_healthy]
targets = [{ provider = "flaky", model = "m" }, { provider = "healthy", model = "m" }]
[routes.flaky_retried]
targets = [{ provider = "flaky", model = "m" }]
retry = { attempts = 2, backoff_ms = 10, max_backoff_ms = 50 }
[routes.dead_then_healthy]
targets = [{ provider = "dead", model = "m" }, { provider = "healthy", model = "m" }]
[routes.dead_then_healthy_breaker]
targets = [{ provider = "dead", model = "m" }, { provider = "healthy", model = "m" }]
circuit_breaker = { failure_rate = 0.5, min_calls = 20, open_ms = 30000 }
TOML
LLMOP_LOG=warn $BIN/llmop serve --config "$WORK/llmop.toml" > "$WORK/out" 2> "$WORK/log" & pid=$!
for _ in $(seq 100); do grep -q listening "$WORK/out" 2>/dev/null && break; sleep 0.05; done
URL=$(grep -o 'http://[0-9.:]*' "$WORK/out")

OUT=bench/results/chaos.json
echo "[" > "$OUT"; first=1
for route in flaky_alone flaky_then_healthy flaky_retried dead_then_healthy dead_then_healthy_breaker; do
  line=$($BIN/bench-load --url "$URL" --model "$route" --rate 200 --seconds "$SECS" --vary --label "$route")
  echo "$line" >&2
  [ $first -eq 0 ] && echo "," >> "$OUT"; first=0; echo "$line" >> "$OUT"
done
echo "]" >> "$OUT"
python3 - "$OUT" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
print("| route | success | p50 ms | p99 ms |")
print("|---|---:|---:|---:|")
for r in rows:
    total = r["completed"] + r["errors"]
    print(f'| {r["label"]} | {100.0 * r["completed"] / total:.1f}% of {total} | {r["p50_ms"]:.1f} | {r["p99_ms"]:.1f} |')
PY
