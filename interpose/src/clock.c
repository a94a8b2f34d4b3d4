/*
 * fikit's clock (fikit_clock_ns in fikit.h, CLOCK_MONOTONIC through the vDSO), exported for the
 * benchmarks that time launches by it, and the TSC that lean launches stamp their records by.
 *
 * Why the TSC there.  Inside a torch HP, a lean launch that read no clock cost 0.4% of its
 * latency over the counted launch, against 1.0-1.1% with the clock read, in one call
 * (bench/results/2026-11-26-h100-lean2): the vDSO's read is ordered (a fence that waits for
 * every load before it, the program's own misses included), and runs code and data a real
 * program evicts between launches.  A bare rdtsc waits for nothing and touches no memory.
 * The records are converted to the clock later, by their digest and by the clients below,
 * through a calibration the slot publishes (lean.c).
 *
 * When.  On x86-64 with an invariant TSC, where the kernel keeps CLOCK_MONOTONIC by the TSC
 * (clocksource "tsc"), so the two advance together on every CPU; FIKIT_CLOCK=kernel turns it
 * off.  A calibration pairs a kernel reading with the TSC read around it, and measures the
 * scale from the process's first pair to the latest: a baseline that grows with the process.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif

#include "fikit.h"

FIKIT_API uint64_t fikit_now_ns(void) { return fikit_clock_ns(); }

#define PAIR_MAX_TICKS 2000u /* a pairing whose TSC reads lie further apart was interrupted */
#define BASELINE_NS 1000000ull /* the scale needs this long a baseline */

__extension__ typedef unsigned __int128 fikit_u128;
__extension__ typedef __int128 fikit_i128;

static struct {
    bool ok;
    uint64_t tsc0, ns0; /* the first pair */
} tsc;

/* A kernel reading and the TSC at the same instant (the middle of the two reads around it). */
static bool read_pair(uint64_t *t, uint64_t *ns)
{
    for (int i = 0; i < 8; i++) {
        uint64_t a = fikit_tsc();
        uint64_t n = fikit_clock_ns();
        uint64_t b = fikit_tsc();
        if (b >= a && b - a < PAIR_MAX_TICKS) {
            *t = a + (b - a) / 2;
            *ns = n;
            return true;
        }
    }
    return false;
}

static bool tsc_trusted(void)
{
#if defined(__x86_64__)
    const char *e = getenv("FIKIT_CLOCK");
    if (e && strcmp(e, "kernel") == 0)
        return false;
    unsigned a, b, c, d;
    if (!__get_cpuid(0x80000007u, &a, &b, &c, &d) || !(d & (1u << 8)))
        return false; /* no invariant TSC */
    char src[32] = "";
    FILE *f = fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "r");
    if (!f)
        return false;
    bool ok = fgets(src, sizeof src, f) && strcmp(src, "tsc\n") == 0;
    fclose(f);
    return ok;
#else
    return false;
#endif
}

bool fikit_tsc_start(void)
{
    tsc.ok = tsc_trusted() && read_pair(&tsc.tsc0, &tsc.ns0);
    return tsc.ok;
}

bool fikit_tsc_calibrate(struct fikit_tsc_cal *cal)
{
    uint64_t t, ns;
    if (!tsc.ok || !read_pair(&t, &ns) || ns - tsc.ns0 < BASELINE_NS || t <= tsc.tsc0)
        return false;
    uint64_t mult = (uint64_t)(((fikit_u128)(ns - tsc.ns0) << 32) / (t - tsc.tsc0));
    if (!mult)
        return false;
    cal->mult = mult;
    cal->tsc_base = t;
    cal->ns_base = ns;
    return true;
}

uint64_t fikit_tsc_ns(const struct fikit_tsc_cal *cal, uint64_t tick)
{
    fikit_i128 d = (fikit_i128)(int64_t)(tick - cal->tsc_base) * (fikit_i128)cal->mult;
    return cal->ns_base + (uint64_t)(int64_t)(d >> 32);
}
