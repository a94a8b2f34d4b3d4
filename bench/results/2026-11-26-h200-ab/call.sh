#!/bin/bash
# Session 5's calls on one H200, from the repository root:
#   [PREPS= PWIN= PB= OVERHEAD=0 R=] DL=<seconds> bash bench/results/2026-11-26-h200-ab/call.sh
# 1. The pause bound and the sync restart (665cc60) before and after: run_pairs with the library
#    of 665cc60^ (A) and of 665cc60 (B), sources carried in build/ab/{a,b}, in the order A B A B
#    (fresh processes each time), Poisson bert (60 requests/s) beside VGG-16 training, modes
#    solo, mps, fikit.
# 2. Where the library's cost on an HP goes: overhead_probe (this commit's library) three times,
#    each a new generation of processes, variants plain, preload, passthrough, nosample, plain_b,
#    bert and resnet50 at batch 1.
set -u
R=${R:-bench/results/2026-11-26-h200-ab}; DL=${DL:-560}
mkdir -p $R
nvidia-smi --query-gpu=index,name,uuid,driver_version,clocks.sm --format=csv > $R/gpu.txt 2>&1
(cmake -S . -B build/gpu -DCMAKE_BUILD_TYPE=Release && cmake --build build/gpu -j16) > $R/build.log 2>&1 || tail -20 $R/build.log
for v in a b; do
  (cmake -S build/ab/$v -B build/ab/$v/b -DCMAKE_BUILD_TYPE=Release && cmake --build build/ab/$v/b -j16) > $R/build-$v.log 2>&1 || tail -20 $R/build-$v.log
done
L=$PWD/build/gpu/interpose/libfikit.so
left() { echo $((DL-SECONDS)); }
PREPS=${PREPS:-2} PWIN=${PWIN:-1.5} PB=${PB:-70}  # the pause rounds' repetitions, window, budget
i=0
for v in a b a b; do
  i=$((i+1)); [ $(left) -lt 200 ] && { echo "skip pause round $i ($v): $(left)s left"; continue; }
  timeout $((PB+40)) python3 bench/run_pairs.py --lib $PWD/build/ab/$v/b/interpose/libfikit.so --out $R/pause-$i-$v \
    --pairs 'bert%60:vgg16_train' --modes solo,mps,fikit --reps $PREPS --window-s $PWIN \
    --discard-s 0.3 --budget-s $PB --hp-cores 2-3 --lp-cores 4-11 > $R/pause-$i-$v.log 2>&1
  python3 bench/summarize.py --dir $R/pause-$i-$v --out $R/pause-$i-$v >> $R/pause-$i-$v.log 2>&1
  echo "pause round $i ($v) done at ${SECONDS}s"
done
for g in $([ "${OVERHEAD:-1}" = 0 ] || echo 1 2 3); do
  B=$(( ($(left) - 15) / (4 - g) )); [ $B -lt 45 ] && { echo "skip overhead generation $g: $(left)s left"; continue; }
  (cd bench && timeout $((B+20)) python3 overhead_probe.py --lib $L --out ../$R/overhead-$g --models bert,resnet50 \
    --variants plain,preload,passthrough,nosample,plain_b --reps 2 --window-s 1.0 --discard-s 0.25 --cpus 2-3 \
    --budget-s $((B-25))) > $R/overhead-$g.log 2>&1
  echo "overhead generation $g done at ${SECONDS}s"; tail -4 $R/overhead-$g.log
done
tar czf $OUT/results.tgz $R
ls -la $OUT; echo call done in ${SECONDS}s
