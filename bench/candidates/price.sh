#!/bin/bash
# Price libfikit.so and candidate patches to it next to the real driver, inside one process each.
# From the repository root, on a one-GPU machine (about 200 s):
#   FIKIT_COMMIT=<c> DL=<seconds> R=bench/results/<date>-<gpu>-<what> bash bench/candidates/price.sh [PATCH ...]
# 1. builds the library as committed ("base") and once more per PATCH applied to a copy of the
#    sources ("cand1", "cand2", ...);
# 2. launch_loop.c (200 kernel ids, each launched SETTLE times first (default 400: settled, as
#    in a torch HP), one CPU), 8 rounds, real and fake driver: diff_ns of EXTRA 32
#    (measuring) and 128 (the whole library but the call through it) for every build, with the
#    caches warm; then, next to the real driver, the whole library cold, as a real program's own
#    work leaves it: unless TOUCH=0, with TOUCH KB (default 2048, a core's L2 on the H100 hosts)
#    written between two launches (rows "... tTOUCH"), unless CODE=0, with CODE KB of code run
#    between them (default 2048; rows "... cCODE"), and unless PAGES=0, with one line written in
#    each of PAGES pages (default 4096; rows "... pPAGES") beside the same number of lines written
#    over 64 times fewer pages (rows "... tPAGES/16"): the two apart are what its pages cost in the TLB;
#    and with BOTH KB written and CODE KB of code run between launches (rows "... tBOTH cCODE",
#    only when BOTH is set): data and code cold at once, as in a torch HP, the row where the
#    development machine's probes differed most (bench/candidates/floor-probe.patch);
# 3. unless TORCH=0, overhead_probe.py's toggle (measuring) and toggle_bypass (the whole library)
#    on bert and resnet50 at batch 1 with each build in turn, the time left shared between them:
#    what each costs a torch HP.  VARIANTS names others (VARIANTS=toggle with the ab-*-probe
#    patches: a path's cost over a floor, inside one process; VARIANTS=toggle,toggle_quiet with
#    DOMAIN=1: quiet launches over the counted launch, and over full ones), REPS their
#    repetitions (default 8), DOMAIN=1 each worker in a self-granted domain at high priority,
#    ROUNDS the launch loops' rounds (default 8; the first always runs); PROBE_BASE=0 probes
#    the candidates only.
# Writes R/launch_loop.txt, R/diffs.txt, R/probe-<build>/ and R/probe-<build>.log, and packs R into $OUT.
set -u
R=${R:?R=<result folder>}; DL=${DL:-300}
mkdir -p $R/host
nvidia-smi --query-gpu=index,name,uuid,driver_version,clocks.sm --format=csv > $R/gpu.txt 2>&1
lscpu > $R/host/lscpu.txt 2>&1
echo "${FIKIT_COMMIT:-unknown} $*" > $R/commit.txt
build() { # name srcdir
  (cmake -S $2 -B build/price/$1 -DCMAKE_BUILD_TYPE=Release && cmake --build build/price/$1 -j16) \
    > $R/build-$1.log 2>&1 || { echo "BUILD $1 FAILED"; tail -20 $R/build-$1.log; }
}
build base .
names=(base); probed=(); i=0
for patch in "$@"; do
  i=$((i + 1)); src=build/price/src$i; rm -rf $src; mkdir -p $src
  cp -r CMakeLists.txt interpose $src/ && rm -rf $src/interpose/build
  # its own repository, so that git apply patches it and not an enclosing checkout
  (cd $src && { git init -q && git apply "$OLDPWD/$patch" || patch -s -p1 < "$OLDPWD/$patch"; }) \
    || { echo "PATCH $patch DOES NOT APPLY"; continue; }
  build cand$i $src; names+=(cand$i)
done
gcc -std=c11 -O2 -o /tmp/ll bench/launch_loop.c -ldl && make -s -C tests/fakecuda OUT=/tmp/fakecuda >/dev/null
for n in "${names[@]}"; do
  FIKIT_LIBRARY=$PWD/build/price/$n/interpose/libfikit.so python3 -c "
