#!/usr/bin/env bash
# What serving a versioned feature costs on top of a plain call: the same mock provider
# (in-process, no latency) called as `sim/echo`, as a feature with a text parser, and as
# a feature with a JSON parser + schema (the mock answers JSON generated from the schema;
# the gateway validates it). Each: p50/p99 at a fixed rate, then max throughput (closed
# loop). Recording is on (features need the store). Results in bench/results/features.json.
#
# Usage: bench/features.sh [seconds-per-run]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
cargo build --release --locked -p llmop -p llmop-bench
BIN=$PWD/target/release
WORK=$(mktemp -d)
mkdir -p bench/results
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

cat > "$WORK/llmop.toml" <<'TOML'
[server]
listen = "127.0.0.1:0"
[providers.sim]
kind = "mock"
TOML
cat > "$WORK/plain.toml" <<'TOML'
name = "plain"
model = "sim/echo"
[variables]
text = { type = "string" }
tone = { type = "string", default = "friendly" }
[[messages]]
role = "system"
template = "You answer in a {{ tone }} tone."
[[messages]]
role = "user"
template = "{{ text }}"
TOML
sed -e 's/name = "plain"/name = "json"/' "$WORK/plain.toml" > "$WORK/json.toml"
cat >> "$WORK/json.toml" <<'TOML'
[output]
parser = "json"
schema = { type = "object", properties = { answer = { type = "string" }, confidence = { type = "number" } }, required = ["answer", "confidence"] }
TOML
for f in plain json; do
  $BIN/llmop --config "$WORK/llmop.toml" feature push "$WORK/$f.toml" > /dev/null
  $BIN/llmop --config "$WORK/llmop.toml" deploy "$f" 1 --env prod > /dev/null
done
LLMOP_LOG=warn $BIN/llmop serve --config "$WORK/llmop.toml" > "$WORK/out" 2> "$WORK/log" & pid=$!
for _ in $(seq 100); do grep -q listening "$WORK/out" 2>/dev/null && break; sleep 0.05; done
URL=$(grep -o 'http://[0-9.:]*' "$WORK/out")

OUT=bench/results/features.json
echo "[" > "$OUT"; first=1
for model in sim/echo feature/plain feature/json; do
  for mode in "--rate 1000" "--max --concurrency 64"; do
    label="$model $(echo "$mode" | cut -d' ' -f1-2)"
    line=$($BIN/bench-load --url "$URL" --model "$model" $mode --seconds "$SECS" --label "$label")
    echo "$line" >&2
    [ $first -eq 0 ] && echo "," >> "$OUT"; first=0; echo "$line" >> "$OUT"
  done
done
echo "]" >> "$OUT"
python3 - "$OUT" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
print("| model | load | req/s | p50 ms | p99 ms | errors |")
print("|---|---|---:|---:|---:|---:|")
for r in rows:
    model, load = r["label"].split(" ", 1)
    print(f'| {model} | {load} | {r["rps"]:.0f} | {r["p50_ms"]:.2f} | {r["p99_ms"]:.2f} | {r["errors"]} |')
PY
