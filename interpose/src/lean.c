/*
 * Lean launches: the top of a domain records each launch raw, and its bookkeeping comes later.
 *
 * Why.  Inside a torch HP, a launch on the full path (identify the kernel, count it, note the
 * gap before it, publish its predictions) cost bert and resnet50 1.3-1.6% of their latency, and
 * no trim of that path halved it: the floor and the identification alone came to 0.7-1.1 points
 * (bench/results/2026-11-26-h100-abprobe).  A client with nobody above it decides nothing at a
 * launch, so nothing of that work is needed then, only later:
 *   - its own counts, gaps and predictions: at its next sync, before the real one (its GPU is
 *     still busy then), or when half the ring is written;
 *   - its predictions as the clients below read them: they fold the records not yet digested
 *     into the published ones themselves (fikit_lean_peer), through the pair table the digest
 *     keeps in the slot; they are waiting anyway.
 * So a lean launch reads the clock and writes one record line and the slot's lean line.
 *
 * When.  A device's launches go lean once its full-path launches have found every kernel
 * settled (its ring of recent runs full) for cfg.lean_after launches in a row, and while nobody
 * is above it, one thread launches, and nothing but the defaults is set; a digest that meets a
 * new or unsettled kernel sends them back to the full path, where each new kernel is measured
 * as before.  One lean launch in cfg.sample x FIKIT_SETTLED_FACTOR goes the full path instead,
 * and is sampled there, so settled kernels keep tracking drift.  FIKIT_LEAN=0 turns it off.
 *
 * Records are untrusted to their readers: a reader checks each record's sequence number before
 * and after reading it, bounds every index it takes from the slot, and treats what it cannot
 * read as a kernel of unknown length, which holds it longer, never shorter.
 */
#include <linux/futex.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fikit.h"

static pthread_mutex_t digest_lock[FIKIT_MAX_DEVS + 1];
static pthread_once_t locks_once = PTHREAD_ONCE_INIT;

static void locks_init(void)
{
    for (int i = 0; i <= FIKIT_MAX_DEVS; i++)
        pthread_mutex_init(&digest_lock[i], NULL);
}

/*
 * The digest thread.  Digesting on the launching thread (at its syncs, and when half its ring
 * was written) cost a torch HP as much as the full path's bookkeeping at each launch had:
 * lean launches were no cheaper than full ones inside one process (full over lean 1.000 and
 * 1.001, bench/results/2026-11-26-h100-lean3), though without their digest they cost 0.4% where
 * the full path cost 1.0-1.5% (-lean2).  The work is the same either way; its misses are what
 * the HP paid.  So a thread of the process's own takes it: woken by a sync (which then waits
 * for the GPU meanwhile) or by a half-written ring, else every HELPER_NS, so that the clients
 * below and fikitd see the digested state soon; the HP's own thread digests only before a
 * full-path launch, and at exit.  Without the thread (it could not start), the launching
 * thread digests as before.
 */
#define HELPER_NS 5000000ull
static _Atomic uint32_t kick_word;   /* bumped for each wake-up; the thread sleeps on it */
static _Atomic uint32_t helper_idle; /* the thread is (about to be) asleep: a kick must wake it */
static _Atomic int helper_state;     /* 0 not started, 1 running, -1 could not start */
static pthread_mutex_t helper_lock = PTHREAD_MUTEX_INITIALIZER;

static void *helper_main(void *arg)
{
    (void)arg;
    for (;;) {
        uint32_t seen = atomic_load(&kick_word);
        fikit_lean_digest_all();
        atomic_store(&helper_idle, 1);
        if (atomic_load(&kick_word) == seen) {
            struct timespec ts = {0, (long)HELPER_NS};
            syscall(SYS_futex, (uint32_t *)&kick_word, FUTEX_WAIT_PRIVATE, seen, &ts, NULL, 0);
        }
        atomic_store(&helper_idle, 0);
    }
    return NULL;
}

