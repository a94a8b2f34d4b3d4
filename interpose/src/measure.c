/*
 * The kernel table of a slot and the statistics kept per kernel id.  Pure
 * bookkeeping: no driver calls, no clock, so the simulator learns exactly as
 * the library does.
 *
 * Predictions are deliberately lopsided: a kernel's duration is predicted
 * from its recent *long* runs and the gap after it from its recent *short*
 * gaps, because both errors that way protect the more urgent client.
 */
#include <string.h>

#include "fikit.h"

static inline uint64_t ld(const fikit_au64 *p) { return atomic_load_explicit(p, memory_order_relaxed); }

/*
 * The kernel table is dense: entries are taken in order of first launch, so a
 * program's kernels, launched in turn, sit next to each other, eight to a
 * page, and a launch and the one before it share a page.  (A table hashed by
 * id spread them over 128 pages: a TLB miss or two on every launch.)  An
 * open-addressing index finds them: a bucket holds the id's top 16 bits and
 * the entry's position + 1; 0 is empty.  Only the owner's threads write.
 */
#define KINDEX_MASK (FIKIT_KINDEX_SIZE - 1)
_Static_assert(FIKIT_KTAB_SIZE < 0xffff, "an entry's position + 1 fits a bucket's low 16 bits");
_Static_assert((FIKIT_KINDEX_SIZE & KINDEX_MASK) == 0 && FIKIT_KINDEX_SIZE > FIKIT_KTAB_SIZE,
               "the index is a power of two with room to spare, so every probe meets an empty bucket");

static inline uint32_t kindex_tag(uint64_t id) { return (uint32_t)(id >> 48) << 16; }

/* The entry bucket v names, when it is id's. */
static inline struct fikit_kstat *bucket_entry(struct fikit_slot *s, uint32_t v, uint64_t id)
{
    uint32_t e = (v & 0xffffu) - 1;
    if ((v & 0xffff0000u) != kindex_tag(id) || e >= FIKIT_KTAB_SIZE)
        return NULL;
    return ld(&s->ktab[e].id) == id ? &s->ktab[e] : NULL;
}

struct fikit_kstat *fikit_ktab_find(struct fikit_slot *s, uint64_t id)
{
    for (uint64_t i = 0, h = id & KINDEX_MASK; i < FIKIT_KINDEX_SIZE; i++, h = (h + 1) & KINDEX_MASK) {
        uint32_t v = atomic_load_explicit(&s->kindex[h], memory_order_acquire);
        if (v == 0)
            return NULL;
        struct fikit_kstat *k = bucket_entry(s, v, id);
        if (k)
            return k;
    }
    return NULL;
}

struct fikit_kstat *fikit_ktab_get(struct fikit_slot *s, uint64_t id, const char *name, const uint32_t grid[3],
                                   const uint32_t block[3], uint32_t smem, uint32_t kind)
{
    uint32_t e = UINT32_MAX; /* our fresh entry, once taken */
    for (uint64_t i = 0, h = id & KINDEX_MASK; i < FIKIT_KINDEX_SIZE; i++, h = (h + 1) & KINDEX_MASK) {
        uint32_t v = atomic_load_explicit(&s->kindex[h], memory_order_acquire);
        if (v != 0) {
            struct fikit_kstat *k = bucket_entry(s, v, id);
            if (!k)
                continue;
            if (e != UINT32_MAX) /* another thread published it first: ours goes unused */
                atomic_store_explicit(&s->ktab[e].id, 0, memory_order_relaxed);
            return k;
        }
        if (e == UINT32_MAX) {
            /* Take the next entry and describe it completely before it is published. */
            e = fikit_take_next(&s->ktab_used, FIKIT_KTAB_SIZE);
            if (e == UINT32_MAX)
                return NULL; /* table full: the launch goes on unmeasured */
            struct fikit_kstat *k = &s->ktab[e];
            if (name) {
                strncpy(k->name, name, FIKIT_NAME_LEN - 1);
                k->name[FIKIT_NAME_LEN - 1] = 0;
            }
            for (int d = 0; d < 3; d++) {
                k->grid[d] = grid ? grid[d] : 0;
                k->block[d] = block ? block[d] : 0;
            }
            k->smem = smem;
            k->kind = kind;
            k->gap_min_ns = UINT32_MAX;
            atomic_store_explicit(&k->id, id, memory_order_relaxed);
        }
        uint32_t mine = kindex_tag(id) | (e + 1), expect = 0;
        if (atomic_compare_exchange_strong_explicit(&s->kindex[h], &expect, mine, memory_order_release,
                                                    memory_order_acquire))
            return &s->ktab[e];
        /* Another thread filled this bucket meanwhile: look at what it put there. */
        struct fikit_kstat *k = bucket_entry(s, expect, id);
        if (k) {
            atomic_store_explicit(&s->ktab[e].id, 0, memory_order_relaxed);
            return k;
        }
    }
    return NULL;
}

