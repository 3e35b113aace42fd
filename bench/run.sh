#!/usr/bin/env bash
# Gateway benchmark: the same fast mock upstream reached three ways in one run:
#   direct   load generator -> upstream
#   nginx    load generator -> nginx (proxy_pass, keepalive) -> upstream
#   llmop    load generator -> llmop (route -> openai provider) -> upstream
# For each: non-streaming and streaming at 200 and 1,000 req/s (open loop, p50/p99 of
# full latency and of time to first byte), and max throughput (closed loop, 64 in
# flight). Also llmop's idle RSS. Results: bench/results/latest.json and a Markdown
# table on stdout.
#
# Needs nginx (Debian: nginx-light). Usage: bench/run.sh [seconds-per-scenario]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
command -v nginx >/dev/null || { echo "nginx is required: apt-get install nginx-light"; exit 1; }

cargo build --release --locked -p llmop -p llmop-bench
source bench/lib.sh
mkdir -p bench/results

$BIN/bench-upstream > "$WORK/up.out" & pids+=($!)
UP=$(url_of "$WORK/up.out"); UP_PORT=${UP##*:}

cat > "$WORK/llmop.toml" <<TOML
[server]
listen = "127.0.0.1:0"
[providers.up]
kind = "openai"
base_url = "$UP/v1"
[routes.bench]
targets = [{ provider = "up", model = "bench-model" }]
TOML
LLMOP_LOG=info $BIN/llmop serve --config "$WORK/llmop.toml" > "$WORK/llmop.out" 2> "$WORK/llmop.log" & LLMOP_PID=$!; pids+=($LLMOP_PID)
LLMOP=$(url_of "$WORK/llmop.out")
sleep 0.5
IDLE_RSS_KB=$(awk '/VmRSS/{print $2}' /proc/$LLMOP_PID/status)

NGINX_PORT=$(free_port)
nginx_config "$NGINX_PORT" "$UP_PORT" auto
nginx -c "$WORK/nginx.conf" & pids+=($!)
NGINX="http://127.0.0.1:$NGINX_PORT"
for _ in $(seq 50); do curl -s -o /dev/null "$NGINX/" && break; sleep 0.1; done

OUT=bench/results/latest.json
echo "[" > "$OUT"
first=1
run() { # label url model extra-args...
  local label=$1 url=$2 model=$3; shift 3
  local line
  line=$($BIN/bench-load --url "$url" --model "$model" --seconds "$SECS" --label "$label" "$@")
  echo "$line" >&2
  if [ $first -eq 0 ]; then echo "," >> "$OUT"; fi
  first=0
  echo "$line" >> "$OUT"
}
for stream in "" "--stream"; do
  for rate in 200 1000; do
    run direct "$UP" bench-model --rate $rate $stream
    run nginx "$NGINX" bench-model --rate $rate $stream
    run llmop "$LLMOP" bench --rate $rate $stream
  done
  run direct "$UP" bench-model --max --concurrency 64 $stream
  run nginx "$NGINX" bench-model --max --concurrency 64 $stream
  run llmop "$LLMOP" bench --max --concurrency 64 $stream
done
echo "]" >> "$OUT"
LOADED_RSS_KB=$(awk '/VmRSS/{print $2}' /proc/$LLMOP_PID/status)
ERRORS_IN_LOG=$(grep -c ' ERROR ' "$WORK/llmop.log" || true)

python3 - "$OUT" "$IDLE_RSS_KB" "$LOADED_RSS_KB" "$(nproc)" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
idle, loaded, cores = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
print(f"\nmachine: {cores} cores; llmop RSS idle {idle/1024:.1f} MiB, after load {loaded/1024:.1f} MiB\n")
print("| target | mode | stream | req/s | p50 ms | p99 ms | TTFB p50 ms | TTFB p99 ms | errors |")
print("|---|---|---|---:|---:|---:|---:|---:|---:|")
for r in rows:
    mode = "max (64 in flight)" if r["mode"] == "max" else f'{int(r["target_rps"])} req/s'
    print(f'| {r["label"]} | {mode} | {"yes" if r["stream"] else "no"} | {r["rps"]:.0f} | {r["p50_ms"]:.2f} | {r["p99_ms"]:.2f} | {r["ttfb_p50_ms"]:.2f} | {r["ttfb_p99_ms"]:.2f} | {r["errors"]} |')
def get(label, mode, stream, rate=None):
    for r in rows:
        if r["label"] == label and r["mode"] == mode and r["stream"] == stream and (rate is None or r["target_rps"] == rate):
            return r
print()
for stream in (False, True):
    d, l = get("direct", "rate", stream, 1000), get("llmop", "rate", stream, 1000)
    key = "ttfb_p99_ms" if stream else "p99_ms"
    print(f'1000 req/s {"stream TTFB" if stream else "non-stream"}: llmop p99 - direct p99 = {l[key]-d[key]:+.2f} ms (goal < 1 ms)')
    n, lm = get("nginx", "max", stream), get("llmop", "max", stream)
    print(f'max throughput {"stream" if stream else "non-stream"}: llmop/nginx = {lm["rps"]/n["rps"]*100:.0f}% (goal >= 40%)')
print(f"idle RSS: {idle/1024:.1f} MiB (goal < 50 MiB)")
PY
