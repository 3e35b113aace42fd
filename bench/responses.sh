#!/usr/bin/env bash
# The Responses endpoint's overhead against chat completions, per core: llmop pinned to
# core 0 (bench-upstream, an OpenAI chat upstream, and bench-load on core 1); the same
# question through `POST /v1/chat/completions` and `POST /v1/responses` (whole and
# streamed), and the upstream directly: a fixed 1,000 req/s open loop (latency from each
# request's scheduled time) and saturation (64 in flight). Reports p50/p99, throughput
# and llmop's CPU per request. Every call is recorded (SQLite, default durability).
#
# Usage: bench/responses.sh [seconds-per-run]   (SKIP_BUILD=1 reuses target/release)
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
TOML
LLMOP_LOG=error taskset -c 0 $BIN/llmop serve --config "$dir/llmop.toml" > "$dir/out" 2> "$dir/log" & pid=$!; pids+=($pid)
url=$(url_of "$dir/out")

CHAT='{"model":"bench","max_tokens":64,"messages":[{"role":"user","content":"Write one sentence about foxes and dogs."}]}'
RESP='{"model":"bench","max_output_tokens":64,"input":"Write one sentence about foxes and dogs."}'
RESP_S='{"model":"bench","max_output_tokens":64,"stream":true,"input":"Write one sentence about foxes and dogs."}'
CHAT_S='{"model":"bench","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"Write one sentence about foxes and dogs."}]}'
OUT=bench/results/responses.json
mkdir -p bench/results; : > "$OUT"
run() { # label path body extra-args...   (TARGET=url overrides the gateway)
  local label=$1 path=$2 body=$3; shift 3
  measure "$label" "$pid" "$OUT" --path "$path" --body "$body" "$@"
}
TARGET=$UP run "direct, 1000/s" /v1/chat/completions "$CHAT" --rate 1000
run "chat completions, 1000/s" /v1/chat/completions "$CHAT" --rate 1000
run "responses, 1000/s" /v1/responses "$RESP" --rate 1000
run "chat completions streamed, 1000/s" /v1/chat/completions "$CHAT_S" --rate 1000
run "responses streamed, 1000/s" /v1/responses "$RESP_S" --rate 1000
run "chat completions, saturation" /v1/chat/completions "$CHAT" --max --concurrency 64
run "responses, saturation" /v1/responses "$RESP" --max --concurrency 64
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
for a, b in (("responses, 1000/s", "chat completions, 1000/s"), ("responses streamed, 1000/s", "chat completions streamed, 1000/s")):
    print(f"{a.split(',')[0]} vs {b.split(',')[0]}: p99 {by[a]['p99_ms'] - by[b]['p99_ms']:+.2f} ms, CPU {by[a]['cpu_us_per_req'] - by[b]['cpu_us_per_req']:+.0f} µs/req")
s = by["responses, saturation"]['rps'] / max(by["chat completions, saturation"]['rps'], 1)
print(f"saturation: responses at {s:.0%} of chat completions")
PY
