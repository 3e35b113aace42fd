#!/usr/bin/env bash
# Per-core benchmark: the proxy under test (llmop or nginx) pinned to one core, the load
# generator and the upstream pinned to the other, so a figure is what one core of
# gateway does. For each target (direct, nginx with one worker, llmop with default
# durability, llmop with strict durability):
#   - saturation: closed loop, 64 requests in flight, non-stream and stream;
#   - a fixed 1,000 req/s, open loop, latency measured from each request's scheduled
#     time (no coordinated omission), non-stream and stream;
# and for each run the proxy's CPU time (utime + stime of all its threads, from
# /proc/<pid>/stat) per completed request and as a share of its core. llmop's RSS is
# read idle and after all runs. Every llmop call is recorded (SQLite).
#
# Output: one JSON line per run on stderr, bench/results/pinned.json, and Markdown
# tables on stdout.
#
# Usage: bench/pinned.sh [seconds-per-run] [llmop-binary]
#   The binary defaults to a fresh release build of this checkout; pass another to
#   measure an older build with the same harness. PINNED_ONLY=llmop runs llmop's rows
#   alone (no goal table), for quick A/B runs of two binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
LLMOP_BIN=${2:-}
command -v nginx >/dev/null || { echo "nginx is required: apt-get install nginx-light" >&2; exit 1; }
command -v taskset >/dev/null || { echo "taskset is required (util-linux)" >&2; exit 1; }
[ "$(nproc --all)" -ge 2 ] || { echo "needs 2 cores" >&2; exit 1; }
source bench/lib.sh
if [ -z "$LLMOP_BIN" ]; then
  cargo build --release --locked -p llmop >&2
  LLMOP_BIN=$BIN/llmop
fi
cargo build --release --locked -p llmop-bench >&2
GW=0     # the proxy's core
LOAD=1   # the load generator's and the upstream's core
TCK=$(getconf CLK_TCK)
mkdir -p bench/results

ticks() { # total CPU ticks of the given pids
  local t=0
  for p in "$@"; do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$t"
}

taskset -c $LOAD $BIN/bench-upstream > "$WORK/up.out" & pids+=($!)
UP=$(url_of "$WORK/up.out"); UP_PORT=${UP##*:}

start_llmop() { # durability -> sets LLMOP_PID, LLMOP
  local dir="$WORK/llmop-$1"; mkdir -p "$dir"
  cat > "$dir/llmop.toml" <<TOML
[server]
listen = "127.0.0.1:0"
[store]
durability = "$1"
[providers.up]
kind = "openai"
base_url = "$UP/v1"
[routes.bench]
targets = [{ provider = "up", model = "bench-model" }]
TOML
  LLMOP_LOG=warn taskset -c $GW "$LLMOP_BIN" serve --config "$dir/llmop.toml" > "$dir/out" 2> "$dir/log" & LLMOP_PID=$!
  pids+=($LLMOP_PID)
  LLMOP=$(url_of "$dir/out")
}

NGINX_PORT=$(free_port)
nginx_config "$NGINX_PORT" "$UP_PORT" 1
taskset -c $GW nginx -c "$WORK/nginx.conf" & NGINX_PID=$!; pids+=($NGINX_PID)
NGINX="http://127.0.0.1:$NGINX_PORT"
for _ in $(seq 50); do curl -s -o /dev/null "$NGINX/" && break; sleep 0.1; done
NGINX_PIDS="$NGINX_PID $(pgrep -P "$NGINX_PID" | tr '\n' ' ')"

OUT=bench/results/pinned.json
: > "$OUT"
run() { # label url model proxy-pids(quoted, may be empty) load-args...
  local label=$1 url=$2 model=$3 ppids=$4; shift 4
  # Warm-up, not measured.
  taskset -c $LOAD $BIN/bench-load --url "$url" --model "$model" --seconds 2 --warmup 0 --label warm "$@" > /dev/null
  local before=0 after=0
  # shellcheck disable=SC2086
  [ -n "$ppids" ] && before=$(ticks $ppids)
  local line
  line=$(taskset -c $LOAD $BIN/bench-load --url "$url" --model "$model" --seconds "$SECS" --warmup 0 --label "$label" "$@")
  # shellcheck disable=SC2086
  [ -n "$ppids" ] && after=$(ticks $ppids)
  line=$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); t=(int(sys.argv[2])-int(sys.argv[3]))/int(sys.argv[4]); has=sys.argv[5]=="1"; r["cpu_s"]=t if has else None; r["cpu_us_per_req"]=(t*1e6/r["completed"]) if has and r["completed"] else None; r["cpu_share"]=(t/float(sys.argv[6])) if has else None; print(json.dumps(r))' \
    "$line" "$after" "$before" "$TCK" "$([ -n "$ppids" ] && echo 1 || echo 0)" "$SECS")
  echo "$line" >&2
  echo "$line" >> "$OUT"
}

