#!/usr/bin/env bash
# Benchmarks Silero VAD on inferox (the out-of-tree `silero-vad` example, candle CPU) against the
# `silero-vad` package's ONNX model on onnxruntime, in one sitting, and prints a markdown table
# for docs/benchmarks.md: 60 s of 16 kHz audio streamed in 512-sample chunks with the state
# carried, real-time factor (processing time / audio time). inferox: `silero-vad bench` (release
# build), median of 5 runs; onnxruntime: scripts/bench_vad.py, median of 5 runs; three rounds
# alternating, the median of each side's rounds reported. Needs: python3 with onnxruntime and
# numpy, and `scripts/fetch-models.sh silero`.
#
# usage: scripts/bench_vad.sh [THREADS...]   (default: 1 2)
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=("${@:-1}")
[ $# -eq 0 ] && THREADS=(1 2)
MODELS="${INFEROX_MODELS:-$HOME/.cache/inferox/models}"
WEIGHTS="$MODELS/silero-vad/silero_vad/data/silero_vad_16k.safetensors"
[ -f "$WEIGHTS" ] || scripts/fetch-models.sh silero
mkdir -p target/bench
WAV=target/bench/vad-60s.wav
PKG=target/bench/silero-vad.pkg
cargo build --release --quiet -p silero-vad --features inferox/default
VAD=target/release/silero-vad
[ -f "$WAV" ] || python3 scripts/bench_vad.py audio "$WAV"
[ -f "$PKG/model_info.json" ] || "$VAD" import "$WEIGHTS" --output "$PKG" >&2
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| threads | Silero VAD, 60 s of audio (real-time factor, lower is faster) | inferox (candle) | onnxruntime | onnxruntime / inferox |"
echo "|---|---|---|---|---|"
median() { tr ' ' '\n' | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
for n in "${THREADS[@]}"; do
  ours=() theirs=()
  for _ in 1 2 3; do
    ours+=("$("$VAD" bench "$PKG" "$WAV" --threads "$n" |
      python3 -c "import json,sys; r=json.load(sys.stdin); assert r['chunks'] == 1875 and r['speech_chunks'] > 0, r; print(r['real_time_factor'])")")
    theirs+=("$(python3 scripts/bench_vad.py run "$WAV" --threads "$n" |
      python3 -c "import json,sys; r=json.load(sys.stdin); assert r['chunks'] == 1875 and r['speech_chunks'] > 0, r; print(r['real_time_factor'])")")
  done
  a=$(echo "${ours[*]}" | median)
  b=$(echo "${theirs[*]}" | median)
  awk -v n="$n" -v a="$a" -v b="$b" 'BEGIN {printf "| %s | | %.5f | %.5f | %.2fx |\n", n, a, b, b/a}'
  echo "   rounds: inferox ${ours[*]}; onnxruntime ${theirs[*]}" >&2
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
