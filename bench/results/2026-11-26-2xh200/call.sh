#!/bin/bash
# Session 5's call on nvidia-h200-x2 (issue 8), from the repository root:
#   [LL=0] DL=<seconds> R=<folder> bash bench/results/2026-11-26-2xh200/call.sh [verify_multigpu options]
# 1. the host: CPUs, NUMA, GPU topology, interrupts, clocksource, file systems (since session 10);
# 2. the library's per-launch cost, this commit against the one before (its sources carried in
#    build/old/src), an HP alone in a domain, real and fake driver, 3 rounds;
# 3. verify_multigpu with the options given.
set -u
R=${R:-bench/results/2026-11-26-2xh200}; DL=${DL:-540}
H=$R/host; mkdir -p "$H"
lscpu > $H/lscpu.txt 2>&1; lscpu -e > $H/lscpu-e.txt 2>&1
nvidia-smi topo -m > $H/topo.txt 2>&1
nvidia-smi --query-gpu=index,name,uuid,pci.bus_id,driver_version,clocks.sm --format=csv > $H/gpus.csv 2>&1
cat /sys/devices/system/clocksource/clocksource0/current_clocksource > $H/clocksource.txt 2>&1
df -T /tmp /run /dev/shm > $H/filesystems.txt 2>&1  # where fikitd's domains (under /tmp here) live
cat /proc/interrupts > $H/interrupts-start.txt
(cmake -S . -B build/gpu -DCMAKE_BUILD_TYPE=Release && cmake --build build/gpu -j16) > $R/build.log 2>&1 || tail -20 $R/build.log
(cmake -S build/old/src -B build/old/b -DCMAKE_BUILD_TYPE=Release && cmake --build build/old/b -j16) > $R/build-old.log 2>&1 || tail -20 $R/build-old.log
L=$PWD/build/gpu/interpose/libfikit.so; OLD=$PWD/build/old/b/interpose/libfikit.so
test -f $L || echo NO LIBRARY BUILT

# 2. per-launch cost (us per launch: medians over chunks of 256); LL=0 skips it
if [ "${LL:-1}" != 0 ]; then
gcc -O2 -o /tmp/ll bench/launch_loop.c -ldl && make -s -C tests/fakecuda OUT=/tmp/fakecuda >/dev/null
mkdir -p /tmp/lldom
FIKIT_LIBRARY=$L python3 -c "
import pathlib, sys; sys.path.insert(0, '.')
from fikitd.shm import Domain
Domain.create(pathlib.Path('/tmp/lldom/gpu0'), 0, mode='fikit', self_grant=True)"
CPU=${LL_CPU:-30}
ll() { # driver label lib
  local -a e=(env FIKIT_DOMAIN=/tmp/lldom/gpu0 FIKIT_SOCKET=/nonexistent/x FIKIT_PRIO=high)
  [ "$1" = fake ] && e+=(LD_LIBRARY_PATH=/tmp/fakecuda FAKECUDA_DURATIONS='*=0')
  [ -n "$3" ] && e+=(LD_PRELOAD=$3)
  printf '%s %-4s ' "$1" "$2"; "${e[@]}" taskset -c $CPU /tmp/ll 400000 2>&1 | tail -1
}
for rep in 1 2 3; do for drv in real fake; do
  ll $drv none ""; ll $drv old $OLD; ll $drv new $L
done; done | tee $R/launch_loop.txt
fi

# 3. verify_multigpu
B=$((DL-SECONDS-25))
timeout $((B+40)) python3 bench/verify_multigpu.py --lib $L --out $R --budget-s $B "$@" 2>&1 | tee $R/verify.log \
  | grep -E 'PASS|FAIL|n/a|GPU [01] |two-GPU|verify_multigpu|cpu_plan|noise'
cat /proc/interrupts > $H/interrupts-end.txt
tar czf $OUT/results.tgz $R
ls -la $OUT; echo call done in ${SECONDS}s