scenarios() { # label url model pids
  for stream in "" "--stream"; do
    run "$1" "$2" "$3" "$4" --max --concurrency 64 $stream
    run "$1" "$2" "$3" "$4" --rate 1000 $stream
  done
}

if [ "${PINNED_ONLY:-}" != llmop ]; then
  scenarios direct "$UP" bench-model ""
  scenarios nginx "$NGINX" bench-model "$NGINX_PIDS"
fi

start_llmop default
sleep 0.5
IDLE_RSS_KB=$(awk '/VmRSS/{print $2}' /proc/$LLMOP_PID/status)
scenarios llmop "$LLMOP" bench "$LLMOP_PID"
LOADED_RSS_KB=$(awk '/VmRSS/{print $2}' /proc/$LLMOP_PID/status)
ERRORS_IN_LOG=$(grep -c 'ERROR' "$WORK/llmop-default/log" || true)
kill "$LLMOP_PID"; wait "$LLMOP_PID" 2>/dev/null || true
if [ "${PINNED_ONLY:-}" = llmop ]; then
  echo "RSS idle $((IDLE_RSS_KB / 1024)) MiB, after load $((LOADED_RSS_KB / 1024)) MiB; ERROR lines $ERRORS_IN_LOG" >&2
  exit 0
fi

start_llmop strict
sleep 0.5
run llmop-strict "$LLMOP" bench "$LLMOP_PID" --max --concurrency 64
kill "$LLMOP_PID"; wait "$LLMOP_PID" 2>/dev/null || true

python3 - "$OUT" "$IDLE_RSS_KB" "$LOADED_RSS_KB" "$ERRORS_IN_LOG" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
idle, loaded, errs = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def get(label, mode, stream):
    for r in rows:
        if r["label"] == label and r["mode"] == mode and r["stream"] == stream:
            return r
print("| target | mode | stream | req/s | p50 ms | p99 ms | TTFB p99 ms | CPU µs/req | core used | errors |")
print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    mode = "max (64 in flight)" if r["mode"] == "max" else f'{int(r["target_rps"])} req/s'
    cpu = "–" if r["cpu_us_per_req"] is None else f'{r["cpu_us_per_req"]:.1f}'
    share = "–" if r["cpu_share"] is None else f'{r["cpu_share"]*100:.0f}%'
    print(f'| {r["label"]} | {mode} | {"yes" if r["stream"] else "no"} | {r["rps"]:.0f} | {r["p50_ms"]:.2f} | {r["p99_ms"]:.2f} | {r["ttfb_p99_ms"]:.2f} | {cpu} | {share} | {r["errors"]} |')
print()
d, l = get("direct", "rate", False), get("llmop", "rate", False)
ds, ls = get("direct", "rate", True), get("llmop", "rate", True)
n, lm = get("nginx", "max", False), get("llmop", "max", False)
st = get("llmop-strict", "max", False)
print("| goal | figure |")
print("|---|---|")
print(f'| ≥ 20,000 req/s on one core, every call recorded | {lm["rps"]:.0f} req/s ({lm["cpu_us_per_req"]:.1f} µs CPU/req; nginx {n["rps"]:.0f} req/s, {n["cpu_us_per_req"]:.1f} µs) |')
print(f'| p99 added ≤ 0.5 ms at 1,000 req/s | {l["p99_ms"]-d["p99_ms"]:+.2f} ms non-stream ({l["p99_ms"]:.2f} vs {d["p99_ms"]:.2f}); stream TTFB {ls["ttfb_p99_ms"]-ds["ttfb_p99_ms"]:+.2f} ms |')
print(f'| ≤ 15% of a core at 1,000 req/s | {l["cpu_share"]*100:.1f}% non-stream, {ls["cpu_share"]*100:.1f}% stream |')
print(f'| RSS ≤ 64 MB after a load run | {loaded/1024:.1f} MiB (idle {idle/1024:.1f} MiB) |')
print(f'| strict ≥ 70% of default throughput | {st["rps"]/lm["rps"]*100:.0f}% ({st["rps"]:.0f} vs {lm["rps"]:.0f} req/s) |')
print(f'\nERROR lines in llmop\'s log: {errs}')
PY
