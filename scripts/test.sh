#!/usr/bin/env bash
# Runs every test: unit and doc tests, the golden tests against transformers and llama.cpp, the
# real-model tests (all-MiniLM-L6-v2 and SmolLM2-135M-Instruct, fetched first), the bad-input and
# CLI tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-models.sh all
cargo test "$@"