import pathlib, sys; sys.path.insert(0, '.')
from fikitd.shm import Domain
Domain.create(pathlib.Path('/tmp/pricedom-$n/gpu0'), 0, mode='fikit', self_grant=True)"
done
TOUCH=${TOUCH:-2048}; CODE=${CODE:-2048}; PAGES=${PAGES:-4096}
# every kernel id launched SETTLE times before the timing: settled, sampled 1 in 1024 as in a
# torch HP (before 2026-11-26's price15 the loops timed unsettled kernels, about a fifth of main's
# timed launches sampled: launch_loop.c says how; the probes, which never sample, were spared)
SETTLE=${SETTLE:-400}
run() { # driver build extra [touch_kb [code_kb [pages]]: then 20000 launches, each after so many KB written, run,
        # and pages written one line each]
  local -a e=(env FIKIT_DOMAIN=/tmp/pricedom-$2/gpu0 FIKIT_SOCKET=/nonexistent/x FIKIT_PRIO=high
              LD_PRELOAD=$PWD/build/price/$2/interpose/libfikit.so)
  [ "$1" = fake ] && e+=(LD_LIBRARY_PATH=/tmp/fakecuda FAKECUDA_DURATIONS='*=0')
  local t=${4:-0} c=${5:-0} pg=${6:-0}
  printf '%s %-6s %3s%s%s%s ' "$1" "$2" "$3" "$([ $t != 0 ] && echo " t$t")" "$([ $c != 0 ] && echo " c$c")" \
    "$([ $pg != 0 ] && echo " p$pg")"
  "${e[@]}" taskset -c ${CPU:-5} /tmp/ll $([ $t != 0 -o $c != 0 -o $pg != 0 ] && echo 20000 || echo 200000) 256 200 \
    $t "$3" $c $pg $SETTLE 2>&1 | tail -1
}
# the probes' time, 100 s a build: the launch loops stop for it after their first round (capping
# it at half the call, as before, left each probe less than the 90 s it needs: price6 ran none)
reserve=30; [ "${TORCH:-1}" != 0 ] && reserve=$((30 + 100 * ${#names[@]}))
for rep in $(seq 1 ${ROUNDS:-8}); do
  [ $rep -gt 1 ] && [ $((DL-SECONDS)) -lt $reserve ] && break
  for drv in real fake; do for n in "${names[@]}"; do for x in 32 128; do run $drv $n $x; done; done; done
  for n in "${names[@]}"; do
    [ "$TOUCH" != 0 ] && run real $n 128 $TOUCH
    [ "$CODE" != 0 ] && run real $n 128 0 $CODE
    # the same lines as t$((PAGES / 16)), one a page: what a launch's pages cost in the TLB
    [ "$PAGES" != 0 ] && run real $n 128 $((PAGES / 16)) && run real $n 128 0 0 $PAGES
    [ "${BOTH:-0}" != 0 ] && [ "$CODE" != 0 ] && run real $n 128 $BOTH $CODE
  done
done | tee $R/launch_loop.txt
python3 bench/loop_table.py $R/launch_loop.txt | tee $R/diffs.txt
if [ "${TORCH:-1}" != 0 ]; then
  # PROBE_BASE=0: the candidates alone (with the ab-*-probe patches each is its own baseline)
  [ "${PROBE_BASE:-1}" = 0 ] && probed+=(base)
  for n in "${names[@]}"; do
    [ "${PROBE_BASE:-1}" = 0 ] && [ "$n" = base ] && continue
    left=$(( (DL - SECONDS) / (${#names[@]} - ${#probed[@]}) ))
    [ $left -lt 90 ] && { echo "no time left to probe $n"; break; }
    (cd bench && timeout $((left-5)) python3 overhead_probe.py --lib ../build/price/$n/interpose/libfikit.so \
      --out ../$R/probe-$n --models bert,resnet50 --variants ${VARIANTS:-toggle,toggle_bypass} --reps ${REPS:-8} --window-s 2.0 \
      --discard-s 0.25 --toggle-ms 100 --cpus 2-3 --budget-s $((left-35)) \
      $([ "${DOMAIN:-0}" = 1 ] && echo --in-domain)) > $R/probe-$n.log 2>&1
    grep -E "same process" $R/probe-$n.log | sed "s/^/$n /"
    probed+=("$n")
  done
fi
tar czf $OUT/results.tgz $R
ls -la $OUT; echo price done in ${SECONDS}s
