#!/usr/bin/env python3
"""The goals of bench/pinned.sh, judged over its rounds.

Input: the runs' JSON lines (each with its `round`, `label`, `mode` and `stream`), the
llmop instances' RSS lines, and where to write the analysis (JSON). Prints Markdown: the
median of each run's figures over the rounds, then each goal with its per-round figure's
median, the interval for that median at its stated coverage, and a verdict (met, not met,
inconclusive), from bench/paired.py's statistics. A goal comparing two targets is judged
on their difference (or ratio) within each round, so the host's drift between rounds
cancels; the others (llmop's throughput, its share of the core, its RSS) are absolute
and move with the host, which the nginx row of the same rounds puts in context.

Usage: pinned.py runs.jsonl rss.jsonl out.json [error-lines-in-logs]
"""
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from paired import summary  # noqa: E402


def by_round(runs, label, mode, stream, key):
    """{round: value} of one run's figure."""
    return {
        r["round"]: r[key]
        for r in runs
        if r["label"] == label and r["mode"] == mode and r["stream"] == stream and r.get(key) is not None
    }


def paired(a, b, f):
    """f(a, b) for every round both have."""
    return [f(a[k], b[k]) for k in sorted(a) if k in b]


def goals(runs, rss):
    out = {}
    lm = by_round(runs, "llmop", "max", False, "rps")
    if lm:
        out["throughput_rps"] = summary(list(lm.values()), "req/s", 20000, below=False)
        cpu = by_round(runs, "llmop", "max", False, "cpu_us_per_req")
        out["cpu_us_per_req_at_saturation"] = summary(list(cpu.values()), "us")
        ncpu = by_round(runs, "nginx", "max", False, "cpu_us_per_req")
        if ncpu:
            # Against nginx in the same round: how many of nginx's calls one of llmop's
            # costs, a figure that moves far less with the host than either alone.
            out["cpu_per_req_vs_nginx"] = summary(paired(cpu, ncpu, lambda a, b: a / b), "x nginx")
    for stream, key, name in ((False, "p99_ms", "p99_added_ms"), (True, "ttfb_p99_ms", "stream_ttfb_p99_added_ms")):
        l = by_round(runs, "llmop", "rate", stream, key)
        d = by_round(runs, "direct", "rate", stream, key)
        if l and d:
            out[name] = summary(paired(l, d, lambda a, b: a - b), "ms", 0.5)
    for stream, name in ((False, "core_share_at_1000_pct"), (True, "stream_core_share_at_1000_pct")):
        s = by_round(runs, "llmop", "rate", stream, "cpu_share")
        if s:
            out[name] = summary([v * 100 for v in s.values()], "%", 15)
    loaded = [r["loaded_kb"] / 1024 for r in rss if r["durability"] == "default"]
    if loaded:
        out["rss_after_load_mib"] = summary(loaded, "MiB", 64)
        out["rss_idle_mib"] = summary([r["idle_kb"] / 1024 for r in rss if r["durability"] == "default"], "MiB")
    st = by_round(runs, "llmop-strict", "max", False, "rps")
    if st and lm:
        out["strict_vs_default_pct"] = summary(paired(st, lm, lambda a, b: a / b * 100), "%", 70, below=False)
    return out


def num(x):
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.2f}"


def fmt(s):
    lo, hi = s["interval"]
    v = f'{num(s["median"])} {s["unit"]} ({num(lo)} to {num(hi)}, {s["coverage"] * 100:.1f}%)'
    return v + (f' **{s["verdict"]}**' if "verdict" in s else "")


def main():
    runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
    rss = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
    errors_in_log = int(sys.argv[4]) if len(sys.argv) > 4 else None
    rounds = len({r["round"] for r in runs})
    print(f"Medians over {rounds} rounds:\n")
    print("| target | mode | stream | req/s | p50 ms | p99 ms | TTFB p99 ms | CPU µs/req | core used | errors |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    seen = []
    for r in runs:
        k = (r["label"], r["mode"], r["stream"])
        if k not in seen:
            seen.append(k)
    for label, mode, stream in seen:
        rs = [r for r in runs if (r["label"], r["mode"], r["stream"]) == (label, mode, stream)]

        def med(key, rs=rs):
            vs = [r[key] for r in rs if r.get(key) is not None]
            return statistics.median(vs) if vs else None

        m = "max (64 in flight)" if mode == "max" else f'{int(rs[0]["target_rps"])} req/s'
        cpu = "–" if med("cpu_us_per_req") is None else f'{med("cpu_us_per_req"):.1f}'
        share = "–" if med("cpu_share") is None else f'{med("cpu_share") * 100:.0f}%'
        print(
            f'| {label} | {m} | {"yes" if stream else "no"} | {med("rps"):.0f} | {med("p50_ms"):.2f} | {med("p99_ms"):.2f} '
            f'| {med("ttfb_p99_ms"):.2f} | {cpu} | {share} | {sum(r["errors"] for r in rs)} |'
        )
    g = goals(runs, rss)
    names = {
        "throughput_rps": "≥ 20,000 req/s on one core, every call recorded",
        "cpu_us_per_req_at_saturation": "llmop's CPU per call at saturation",
        "cpu_per_req_vs_nginx": "llmop's CPU per call over nginx's, same round",
        "p99_added_ms": "p99 added ≤ 0.5 ms at 1,000 req/s (llmop − direct, same round)",
        "stream_ttfb_p99_added_ms": "stream TTFB p99 added at 1,000 req/s",
        "core_share_at_1000_pct": "≤ 15% of a core at 1,000 req/s",
        "stream_core_share_at_1000_pct": "the same, streamed",
        "rss_after_load_mib": "RSS ≤ 64 MB after a load run",
        "rss_idle_mib": "RSS idle",
        "strict_vs_default_pct": "strict ≥ 70% of default throughput (same round)",
    }
    if g:
        print("\n| goal | median of the rounds (interval, coverage) |")
        print("|---|---|")
        for k, s in g.items():
            print(f"| {names[k]} | {fmt(s)} |")
    if errors_in_log is not None:
        print(f"\nERROR lines in llmop's logs: {errors_in_log}")
    g["errors"] = sum(r["errors"] for r in runs)
    g["runs"] = runs
    g["rss"] = rss
    with open(sys.argv[3], "w") as f:
        json.dump(g, f, indent=1)


if __name__ == "__main__":
    main()
