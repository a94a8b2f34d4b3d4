#!/bin/bash
# Session 8's fifth call, on one H200, from the repository root (build/old/src: the library before):
#   FIKIT_COMMIT=<c> DL=<seconds> bash bench/results/2026-11-26-h200-clock/call.sh
# The TSC clock (interpose/src/clock.c) against the vDSO, next to the real driver, each cost
# measured inside one process (launch_loop's diff_ns, 200 kernel ids, one CPU), 8 rounds:
#   none 24     two clock_gettime reads around each launch (odd chunks)
#   new 88      two fikit_now_ns reads of the new library around each launch (odd chunks)
#   old|new 32  each library's measuring, on odd chunks only; real and fake driver
set -u
R=${R:-bench/results/2026-11-26-h200-clock}; DL=${DL:-200}
mkdir -p $R/host
nvidia-smi --query-gpu=index,name,uuid,driver_version,clocks.sm --format=csv > $R/gpu.txt 2>&1
lscpu > $R/host/lscpu.txt 2>&1
cat /sys/devices/system/clocksource/clocksource0/current_clocksource > $R/host/clocksource.txt 2>&1
echo "${FIKIT_COMMIT:-unknown}" > $R/commit.txt
(cmake -S . -B build/gpu -DCMAKE_BUILD_TYPE=Release && cmake --build build/gpu -j16) > $R/build.log 2>&1 || tail -20 $R/build.log
(cmake -S build/old/src -B build/old/b -DCMAKE_BUILD_TYPE=Release && cmake --build build/old/b -j16) > $R/build-old.log 2>&1 || tail -20 $R/build-old.log
NEW=$PWD/build/gpu/interpose/libfikit.so; OLD=$PWD/build/old/b/interpose/libfikit.so
test -f $NEW -a -f $OLD || echo "A LIBRARY WAS NOT BUILT"
gcc -std=c11 -O2 -o /tmp/ll bench/launch_loop.c -ldl && make -s -C tests/fakecuda OUT=/tmp/fakecuda >/dev/null
for v in old new; do
  L=$OLD; [ $v = new ] && L=$NEW
  FIKIT_LIBRARY=$L python3 -c "
import pathlib, sys; sys.path.insert(0, '.')
from fikitd.shm import Domain
Domain.create(pathlib.Path('/tmp/lldom-$v/gpu0'), 0, mode='fikit', self_grant=True)"
done
run() { # driver label lib extra
  local drv=$1 label=$2 v=$3 extra=$4
  local -a e=(env FIKIT_DOMAIN=/tmp/lldom-$v/gpu0 FIKIT_SOCKET=/nonexistent/x FIKIT_PRIO=high)
  [ "$drv" = fake ] && e+=(LD_LIBRARY_PATH=/tmp/fakecuda FAKECUDA_DURATIONS='*=0')
  [ $v = old ] && e+=(LD_PRELOAD=$OLD)
  [ $v = new ] && e+=(LD_PRELOAD=$NEW)
  printf '%s %-7s ' "$drv" "$label"
  "${e[@]}" taskset -c ${CPU:-5} /tmp/ll 200000 256 200 0 "$extra" 2>&1 | tail -1
}
for rep in 1 2 3 4 5 6 7 8; do
  [ $((DL-SECONDS)) -lt 25 ] && break
  run real "none 24" none 24; run real "new 88" new 88
  run real "old 32" old 32; run real "new 32" new 32
  run fake "old 32" old 32; run fake "new 32" new 32
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
