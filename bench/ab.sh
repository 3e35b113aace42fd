#!/usr/bin/env bash
# Interleaved A/B of two llmop binaries on the bench route (every call recorded, default
# durability): max throughput at 64 in flight, non-stream and stream, alternating
# A, B, A, B… so that machine drift hits both alike. Pinned like bench/pinned.sh: the
# gateway on core 0, the upstream and the load generator on core 1. Prints one line per
# run (with the gateway's CPU per request) and the median of each.
#
# Usage: bench/ab.sh <binary-A> <binary-B> [rounds] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
A=$1; B=$2; ROUNDS=${3:-3}; SECS=${4:-5}
cargo build --release --locked -p llmop-bench
BIN=target/release
WORK=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
url_of() {
  for _ in $(seq 100); do
    if grep -q "listening on" "$1" 2>/dev/null; then grep -o 'http://[0-9.:]*' "$1" | head -1; return; fi
    sleep 0.05
  done
  echo "process did not start: $1" >&2; exit 1
}
taskset -c 1 $BIN/bench-upstream > "$WORK/up.out" & pids+=($!)
UP=$(url_of "$WORK/up.out")
one() { # label binary stream-flag
  local dir="$WORK/$1-$RANDOM"; mkdir -p "$dir"
  printf '[server]\nlisten = "127.0.0.1:0"\n[providers.up]\nkind = "openai"\nbase_url = "%s/v1"\n[routes.bench]\ntargets = [{ provider = "up", model = "bench-model" }]\n' "$UP" > "$dir/llmop.toml"
  LLMOP_LOG=warn taskset -c 0 "$2" serve --config "$dir/llmop.toml" > "$dir/out" 2> "$dir/log" & local pid=$!
  local url; url=$(url_of "$dir/out")
  taskset -c 1 $BIN/bench-load --url "$url" --model bench --seconds 1 --label warm --max --concurrency 64 $3 > /dev/null
  local t0 line; t0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  line=$(taskset -c 1 $BIN/bench-load --url "$url" --model bench --seconds "$SECS" --label "$1" --max --concurrency 64 $3)
  echo "$line" | python3 -c 'import json,sys; r=json.load(sys.stdin); t=(int(sys.argv[1])-int(sys.argv[2]))/int(sys.argv[3]); r["cpu_us_per_req"]=t*1e6/max(r["completed"],1); print(json.dumps(r))' \
    "$(awk '{print $14 + $15}' "/proc/$pid/stat")" "$t0" "$(getconf CLK_TCK)"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
for stream in "" "--stream"; do
  for r in $(seq "$ROUNDS"); do
    one "A${stream}" "$A" "$stream"
    one "B${stream}" "$B" "$stream"
  done
done | python3 -c '
import json, sys, statistics
rows = [json.loads(l) for l in sys.stdin if l.startswith("{")]
by = {}
for r in rows:
    by.setdefault(r["label"], []).append((r["rps"], r["cpu_us_per_req"]))
    print("%-10s %9.0f req/s %7.1f us/req" % (r["label"], r["rps"], r["cpu_us_per_req"]))
for k, v in by.items():
    print("median %-10s %9.0f req/s %7.1f us/req over %d runs" % (k, statistics.median(x[0] for x in v), statistics.median(x[1] for x in v), len(v)))
'
