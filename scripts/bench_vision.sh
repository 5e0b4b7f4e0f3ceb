#!/usr/bin/env bash
# Benchmarks inferox (candle CPU) against PyTorch eager and transformers' PIL image processor,
# in one sitting on this machine, and prints a markdown table for docs/benchmarks.md:
#   * a ViT-B/16-sized model (transformers' default ViTConfig, random weights, 224x224) on a
#     batch of 8 photos, images/s (criterion: benches/vision.rs; PyTorch: scripts/bench_vision.py);
#   * preprocessing alone (decode, resize, normalise) of the eight real photographs, images/s.
# Needs: python3 with torch, transformers and Pillow.
#
# usage: scripts/bench_vision.sh [THREADS...]   (default: 1 2)
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=("${@:-1}")
[ $# -eq 0 ] && THREADS=(1 2)
scripts/fetch-models.sh images >&2
cargo build --release --quiet --bin inferox
if ! target/release/inferox doctor --json |
  python3 -c "import json, sys; sys.exit(0 if json.load(sys.stdin)['jpeg_simd'] else 1)"; then
  echo "warning: this build decodes JPEG without libjpeg-turbo's SIMD (nasm was missing when it" \
    "was built), so preprocessing measures slower than a build with it: install nasm, run" \
    "'cargo clean -p mozjpeg-sys --release' and rerun" >&2
fi
PHOTOS_DIR="${INFEROX_MODELS:-$HOME/.cache/inferox/models}/images/skimage/data"
PHOTOS=(astronaut.png chelsea.png coffee.png camera.png rocket.jpg retina.jpg logo.png
        no_time_for_that_tiny.gif)
VIT=target/bench/vit-base
[ -f "$VIT/model.safetensors" ] || python3 scripts/bench_vision.py make "$VIT"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| threads | case | inferox (candle) | PyTorch / transformers | inferox / peer |"
echo "|---|---|---|---|---|"
for n in "${THREADS[@]}"; do
  INFEROX_BENCH_THREADS=$n INFEROX_BENCH_VIT_DIR=$VIT cargo bench --quiet --bench vision -- --noplot >&2
  read -r vit pre < <(python3 - "$n" <<'PY'
import json, sys
n = sys.argv[1]
def median_ns(bench):
    with open(f"target/criterion/vision_t{n}/{bench}/new/estimates.json") as f:
        return json.load(f)["median"]["point_estimate"]
print(8 / (median_ns("vit_base_batch8") / 1e9), 8 / (median_ns("preprocess") / 1e9))
PY
)
  py=$(python3 scripts/bench_vision.py run "$VIT" "${PHOTOS[@]/#/$PHOTOS_DIR/}" --threads "$n")
  pvit=$(echo "$py" | python3 -c "import json,sys; print(json.load(sys.stdin)['vit_base_batch8_images_per_s'])")
  ppre=$(echo "$py" | python3 -c "import json,sys; print(json.load(sys.stdin)['preprocess_images_per_s'])")
  awk -v n="$n" -v a="$vit" -v b="$pvit" 'BEGIN {printf "| %s | ViT-B/16, batch 8 (images/s) | %.2f | %.2f | %.2fx |\n", n, a, b, a/b}'
  awk -v n="$n" -v a="$pre" -v b="$ppre" 'BEGIN {printf "| %s | preprocessing, 8 photos (images/s) | %.1f | %.1f | %.2fx |\n", n, a, b, a/b}'
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
