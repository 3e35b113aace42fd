#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: a deterministic figure for
# comparing two builds on a noisy machine, where timed runs move by ±10-20%. llmop runs
# under callgrind (every thread, user space only; the kernel's share is not counted)
# behind the bench route (every call recorded, default durability); after a warm-up its
# counters are zeroed, 1,000 requests are sent at 100 req/s, and the instructions
# executed meanwhile are divided by the requests completed. Same binary, same inputs:
# the same figure within about 0.5%.
#
# Needs valgrind. Usage: bench/instructions.sh [llmop-binary ...] (default: a fresh
# release build of this checkout); set STREAM=--stream for streamed calls.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is required: apt-get install valgrind" >&2; exit 1; }
source bench/lib.sh
if [ $# -eq 0 ]; then
  cargo build --release --locked -p llmop >&2
  set -- "$BIN/llmop"
fi
cargo build --release --locked -p llmop-bench >&2
$BIN/bench-upstream > "$WORK/up.out" & pids+=($!)
UP=$(url_of "$WORK/up.out")
for binary in "$@"; do
  dir=$(mktemp -d -p "$WORK")
  printf '[server]\nlisten = "127.0.0.1:0"\n[providers.up]\nkind = "openai"\nbase_url = "%s/v1"\n[routes.bench]\ntargets = [{ provider = "up", model = "bench-model" }]\n' "$UP" > "$dir/llmop.toml"
  LLMOP_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" \
    "$binary" serve --config "$dir/llmop.toml" > "$dir/out" 2> "$dir/log" & pid=$!; pids+=($pid)
  url=$(url_of "$dir/out")
  $BIN/bench-load --url "$url" --model bench --seconds 3 --rate 100 --label warm ${STREAM:-} > /dev/null
  sleep 0.5
  callgrind_control -z "$pid" > /dev/null
  $BIN/bench-load --url "$url" --model bench --seconds 10 --rate 100 --label measured ${STREAM:-} > "$dir/load.json"
  sleep 1
  callgrind_control -d "$pid" > /dev/null
  sleep 1
  n=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["completed"])' "$dir/load.json")
  ir=$(grep -hE '^(summary|totals):' "$dir"/cg.out* | awk '{print $2}' | sort -n | tail -1)
  echo "$binary: $n requests, $((ir / n)) instructions per request"
  kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
done