static inline uint32_t clamp32(uint64_t v) { return v > UINT32_MAX ? UINT32_MAX : (uint32_t)v; }

/* ewma with weight 1/4: follows a changed kernel within a few samples. */
static inline uint32_t ewma(uint32_t old, uint64_t n_before, uint64_t v)
{
    if (n_before == 0)
        return clamp32(v);
    int64_t diff = (int64_t)v - (int64_t)old;
    return clamp32((uint64_t)((int64_t)old + diff / 4));
}

void fikit_kstat_add_dur(struct fikit_kstat *k, uint64_t ns)
{
    uint64_t n = atomic_fetch_add_explicit(&k->dur_n, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&k->dur_sum_ns, ns, memory_order_relaxed);
    k->dur_ewma_ns = ewma(k->dur_ewma_ns, n, ns);
    k->dur_ring_ns[n % FIKIT_RING] = clamp32(ns);
    /* The prediction is computed here, where samples arrive (a sampled
     * launch), not on every launch that reads it. */
    uint64_t have = n + 1 < FIKIT_RING ? n + 1 : FIKIT_RING;
    uint32_t mx = 0;
    for (uint64_t i = 0; i < have; i++)
        if (k->dur_ring_ns[i] > mx)
            mx = k->dur_ring_ns[i];
    uint64_t e = k->dur_ewma_ns;
    uint64_t mid = (e + mx) / 2; /* between the recent trend and the recent maximum */
    k->dur_pred_ns = clamp32(mid > e ? mid : e);
}

void fikit_measured(struct fikit_slot *s, struct fikit_kstat *k, uint64_t ns)
{
    fikit_kstat_add_dur(k, ns);
    atomic_fetch_add_explicit(&s->gpu_ns, ns, memory_order_relaxed);
}

/* Runs on every launch, so no locked instruction: the gap statistics are
 * estimates, and two threads launching one kernel at the same instant may
 * lose one sample between them (counts of launches stay exact: before()). */
FIKIT_HOT void fikit_kstat_add_gap(struct fikit_kstat *k, uint64_t ns)
{
    uint64_t n = atomic_load_explicit(&k->gap_n, memory_order_relaxed);
    atomic_store_explicit(&k->gap_n, n + 1, memory_order_relaxed);
    atomic_store_explicit(&k->gap_sum_ns, atomic_load_explicit(&k->gap_sum_ns, memory_order_relaxed) + ns,
                          memory_order_relaxed);
    k->gap_ewma_ns = ewma(k->gap_ewma_ns, n, ns);
    uint32_t v = clamp32(ns);
    uint32_t old = k->gap_ring_ns[n % FIKIT_RING];
    k->gap_ring_ns[n % FIKIT_RING] = v;
    /* Shortest recent gap: the ring's minimum, rescanned only when the
     * sample leaving the ring was the minimum (this runs on every launch). */
    if (n == 0 || v <= k->gap_min_ns) {
        k->gap_min_ns = v;
    } else if (n >= FIKIT_RING && old == k->gap_min_ns) {
        uint32_t m = UINT32_MAX;
        for (uint64_t i = 0; i < FIKIT_RING; i++)
            if (k->gap_ring_ns[i] < m)
                m = k->gap_ring_ns[i];
        k->gap_min_ns = m;
    }
}

/* Quantile of the first min(n, FIKIT_RING) ring samples (small: insertion sort). */
double fikit_ring_quantile(const uint32_t *ring, uint64_t n, double q)
{
    uint64_t have = n < FIKIT_RING ? n : FIKIT_RING;
    if (have == 0)
        return 0.0;
    uint32_t v[FIKIT_RING];
    memcpy(v, ring, have * sizeof v[0]);
    for (uint64_t i = 1; i < have; i++) {
        uint32_t x = v[i];
        uint64_t j = i;
        while (j > 0 && v[j - 1] > x) {
            v[j] = v[j - 1];
            j--;
        }
        v[j] = x;
    }
    double pos = q * (double)(have - 1);
    uint64_t lo = (uint64_t)pos;
    uint64_t hi = lo + 1 < have ? lo + 1 : lo;
    double frac = pos - (double)lo;
    return (double)v[lo] * (1.0 - frac) + (double)v[hi] * frac;
}
