#!/usr/bin/env bash
# Side by side, in one session on one machine: `vestige bench` for every workload, then
# the PyTorch baseline (eager and torch.compile). Needs python3 with torch (and
# transformers for --impl hf); PYTHON overrides the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
cargo build --release --quiet
for config in main tiny; do
  for mode in train soft; do
    ./target/release/vestige bench "$mode" --config "$config" --steps 30
  done
done
"$PY" bench/pytorch_baseline.py --all
