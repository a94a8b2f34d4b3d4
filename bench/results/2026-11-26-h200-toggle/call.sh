#!/bin/bash
# Session 5's last call, on one H200, from the repository root:  DL=<seconds> bash bench/results/2026-11-26-h200-toggle/call.sh
# The library's cost on an HP alone, measured inside one process: overhead_probe's toggle variant
# turns the library's measuring off and on every 100 ms (fikit_set_measuring), beside plain and
# preload processes; bert and resnet50 at batch 1, pinned to CPUs 2-3. Three generations of
# processes: without MPS, then twice as clients of an MPS daemon started here.
set -u
R=${R:-bench/results/2026-11-26-h200-toggle}; DL=${DL:-540}
mkdir -p $R
nvidia-smi --query-gpu=index,name,uuid,driver_version,clocks.sm --format=csv > $R/gpu.txt 2>&1
(cmake -S . -B build/gpu -DCMAKE_BUILD_TYPE=Release && cmake --build build/gpu -j16) > $R/build.log 2>&1 || tail -20 $R/build.log
L=$PWD/build/gpu/interpose/libfikit.so
P=/tmp/toggle-mps; mkdir -p $P/pipe $P/log
left() { echo $((DL-SECONDS)); }
for g in 1 2 3; do
  B=$(( ($(left) - 20) / (4 - g) )); [ $B -lt 60 ] && { echo "skip generation $g: $(left)s left"; continue; }
  MPS=()
  if [ $g -gt 1 ]; then
    CUDA_MPS_PIPE_DIRECTORY=$P/pipe CUDA_MPS_LOG_DIRECTORY=$P/log nvidia-cuda-mps-control -d && MPS=(--mps-pipe $P/pipe --mps-log $P/log)
  fi
  (cd bench && timeout $((B+20)) python3 overhead_probe.py --lib $L --out ../$R/gen$g --models bert,resnet50 \
    --variants plain,preload,toggle --reps 8 --window-s 2.0 --discard-s 0.25 --toggle-ms 100 --cpus 2-3 \
    --budget-s $((B-25)) "${MPS[@]}") > $R/gen$g.log 2>&1
  [ $g -gt 1 ] && { echo quit | CUDA_MPS_PIPE_DIRECTORY=$P/pipe nvidia-cuda-mps-control; sleep 1; }
  echo "generation $g (${MPS[*]:-no MPS}) done at ${SECONDS}s"; grep -E "x1|x0|same process" $R/gen$g.log | tail -8
done
cp -r $P/log $R/mps_log 2>/dev/null
tar czf $OUT/results.tgz $R
ls -la $OUT; echo call done in ${SECONDS}s
