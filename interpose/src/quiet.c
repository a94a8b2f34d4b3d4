/*
 * Quiet launches: a settled HP publishes its predictions once a stride of launches.
 *
 * Why.  Inside a torch HP, a launch that reads the clock and writes its predictions cost the HP
 * 1.3-1.6% of its latency against a launch that is only counted (pooled over two-GPU runs 11-26,
 * bench/results/2026-11-26-2xh100-run24), whatever else it did or did not do: a launch writing
 * one raw record cost what the whole measuring path did, and the clock read and one more shared
 * line each cost part of it (bench/results/2026-11-26-h100-lean, -h100-part1).  What costs is
 * touching anything more between two of a real program's launches, not the work.  The clients below read an HP's predictions to find the gaps they may fill,
 * and inside a burst of launches a torch HP's gaps are microseconds, which no LP kernel fits.
 * So an HP whose bursts have no gap worth filling need not publish at every launch of them.
 *
 * Who.  A client of one GPU, granted the highest level (no client can be above it), with
 * measuring on and not profiling, one launching thread, in a domain whose quiet_stride is
 * more than 1.  A burst is the launches between two syncs that leave nothing queued
 * ("drained", launch.c's sync_done).
 *
 * The rules.
 * - Learning: every launch of a burst publishes, as always ("full").  Once QUIET_LEARN full
 *   bursts of at least QUIET_MIN_BURST launches were measured, and at most QUIET_GAPPED of the
 *   latest QUIET_LEARN had a wide gap inside, its bursts are quiet.  A wide gap is one that the
 *   clients below would be offered: quiet_gap_us or more, after a kernel whose predicted gap
 *   (the shortest of its recent ones) is that long too.  A host hiccup after a kernel whose gaps
 *   are short is not one (the H100 and H200 hosts have many); a gap the program makes after that
 *   kernel each time is.
 * - A quiet burst's first launch, and each launch whose count (on its launch path) is a
 *   multiple of the stride, publish a cover for the stride ahead: busy until the later of its
 *   queue (what it queued, plus a stride of launches at their mean predicted duration) and its
 *   pace (twice a stride at its mean time between launches), with the next launch due then:
 *   no gap offered.  The launches between are only counted.
 * - The drained sync that ends a burst publishes the truth, as always: idle from now, the next
 *   launch due after the gap this client's syncs are followed by (measured as a kernel's gap
 *   is, in `after_sync`).
 * - Every QUIET_REFRESH-th burst is full again: durations, pace and the gaps inside are measured
 *   anew, and counts among the latest QUIET_LEARN.  A full burst with a wide gap is followed by
 *   another full one, so that a gap the program has taken to making is seen within a few bursts.
 * - A launch on another stream, or a more urgent client, ends the quiet burst at its next
 *   stride launch; a higher grant or a second launching thread is seen at the next sync.
 *
 * What it costs the clients below: the gaps inside a quiet HP's bursts are never offered to
 * them (an HP pausing mid-burst counts as idle once its cover and idle_us have passed, as a
 * silent HP always did), and its kernels' counts, gaps and idle time cover its published
 * launches only.
 */
#include <string.h>

#include "fikit.h"

#define QUIET_MIN_BURST 8    /* launches: a shorter burst says nothing of the gaps inside one */
#define QUIET_LEARN 8        /* full bursts measured before quiet ones; the window judged */
#define QUIET_GAPPED 2       /* the most of them with a wide gap */
#define QUIET_REFRESH 64     /* every this many bursts one is full */
#define QUIET_COVER_MAX 1000000000ull /* the most one publication claims: the clients below
                                       * take a claim of more than 5 s for garbage */

struct quiet {
    /* The gap a sync is followed by: the "kernel" a quiet burst ends with, measured by
     * launch.c's note_gap as any kernel's gap is.  Private: never in the slot. */
    struct fikit_kstat after_sync;
    _Atomic bool next_quiet;       /* the next burst may be quiet */
    _Atomic bool ended_quiet;      /* the latest burst was: its sync's gap went to after_sync */
    _Atomic uint32_t measured;     /* full bursts measured, up to QUIET_LEARN */
    _Atomic uint32_t gapped;       /* of the latest QUIET_LEARN, a bit each, 1: had a wide gap */
    _Atomic uint32_t wide;         /* wide gaps in this burst */
    _Atomic uint64_t bursts;       /* drained syncs while eligible */
    _Atomic uint64_t t0, n0;       /* this burst's first launch: its time (0: none), launches before it */
    _Atomic uint64_t stride_t, stride_n; /* the latest publication: its time, the launches then */
    _Atomic uint64_t strides;      /* publications in this burst */
    _Atomic uint64_t dur_ns;       /* mean predicted GPU time of a launch */
    _Atomic uint64_t interval_ns;  /* mean host time between two launches of a burst */
    /* for FIKIT_STATS */
    _Atomic uint64_t quiet_bursts, full_bursts, quiet_launches, wide_total;
};
static struct quiet quiet[FIKIT_MAX_DEVS + 1]; /* by fikit_dev.index */
static _Atomic bool switched_off;              /* fikit_set_quiet(0) */

