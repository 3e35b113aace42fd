#!/usr/bin/env bash
# What guardrails cost the gateway: the same llmop config with and without a default
# rule set (secrets blocked both ways, PII pseudonymized on input, injection signals in
# shadow, a disclaimer), in interleaved rounds (ROUNDS, default 5). Gateway pinned to
# core 0; the load generator and the fast OpenAI-format upstream to core 1. Each round:
#   - saturation: closed loop, 64 in flight, non-stream;
#   - a fixed 1,000 req/s, open loop (latency from each request's scheduled time),
#     non-stream and stream (TTFB);
# with the gateway's CPU per call. The prompt is a 480-byte support message with an
# email address and an order number; the upstream's answer is its usual short text.
# Every request's prompt is unique (its order number is the request's number, so no
# scan is remembered), except in `max-same`, where every call sends the same text (what
# a system prompt or an agent's re-sent history costs once it has been scanned).
#
# The host's speed drifts by more than the effect measured (2x between minutes), so a
# figure is a paired one: on against off in the same round, the order of the two
# alternating between rounds so that a drift within a round favours neither. Each
# measure is reported as the median of its rounds' paired differences with a
# distribution-free interval for that median (order statistics: its coverage is exact
# for any distribution of the differences, and is stated; 95% needs 6 rounds or more),
# and each goal as met, not met, or inconclusive when the interval straddles it.
# Results: bench/results/guard.json.
#
# Usage: bench/guard.sh [seconds-per-run]
#   ROUNDS=n (default 5); TESTS="max rate" runs a subset of max-same, max, rate and
#   rate-stream (default all four), e.g. many short rounds of one measure.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-8}
source bench/lib.sh
[ -n "${NO_BUILD:-}" ] || cargo build --release --locked -p llmop -p llmop-bench >&2
mkdir -p bench/results
BIN=$(cd "$BIN" && pwd)
TCK=$(getconf CLK_TCK)

taskset -c 1 "$BIN/bench-upstream" > "$WORK/up.out" & pids+=($!)
UP=$(url_of "$WORK/up.out")

for mode in on off; do
  mkdir -p "$WORK/$mode"
  cat > "$WORK/$mode/llmop.toml" <<TOML
[server]
listen = "127.0.0.1:0"
[providers.up]
kind = "openai"
base_url = "$UP/v1"
[routes.bench]
targets = [{ provider = "up", model = "bench-model" }]
TOML
done
cat >> "$WORK/on/llmop.toml" <<'TOML'
[[guardrails.rules]]
name = "no-secrets"
detect = ["secrets"]
action = "block"
[[guardrails.rules]]
name = "mask-pii"
detect = ["pii"]
direction = "input"
action = "pseudonymize"
[[guardrails.rules]]
name = "injection"
detect = ["injection"]
direction = "input"
action = "shadow"
[[guardrails.disclaimers]]
text = " (AI-generated)"
TOML

PROMPT="Hello, I ordered a standing desk last week (order 4471-2209-{i}) and it arrived with a cracked leg. Could you arrange a replacement part or a return? You can reach me at jamie.rivera@example.com during office hours. I have attached photos of the damage to the ticket. The box itself looked fine, so I think it happened at the factory. Thanks for your help, and sorry for the long message. Kind regards, Jamie"
body() { # stream(true|false)
  python3 -c 'import json,sys; print(json.dumps({"model":"bench","stream":sys.argv[2]=="true","messages":[{"role":"system","content":"You are a helpful support agent."},{"role":"user","content":sys.argv[1]}]}))' "$PROMPT" "$1"
}
WHOLE=$(body false); STREAM=$(body true); SAME=${WHOLE//\{i\}/88}

run() { # mode label load-args...
  local mode=$1 label=$2; shift 2
  (cd "$WORK/$mode" && LLMOP_LOG=warn exec taskset -c 0 "$BIN/llmop" serve --config llmop.toml > gw.out 2> gw.log) &
  local pid=$!
  pids+=($pid)
  local url
  url=$(url_of "$WORK/$mode/gw.out")
  taskset -c 1 "$BIN/bench-load" --url "$url" --seconds 2 --warmup 0 --label warm "$@" > /dev/null
  local t0 t1 out
  t0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  out=$(taskset -c 1 "$BIN/bench-load" --url "$url" --seconds "$SECS" --warmup 0 --label "$label" "$@")
  t1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  (cd "$WORK/$mode" && rm -f llmop.db*)
  echo "$out" | python3 -c "import json,sys; d=json.load(sys.stdin); d['guard']='$mode'; d['cpu_us_per_req']=($t1-$t0)*1e6/$TCK/max(d['completed'],1); print(json.dumps(d))"
}

TESTS=${TESTS:-max-same max rate rate-stream}
{
  for round in $(seq "${ROUNDS:-5}"); do
    # Odd rounds measure on first, even rounds off first.
    if [ $((round % 2)) -eq 1 ]; then order="on off"; else order="off on"; fi
    for test in $TESTS; do
      for mode in $order; do
        case $test in
          max-same) run "$mode" max-same --max --concurrency 64 --body "$SAME" ;;
          max) run "$mode" max --max --concurrency 64 --vary --body "$WHOLE" ;;
          rate) run "$mode" rate --rate 1000 --vary --body "$WHOLE" ;;
          rate-stream) run "$mode" rate-stream --rate 1000 --vary --body "$STREAM" ;;
          *) echo "unknown test: $test" >&2; exit 2 ;;
        esac
      done
    done
  done
} | tee "$WORK/runs.jsonl" >&2
python3 bench/paired.py "$WORK/runs.jsonl" | tee bench/results/guard.json
