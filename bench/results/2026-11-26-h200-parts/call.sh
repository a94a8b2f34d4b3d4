#!/bin/bash
# Session 8's second call, on one H200, from the repository root:
#   FIKIT_COMMIT=<c> DL=<seconds> bash bench/results/2026-11-26-h200-parts/call.sh
# What the library's measuring costs an HP, part by part, each inside its own process
# (overhead_probe.py's toggle variants: measuring turned off and on every 100 ms):
#   toggle           as shipped (samples gated on an idle stream)
#   toggle_nogate    FIKIT_GATE=0: samples never gated
#   toggle_nosample  FIKIT_SAMPLE=1000000: only a kernel's first launches timed
# bert and resnet50 at batch 1; three generations of processes, the third as MPS clients.
set -u
R=${R:-bench/results/2026-11-26-h200-parts}; DL=${DL:-540}
mkdir -p $R/host
nvidia-smi --query-gpu=index,name,uuid,driver_version,clocks.sm --format=csv > $R/gpu.txt 2>&1
lscpu > $R/host/lscpu.txt 2>&1
echo "${FIKIT_COMMIT:-unknown}" > $R/commit.txt
(cmake -S . -B build/gpu -DCMAKE_BUILD_TYPE=Release && cmake --build build/gpu -j16) > $R/build.log 2>&1 || tail -20 $R/build.log
L=$PWD/build/gpu/interpose/libfikit.so
test -f $L || echo "NO LIBRARY BUILT"
left() { echo $((DL-SECONDS)); }
P=/tmp/hp-mps; mkdir -p $P/pipe $P/log
for g in 1 2 3; do
  B=$(( ($(left) - 25) / (4 - g) )); [ $B -lt 60 ] && { echo "skip generation $g: $(left)s left"; continue; }
  MPS=()
  if [ $g = 3 ]; then
    CUDA_MPS_PIPE_DIRECTORY=$P/pipe CUDA_MPS_LOG_DIRECTORY=$P/log nvidia-cuda-mps-control -d && MPS=(--mps-pipe $P/pipe --mps-log $P/log)
  fi
  (cd bench && timeout $((B+20)) python3 overhead_probe.py --lib $L --out ../$R/gen$g --models bert,resnet50 \
    --variants toggle,toggle_nogate,toggle_nosample --reps 8 --window-s 2.0 --discard-s 0.25 --toggle-ms 100 \
    --cpus 2-3 --budget-s $((B-25)) "${MPS[@]}") > $R/gen$g.log 2>&1
  [ $g = 3 ] && { echo quit | CUDA_MPS_PIPE_DIRECTORY=$P/pipe nvidia-cuda-mps-control; sleep 1; }
  echo "generation $g (${MPS[*]:-no MPS}) done at ${SECONDS}s"
  grep -E "same process" $R/gen$g.log | tail -6
done
cp -r $P/log $R/mps_log 2>/dev/null
tar czf $OUT/results.tgz $R
ls -la $OUT; echo call done in ${SECONDS}s