static inline uint64_t ld(const _Atomic uint64_t *p) { return atomic_load_explicit(p, memory_order_relaxed); }
static inline void st(_Atomic uint64_t *p, uint64_t v) { atomic_store_explicit(p, v, memory_order_relaxed); }
static inline uint64_t max64(uint64_t a, uint64_t b) { return a > b ? a : b; }

static void set_flags(uint32_t set, uint32_t clear)
{
    if (clear)
        atomic_fetch_and_explicit(&fikit_hot.cfg.flags, ~clear, memory_order_relaxed);
    if (set)
        atomic_fetch_or_explicit(&fikit_hot.cfg.flags, set, memory_order_relaxed);
}

/* ewma with weight 1/4, the first sample taken whole */
static inline uint64_t ewma(uint64_t old, uint64_t v) { return old ? old - old / 4 + v / 4 : v; }

/* The stride d's client may publish at now: 1 when it may not be quiet at all. */
static uint32_t stride_for(struct fikit_dev *d)
{
    if (!d->dom || fikit_dev_count() != 1)
        return 1;
    uint32_t s = atomic_load_explicit(&d->dom->quiet_stride, memory_order_relaxed);
    if (s < 2 || s > 1024 || (s & (s - 1)))
        return 1;
    if (fikit_effective_prio(d) != FIKIT_PRIO_HIGH || atomic_load_explicit(&d->n_peer_idx, memory_order_relaxed))
        return 1;
    uintptr_t l = atomic_load_explicit(&d->launcher, memory_order_relaxed);
    if (l == FIKIT_LAUNCHERS_SEVERAL || (l & 1))
        return 1;
    if (fikit_cfg_has(FIKIT_CFG_PROFILE | FIKIT_CFG_PASSTHROUGH | FIKIT_CFG_MEASURING_OFF | FIKIT_CFG_BYPASS) ||
        atomic_load_explicit(&switched_off, memory_order_relaxed))
        return 1;
    return s;
}

/* The mean predicted duration of a launch, over the kernel table weighted by launches. */
static uint64_t mean_dur(const struct fikit_slot *me, uint64_t unknown_ns)
{
    uint32_t used = atomic_load_explicit(&me->ktab_used, memory_order_acquire);
    if (used > FIKIT_KTAB_SIZE)
        used = FIKIT_KTAB_SIZE;
    uint64_t launches = 0, ns = 0;
    for (uint32_t i = 0; i < used; i++) {
        const struct fikit_kstat *k = &me->ktab[i];
        uint64_t c = atomic_load_explicit(&k->count, memory_order_relaxed);
        uint64_t dur = fikit_kstat_dur_pred(k);
        launches += c;
        ns += c * (dur ? dur : unknown_ns);
    }
    return launches ? ns / launches : 0;
}

/* What the next full launch's gap is measured against: this publication, ending the burst so far
 * as `after_sync` (a sync ends it; a launch that follows without one is its next stride). */
static void mark(struct fikit_dev *d, struct quiet *q, uint64_t t, uint64_t launches)
{
    struct fikit_pool_hot *h = &d->pool;
    atomic_store_explicit(&h->last_launch_t, t, memory_order_relaxed);
    atomic_store_explicit(&h->last_launch_k, &q->after_sync, memory_order_relaxed);
    atomic_store_explicit(&h->last_end_pred, t, memory_order_relaxed);
    atomic_store_explicit(&h->last_gap_pred, (uint32_t)fikit_kstat_gap_pred(&q->after_sync), memory_order_relaxed);
    atomic_store_explicit(&h->last_gap_every, atomic_load_explicit(&q->after_sync.gap_n, memory_order_relaxed) < FIKIT_RING,
                          memory_order_relaxed);
    st(&q->stride_t, t);
    st(&q->stride_n, launches);
    atomic_fetch_add_explicit(&q->strides, 1, memory_order_relaxed);
}

