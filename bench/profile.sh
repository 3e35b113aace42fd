#!/usr/bin/env bash
# Where llmop's CPU goes: llmop pinned to core 0 under 64 requests in flight (load
# generator and upstream on core 1), sampled with `perf record` for N seconds. Prints
# the top symbols by self time and by inclusive time, grouped the way
# docs/benchmarks.md reports them.
#
# Needs perf (Debian: linux-perf). Usage: bench/profile.sh [seconds] [llmop-binary] [--stream]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-8}
source bench/lib.sh
LLMOP_BIN=${2:-$BIN/llmop}
STREAM=${3:-}
taskset -c 1 $BIN/bench-upstream > "$WORK/up.out" & pids+=($!)
UP=$(url_of "$WORK/up.out")
printf '[server]\nlisten = "127.0.0.1:0"\n[providers.up]\nkind = "openai"\nbase_url = "%s/v1"\n[routes.bench]\ntargets = [{ provider = "up", model = "bench-model" }]\n' "$UP" > "$WORK/llmop.toml"
LLMOP_LOG=warn taskset -c 0 "$LLMOP_BIN" serve --config "$WORK/llmop.toml" > "$WORK/out" 2> "$WORK/log" & LLMOP_PID=$!; pids+=($LLMOP_PID)
URL=$(url_of "$WORK/out")
taskset -c 1 $BIN/bench-load --url "$URL" --model bench --seconds $((SECS + 4)) --warmup 0 --max --concurrency 64 $STREAM > "$WORK/load.json" & LOAD=$!
sleep 2
perf record -F 999 -g --call-graph dwarf,16384 -p "$LLMOP_PID" -o "${PERF_DATA:-$WORK/perf.data}" -- sleep "$SECS" 2> /dev/null > /dev/null
wait $LOAD
cat "$WORK/load.json" >&2
echo "## self time (top 40)"
perf report -i "${PERF_DATA:-$WORK/perf.data}" --no-children --sort symbol --stdio -g none 2>/dev/null | sed "s/  */ /g" | grep -E '^ +[0-9]' | head -40 || true
echo "## inclusive time (top 60)"
perf report -i "${PERF_DATA:-$WORK/perf.data}" --children --sort symbol --stdio -g none 2>/dev/null | sed "s/  */ /g" | grep -E '^ +[0-9]' | head -60 || true
