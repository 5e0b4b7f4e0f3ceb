#!/usr/bin/env bash
# Benchmarks an LSTM on inferox (candle CPU) against torch.nn.LSTM (PyTorch eager, which runs
# oneDNN's LSTM on x86), in one sitting, and prints a markdown table for docs/benchmarks.md:
# 2 layers, input and hidden 256, a batch of 32 sequences of 256 steps, sequences/s.
# inferox: `inferox bench` (release build), mean of 10 runs; PyTorch: scripts/bench_recurrent.py,
# median of 10 runs, on the same input values; three such rounds alternating, the median of
# each side's rounds reported. Needs: python3 with torch and safetensors.
#
# usage: scripts/bench_recurrent.sh [THREADS...]   (default: 1 2)
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=("${@:-1}")
[ $# -eq 0 ] && THREADS=(1 2)
SRC=target/bench/lstm
PKG=target/bench/lstm.pkg
cargo build --release --quiet --bin inferox
[ -f "$SRC/model.safetensors" ] || python3 scripts/bench_recurrent.py make "$SRC"
[ -f "$PKG/model_info.json" ] || target/release/inferox import "$SRC" --output "$PKG" >&2
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| threads | LSTM 2×256, batch 32 × 256 steps (sequences/s) | inferox (candle) | torch.nn.LSTM | inferox / PyTorch |"
echo "|---|---|---|---|---|"
median() { tr ' ' '\n' | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
for n in "${THREADS[@]}"; do
  # Three rounds, the two sides alternating, and the median of each: the machine's speed drifts
  # by tens of percent over minutes, and alternating keeps that drift off the ratio.
  ours=() theirs=()
  for _ in 1 2 3; do
    ours+=("$(target/release/inferox --threads "$n" bench "$PKG" --batch 32 --seq 256 -r 10 --json |
      python3 -c "import json,sys; r=json.load(sys.stdin); assert r['batch'] == 32 and r['seq'] == 256, r; print(r['items_per_s']['mean'])")")
    theirs+=("$(python3 scripts/bench_recurrent.py run "$SRC" --threads "$n" |
      python3 -c "import json,sys; print(json.load(sys.stdin)['sequences_per_s'])")")
  done
  a=$(echo "${ours[*]}" | median)
  b=$(echo "${theirs[*]}" | median)
  awk -v n="$n" -v a="$a" -v b="$b" 'BEGIN {printf "| %s | | %.1f | %.1f | %.2fx |\n", n, a, b, a/b}'
  echo "   rounds: inferox ${ours[*]}; PyTorch ${theirs[*]}" >&2
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
