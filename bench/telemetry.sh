#!/usr/bin/env bash
# Telemetry off the request path, measured: llmop pinned to core 0 (bench-upstream and
# bench-load on core 1), a fixed 1,000 req/s open loop (latency from each request's
# scheduled time), three ways: no [telemetry]; exporting to a collector that accepts
# connections and never answers (every export hangs until its time limit, the queue
# fills, spans are dropped and counted); and a collector that answers 200 at once.
# Reports p50/p99 and llmop's CPU per request for each, and the span counters.
#
# Usage: bench/telemetry.sh [seconds-per-run]   (SKIP_BUILD=1 reuses target/release)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
source bench/lib.sh
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --locked -p llmop -p llmop-bench >&2
TCK=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

taskset -c 1 $BIN/bench-upstream > "$WORK/up.out" & pids+=($!)
UP=$(url_of "$WORK/up.out")

# The silent collector: accepts, reads, never answers. The answering one: 200 at once.
SILENT_PORT=$(free_port); OK_PORT=$(free_port)
taskset -c 1 python3 - "$SILENT_PORT" "$OK_PORT" <<'PY' & pids+=($!)
import socket, sys, threading
def silent(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port)); s.listen(1024); held = []
    while True:
        c, _ = s.accept(); held.append(c)
def ok(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port)); s.listen(1024)
    def serve(c):
        buf = b""
        while True:
            d = c.recv(65536)
            if not d: return
            buf += d
            while b"\r\n\r\n" in buf:
                head, rest = buf.split(b"\r\n\r\n", 1)
                n = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"): n = int(line.split(b":")[1])
                while len(rest) < n:
                    rest += c.recv(65536)
                buf = rest[n:]
                c.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n")
    while True:
        c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
threading.Thread(target=silent, args=(int(sys.argv[1]),), daemon=True).start()
ok(int(sys.argv[2]))
PY
sleep 0.3

OUT=bench/results/telemetry.json
: > "$OUT"
for mode in off silent answering; do
  dir="$WORK/$mode"; mkdir -p "$dir"
  case $mode in
    off) tel="" ;;
    silent) tel=$'[telemetry]\nendpoint = "http://127.0.0.1:'$SILENT_PORT$'"\ntimeout_ms = 30000' ;;
    answering) tel=$'[telemetry]\nendpoint = "http://127.0.0.1:'$OK_PORT$'"' ;;
  esac
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
$tel
TOML
  LLMOP_LOG=error taskset -c 0 $BIN/llmop serve --config "$dir/llmop.toml" > "$dir/out" 2> "$dir/log" & pid=$!; pids+=($pid)
  url=$(url_of "$dir/out")
  taskset -c 1 $BIN/bench-load --url "$url" --model bench --seconds 2 --warmup 0 --label warm --rate 1000 > /dev/null
  before=$(ticks $pid)
  line=$(taskset -c 1 $BIN/bench-load --url "$url" --model bench --seconds "$SECS" --warmup 0 --label "$mode" --rate 1000)
  after=$(ticks $pid)
  spans=$(curl -s "$url/metrics" | grep '^llmop_telemetry_spans_total' | tr '\n' ' ' || true)
  python3 -c 'import json,sys; r=json.loads(sys.argv[1]); t=(int(sys.argv[2])-int(sys.argv[3]))/int(sys.argv[4]); r["cpu_us_per_req"]=t*1e6/max(r["completed"],1); r["spans"]=sys.argv[5]; print(json.dumps(r))' "$line" "$after" "$before" "$TCK" "$spans" | tee -a "$OUT" >&2
  kill $pid; wait $pid 2>/dev/null || true
done
python3 - "$OUT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("| telemetry | req/s | p50 ms | p99 ms | CPU µs/req | errors | spans |")
print("|---|---:|---:|---:|---:|---:|---|")
for r in rows:
    print(f"| {r['label']} | {r.get('rps', 0):.0f} | {r.get('p50_ms', 0):.2f} | {r.get('p99_ms', 0):.2f} | {r['cpu_us_per_req']:.0f} | {r.get('errors', 0)} | {r['spans'].strip() or '-'} |")
PY
