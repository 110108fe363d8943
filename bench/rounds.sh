#!/usr/bin/env bash
# Interleaved side-by-side rounds: for each round and workload, `vestige bench` then the
# PyTorch eager baseline (bench/pytorch_baseline.py), so slow phases of a noisy shared
# machine hit both sides alike. Prints every JSON line to stderr and a markdown table of
# per-round tokens/s, medians over rounds and their ratio to stdout.
#
#   PYTHON=/path/to/venv/bin/python ROUNDS=5 STEPS=30 bench/rounds.sh
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
print("| workload | vestige tokens/s (rounds) | PyTorch eager tokens/s (rounds) | ratio of medians | vestige peak RSS | PyTorch peak RSS |")
print("|---|---:|---:|---:|---:|---:|")
for (config, mode), sides in rows.items():
    v = [d["tokens_per_s"] for d in sides["vestige"]]
    p = [d["tokens_per_s"] for d in sides["pytorch"]]
    fmt = lambda xs: f"{statistics.median(xs):,.0f} ({' / '.join(f'{x:,.0f}' for x in xs)})"
    rss = lambda side: f"{max(d['peak_rss_mb'] for d in sides[side]):.0f} MB"
    ratio = statistics.median(v) / statistics.median(p)
    print(f"| {config}, {mode} | {fmt(v)} | {fmt(p)} | {ratio:.2f}x | {rss('vestige')} | {rss('pytorch')} |")
EOF
