#!/usr/bin/env bash
# Prepares this machine for `--features tflite` and prints the environment the build needs.
#
#   eval "$(scripts/tflite-env.sh)"            # shared libtensorflowlite_c.so (rpath set by build.rs)
#   eval "$(scripts/tflite-env.sh --static)"   # TensorFlow Lite linked into the binary
#
# tflitec 0.7 builds TensorFlow with bazel unless TFLITEC_PREBUILT_PATH names a prebuilt
# TensorFlow Lite C library and TFLITEC_HEADER_DIR its C API headers; it runs bindgen, which
# needs libclang. The library is found in $INFEROX_TFLITE_DIR, by default
# ../shared/prebuilt/tflite-2.14.1 beside this checkout (a TF 2.14.1 build of the C API from
# Debian's sources; any TensorFlow >= 2.14 C library with the same layout works:
# lib/libtensorflowlite_c.so, include/tensorflow/lite/..., optionally static/). Installs the
# Debian packages it needs (libclang for bindgen; libfarmhash0, libcpuinfo0, libpthreadpool0 at
# run time; the -dev packages of the last two for a static link) when they are missing.
# Messages go to stderr; stdout is only the export lines.
set -euo pipefail

mode=shared
case "${1:-}" in
  --static) mode=static ;;
  ""|--shared) ;;
  -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "usage: $0 [--shared|--static]" >&2; exit 2 ;;
esac

here="$(cd "$(dirname "$0")/.." && pwd)"
dir="${INFEROX_TFLITE_DIR:-$here/../shared/prebuilt/tflite-2.14.1}"
if [ ! -f "$dir/lib/libtensorflowlite_c.so" ] || [ ! -d "$dir/include/tensorflow" ]; then
  echo "error: no TensorFlow Lite C library at $dir (expected lib/libtensorflowlite_c.so and include/tensorflow)." >&2
  echo "       Set INFEROX_TFLITE_DIR to a directory with that layout (see docs/backends.md)." >&2
  exit 1
fi
dir="$(cd "$dir" && pwd)"

packages=(libclang-dev libfarmhash0 libcpuinfo0 libpthreadpool0)
if [ "$mode" = static ]; then
  packages+=(libcpuinfo-dev libpthreadpool-dev)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing ${missing[*]} ..." >&2
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  if ! $sudo apt-get install -y --no-install-recommends "${missing[@]}" >&2; then
    $sudo apt-get update >&2
    $sudo apt-get install -y --no-install-recommends "${missing[@]}" >&2
  fi
fi

if [ "$mode" = static ]; then
  lib="$dir/static/libtensorflowlite_c.so"
  [ -f "$lib" ] || { echo "error: $dir has no static/ build" >&2; exit 1; }
else
  lib="$dir/lib/libtensorflowlite_c.so"
fi
echo "export TFLITEC_PREBUILT_PATH='$lib'"
echo "export TFLITEC_HEADER_DIR='$dir/include'"
echo "export BINDGEN_EXTRA_CLANG_ARGS='-I$dir/include'"