bool fikit_lean_helper(void)
{
    int st = atomic_load_explicit(&helper_state, memory_order_acquire);
    if (st)
        return st > 0;
    pthread_mutex_lock(&helper_lock);
    const char *e = getenv("FIKIT_LEAN_THREAD");
    if (!atomic_load(&helper_state) && e && strcmp(e, "0") == 0)
        atomic_store(&helper_state, -1); /* the launching thread digests (for the tests of that path) */
    if (!atomic_load(&helper_state)) {
        pthread_t t;
        pthread_attr_t a;
        pthread_attr_init(&a);
        pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&a, 256 * 1024);
        atomic_store_explicit(&helper_state, pthread_create(&t, &a, helper_main, NULL) == 0 ? 1 : -1,
                              memory_order_release);
        pthread_attr_destroy(&a);
    }
    pthread_mutex_unlock(&helper_lock);
    return atomic_load(&helper_state) > 0;
}

const char *fikit_lean_digester(void)
{
    int st = atomic_load(&helper_state);
    return st > 0 ? "thread" : st < 0 ? "inline" : "none";
}

void fikit_lean_kick(struct fikit_dev *d)
{
    if (atomic_load_explicit(&helper_state, memory_order_acquire) <= 0) {
        (void)fikit_lean_try_digest(d);
        return;
    }
    atomic_fetch_add(&kick_word, 1);
    if (atomic_load(&helper_idle))
        syscall(SYS_futex, (uint32_t *)&kick_word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

bool fikit_lean_sync_record(struct fikit_dev *d, int kind, CUstream stream)
{
    struct fikit_slot *me = d->me;
    uint64_t i = atomic_load_explicit(&me->lean_head, memory_order_relaxed);
    if (i - atomic_load_explicit(&me->lean_done, memory_order_relaxed) >= FIKIT_LEAN_RING - 1)
        return false;
    uint64_t t = fikit_hot.cfg.lean_tsc ? fikit_tsc() : fikit_clock_ns();
    fikit_lean_put(me, i, t, 0, (uint64_t)(uintptr_t)stream, 0, 0, 0,
                   (uint32_t)kind | (uint64_t)FIKIT_REC_SYNC << 32);
    fikit_lean_kick(d);
    return true;
}

void fikit_lean_after_fork(void)
{
    /* The parent's digest may have held a lock at the fork, and its thread is not the child's:
     * the child starts afresh. */
    locks_init();
    pthread_mutex_init(&helper_lock, NULL);
    atomic_store(&helper_state, 0);
    atomic_store(&helper_idle, 0);
    atomic_store(&kick_word, 0);
}

/* A launch's pair (function, shape) as the pair table keys it; never 0 (an empty bucket). */
static uint64_t lean_key(uint64_t f, uint64_t g01, uint64_t g2b0, uint64_t b12, uint64_t smem)
{
    uint64_t h = f * 0x9e3779b97f4a7c15ull;
    h = (h ^ (h >> 29) ^ g01) * 0xbf58476d1ce4e5b9ull;
    h = (h ^ (h >> 31) ^ g2b0) * 0x94d049bb133111ebull;
    h = (h ^ (h >> 29) ^ b12) * 0x9e3779b97f4a7c15ull;
    h = (h ^ (h >> 32) ^ smem) * 0xbf58476d1ce4e5b9ull;
    return (h ^ (h >> 31)) | 1u;
}

/* The kernel-table index + 1 of a pair, 0 when the table does not have it (yet). */
static uint32_t pair_get(const struct fikit_slot *s, uint64_t key)
{
    for (uint32_t j = 0; j < FIKIT_PAIRS; j++) {
        uint32_t b = (uint32_t)(key + j) & (FIKIT_PAIRS - 1);
        uint64_t k = atomic_load_explicit(&s->pair_key[b], memory_order_acquire);
        if (k == key) {
            uint32_t e = atomic_load_explicit(&s->pair_entry[b], memory_order_relaxed);
            return e <= FIKIT_KTAB_SIZE ? e : 0;
        }
        if (k == 0 || j >= 64)
            return 0; /* a table this sparse never probes far: the rest is garbage or full */
    }
    return 0;
}

/* Only the owner writes its table (under its device's digest lock): entry first, then key. */
static void pair_put(struct fikit_slot *s, uint64_t key, uint32_t entry)
{
    for (uint32_t j = 0; j < 64; j++) {
        uint32_t b = (uint32_t)(key + j) & (FIKIT_PAIRS - 1);
        uint64_t k = atomic_load_explicit(&s->pair_key[b], memory_order_relaxed);
        if (k == key)
            return;
        if (k == 0) {
            atomic_store_explicit(&s->pair_entry[b], entry, memory_order_relaxed);
            atomic_store_explicit(&s->pair_key[b], key, memory_order_release);
            return;
        }
    }
    /* Full around here: the clients below take the pair for a kernel of unknown length. */
}

/* One record, read and checked: false when it is being written or was overwritten. */
struct rec {
    uint64_t t, f, stream, g01, g2b0, b12, smem_path;
};
static bool rec_read(const struct fikit_slot *s, uint64_t i, struct rec *r)
{
    const fikit_au64 *w = fikit_lean_rec((struct fikit_slot *)s, i);
    if (atomic_load_explicit(&w[FIKIT_REC_SEQ], memory_order_acquire) != i + 1)
        return false;
    r->t = atomic_load_explicit(&w[FIKIT_REC_T], memory_order_relaxed);
    r->f = atomic_load_explicit(&w[FIKIT_REC_F], memory_order_relaxed);
    r->stream = atomic_load_explicit(&w[FIKIT_REC_STREAM], memory_order_relaxed);
    r->g01 = atomic_load_explicit(&w[FIKIT_REC_GRID01], memory_order_relaxed);
    r->g2b0 = atomic_load_explicit(&w[FIKIT_REC_GRID2_BLOCK0], memory_order_relaxed);
    r->b12 = atomic_load_explicit(&w[FIKIT_REC_BLOCK12], memory_order_relaxed);
    r->smem_path = atomic_load_explicit(&w[FIKIT_REC_SMEM_PATH], memory_order_acquire);
    return atomic_load_explicit(&w[FIKIT_REC_SEQ], memory_order_relaxed) == i + 1;
}

/* The records' clock, as the owner publishes it (seq odd while it rewrites it). */
void fikit_lean_publish_clock(struct fikit_slot *me, const struct fikit_tsc_cal *c)
{
    uint64_t seq = atomic_load_explicit(&me->lean_clock_seq, memory_order_relaxed);
    atomic_store_explicit(&me->lean_clock_seq, seq + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    atomic_store_explicit(&me->lean_tsc_mult, c->mult, memory_order_relaxed);
    atomic_store_explicit(&me->lean_tsc_base, c->tsc_base, memory_order_relaxed);
    atomic_store_explicit(&me->lean_ns_base, c->ns_base, memory_order_relaxed);
    atomic_store_explicit(&me->lean_clock_seq, seq + 2, memory_order_release);
}

/* False when it cannot be read whole (the owner keeps rewriting it, or is gone mid-write). */
static bool clock_read(const struct fikit_slot *s, struct fikit_tsc_cal *c)
{
    for (int tries = 0; tries < 4; tries++) {
        uint64_t seq = atomic_load_explicit(&s->lean_clock_seq, memory_order_acquire);
        c->mult = atomic_load_explicit(&s->lean_tsc_mult, memory_order_relaxed);
        c->tsc_base = atomic_load_explicit(&s->lean_tsc_base, memory_order_relaxed);
        c->ns_base = atomic_load_explicit(&s->lean_ns_base, memory_order_relaxed);
        atomic_thread_fence(memory_order_acquire);
        if (!(seq & 1) && atomic_load_explicit(&s->lean_clock_seq, memory_order_relaxed) == seq)
            return true;
    }
    return false;
}

/* A record's time on the clock: its stamp, converted when it is TSC ticks. */
static uint64_t rec_ns(const struct fikit_tsc_cal *c, uint64_t stamp)
{
    return c->mult ? fikit_tsc_ns(c, stamp) : stamp;
}

static uint64_t unknown_ns_of(const struct fikit_domain *dom)
{
    return dom ? (uint64_t)atomic_load_explicit(&dom->unknown_us, memory_order_relaxed) * 1000u : FIKIT_UNKNOWN_NS;
}

/* The records a device's launches left since its last digest, in order, as the full path would
 * have taken them at each launch (launch.c's before() and after()). */
static void digest_locked(struct fikit_dev *d)
{
    struct fikit_slot *me = d->me;
    struct fikit_pool_hot *h = &d->pool;
    uint64_t head = atomic_load_explicit(&me->lean_head, memory_order_acquire);
    uint64_t done = atomic_load_explicit(&me->lean_done, memory_order_relaxed);
    if (head == done)
        return;
    if (head - done > FIKIT_LEAN_RING)
        done = head - FIKIT_LEAN_RING; /* never: a lean launch digests before it would overwrite */
    uint64_t unknown_ns = unknown_ns_of(d->dom);
    bool settled = true;
    /* The records' clock, calibrated afresh (only this thread writes it, under the lock). */
    struct fikit_tsc_cal cal = {0};
    if (atomic_load_explicit(&me->lean_tsc_mult, memory_order_relaxed)) {
        struct fikit_tsc_cal fresh;
        if (fikit_tsc_calibrate(&fresh))
            fikit_lean_publish_clock(me, &fresh);
        (void)clock_read(me, &cal);
    }
    for (uint64_t i = done; i < head; i++) {
        struct rec r;
        if (!rec_read(me, i, &r) || (r.smem_path & FIKIT_REC_FAILED))
            continue;
        r.t = rec_ns(&cal, r.t);
        uint32_t path = (uint32_t)(r.smem_path >> 32) & 0xffu;
        uint32_t smem = (uint32_t)r.smem_path;
        if (path == FIKIT_REC_SYNC) {
            fikit_note_sync(h, me, (int)smem, (CUstream)(uintptr_t)r.stream, r.t);
            continue;
        }
        const uint32_t grid[3] = {(uint32_t)r.g01, (uint32_t)(r.g01 >> 32), (uint32_t)r.g2b0};
        const uint32_t block[3] = {(uint32_t)(r.g2b0 >> 32), (uint32_t)r.b12, (uint32_t)(r.b12 >> 32)};
        if (path < 4)
            atomic_fetch_add_explicit(&me->path_launches[path], 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&me->lean_launches, 1, memory_order_relaxed);
        bool first = false;
        struct fikit_kstat *k = fikit_kernel_entry(me, d->index, (CUfunction)(uintptr_t)r.f, grid, block, smem,
                                                   &h->memo, &first);
        if (k) {
            atomic_fetch_add_explicit(&k->count, 1, memory_order_relaxed);
            if (first || atomic_load_explicit(&k->dur_n, memory_order_relaxed) < FIKIT_SETTLED_SAMPLES)
                settled = false;
            pair_put(me, lean_key(r.f, r.g01, r.g2b0, r.b12, r.smem_path & 0xffffffffull),
                     (uint32_t)(k - me->ktab) + 1);
        } else {
            settled = false;
        }
        fikit_note_gap(h, me, k, r.t);
        if (!k)
            continue;
        fikit_note_stream(h, me, (CUstream)(uintptr_t)r.stream, r.t);
        fikit_note_launch(me, r.t, fikit_kstat_dur_pred(k), fikit_kstat_gap_pred(k), unknown_ns);
    }
    atomic_store_explicit(&me->lean_done, head, memory_order_release);
    if (!settled) {
        atomic_store_explicit(&d->lean_on, 0, memory_order_relaxed);
        d->lean_run = 0;
    }
}

void fikit_lean_digest(struct fikit_dev *d)
{
    pthread_once(&locks_once, locks_init);
    pthread_mutex_t *m = &digest_lock[d->index >= 0 && d->index <= FIKIT_MAX_DEVS ? d->index : FIKIT_MAX_DEVS];
    pthread_mutex_lock(m);
    digest_locked(d);
    pthread_mutex_unlock(m);
}

bool fikit_lean_try_digest(struct fikit_dev *d)
{
    pthread_once(&locks_once, locks_init);
    pthread_mutex_t *m = &digest_lock[d->index >= 0 && d->index <= FIKIT_MAX_DEVS ? d->index : FIKIT_MAX_DEVS];
    if (pthread_mutex_trylock(m) != 0)
        return false;
    digest_locked(d);
    pthread_mutex_unlock(m);
    return true;
}

void fikit_lean_digest_all(void)
{
    for (int i = 0; i < fikit_dev_count(); i++) {
        struct fikit_dev *d = fikit_dev_at(i);
        if (d->me && atomic_load(&d->me->lean_head) != atomic_load(&d->me->lean_done))
            fikit_lean_digest(d);
    }
}

static inline uint64_t max64(uint64_t a, uint64_t b) { return a > b ? a : b; }

/* The records past done, folded into a peer's published predictions as its digest will fold
 * them.  A pair its table does not have yet (a new kernel, or one the digest has not reached)
 * counts as a kernel of unknown length. */
static void fold(const struct fikit_slot *s, uint64_t done, uint64_t head, struct fikit_peer *p, uint64_t unknown_ns)
{
    if (head - done > FIKIT_LEAN_RING)
        done = head - FIKIT_LEAN_RING;
    uint64_t busy = p->busy_until_ns, next = p->next_launch_ns, last = p->last_launch_ns;
    struct fikit_tsc_cal cal;
    bool timed = clock_read(s, &cal);
    for (uint64_t i = done; i < head; i++) {
        struct rec r;
        if (!timed || !rec_read(s, i, &r)) {
            /* Being written, or overwritten as we read: the peer is busy for all we know. */
            busy = max64(busy, last) + unknown_ns;
            next = busy;
            break;
        }
        /* A sync's record: its digest soon says what it drained; until then, as predicted. */
        if ((r.smem_path & FIKIT_REC_FAILED) || ((r.smem_path >> 32) & 0xffu) == FIKIT_REC_SYNC)
            continue;
        r.t = rec_ns(&cal, r.t);
        uint32_t e = pair_get(s, lean_key(r.f, r.g01, r.g2b0, r.b12, r.smem_path & 0xffffffffull));
        const struct fikit_kstat *k = e ? &s->ktab[e - 1] : NULL;
        uint64_t dur = k ? fikit_kstat_dur_pred(k) : 0;
        uint64_t gap = k ? fikit_kstat_gap_pred(k) : 0;
        busy = max64(busy, r.t) + (dur ? dur : unknown_ns);
        last = r.t;
        next = busy + gap;
    }
    p->busy_until_ns = busy;
    p->next_launch_ns = next;
    p->last_launch_ns = last;
}

void fikit_lean_peer(const struct fikit_slot *s, struct fikit_peer *p, uint64_t unknown_ns)
{
    for (int tries = 0;; tries++) {
        uint64_t done = atomic_load_explicit(&s->lean_done, memory_order_acquire);
        p->last_launch_ns = atomic_load_explicit(&s->last_launch_ns, memory_order_relaxed);
        p->busy_until_ns = atomic_load_explicit(&s->busy_until_ns, memory_order_relaxed);
        p->next_launch_ns = atomic_load_explicit(&s->next_launch_ns, memory_order_acquire);
        p->syncing = atomic_load_explicit(&s->syncing, memory_order_relaxed);
        p->_pad = 0;
        uint64_t head = atomic_load_explicit(&s->lean_head, memory_order_acquire);
        if (head != done)
            fold(s, done, head, p, unknown_ns);
        /* A digest that ran meanwhile may have published part of what was folded: look again
         * (twice at most; folding a record twice only holds the reader longer). */
        if (atomic_load_explicit(&s->lean_done, memory_order_acquire) == done || tries >= 2)
            return;
    }
}

uint64_t fikit_lean_unknown_ns(const struct fikit_domain *dom) { return unknown_ns_of(dom); }

FIKIT_API int fikit_set_lean(int on)
{
    uint32_t was = on ? atomic_fetch_and(&fikit_hot.cfg.flags, ~(uint32_t)FIKIT_CFG_NO_LEAN)
                      : atomic_fetch_or(&fikit_hot.cfg.flags, FIKIT_CFG_NO_LEAN);
    return !(was & FIKIT_CFG_NO_LEAN);
}
