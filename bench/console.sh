#!/usr/bin/env bash
# The console's pages over a large store: fills a SQLite store with RECORDS records
# (default 1,000,000) through the record writer (bench-store), starts llmop on it (an
# open gateway: the console issues a session on the first visit), then times each page
# N times (default 20) with curl, the gateway pinned to core 0 and curl to core 1.
# Prints median and max per page, in ms; results in bench/results/console.json.
#
# Usage: bench/console.sh [records] [repetitions]
set -euo pipefail
cd "$(dirname "$0")/.."
RECORDS=${1:-1000000}
N=${2:-20}
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --locked -p llmop -p llmop-bench
BIN=target/release
WORK=$(mktemp -d)
mkdir -p bench/results
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

echo "filling $RECORDS records…" >&2
$BIN/bench-store --url "sqlite://$WORK/llmop.db" --records "$RECORDS" >&2

cat > "$WORK/llmop.toml" <<TOML
[server]
listen = "127.0.0.1:0"
[store]
url = "sqlite://$WORK/llmop.db"
[providers.sim]
kind = "mock"
TOML
taskset -c 0 $BIN/llmop serve --config "$WORK/llmop.toml" > "$WORK/gw.out" 2> "$WORK/gw.log" & pids+=($!)
for _ in $(seq 200); do grep -q "listening on" "$WORK/gw.out" 2>/dev/null && break; sleep 0.05; done
URL=$(grep -o 'http://[0-9.:]*' "$WORK/gw.out" | head -1)
JAR="$WORK/cookies"
curl -s -c "$JAR" -o /dev/null "$URL/ui/requests"

mid=$(printf 'bench-%09d' $((RECORDS / 2)))
# The bench's records span 1,000 s from 1700000000000 (2023-11-14T22:13:20Z).
R="since=1700000000000&until=1700001000000"
pages=(
  "overview?$R"
  "overview?$R&by=user"
  "overview?$R&feature=feature-7&by=model"
  "overview?$R&user=user-42"
  "overview?since=2023-11-01&until=2023-12-01&by=model"
  "requests"
  "requests?q=$mid"
  "requests/$mid"
  "requests?q=session-1234"
  "sessions/session-1234"
  "requests?feature=feature-7&status=error"
  "requests?model=gpt-4o&min_latency_ms=1650"
  "requests?user=user-42"
  "requests?provider=anthropic"
  "requests?degraded=true"
  "requests?q=no-such-id"
)
OUT=bench/results/console.json
echo "[" > "$OUT"
first=1
printf '| page | median ms | max ms |\n|---|---:|---:|\n'
for p in "${pages[@]}"; do
  times=()
  for _ in $(seq "$N"); do
    t=$(taskset -c 1 curl -s -b "$JAR" -o /dev/null -w '%{time_total}' "$URL/ui/$p")
    times+=("$t")
  done
  read -r med max < <(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "%.1f %.1f\n", a[int((NR+1)/2)]*1000, a[NR]*1000}')
  printf '| `/ui/%s` | %s | %s |\n' "$p" "$med" "$max"
  [ $first = 1 ] || echo "," >> "$OUT"; first=0
  printf '{"page":"/ui/%s","records":%s,"median_ms":%s,"max_ms":%s}' "$p" "$RECORDS" "$med" "$max" >> "$OUT"
done
echo "]" >> "$OUT"
