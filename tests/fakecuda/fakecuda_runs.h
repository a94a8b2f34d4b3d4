/*
 * The fake driver's private export to the fake CUPTI (fakecupti.c): the
 * kernels it ran, as the simulated timeline placed them, for the fake CUPTI
 * to hand to its client as CONCURRENT_KERNEL activity records.
 *
 * Nothing is kept until fakecuda_runs_enable(1) (cuptiActivityEnable);
 * then every kernel launch, and every graph launch when FAKECUDA_GRAPH_KERNEL
 * names the kernel inside the graph, appends one run to a ring.
 */
#ifndef FAKECUDA_RUNS_H
#define FAKECUDA_RUNS_H

#include <stddef.h>
#include <stdint.h>

#include "fikit_cuda.h"

struct fakecuda_run {
    const char *name; /* the kernel's (mangled) name, stable for the process */
    uint32_t grid[3], block[3], smem;
    uint64_t start, end; /* simulated, CLOCK_MONOTONIC ns */
    uint32_t stream_id;  /* as fakecuda_stream_id gives it */
    uint32_t device;     /* the CUdevice (as the process numbers them) it ran on */
    uint32_t graph_id;   /* nonzero: replayed from a graph */
    uint32_t correlation;
};

void fakecuda_runs_enable(int on);
/* Moves up to max runs, oldest first, into out: only runs that ended by
 * `until` (ns), stopping at the first one still running, unless `all`.
 * Returns how many. */
size_t fakecuda_runs_take(struct fakecuda_run *out, size_t max, uint64_t until, int all);
/* Runs lost because the ring was full, since the last call. */
size_t fakecuda_runs_dropped(void);
/* A stream's id (0, NULL and the default-stream handles resolved as a launch would). */
CUresult fakecuda_stream_id(CUstream stream, int per_thread, uint32_t *id);

#endif /* FAKECUDA_RUNS_H */
