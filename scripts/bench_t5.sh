#!/usr/bin/env bash
# Benchmarks greedy T5 generation on inferox (candle CPU) against transformers' `generate`
# (PyTorch eager), in one sitting, and prints a markdown table for docs/benchmarks.md: a
# t5-small-sized model with random weights, a 32-token source, 64 generated tokens, batch 1,
# tokens/s with the encoder pass included on both sides. inferox: `inferox bench -p 32 -n 64`
# (release build; every run encodes the source, then decodes 64 tokens one at a time), mean of
# 5 runs; transformers: scripts/bench_t5.py, median of 5 runs; three rounds alternating, the
# median of each side's rounds reported. Then the same with bf16 weights on both sides:
# `inferox bench --dtype bf16` (weights rounded to bf16, activations and sums in f32) against
# transformers with `dtype=torch.bfloat16`. Needs: python3 with torch and transformers.
#
# usage: scripts/bench_t5.sh [THREADS...]   (default: 1 2)
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=("${@:-1}")
[ $# -eq 0 ] && THREADS=(1 2)
SRC=target/bench/t5-small
PKG=target/bench/t5-small.pkg
cargo build --release --quiet --bin inferox
[ -f "$SRC/model.safetensors" ] || python3 scripts/bench_t5.py make "$SRC"
[ -f "$PKG/model_info.json" ] || target/release/inferox import "$SRC" --output "$PKG" >&2
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| threads | weights | T5 (t5-small size), 32-token source, 64 new tokens (tokens/s) | inferox (candle) | transformers generate | inferox / transformers |"
echo "|---|---|---|---|---|---|"
median() { tr ' ' '\n' | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
for run in "f32 float32" "bf16 bfloat16"; do
read -r ours_dtype theirs_dtype <<< "$run"
for n in "${THREADS[@]}"; do
  ours=() theirs=()
  for _ in 1 2 3; do
    ours+=("$(target/release/inferox --threads "$n" bench "$PKG" -p 32 -n 64 -r 5 --dtype "$ours_dtype" --json |
      python3 -c "import json,sys; r=json.load(sys.stdin); assert r['prompt_tokens'] == 32 and r['gen_tokens'] == 64 and r['dtype'] == '$ours_dtype', r; print(r['decode_tokens_per_s']['mean'])")")
    theirs+=("$(python3 scripts/bench_t5.py run "$SRC" --threads "$n" --dtype "$theirs_dtype" |
      python3 -c "import json,sys; r=json.load(sys.stdin); assert r['dtype'] == '$theirs_dtype', r; print(r['tokens_per_s'])")")
  done
  a=$(echo "${ours[*]}" | median)
  b=$(echo "${theirs[*]}" | median)
  awk -v n="$n" -v d="$ours_dtype" -v a="$a" -v b="$b" 'BEGIN {printf "| %s | %s | | %.1f | %.1f | %.2fx |\n", n, d, a, b, a/b}'
  echo "   rounds ($ours_dtype): inferox ${ours[*]}; transformers ${theirs[*]}" >&2
done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
