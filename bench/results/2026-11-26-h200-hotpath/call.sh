#!/bin/bash
# Session 6's first call, on one H200, from the repository root:  DL=<seconds> bash bench/results/2026-11-26-h200-hotpath/call.sh
# The hot path's cut (launch memo, cache-line layout, one locked add less) against the library
# before it (798abf9, built from build/old/src).  1: per-launch cost in launch_loop, real and
# fake driver.  2: each library's cost on bert and resnet50 b1 inside its own process
# (overhead_probe's toggle and toggle_b variants side by side), three generations of processes:
# old as toggle, then new as toggle, then old as toggle again under MPS.
set -u
R=${R:-bench/results/2026-11-26-h200-hotpath}; DL=${DL:-560}
mkdir -p $R/host
nvidia-smi --query-gpu=index,name,uuid,driver_version,clocks.sm --format=csv > $R/gpu.txt 2>&1
cat /sys/devices/system/clocksource/clocksource0/current_clocksource > $R/host/clocksource.txt 2>&1
lscpu > $R/host/lscpu.txt 2>&1
(cmake -S . -B build/gpu -DCMAKE_BUILD_TYPE=Release && cmake --build build/gpu -j16) > $R/build.log 2>&1 || tail -20 $R/build.log
(cmake -S build/old/src -B build/old/b -DCMAKE_BUILD_TYPE=Release && cmake --build build/old/b -j16) > $R/build-old.log 2>&1 || tail -20 $R/build-old.log
NEW=$PWD/build/gpu/interpose/libfikit.so; OLD=$PWD/build/old/b/interpose/libfikit.so
test -f $NEW -a -f $OLD || echo "A LIBRARY WAS NOT BUILT"
left() { echo $((DL-SECONDS)); }

# 1. launch_loop: us per launch (median over chunks of 256), 200 kernel ids in turn
gcc -O2 -o /tmp/ll bench/launch_loop.c -ldl && make -s -C tests/fakecuda OUT=/tmp/fakecuda >/dev/null
for v in old new; do
  L=$OLD; [ $v = new ] && L=$NEW
  FIKIT_LIBRARY=$L python3 -c "
import pathlib, sys; sys.path.insert(0, '.')
from fikitd.shm import Domain
Domain.create(pathlib.Path('/tmp/lldom-$v/gpu0'), 0, mode='fikit', self_grant=True)"
done
ll() { # driver label lib
  local -a e=(env FIKIT_DOMAIN=/tmp/lldom-$2/gpu0 FIKIT_SOCKET=/nonexistent/x FIKIT_PRIO=high)
  [ "$1" = fake ] && e+=(LD_LIBRARY_PATH=/tmp/fakecuda FAKECUDA_DURATIONS='*=0')
  [ -n "$3" ] && e+=(LD_PRELOAD=$3)
  printf '%s %-4s ' "$1" "$2"; "${e[@]}" taskset -c 5 /tmp/ll 400000 256 200 0 2>&1 | tail -1
}
for rep in 1 2 3; do for drv in real fake; do
  ll $drv none ""; ll $drv old $OLD; ll $drv new $NEW
done; done | tee $R/launch_loop.txt

# 2. each library's cost inside its own process
P=/tmp/hp-mps; mkdir -p $P/pipe $P/log
for g in 1 2 3; do
  B=$(( ($(left) - 25) / (4 - g) )); [ $B -lt 60 ] && { echo "skip generation $g: $(left)s left"; continue; }
  A=$OLD; Bl=$NEW; LA=old; [ $g = 2 ] && { A=$NEW; Bl=$OLD; LA=new; }
  MPS=()
  if [ $g = 3 ]; then
    CUDA_MPS_PIPE_DIRECTORY=$P/pipe CUDA_MPS_LOG_DIRECTORY=$P/log nvidia-cuda-mps-control -d && MPS=(--mps-pipe $P/pipe --mps-log $P/log)
  fi
  (cd bench && timeout $((B+20)) python3 overhead_probe.py --lib $A --lib-b $Bl --out ../$R/gen$g --models bert,resnet50 \
    --variants toggle,toggle_b --reps 12 --window-s 2.0 --discard-s 0.25 --toggle-ms 100 --cpus 2-3 \
    --budget-s $((B-25)) "${MPS[@]}") > $R/gen$g.log 2>&1
  [ $g = 3 ] && { echo quit | CUDA_MPS_PIPE_DIRECTORY=$P/pipe nvidia-cuda-mps-control; sleep 1; }
  echo "generation $g (toggle: $LA, toggle_b: the other; ${MPS[*]:-no MPS}) done at ${SECONDS}s"
  grep -E "same process" $R/gen$g.log | tail -4
done
cp -r $P/log $R/mps_log 2>/dev/null
tar czf $OUT/results.tgz $R
ls -la $OUT; echo call done in ${SECONDS}s
