#!/usr/bin/env python3
"""Paired on/off figures of bench/guard.sh, each with an interval and a verdict.

Input: the JSON lines of bench-load runs, each tagged `guard` ("on" or "off") and with
the gateway's `cpu_us_per_req`. The k-th "on" run of a label is paired with the k-th
"off" run of that label (the same round). Each measure is the median of the rounds'
paired differences, with a distribution-free interval for that median: the order
statistics [x_(k), x_(n-k+1)] cover the true median with probability
1 - 2 P(Binomial(n, 1/2) <= k - 1) whatever the differences' distribution (continuous),
so the coverage stated is exact, not asymptotic. k is the largest with coverage of at
least 95%; with fewer than 6 rounds no such k exists and the widest interval (min, max)
is given with its own, lower, coverage. A goal is "met" when the whole interval is on
its side, "not met" when the whole interval is on the other, else "inconclusive".

`paired.py --self-test` checks the stated coverage by simulation (skewed and heavy-tailed
differences, several round counts).

Usage: paired.py runs.jsonl
"""
import json
import math
import random
import sys

LEVEL = 0.95


def binom_cdf(k, n):
    """P(Binomial(n, 1/2) <= k)."""
    return sum(math.comb(n, i) for i in range(k + 1)) / 2**n


def median_interval(xs):
    """(median, low, high, coverage) of the sample's median."""
    s = sorted(xs)
    n = len(s)
    med = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
    k = 1
    while k + 1 <= n - k and 1 - 2 * binom_cdf(k, n) >= LEVEL:
        k += 1
    return med, s[k - 1], s[n - k], 1 - 2 * binom_cdf(k - 1, n)


def verdict(low, high, goal, below):
    """Whether a goal of staying below (or above) `goal` is met by the interval."""
    if below:
        return "met" if high < goal else "not met" if low >= goal else "inconclusive"
    return "met" if low > goal else "not met" if high <= goal else "inconclusive"


def summary(diffs, unit, goal=None, below=True):
    med, low, high, cov = median_interval(diffs)
    out = {
        "median": round(med, 3),
        "interval": [round(low, 3), round(high, 3)],
        "coverage": round(cov, 3),
        "rounds": [round(d, 3) for d in diffs],
        "unit": unit,
    }
    if goal is not None:
        out["goal"] = f"{'<' if below else '>'} {goal} {unit}"
        out["verdict"] = verdict(low, high, goal, below)
    return out


def pairs(runs, label, key):
    on = [r[key] for r in runs if r["label"] == label and r["guard"] == "on"]
    off = [r[key] for r in runs if r["label"] == label and r["guard"] == "off"]
    return list(zip(on, off))


def analyse(runs):
    out = {}
    for label in ("max", "max-same"):
        p = pairs(runs, label, "rps")
        if not p:
            continue
        out[f"{label}_rps"] = [[round(a), round(b)] for a, b in p]
        # Throughput cost: the share of the off throughput lost with guardrails on.
        goal = 15 if label == "max" else None
        out[f"{label}_throughput_cost"] = summary([(1 - a / b) * 100 for a, b in p], "%", goal)
        p = pairs(runs, label, "cpu_us_per_req")
        out[f"{label}_cpu_us_per_req"] = [[round(a, 1), round(b, 1)] for a, b in p]
        out[f"{label}_cpu_added"] = summary([a - b for a, b in p], "us per call")
    for label, key, goal in (("rate", "p99_ms", 0.3), ("rate", "p50_ms", None), ("rate-stream", "ttfb_p99_ms", None)):
        p = pairs(runs, label, key)
        if not p:
            continue
        out[f"{label}_{key}"] = [[round(a, 3), round(b, 3)] for a, b in p]
        out[f"{label}_{key}_added"] = summary([a - b for a, b in p], "ms", goal)
    out["errors"] = sum(r["errors"] for r in runs)
    return out


def self_test():
    """The intervals' coverage, simulated: at least the stated coverage (less 1.5
    points of simulation error) for skewed and heavy-tailed differences."""
    rng = random.Random(7)
    dists = {
        # name: (draw, true median)
        "lognormal": (lambda: rng.lognormvariate(0, 1), 1.0),
        "exponential": (lambda: rng.expovariate(1.0), math.log(2)),
        "cauchy": (lambda: math.tan(math.pi * (rng.random() - 0.5)), 0.0),
    }
    trials = 4000
    for n in (3, 5, 6, 9, 15, 25):
        for name, (draw, true) in dists.items():
            covered = 0
            stated = None
            for _ in range(trials):
                _, low, high, cov = median_interval([draw() for _ in range(n)])
                stated = cov
                covered += low <= true <= high
            got = covered / trials
            assert got >= stated - 0.015, f"n={n} {name}: covered {got:.3f}, stated {stated:.3f}"
            print(f"n={n:2} {name:11} stated {stated:.3f} simulated {got:.3f}")
    assert verdict(1, 2, 3, True) == "met"
    assert verdict(4, 5, 3, True) == "not met"
    assert verdict(2, 4, 3, True) == "inconclusive"
    print("ok")


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-test"]:
        self_test()
    else:
        runs = [json.loads(line) for line in open(sys.argv[1])]
        print(json.dumps(analyse(runs), indent=1))
