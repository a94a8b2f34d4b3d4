/*
 * The one clock every fikit timestamp uses: CLOCK_MONOTONIC, shared across processes.
 *
 * A launch reads it once, and next to the real driver a read through the vDSO cost about 52 ns
 * on the GPU hosts (bench/results/2026-11-26-h200-inproc: two reads around a launch, 104 ns),
 * a third of what measuring costs a launch: the vDSO orders its TSC read behind every earlier
 * load and reads its data page, both slow right after a driver call.
 *
 * Where the kernel keeps time by the TSC itself (clocksource "tsc", invariant TSC), this clock
 * is the TSC scaled between anchors: an anchor pairs a kernel reading with the TSC read around
 * it, and a new one is taken once the latest is ANCHOR_NS old.  The scale is measured from the
 * first anchor to the latest, a baseline that grows with the process, so it is soon exact to
 * far below a nanosecond an interval.  Anchors are the kernel's readings as they were: one that
 * started from the previous anchor's extrapolation instead (so as never to step back) carried
 * its error forward, and, fed into the scale, grew it to microseconds under CPU contention.  A
 * thread never sees its clock step back (each thread answers at least its last answer), and
 * threads and processes agree to within the pairing error of their anchors (PAIR_MAX_TICKS at
 * worst, tens of ns as a rule), which every comparison across them already allows for.
 * Elsewhere, and with FIKIT_CLOCK=kernel, it is the kernel's clock.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#if defined(__x86_64__)
#include <cpuid.h>
#include <x86intrin.h>
#endif

#include "fikit.h"

#define ANCHOR_NS 250000ull   /* an anchor's life */
#define CALIBRATE_NS 10000000ull /* the kernel's clock until the scale has this long a baseline */
#define PAIR_MAX_TICKS 1000u  /* a pairing whose TSC reads lie further apart was interrupted */
#define SPIN_MAX 2000         /* reads of a busy anchor before taking the kernel's clock */

static uint64_t kernel_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* vDSO: no system call */
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

#if defined(__x86_64__)
enum { CLK_UNKNOWN, CLK_KERNEL, CLK_CALIBRATING, CLK_TSC };

/* One cache line: what a read needs, and the first anchor the scale is measured from. */
static struct {
    _Atomic uint32_t seq;   /* odd while an anchor is written */
    _Atomic uint32_t state; /* CLK_* */
    _Atomic uint64_t tsc, ns; /* the latest anchor */
    _Atomic uint64_t mult;  /* ns a tick, 32.32 fixed point */
    _Atomic uint64_t limit; /* ticks past the anchor that it serves; 0 until the scale is known */
    _Atomic uint64_t tsc0, ns0; /* the first anchor */
} clk __attribute__((aligned(64)));
_Static_assert(sizeof clk <= 64, "the clock's state is one cache line");

__extension__ typedef unsigned __int128 u128;

static bool tsc_trusted(void)
{
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
    bool ok = fgets(src, sizeof src, f) && strncmp(src, "tsc\n", 4) == 0;
    fclose(f);
    return ok;
}

/* A kernel reading and the TSC at the same instant (the middle of the two reads around it). */
static bool read_pair(uint64_t *tsc, uint64_t *ns)
{
    for (int i = 0; i < 4; i++) {
        uint64_t a = __rdtsc();
        uint64_t n = kernel_ns();
        uint64_t b = __rdtsc();
        if (b >= a && b - a < PAIR_MAX_TICKS) {
            *tsc = a + (b - a) / 2;
            *ns = n;
            return true;
        }
    }
    return false;
}

static inline uint64_t scaled(uint64_t ticks, uint64_t mult)
{
    return (uint64_t)(((u128)ticks * mult) >> 32);
}

/* A new anchor, unless another thread is writing one (then false). */
static bool re_anchor(uint64_t *out)
{
    uint64_t tsc, ns;
    if (!read_pair(&tsc, &ns))
        return false;
    uint32_t s = atomic_load_explicit(&clk.seq, memory_order_relaxed);
    if ((s & 1) || !atomic_compare_exchange_strong_explicit(&clk.seq, &s, s + 1, memory_order_acquire,
                                                            memory_order_relaxed))
        return false;
    uint64_t tsc0 = atomic_load_explicit(&clk.tsc0, memory_order_relaxed);
    uint64_t ns0 = atomic_load_explicit(&clk.ns0, memory_order_relaxed);
    if (ns - ns0 >= CALIBRATE_NS && tsc > tsc0) {
        uint64_t mult = (uint64_t)(((u128)(ns - ns0) << 32) / (tsc - tsc0));
        if (mult) {
            atomic_store_explicit(&clk.mult, mult, memory_order_relaxed);
            atomic_store_explicit(&clk.limit, (ANCHOR_NS << 32) / mult, memory_order_relaxed);
            atomic_store_explicit(&clk.state, CLK_TSC, memory_order_relaxed);
        }
    }
    atomic_store_explicit(&clk.tsc, tsc, memory_order_relaxed);
    atomic_store_explicit(&clk.ns, ns, memory_order_relaxed);
    atomic_store_explicit(&clk.seq, s + 2, memory_order_release);
    *out = ns;
    return true;
}

