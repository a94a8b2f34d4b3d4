# The command that made bench/results/2026-11-26-h100 (run from the repository root).
python3 bench/summarize.py --dir bench/results/2026-11-25-h100-base2 --dir bench/results/2026-11-25-h100-auto \
  --dir bench/results/2026-11-25-h100-pairs9 --dir bench/results/2026-11-25-h100-base \
  --dir bench/results/2026-11-25-h100-clean --dir bench/results/2026-11-26-h100-drain \
  --out bench/results/2026-11-26-h100 --verify bench/results/2026-11-25-h100/verify/summary.json \
  --mech bench/results/2026-11-25-h100-mech/mech.json \
  --note "Gap filling (HP first, variants strict/gapfill): HP's idle time comes in gaps of tens of microseconds (p90 35-81 us, 2026-11-25-h100-timeline) while LP's kernels last hundreds, so beside a back-to-back HP the LP gets 0.01-0.05 of its plain-MPS throughput; beside a Poisson HP it runs between requests (0.45-0.70)." \
  --note "Co-running (auto, corun50, mps_prio_smcap): HP's kernels run longer beside LP even on SMs LP does not hold (2026-11-25-h100-timeline: BERT kernel p50 2.4 -> 3.9 us, p90 25 -> 52 us with LP on half the SMs); with a synthetic memory-streaming LP confined to a quarter of the SMs HP still ran 1.26-1.34x (2026-11-25-h100-mech): memory bandwidth and L2 are shared and no SM partition divides them. MPS client or stream priority leaves HP at 4.4x there." \
  --note "The auto share controller (default) reads HP's kernels at 0.6-0.9x their learned baselines while LP co-runs (2026-11-26-h100-drain/share_steps.txt) and so keeps LP at 40-70%, where HP runs 1.76-2.10x in those pairs. Suspected cause, not yet tested: normal mode's gated event samples on an idle HP stream read 1.6-2.0x the profiler's durations (2026-11-25-h100-durations), and HP's stream is idle more often when it runs alone than beside LP."
