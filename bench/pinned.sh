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
# The host's speed drifts by up to 2x between minutes, so one run of each target decides
# nothing. The whole set is run in ROUNDS rounds (default 5), the order of the targets
# reversed every other round, with a fresh llmop (and store) each round. Each goal is
# judged on one figure per round, paired where it compares targets (llmop's p99 minus
# direct's in the same round; strict over default in the same round): the median of the
# rounds with a distribution-free interval whose coverage is exact and stated, and a
# verdict of met, not met, or inconclusive (bench/paired.py's statistics).
#
# Output: one JSON line per run on stderr and in bench/results/pinned.jsonl, the
# analysis in bench/results/pinned.json, and Markdown tables on stdout.
#
# Usage: bench/pinned.sh [seconds-per-run] [llmop-binary]
#   The binary defaults to a fresh release build of this checkout; pass another to
#   measure an older build with the same harness. PINNED_ONLY=llmop runs llmop's rows
#   alone (only the goals that need no other target), for quick A/B runs of two
#   binaries. ROUNDS=n sets the rounds
#   (8 gives 99.2% coverage, 6 the least with 95%).
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

OUT=bench/results/pinned.jsonl
: > "$OUT"
ROUND=0
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
  line=$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); t=(int(sys.argv[2])-int(sys.argv[3]))/int(sys.argv[4]); has=sys.argv[5]=="1"; r["cpu_s"]=t if has else None; r["cpu_us_per_req"]=(t*1e6/r["completed"]) if has and r["completed"] else None; r["cpu_share"]=(t/float(sys.argv[6])) if has else None; r["round"]=int(sys.argv[7]); print(json.dumps(r))' \
    "$line" "$after" "$before" "$TCK" "$([ -n "$ppids" ] && echo 1 || echo 0)" "$SECS" "$ROUND")
  echo "$line" >&2
  echo "$line" >> "$OUT"
}

scenarios() { # label url model pids
  for stream in "" "--stream"; do
    run "$1" "$2" "$3" "$4" --max --concurrency 64 $stream
    run "$1" "$2" "$3" "$4" --rate 1000 $stream
  done
}

# One line per llmop instance: its round, durability, and RSS idle and after its runs.
RSS=$WORK/rss.jsonl
: > "$RSS"
ERRORS_IN_LOG=0
llmop_runs() { # durability
  start_llmop "$1"
  sleep 0.5
  local idle loaded
  idle=$(awk '/VmRSS/{print $2}' /proc/$LLMOP_PID/status)
  if [ "$1" = default ]; then
    scenarios llmop "$LLMOP" bench "$LLMOP_PID"
  else
    run llmop-strict "$LLMOP" bench "$LLMOP_PID" --max --concurrency 64
  fi
  loaded=$(awk '/VmRSS/{print $2}' /proc/$LLMOP_PID/status)
  ERRORS_IN_LOG=$((ERRORS_IN_LOG + $(grep -c 'ERROR' "$WORK/llmop-$1/log" || true)))
  kill "$LLMOP_PID"; wait "$LLMOP_PID" 2>/dev/null || true
  rm -rf "$WORK/llmop-$1"
  echo "{\"round\": $ROUND, \"durability\": \"$1\", \"idle_kb\": $idle, \"loaded_kb\": $loaded}" >> "$RSS"
}

if [ "${PINNED_ONLY:-}" = llmop ]; then
  TARGETS="default"
else
  TARGETS="direct nginx default strict"
fi
for ROUND in $(seq "${ROUNDS:-5}"); do
  order=$TARGETS
  # Even rounds run the targets in reverse, so a drift within a round favours none.
  [ $((ROUND % 2)) -eq 0 ] && order=$(echo "$TARGETS" | tr ' ' '\n' | tac | tr '\n' ' ')
  for t in $order; do
    case $t in
      direct) scenarios direct "$UP" bench-model "" ;;
      nginx) scenarios nginx "$NGINX" bench-model "$NGINX_PIDS" ;;
      default|strict) llmop_runs "$t" ;;
    esac
  done
done
python3 bench/pinned.py "$OUT" "$RSS" bench/results/pinned.json "$ERRORS_IN_LOG"