__attribute__((noinline, cold)) static uint64_t slow_now(void)
{
    uint32_t state = atomic_load_explicit(&clk.state, memory_order_acquire);
    if (state == CLK_UNKNOWN) {
        uint64_t tsc, ns;
        uint32_t want = tsc_trusted() && read_pair(&tsc, &ns) ? CLK_CALIBRATING : CLK_KERNEL;
        uint32_t s = atomic_load_explicit(&clk.seq, memory_order_relaxed);
        if (!(s & 1) && atomic_compare_exchange_strong(&clk.seq, &s, s + 1)) {
            if (atomic_load_explicit(&clk.state, memory_order_relaxed) == CLK_UNKNOWN) {
                if (want == CLK_CALIBRATING) {
                    atomic_store_explicit(&clk.tsc0, tsc, memory_order_relaxed);
                    atomic_store_explicit(&clk.ns0, ns, memory_order_relaxed);
                    atomic_store_explicit(&clk.tsc, tsc, memory_order_relaxed);
                    atomic_store_explicit(&clk.ns, ns, memory_order_relaxed);
                }
                atomic_store_explicit(&clk.state, want, memory_order_relaxed);
            }
            atomic_store_explicit(&clk.seq, s + 2, memory_order_release);
        }
        state = atomic_load_explicit(&clk.state, memory_order_acquire);
    }
    if (state == CLK_KERNEL || state == CLK_UNKNOWN)
        return kernel_ns();
    uint64_t ns;
    for (int i = 0; i < SPIN_MAX; i++) {
        if (re_anchor(&ns))
            return ns;
        /* another thread is writing one: read it when it is done */
        uint32_t s = atomic_load_explicit(&clk.seq, memory_order_acquire);
        if (s & 1) {
            _mm_pause();
            continue;
        }
        uint64_t tsc = __rdtsc();
        uint64_t a_tsc = atomic_load_explicit(&clk.tsc, memory_order_relaxed);
        uint64_t a_ns = atomic_load_explicit(&clk.ns, memory_order_relaxed);
        uint64_t mult = atomic_load_explicit(&clk.mult, memory_order_relaxed);
        uint64_t limit = atomic_load_explicit(&clk.limit, memory_order_relaxed);
        atomic_thread_fence(memory_order_acquire);
        if (s == atomic_load_explicit(&clk.seq, memory_order_relaxed) && tsc >= a_tsc && tsc - a_tsc < limit)
            return a_ns + scaled(tsc - a_tsc, mult);
    }
    return kernel_ns(); /* a writer stalled mid-anchor: unheard of, and the kernel is right */
}

/* This thread's last answer: the floor of its next. */
static _Thread_local uint64_t last_ns __attribute__((tls_model("initial-exec")));

static inline uint64_t not_before_last(uint64_t ns)
{
    if (FIKIT_UNLIKELY(ns < last_ns))
        return last_ns;
    last_ns = ns;
    return ns;
}

FIKIT_HOT uint64_t fikit_now_ns(void)
{
    uint32_t s = atomic_load_explicit(&clk.seq, memory_order_acquire);
    uint64_t tsc = __rdtsc();
    uint64_t a_tsc = atomic_load_explicit(&clk.tsc, memory_order_relaxed);
    uint64_t a_ns = atomic_load_explicit(&clk.ns, memory_order_relaxed);
    uint64_t mult = atomic_load_explicit(&clk.mult, memory_order_relaxed);
    uint64_t limit = atomic_load_explicit(&clk.limit, memory_order_relaxed);
    atomic_thread_fence(memory_order_acquire);
    /* limit is 0 until the scale is known; a TSC read before the anchor fails the test too */
    if (FIKIT_LIKELY(!(s & 1) && s == atomic_load_explicit(&clk.seq, memory_order_relaxed) && tsc - a_tsc < limit))
        return not_before_last(a_ns + scaled(tsc - a_tsc, mult));
    return not_before_last(slow_now());
}

void fikit_clock_after_fork(void)
{
    /* The forking thread is the only one left: an anchor half written by another stays half
     * written.  Its TSC reading is stored first, so what is left is behind the kernel's clock, and
     * the next anchor, taken at once, is the kernel's reading. */
    uint32_t s = atomic_load_explicit(&clk.seq, memory_order_relaxed);
    atomic_store_explicit(&clk.limit, 0, memory_order_relaxed);
    atomic_store_explicit(&clk.seq, (s | 1) + 1, memory_order_release);
}
#else
FIKIT_HOT uint64_t fikit_now_ns(void) { return kernel_ns(); }
void fikit_clock_after_fork(void) {}
#endif
