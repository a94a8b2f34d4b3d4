#!/bin/bash
# Session 8's first call, on one H200, from the repository root:
#   FIKIT_COMMIT=<c> DL=<seconds> bash bench/results/2026-11-26-h200-split/call.sh
# Where does the library's per-launch cost go next to the real driver?  launch_loop (200 kernel
# ids in turn; with 0 KB and 64 KB of cache writes between launches) on the real and the fake
# driver, three rounds interleaved, one CPU:
#   none eN   no library; EXTRA N adds one thing the library does (launch_loop.c's header:
#             1 cuCtxGetCurrent, 2 a locked add after the launch, 4 one before it, 8 two clock reads)
#   lib pass  libfikit.so with FIKIT_PASSTHROUGH=1 (count, no context query)
#   lib nosam libfikit.so measuring, samples only for a kernel's first launches (FIKIT_SAMPLE=2^20)
#   lib nogat libfikit.so measuring, FIKIT_GATE=0 (samples not gated)
#   lib def   libfikit.so as shipped
set -u
R=${R:-bench/results/2026-11-26-h200-split}; DL=${DL:-300}
mkdir -p $R/host
nvidia-smi --query-gpu=index,name,uuid,driver_version,clocks.sm --format=csv > $R/gpu.txt 2>&1
cat /sys/devices/system/clocksource/clocksource0/current_clocksource > $R/host/clocksource.txt 2>&1
lscpu > $R/host/lscpu.txt 2>&1
echo "${FIKIT_COMMIT:-unknown}" > $R/commit.txt
(cmake -S . -B build/gpu -DCMAKE_BUILD_TYPE=Release && cmake --build build/gpu -j16) > $R/build.log 2>&1 || tail -20 $R/build.log
L=$PWD/build/gpu/interpose/libfikit.so
test -f $L || echo "NO LIBRARY BUILT"
gcc -std=c11 -O2 -o /tmp/ll bench/launch_loop.c -ldl && make -s -C tests/fakecuda OUT=/tmp/fakecuda >/dev/null
FIKIT_LIBRARY=$L python3 -c "
import pathlib, sys; sys.path.insert(0, '.')
from fikitd.shm import Domain
Domain.create(pathlib.Path('/tmp/lldom/gpu0'), 0, mode='fikit', self_grant=True)"
run() { # driver touch_kb label extra [env...]
  local drv=$1 touch=$2 label=$3 extra=$4; shift 4
  local -a e=(env FIKIT_DOMAIN=/tmp/lldom/gpu0 FIKIT_SOCKET=/nonexistent/x FIKIT_PRIO=high "$@")
  [ "$drv" = fake ] && e+=(LD_LIBRARY_PATH=/tmp/fakecuda FAKECUDA_DURATIONS='*=0')
  printf '%s %4s %-10s ' "$drv" "$touch" "$label"
  "${e[@]}" taskset -c ${CPU:-5} /tmp/ll 200000 256 200 "$touch" "$extra" 2>&1 | tail -1
}
for rep in 1 2 3; do for drv in real fake; do for touch in 0 64; do
  [ $((DL-SECONDS)) -lt 30 ] && break 3
  for x in 0 1 2 4 8; do run $drv $touch "none e$x" $x; done
  run $drv $touch "lib pass" 0 LD_PRELOAD=$L FIKIT_PASSTHROUGH=1
  run $drv $touch "lib nosam" 0 LD_PRELOAD=$L FIKIT_SAMPLE=1048576
  run $drv $touch "lib nogat" 0 LD_PRELOAD=$L FIKIT_GATE=0
  run $drv $touch "lib def" 0 LD_PRELOAD=$L
done; done; done | tee $R/launch_loop.txt
python3 - "$R/launch_loop.txt" <<'PY' | tee $R/medians.txt
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    head, _, js = line.partition("{")
    try:
        d = json.loads("{" + js)
    except ValueError:
        continue
    drv, touch, *label = head.split()
    rows.setdefault((drv, int(touch), " ".join(label)), []).append(d.get("median_us"))
for (drv, touch, label), v in sorted(rows.items()):
    base = statistics.median(rows.get((drv, touch, "none e0"), [float("nan")]))
    m = statistics.median(x for x in v if x is not None)
    print(f"{drv} touch {touch:3d} {label:10s} median {m:.4f} us  (+{(m - base) * 1000:6.1f} ns over none)  n={len(v)}")
PY
tar czf $OUT/results.tgz $R
ls -la $OUT; echo call done in ${SECONDS}s
