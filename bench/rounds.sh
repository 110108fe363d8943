#!/usr/bin/env bash
# Interleaved side-by-side rounds: for each round and workload, `vestige bench` then the
# PyTorch eager baseline (bench/pytorch_baseline.py), so slow phases of a noisy shared
# machine hit both sides alike. Prints every JSON line to stderr and, to stdout, a markdown
# table with, per workload: tokens/s (median and range over rounds), the vestige/PyTorch ratio of each
# round (the two sides run back to back, so a round compares them under nearly the same
# conditions; median and range), and the fastest single step on each side (contention only
# ever slows a step, so the fastest is the least disturbed estimate of an engine's speed).
#
#   PYTHON=/path/to/venv/bin/python ROUNDS=10 STEPS=12 bench/rounds.sh
#
# Needs python3 with torch for the baseline (PYTHON overrides the interpreter).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
ROUNDS=${ROUNDS:-3}
STEPS=${STEPS:-30}
cargo build --release --quiet
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for r in $(seq "$ROUNDS"); do
  for c in main tiny; do
    for m in train soft; do
      ./target/release/vestige bench "$m" --config "$c" --steps "$STEPS" | tail -1 | sed 's/^/vestige /' | tee -a "$log" >&2
      "$PY" bench/pytorch_baseline.py --config "$c" --mode "$m" --steps "$STEPS" | tail -1 | sed 's/^/pytorch /' | tee -a "$log" >&2
    done
  done
done
python3 - "$log" <<'EOF'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    side, js = line.split(" ", 1)
    d = json.loads(js)
    rows.setdefault((d["config"], d["mode"]), {}).setdefault(side, []).append(d)
print("| workload | vestige tokens/s, median (range) | PyTorch eager tokens/s, median (range) | ratio per round, median (range) | fastest step, vestige / PyTorch | vestige peak RSS | PyTorch peak RSS |")
print("|---|---:|---:|---:|---:|---:|---:|")
for (config, mode), sides in rows.items():
    v = [d["tokens_per_s"] for d in sides["vestige"]]
    p = [d["tokens_per_s"] for d in sides["pytorch"]]
    # Each round runs the two sides back to back, so a round's ratio compares them under
    # nearly the same machine conditions.
    r = [a / b for a, b in zip(v, p)]
    spread = lambda xs, f: f"{f(statistics.median(xs))} ({f(min(xs))}–{f(max(xs))})"
    tok = lambda x: f"{x:,.0f}"
    fastest = lambda side: min(d["step_ms_min"] for d in sides[side])
    fast = f"{fastest('vestige'):.1f} / {fastest('pytorch'):.1f} ms = {fastest('pytorch') / fastest('vestige'):.2f}x"
    rss = lambda side: f"{max(d['peak_rss_mb'] for d in sides[side]):.0f} MB"
    print(f"| {config}, {mode} | {spread(v, tok)} | {spread(p, tok)} | {spread(r, lambda x: f'{x:.2f}x')} | {fast} | {rss('vestige')} | {rss('pytorch')} |")
EOF
