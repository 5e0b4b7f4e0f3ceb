#!/usr/bin/env bash
# Runs the tests, backend by backend; each stage installs what it needs first.
#
#   scripts/test.sh            # all stages: default, torch, tflite
#   scripts/test.sh default    # candle (the default features): unit and doc tests, golden tests
#                              # against transformers and llama.cpp, the real models
#                              # (all-MiniLM-L6-v2, SmolLM2-135M-Instruct, Silero VAD, fetched
#                              # first), bad-input, CLI and hub tests, examples/silero-vad
#   scripts/test.sh torch      # --features torch: libtorch 2.13 from PyPI wheels
#                              # (scripts/install-libtorch.sh), candle/torch parity, TorchScript
#   scripts/test.sh tflite     # --features tflite: TensorFlow Lite C library and Debian packages
#                              # (scripts/tflite-env.sh), the TFLite fixtures, shared then static
#
# Extra arguments after the stage go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

stage="${1:-all}"
[ $# -gt 0 ] && shift

# Checks how the binary the last `cargo test` built (with `$1` features; the integration tests
# run it) links its vendor library: `$2` must be (or with `!`, must not be) a DT_NEEDED entry,
# and the binary must start without LD_LIBRARY_PATH (`inferox doctor`).
check_binary() {
  local features="$1" lib="$2"
  local bin=target/debug/inferox
  echo "-- $bin (--features $features): dynamic section"
  readelf -d "$bin" | grep -E "NEEDED|RUNPATH|RPATH"
  if [ "${lib#!}" != "$lib" ]; then
    ! readelf -d "$bin" | grep -q "NEEDED.*${lib#!}" || { echo "error: $bin needs ${lib#!}" >&2; exit 1; }
  else
    readelf -d "$bin" | grep -q "NEEDED.*$lib" || { echo "error: $bin does not link $lib" >&2; exit 1; }
  fi
  env -u LD_LIBRARY_PATH "$bin" doctor | sed -n '/^backends/,/^registry/p'
}

run_default() {
  echo "== tests: default features (candle): the facade, core, candle backend, architectures"
  scripts/fetch-models.sh all
  # tests/serve.rs drives the server with the real tritonclient and openai clients.
  if ! python3 -c "import numpy, openai, tritonclient.http" 2>/dev/null; then
    echo "-- installing the Python clients for tests/serve.rs (tests/clients/requirements.txt)"
    python3 -m pip install --quiet -r tests/clients/requirements.txt
  fi
  cargo test "$@"
  echo "-- examples/silero-vad: a real recurrent model registered from outside, against its own runtime"
  # With the facade's default features, as the tests above built it: no second set of crates.
  cargo test -p silero-vad --features inferox/default "$@"
  echo "-- the library as an app embeds it (candle, no cli/hub) builds no CLI or HTTP crates"
  local deps
  deps="$(cargo tree -p inferox --no-default-features --features candle -e normal --prefix none)"
  if grep -E '^(anyhow|axum|clap|hf-hub|hyper|image|indicatif|mimalloc|mozjpeg|tokio|ureq) ' <<<"$deps"; then
    echo "error: inferox with only the candle feature depends on the crates above" >&2
    exit 1
  fi
}

run_torch() {
  echo "== tests: torch"
  # The CLI test runs the real MiniLM and the vision tests' photographs.
  scripts/fetch-models.sh minilm
  scripts/fetch-models.sh images
  LIBTORCH="$(scripts/install-libtorch.sh)"
  export LIBTORCH
  # The library's unit tests and the CLI test again (the registry gains torch entries), then
  # the cross-backend tests.
  cargo test -p inferox --features torch --lib --test cli --test torch --test readme "$@"
  cargo test -p inferox-torch "$@"
  check_binary torch libtorch_cpu.so
}

run_tflite() {
  echo "== tests: tflite (shared libtensorflowlite_c)"
  scripts/fetch-models.sh minilm
  scripts/fetch-models.sh images
  eval "$(scripts/tflite-env.sh)"
  cargo test -p inferox --features tflite --lib --test cli --test tflite --test readme "$@"
  check_binary tflite libtensorflowlite_c.so
  echo "== tests: tflite (static TensorFlow Lite)"
  eval "$(scripts/tflite-env.sh --static)"
  # tflitec's build script copies the library it was given; make it look again.
  cargo clean -p tflitec >/dev/null 2>&1
  cargo test -p inferox --features tflite --test tflite "$@"
  check_binary tflite '!libtensorflowlite_c.so'
  cargo clean -p tflitec >/dev/null 2>&1
}

case "$stage" in
  all) run_default "$@"; run_torch "$@"; run_tflite "$@" ;;
  default) run_default "$@" ;;
  torch) run_torch "$@" ;;
  tflite) run_tflite "$@" ;;
  *) echo "usage: scripts/test.sh [all|default|torch|tflite] [cargo test args]" >&2; exit 2 ;;
esac
