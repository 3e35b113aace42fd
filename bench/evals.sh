#!/usr/bin/env bash
# What an eval run costs on top of the gateway calls it makes: a 1,000-item run of a
# feature with 4 deterministic evaluators (exact, contains, regex, length) and a mock LLM
# judge, at concurrency 32, then the same run again (every answer and verdict from the
# cache: the eval machinery alone), then the raw calls (the feature's invoke at
# concurrency 32, closed loop). Each item makes 2 gateway calls (answer + judge), so
#   overhead per item = run wall time / items - 2 / raw calls per second.
# The gateway is pinned to core 0, the CLI and the load generator to core 1.
# Results in bench/results/evals.json.
#
# Usage: bench/evals.sh [items]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000}
source bench/lib.sh
[ -n "${NO_BUILD:-}" ] || cargo build --release --locked -p llmop -p llmop-bench
mkdir -p bench/results
BIN=$(cd "$BIN" && pwd)

cat > "$WORK/llmop.toml" <<'TOML'
[server]
listen = "127.0.0.1:0"
[store]
url = "sqlite://llmop.db"
[providers.sim]
kind = "mock"
rules = [
  { when = '(?s)JUDGE.*Answer: wrong', reply = '{"reasoning":"it says wrong","verdict":"wrong"}' },
  { when = 'JUDGE', reply = '{"reasoning":"looks right","verdict":"correct"}' },
  { when = 'Question: \S+ answer=(\w+)', reply = '$1' },
]
[prices."sim/*"]
input = 0.15
output = 0.60
TOML
cat > "$WORK/qa.toml" <<'TOML'
name = "qa"
model = "sim/echo"
[variables]
q = { type = "string" }
[[messages]]
role = "user"
template = "Question: {{ q }}"
TOML
cat > "$WORK/judge.toml" <<'TOML'
name = "judge-qa"
model = "sim/echo"
[variables]
output = { type = "string" }
expected = { type = "string", default = "" }
[[messages]]
role = "user"
template = "JUDGE\nExpected: {{ expected }}\nAnswer: {{ output }}"
[output]
parser = "json"
on_parse_failure = "error"
schema = { type = "object", properties = { reasoning = { type = "string" }, verdict = { type = "string", enum = ["correct", "wrong"] } }, required = ["reasoning", "verdict"] }
TOML
mkdir -p "$WORK/evals"
cat > "$WORK/evals/qa.toml" <<'TOML'
feature = "qa"
dataset = "bench"
[[evaluators]]
name = "exact"
kind = "exact"
[[evaluators]]
name = "contains"
kind = "contains"
[[evaluators]]
name = "shape"
kind = "regex"
pattern = '^\w+$'
[[evaluators]]
name = "short"
kind = "length"
max_words = 5
[[evaluators]]
name = "judge"
kind = "judge"
feature = "judge-qa"
version = 1
choices = { correct = 1.0, wrong = 0.0 }
TOML
python3 - "$N" > "$WORK/bench.jsonl" <<'PY'
import json, sys
for i in range(int(sys.argv[1])):
    ans = ["yes", "no", "maybe"][i % 3]
    print(json.dumps({"id": f"i{i}", "variables": {"q": f"item-{i} answer={ans}"}, "expected": ans}))
PY

cd "$WORK"
taskset -c 0 "$BIN/llmop" serve --config llmop.toml > gw.out 2> gw.log &
pids+=($!)
URL=$(url_of gw.out)
cli() { taskset -c 1 "$BIN/llmop" --config llmop.toml "$@"; }
cli feature push qa.toml > /dev/null
cli feature push judge.toml > /dev/null
cli dataset push bench.jsonl --name bench > /dev/null

timed() { local s e; s=$(date +%s.%N); "$@" > /dev/null; e=$(date +%s.%N); echo "$e - $s" | bc -l; }
FRESH=$(timed cli eval run qa --version 1 --concurrency 32 --gateway "$URL")
CACHED=$(timed cli eval run qa --version 1 --concurrency 32 --gateway "$URL")
RAW=$(taskset -c 1 "$BIN/bench-load" --url "$URL" --max --concurrency 32 --seconds 10 --warmup 1 \
  --path /v1/features/qa/invoke --body '{"variables":{"q":"item-1 answer=no"},"version":1,"env":"eval"}' --label raw)
RPS=$(echo "$RAW" | python3 -c 'import json,sys; print(json.load(sys.stdin)["rps"])')
python3 - "$N" "$FRESH" "$CACHED" "$RPS" <<'PY' | tee "$OLDPWD/bench/results/evals.json"
import json, sys
n, fresh, cached, rps = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
raw_per_item_ms = 2 / rps * 1000
print(json.dumps({
    "items": n, "concurrency": 32, "evaluators": "exact, contains, regex, length + mock judge",
    "fresh_wall_s": round(fresh, 2), "fresh_items_per_s": round(n / fresh, 1),
    "cached_rerun_wall_s": round(cached, 2), "cached_items_per_s": round(n / cached, 1),
    "raw_invoke_rps": round(rps, 1), "raw_ms_per_item": round(raw_per_item_ms, 3),
    "overhead_ms_per_item": round(fresh / n * 1000 - raw_per_item_ms, 3),
}, indent=1))
PY