void fikit_quiet_burst(struct fikit_dev *d, uint64_t t)
{
    struct quiet *q = &quiet[d->index];
    uint64_t n = fikit_slot_launches(d->me);
    st(&q->t0, t);
    st(&q->n0, n - 1); /* this launch is counted already */
    st(&q->strides, 0);
    /* After a full burst the sync's gap went to the kernel that ended it: after_sync learns it too. */
    uint64_t synced = atomic_load_explicit(&d->pool.last_sync_end, memory_order_relaxed);
    if (!atomic_load_explicit(&q->ended_quiet, memory_order_relaxed) && synced && t > synced)
        fikit_kstat_add_gap(&q->after_sync, t - synced);
    if (!atomic_load_explicit(&q->next_quiet, memory_order_relaxed)) {
        set_flags(0, FIKIT_CFG_BURST);
        return;
    }
    mark(d, q, t, n);
    atomic_store_explicit(&d->me->stride, atomic_load_explicit(&fikit_hot.cfg.quiet_mask, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    set_flags(FIKIT_CFG_QUIET, FIKIT_CFG_BURST);
}

void fikit_quiet_leave(struct fikit_dev *d)
{
    struct quiet *q = &quiet[d->index];
    set_flags(0, FIKIT_CFG_QUIET | FIKIT_CFG_BURST);
    atomic_store_explicit(&q->next_quiet, false, memory_order_relaxed);
    atomic_store_explicit(&q->measured, 0, memory_order_relaxed); /* learnt again */
    st(&q->t0, 0);
    /* the next launch's gap is not measured from the latest publication */
    atomic_store_explicit(&d->pool.last_launch_k, NULL, memory_order_relaxed);
    atomic_store_explicit(&d->me->stride, 1, memory_order_relaxed);
}

bool fikit_quiet_stride(struct fikit_dev *d, uint64_t t, CUstream stream)
{
    struct quiet *q = &quiet[d->index];
    if (atomic_load_explicit(&d->pool.last_stream, memory_order_relaxed) != stream) {
        fikit_quiet_leave(d); /* a second stream: a sync of one no longer says all is done */
        return false;
    }
    uint64_t prev_t = ld(&q->stride_t), prev_n = ld(&q->stride_n), n = fikit_slot_launches(d->me);
    if (prev_t && t > prev_t && n > prev_n &&
        atomic_load_explicit(&d->pool.last_sync_end, memory_order_relaxed) < prev_t)
        st(&q->interval_ns, ewma(ld(&q->interval_ns), (t - prev_t) / (n - prev_n)));
    mark(d, q, t, n);
    return true;
}

void fikit_quiet_publish(struct fikit_dev *d, uint64_t t)
{
    struct quiet *q = &quiet[d->index];
    struct fikit_slot *me = d->me;
    uint64_t s = (uint64_t)atomic_load_explicit(&fikit_hot.cfg.quiet_mask, memory_order_relaxed) + 1;
    uint64_t busy = atomic_load_explicit(&me->busy_until_ns, memory_order_relaxed);
    uint64_t queue = max64(busy, t) + s * ld(&q->dur_ns);
    uint64_t pace = t + 2 * s * ld(&q->interval_ns);
    uint64_t until = max64(queue, pace);
    if (until > t + QUIET_COVER_MAX)
        until = t + QUIET_COVER_MAX;
    atomic_store_explicit(&me->last_launch_ns, t, memory_order_relaxed);
    atomic_store_explicit(&me->busy_until_ns, until, memory_order_relaxed);
    atomic_store_explicit(&me->next_launch_ns, until, memory_order_release);
}

void fikit_quiet_wide_gap(struct fikit_dev *d, const struct fikit_kstat *after)
{
    /* Only a gap lower clients would be offered: the one predicted after that kernel (its shortest
     * recent one, this included) is as long.  A host hiccup after a kernel whose gaps are short
     * is not; a gap the program makes after that kernel each time is. */
    uint64_t wide = atomic_load_explicit(&fikit_hot.cfg.quiet_gap_ns, memory_order_relaxed);
    if (!after || fikit_kstat_gap_pred(after) < wide)
        return;
    struct quiet *q = &quiet[d->index];
    atomic_fetch_add_explicit(&q->wide, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&q->wide_total, 1, memory_order_relaxed);
}

void fikit_quiet_synced(struct fikit_dev *d)
{
    struct quiet *q = &quiet[d->index];
    struct fikit_slot *me = d->me;
    uint64_t t0 = ld(&q->t0), n = fikit_slot_launches(me);
    if (t0) { /* the burst that ends here */
        uint64_t burst = n - ld(&q->n0);
        bool was_quiet = fikit_cfg_has(FIKIT_CFG_QUIET);
        atomic_store_explicit(&q->ended_quiet, was_quiet, memory_order_relaxed);
        if (was_quiet) {
            atomic_fetch_add_explicit(&q->quiet_bursts, 1, memory_order_relaxed);
            uint64_t published = ld(&q->strides);
            atomic_fetch_add_explicit(&q->quiet_launches, burst > published ? burst - published : 0,
                                      memory_order_relaxed);
        } else if (burst >= QUIET_MIN_BURST) {
            atomic_fetch_add_explicit(&q->full_bursts, 1, memory_order_relaxed);
            uint32_t bit = atomic_load_explicit(&q->wide, memory_order_relaxed) ? 1u : 0u;
            uint32_t window = (1u << QUIET_LEARN) - 1;
            atomic_store_explicit(&q->gapped, ((atomic_load_explicit(&q->gapped, memory_order_relaxed) << 1) | bit) & window,
                                  memory_order_relaxed);
            uint32_t m = atomic_load_explicit(&q->measured, memory_order_relaxed);
            if (m < QUIET_LEARN)
                atomic_store_explicit(&q->measured, m + 1, memory_order_relaxed);
            uint64_t last = atomic_load_explicit(&d->pool.last_launch_t, memory_order_relaxed);
            if (last > t0)
                st(&q->interval_ns, ewma(ld(&q->interval_ns), (last - t0) / (burst - 1)));
            uint64_t unknown = (uint64_t)atomic_load_explicit(&d->dom->unknown_us, memory_order_relaxed) * 1000u;
            st(&q->dur_ns, mean_dur(me, unknown));
        }
    }
    atomic_store_explicit(&q->wide, 0, memory_order_relaxed);
    st(&q->t0, 0);
    atomic_store_explicit(&me->stride, 1, memory_order_relaxed);
    uint32_t s = stride_for(d);
    if (s < 2) {
        set_flags(0, FIKIT_CFG_QUIET | FIKIT_CFG_BURST);
        atomic_store_explicit(&fikit_hot.cfg.quiet_gap_ns, UINT64_MAX, memory_order_relaxed);
        atomic_store_explicit(&q->next_quiet, false, memory_order_relaxed);
        return;
    }
    uint64_t gap_us = atomic_load_explicit(&d->dom->quiet_gap_us, memory_order_relaxed);
    atomic_store_explicit(&fikit_hot.cfg.quiet_mask, s - 1, memory_order_relaxed);
    atomic_store_explicit(&fikit_hot.cfg.quiet_gap_ns, gap_us * 1000u, memory_order_relaxed);
    uint64_t bursts = atomic_fetch_add_explicit(&q->bursts, 1, memory_order_relaxed) + 1;
    uint32_t gapped = atomic_load_explicit(&q->gapped, memory_order_relaxed);
    bool next = atomic_load_explicit(&q->measured, memory_order_relaxed) >= QUIET_LEARN &&
                __builtin_popcount(gapped) <= QUIET_GAPPED && !(gapped & 1) &&
                ld(&q->dur_ns) && ld(&q->interval_ns) && bursts % QUIET_REFRESH != 0;
    atomic_store_explicit(&q->next_quiet, next, memory_order_relaxed);
    set_flags(FIKIT_CFG_BURST, FIKIT_CFG_QUIET);
}

/* For benchmarks (bench/overhead_probe.py's toggle_quiet): with on 0, every launch publishes from
 * the next launch on, as with quiet_stride = 1, until it is called with 1; a quiet burst may start
 * at the first sync after that.  Returns whether quiet launches were on. */
FIKIT_API int fikit_set_quiet(int on)
{
    bool was_off = atomic_exchange(&switched_off, !on);
    if (!on)
        set_flags(0, FIKIT_CFG_QUIET | FIKIT_CFG_BURST);
    return !was_off;
}

void fikit_quiet_reset(void)
{
    memset(quiet, 0, sizeof quiet);
    set_flags(0, FIKIT_CFG_QUIET | FIKIT_CFG_BURST);
    atomic_store_explicit(&fikit_hot.cfg.quiet_gap_ns, UINT64_MAX, memory_order_relaxed);
}

void fikit_quiet_counts(const struct fikit_dev *d, struct fikit_quiet_counts *out)
{
    const struct quiet *q = &quiet[d->index];
    out->stride = atomic_load_explicit(&fikit_hot.cfg.quiet_mask, memory_order_relaxed) + 1;
    out->quiet_bursts = ld(&q->quiet_bursts);
    out->full_bursts = ld(&q->full_bursts);
    out->quiet_launches = ld(&q->quiet_launches);
    out->wide_gaps = ld(&q->wide_total);
}
