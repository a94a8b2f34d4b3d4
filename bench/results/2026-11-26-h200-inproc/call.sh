#!/bin/bash
# Session 8's fourth call, on one H200, from the repository root:
#   FIKIT_COMMIT=<c> DL=<seconds> bash bench/results/2026-11-26-h200-inproc/call.sh
# Costs next to the real driver, each measured inside one process (launch_loop's EXTRA with 16
# or 32: the thing is done on odd chunks only, diff_ns the median over chunk pairs of odd less
# even, per launch; 200 kernel ids in turn, one CPU), 8 rounds interleaved:
#   none 17  a cuCtxGetCurrent before each launch        none 18  a locked add after it
#   none 20  a locked add before it                      none 24  two clock reads around it
#   lib  32  libfikit.so's measuring (fikit_set_measuring on odd chunks), real and fake driver
set -u
R=${R:-bench/results/2026-11-26-h200-inproc}; DL=${DL:-200}
mkdir -p $R/host
nvidia-smi --query-gpu=index,name,uuid,driver_version,clocks.sm --format=csv > $R/gpu.txt 2>&1
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
run() { # driver label extra [env...]
  local drv=$1 label=$2 extra=$3; shift 3
  local -a e=(env FIKIT_DOMAIN=/tmp/lldom/gpu0 FIKIT_SOCKET=/nonexistent/x FIKIT_PRIO=high "$@")
  [ "$drv" = fake ] && e+=(LD_LIBRARY_PATH=/tmp/fakecuda FAKECUDA_DURATIONS='*=0')
  printf '%s %-7s ' "$drv" "$label"
  "${e[@]}" taskset -c ${CPU:-5} /tmp/ll 200000 256 200 0 "$extra" 2>&1 | tail -1
}
for rep in 1 2 3 4 5 6 7 8; do
  [ $((DL-SECONDS)) -lt 25 ] && break
  for x in 17 18 20 24; do run real "none $x" $x; done
  run real "lib 32" 32 LD_PRELOAD=$L
  run fake "lib 32" 32 LD_PRELOAD=$L
  run fake "none 17" 17
done | tee $R/launch_loop.txt
python3 - "$R/launch_loop.txt" <<'PY' | tee $R/diffs.txt
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    head, _, js = line.partition("{")
    try:
        d = json.loads("{" + js)
    except ValueError:
        continue
    if "diff_ns" in d:
        rows.setdefault(" ".join(head.split()), []).append(d["diff_ns"])
for k, v in sorted(rows.items()):
    print(f"{k:14s} diff_ns median {statistics.median(v):7.1f}  per process {sorted(v)}")
PY
tar czf $OUT/results.tgz $R
ls -la $OUT; echo call done in ${SECONDS}s
