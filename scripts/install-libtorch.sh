#!/usr/bin/env bash
# Installs libtorch 2.13.0 (what tch 0.26 wants) for the `torch` feature, from PyPI's wheels: the
# pytorch.org downloads are not reachable here. Only what linking and running on CPU need is
# unpacked: torch/include, torch/lib/{libtorch_cpu,libtorch,libc10}.so, libgomp, and the two small
# CUDA runtime libraries libtorch_cpu.so needs even on CPU (found through its RUNPATH, so the
# wheel layout torch/lib beside nvidia/cu13/lib is kept). Wheels are checked by sha256 and cached;
# a second run returns at once. Prints the LIBTORCH directory on stdout.
#
# usage: export LIBTORCH="$(scripts/install-libtorch.sh)"
set -euo pipefail
ROOT="${INFEROX_LIBTORCH_ROOT:-$HOME/.cache/inferox/libtorch}"
PYTHON="${PYTHON:-python3}"
VERSION=2.13.0
DEST="$ROOT/$VERSION"

if [ -f "$DEST/torch/build-version" ] && [ "$(cat "$DEST/torch/build-version")" = "$VERSION" ]; then
  echo "$DEST/torch"
  exit 0
fi

# name==version sha256 (x86_64 Linux, CPython 3.11 tags; pinned below so the host's Python does
# not change which file is fetched).
WHEELS=(
  "torch==$VERSION 60fcdcb2f3876e21146cb4524ef06397d727ca9ad5f020818547e25075fe3cb7"
  "nvidia-cuda-runtime==13.0.96 7f82250d7782aa23b6cfe765ecc7db554bd3c2870c43f3d1821f1d18aebf0548"
  "nvidia-cuda-cupti==13.0.85 4eb01c08e859bf924d222250d2e8f8b8ff6d3db4721288cf35d14252a4d933c8"
)
DL="$ROOT/downloads"
mkdir -p "$DL"
REQ="$DL/requirements.txt"
: >"$REQ"
for w in "${WHEELS[@]}"; do
  set -- $w
  echo "$1 --hash=sha256:$2" >>"$REQ"
done
echo "libtorch $VERSION: fetching wheels from PyPI (about 540 MB, cached in $DL)" >&2
# --require-hashes: pip refuses any file whose sha256 differs, cached or not.
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --require-hashes \
  --python-version 3.11 --implementation cp --abi cp311 \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_25_x86_64 \
  --platform manylinux_2_17_x86_64 -d "$DL" -r "$REQ" >&2

# Unpack beside the destination, then rename into place: never a half-made libtorch.
TMP="$ROOT/.unpack-$$"
rm -rf "$TMP"
mkdir -p "$TMP"
trap 'rm -rf "$TMP"' EXIT
"$PYTHON" - "$DL" "$TMP" <<'EOF'
import sys, zipfile, glob, os
dl, out = sys.argv[1], sys.argv[2]
want_lib = {"libtorch_cpu.so", "libtorch.so", "libc10.so"}
def pick(name):
    if name.startswith("torch/include/"):
        return True
    if name.startswith("torch/lib/"):
        base = name.rsplit("/", 1)[1]
        return base in want_lib or base.startswith("libgomp")
    return name.endswith(("/libcudart.so.13", "/libcupti.so.13"))
for whl in sorted(glob.glob(os.path.join(dl, "*.whl"))):
    with zipfile.ZipFile(whl) as z:
        for info in z.infolist():
            if pick(info.filename) and not info.is_dir():
                z.extract(info, out)
                if "/lib/" in info.filename:
                    os.chmod(os.path.join(out, info.filename), 0o755)
EOF
for f in torch/lib/libtorch_cpu.so torch/lib/libtorch.so torch/lib/libc10.so \
  nvidia/cu13/lib/libcudart.so.13 nvidia/cu13/lib/libcupti.so.13; do
  [ -f "$TMP/$f" ] || { echo "error: $f missing from the wheels" >&2; exit 1; }
done
echo "$VERSION" >"$TMP/torch/build-version"
rm -rf "$DEST"
mv "$TMP" "$DEST"
trap - EXIT
echo "libtorch $VERSION: installed in $DEST/torch" >&2
echo "$DEST/torch"
