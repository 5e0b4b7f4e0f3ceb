#!/usr/bin/env bash
# Fuzzes inferox's parsers with cargo-fuzz (libFuzzer): the targets in fuzz/fuzz_targets
# (manifest, config, safetensors, gguf, npy, tokenizer, tokenizer_json, chat_template, image),
# each for a bounded time, seeded from the committed seeds in fuzz/seeds/<target> (real fixtures) plus the
# working corpus in fuzz/corpus/<target> (kept between runs, not committed).
#
# usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 20 s, every target)
#
# Exits non-zero when any target crashes (a panic, an abort), leaks, times out on one input
# (-timeout=10) or runs out of memory (-rss_limit_mb=2048, or a single allocation over
# FUZZ_MALLOC_LIMIT_MB, default 256, which the harness turns into a crash); the input is saved
# under fuzz/artifacts/<target>/ and the command that reproduces it is printed.
#
# Build: release with debug assertions and overflow checks (`-O -a`: an arithmetic overflow on
# hostile input is a bug even where release builds would wrap silently), and by default without
# a sanitizer (FUZZ_SANITIZER=none). The code under test is safe Rust, where out-of-bounds
# accesses already panic; AddressSanitizer finds little more there, while it halves the
# executions per second and doubles the build, which matters for a CI budget of a few minutes.
# Absurd allocations are still caught: libFuzzer's -malloc_limit_mb needs a sanitizer's
# allocator hooks, so the harness's own global allocator enforces the limit instead. For the
# long runs (docs/reliability.md), FUZZ_SANITIZER=address adds ASan and leak detection.
#
# Environment: FUZZ_SANITIZER (none|address), FUZZ_MALLOC_LIMIT_MB (256), FUZZ_ARGS (extra
# libFuzzer flags, e.g. "-jobs=2 -workers=2"), INFEROX_MINILM_DIR / INFEROX_MODELS (where the
# tokenizer target finds the real all-MiniLM-L6-v2 tokenizer; fetched if missing, and without
# it the BERT fixture's tokenizer stands in).
set -euo pipefail
cd "$(dirname "$0")/.."

SECS="${1:-20}"
shift || true
SANITIZER="${FUZZ_SANITIZER:-none}"
BUILD_FLAGS=(-O -a -s "$SANITIZER")
TRIPLE="$(rustc -vV | sed -n 's/^host: //p')"
BIN_DIR="fuzz/target/$TRIPLE/release"
# What cargo-fuzz sets when it runs a target itself (Rust's ODR reports are false positives).
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_odr_violation=0}"

# Nightly (libFuzzer's instrumentation needs it) and cargo-fuzz.
if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzz: installing the nightly toolchain" >&2
  rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi

# The tokenizer target fuzzes the real MiniLM tokenizer when it is there.
if [ -z "${INFEROX_MINILM_DIR:-}" ]; then
  scripts/fetch-models.sh minilm >&2 ||
    echo "fuzz: warning: could not fetch MiniLM; the tokenizer target uses the BERT fixture's tokenizer" >&2
fi

if [ "$#" -gt 0 ]; then
  TARGETS=("$@")
else
  mapfile -t TARGETS < <(cargo +nightly fuzz list)
fi

start=$(date +%s)
echo "fuzz: building ${#TARGETS[@]} targets (cargo +nightly fuzz build ${BUILD_FLAGS[*]})" >&2
cargo +nightly fuzz build "${BUILD_FLAGS[@]}"
echo "fuzz: built in $(($(date +%s) - start)) s" >&2

failed=()
summary=()
for t in "${TARGETS[@]}"; do
  corpus="fuzz/corpus/$t"
  artifacts="fuzz/artifacts/$t"
  mkdir -p "$corpus" "$artifacts"
  log="$artifacts/last-run.log"
  marker="$artifacts/.started"
  touch "$marker"
  echo "fuzz: $t for ${SECS}s" >&2
  # Texts longer than a model's context teach the tokenizer target nothing new.
  extra=()
  [ "$t" = tokenizer ] && extra=(-max_len=1024)
  rc=0
  # Scratch files of this run only (another run of the same target may be going on).
  scratch_root=$(mktemp -d "$( [ -d /dev/shm ] && echo /dev/shm || echo "${TMPDIR:-/tmp}")/inferox-fuzz-XXXXXX")
  # shellcheck disable=SC2086
  INFEROX_FUZZ_SCRATCH="$scratch_root" "$BIN_DIR/$t" "$corpus" "fuzz/seeds/$t" \
    -max_total_time="$SECS" -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 \
    -artifact_prefix="$artifacts/" -print_final_stats=1 "${extra[@]}" ${FUZZ_ARGS:-} >"$log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | awk '{s += $1} END {print s + 0}')
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | awk '{s += $1} END {print s + 0}')
  found=$(find "$artifacts" -maxdepth 1 -type f \
    \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) -newer "$marker" | sort)
  rm -f "$marker"
  rm -rf "$scratch_root"
  line=$(printf '%-14s %12s execs  %8s exec/s' "$t" "$execs" "$rate")
  if [ "$rc" -ne 0 ] || [ -n "$found" ]; then
    failed+=("$t")
    summary+=("$line  FAILED (exit $rc)")
    echo "fuzz: $t FAILED (exit $rc); last lines of $log:" >&2
    grep -E 'ERROR|panicked|==inferox-fuzz==|SUMMARY|Test unit written|out-of-memory|timeout' "$log" | head -20 >&2 || true
    tail -n 30 "$log" >&2
    for a in $found; do
      echo "fuzz: artifact $a" >&2
      echo "fuzz:   reproduce: cargo +nightly fuzz run ${BUILD_FLAGS[*]} $t $a" >&2
    done
  else
    summary+=("$line  ok")
  fi
done

echo
echo "fuzz summary (${SECS}s per target, sanitizer $SANITIZER):"
printf '  %s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz: failing targets: ${failed[*]}" >&2
  exit 1
fi
