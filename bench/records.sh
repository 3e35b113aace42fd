#!/usr/bin/env bash
# Recording overhead: the same fast mock upstream through llmop with recording off,
# on in the default durability mode, and on in strict mode (SQLite store on local disk).
# For each: non-streaming and streaming, p50/p99 at 1,000 req/s (open loop) and max
# throughput (closed loop, 64 in flight); then how many records each run committed.
# Results: bench/results/records.json and a Markdown table on stdout.
#
# Usage: bench/records.sh [seconds-per-scenario]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
cargo build --release --locked -p llmop -p llmop-bench
BIN=target/release
WORK=$(mktemp -d)
mkdir -p bench/results
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

url_of() {
  for _ in $(seq 100); do
    if grep -q "listening on" "$1" 2>/dev/null; then grep -o 'http://[0-9.:]*' "$1" | head -1; return; fi
    sleep 0.05
  done
  echo "process did not start: $1" >&2; cat "${1%.out}.log" >&2 || true; exit 1
}

$BIN/bench-upstream > "$WORK/up.out" & pids+=($!)
UP=$(url_of "$WORK/up.out")

OUT=bench/results/records.json
echo "[" > "$OUT"
first=1
for mode in off default strict; do
  dir="$WORK/$mode"; mkdir -p "$dir"
  if [ "$mode" = off ]; then store='enabled = false'; else store="durability = \"$mode\""; fi
  cat > "$dir/llmop.toml" <<TOML
[server]
listen = "127.0.0.1:0"
[providers.up]
kind = "openai"
base_url = "$UP/v1"
[routes.bench]
targets = [{ provider = "up", model = "bench-model" }]
[store]
$store
TOML
  LLMOP_LOG=warn $BIN/llmop serve --config "$dir/llmop.toml" > "$dir/llmop.out" 2> "$dir/llmop.log" & pid=$!
  url=$(url_of "$dir/llmop.out")
  sleep 0.3
  for stream in "" "--stream"; do
    for args in "--rate 1000" "--max --concurrency 64"; do
      # shellcheck disable=SC2086
      line=$($BIN/bench-load --url "$url" --model bench --seconds "$SECS" --label "$mode" $args $stream)
      echo "$line" >&2
      if [ $first -eq 0 ]; then echo "," >> "$OUT"; fi
      first=0; echo "$line" >> "$OUT"
    done
  done
  kill -TERM $pid; wait $pid || true
  if [ "$mode" != off ]; then
    n=$($BIN/llmop query --store "sqlite://$dir/llmop.db" --json "SELECT COUNT(*) FROM records" | python3 -c 'import json,sys; print(json.load(sys.stdin)["rows"][0][0])')
    echo "$mode: $n records committed" >&2
    echo "$mode $n" >> "$WORK/counts"
  fi
done
echo "]" >> "$OUT"

python3 - "$OUT" "$WORK/counts" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
counts = dict(l.split() for l in open(sys.argv[2]))
print("| recording | stream | load | req/s | p50 ms | p99 ms | TTFB p99 ms | errors |")
print("|---|---|---|---:|---:|---:|---:|---:|")
for r in rows:
    load = "max (64 in flight)" if r["mode"] == "max" else f'{int(r["target_rps"])} req/s'
    print(f'| {r["label"]} | {"yes" if r["stream"] else "no"} | {load} | {r["rps"]:.0f} | {r["p50_ms"]:.2f} | {r["p99_ms"]:.2f} | {r["ttfb_p99_ms"]:.2f} | {r["errors"]} |')
print()
for m, n in counts.items():
    done = sum(r["completed"] + r["errors"] for r in rows if r["label"] == m)
    print(f"{m}: {n} records committed for {done} measured calls (warm-up calls are recorded too)")
PY
