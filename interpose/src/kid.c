/*
 * Kernel identity: a 64-bit id from the kernel's name and its launch shape,
 * the same in every process and run, so measurements can be stored and
 * reused.  Names are asked of the driver once per function handle.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fikit.h"

/* FNV-1a then a final avalanche: cheap, stable, no table. */
uint64_t fikit_hash_bytes(const void *p, uint64_t n, uint64_t seed)
{
    const unsigned char *b = p;
    uint64_t h = 0xcbf29ce484222325ull ^ seed;
    for (uint64_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ull;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

uint64_t fikit_name_hash(const char *name)
{
    return fikit_hash_bytes(name, strlen(name), 0);
}

uint64_t fikit_kernel_id(uint64_t name_hash, const uint32_t grid[3], const uint32_t block[3], uint32_t smem)
{
    uint32_t shape[7] = {grid[0], grid[1], grid[2], block[0], block[1], block[2], smem};
    uint64_t id = fikit_hash_bytes(shape, sizeof shape, name_hash);
    return id ? id : 1; /* 0 marks an empty table entry */
}

/* Function handle -> name, lock-free open addressing; entries never leave. */
#define NAME_CACHE 4096
#define NAME_BITS 12
_Static_assert(NAME_CACHE == 1 << NAME_BITS, "the name cache is indexed by NAME_BITS bits");
struct name_entry {
    _Atomic(CUfunction) f;
    const char *_Atomic name;
    uint64_t hash;
};
static struct name_entry names[NAME_CACHE];

/* Fibonacci hashing: one multiply, and function handles are addresses. */
static inline uint64_t fib(uint64_t v, int bits) { return (v * 0x9e3779b97f4a7c15ull) >> (64 - bits); }

static const char *lookup_name(CUfunction f)
{
    const char *name = NULL;
    if (fikit_drv.cuFuncGetName && fikit_drv.cuFuncGetName(&name, f) == CUDA_SUCCESS && name)
        return name;
    /* The runtime may hand a CUkernel where a CUfunction goes. */
    name = NULL;
    if (fikit_drv.cuKernelGetName && fikit_drv.cuKernelGetName(&name, (CUkernel)(void *)f) == CUDA_SUCCESS &&
        name)
        return name;
    return NULL;
}

/* Name of a function handle, looked up once per handle and cached: a stable pointer (never
 * NULL), and the hash of the name. */
static const char *func_name(CUfunction f, uint64_t *name_hash)
{
    uint64_t slot = fib((uint64_t)(uintptr_t)f, NAME_BITS);
    for (int probe = 0; probe < NAME_CACHE; probe++) {
        struct name_entry *e = &names[(slot + (uint64_t)probe) & (NAME_CACHE - 1)];
        CUfunction cur = atomic_load_explicit(&e->f, memory_order_acquire);
        if (cur == f) {
            const char *n = atomic_load_explicit(&e->name, memory_order_acquire);
            if (n) {
                *name_hash = e->hash;
                return n;
            }
            break; /* another thread is naming it: compute without caching */
        }
        if (cur == NULL) {
            CUfunction expect = NULL;
            if (!atomic_compare_exchange_strong(&e->f, &expect, f)) {
                if (expect == f)
                    break;
                continue;
            }
            const char *raw = lookup_name(f);
            char fallback[40];
            if (!raw) {
                /* Unnamed: still stable within a run, and counted. */
                snprintf(fallback, sizeof fallback, "fn@%p", (void *)f);
                raw = fallback;
            }
            char *copy = strdup(raw);
            const char *n = copy ? copy : "?";
            e->hash = fikit_name_hash(n);
            atomic_store_explicit(&e->name, n, memory_order_release);
            *name_hash = e->hash;
            return n;
        }
    }
    const char *raw = lookup_name(f);
    if (!raw)
        raw = "?";
    *name_hash = fikit_name_hash(raw);
    return raw;
}

/*
 * The launch memo: (device, function, shape) -> its kernel-table entry.  A
 * launch that repeats a pair seen before, nearly every launch of a settled
 * program, neither hashes the name and shape byte by byte nor probes the
 * kernel table: it reads one memo entry, found through a small index, or
 * without it when the device's cursor guessed right (fikit_kernel_entry).
 * Entries are taken in order of first launch, so the pairs a program launches
 * in turn sit next to each other (a hashed table spread them over 64 pages,
 * a TLB miss on most launches).  The guessed next entry is fetched into the
 * cache as the guess is made: an entry was last touched a whole cycle of the
 * program ago.  Its kernel-table line is not fetched ahead as well: asked for
 * as a launch returned, it made a launch 6 ns dearer on an H100, not cheaper
 * (bench/results/2026-11-26-h100-price4b).  An entry's key never changes once it is
 * published; only its kernel-table pointer is replaced, when the device's
 * slot moved to another mapping.  Pairs beyond FIKIT_MEMO take the slow way.  A right guess is
 * checked inline in the launch (fikit.h); everything else is here.
 */
#define MEMO_BUCKETS 4096
#define MEMO_BITS 12
_Static_assert(MEMO_BUCKETS == 1 << MEMO_BITS && MEMO_BUCKETS > FIKIT_MEMO && FIKIT_MEMO < 0xffff,
               "the index has room to spare and a bucket holds an entry's position + 1");
_Static_assert(sizeof(struct fikit_memo) == 64, "a memo entry is one cache line");
struct fikit_memo fikit_memo[FIKIT_MEMO];
static _Atomic uint32_t memo_used;
static _Atomic uint16_t memo_index[MEMO_BUCKETS]; /* entry + 1; 0 is empty */

static inline uint64_t memo_bucket(int dev, CUfunction f, const uint32_t grid[3], const uint32_t block[3],
                                   uint32_t smem)
{
    /* Grids and blocks are small: shifted apart, they rarely cancel each other. */
    uint64_t v = (uint64_t)(uintptr_t)f ^ ((uint64_t)(uint32_t)dev << 58) ^ ((uint64_t)grid[0] << 17) ^
                 ((uint64_t)grid[1] << 37) ^ ((uint64_t)grid[2] << 49) ^ ((uint64_t)block[0] << 3) ^
                 ((uint64_t)block[1] << 27) ^ ((uint64_t)block[2] << 45) ^ ((uint64_t)smem << 31);
    return fib(v, MEMO_BITS);
}

/* Identify the launch (name and shape) and find or make its entry in s. */
static struct fikit_kstat *identify(struct fikit_slot *s, CUfunction f, const uint32_t grid[3],
                                    const uint32_t block[3], uint32_t smem, uint64_t *id)
{
    uint64_t nh;
    const char *name = func_name(f, &nh);
    *id = fikit_kernel_id(nh, grid, block, smem);
    return fikit_ktab_get(s, *id, name, grid, block, smem, 0);
}

/* Not in the memo: identify the launch, and remember it from bucket b on (*mp: its entry, or
 * NULL when the memo is full). */
__attribute__((noinline, cold)) static struct fikit_kstat *remember(struct fikit_slot *s, int dev, CUfunction f,
                                                                 const uint32_t grid[3], const uint32_t block[3],
                                                                 uint32_t smem, uint64_t b, struct fikit_memo **mp)
{
    uint64_t id;
    *mp = NULL;
    struct fikit_kstat *k = identify(s, f, grid, block, smem, &id);
    if (!k)
        return NULL;
    uint32_t e = fikit_take_next(&memo_used, FIKIT_MEMO);
    if (e == UINT32_MAX)
        return k; /* the memo is full */
    struct fikit_memo *m = &fikit_memo[e];
    atomic_store_explicit(&m->next, 0, memory_order_relaxed);
    m->f = f;
    m->dev = (uint32_t)dev;
    m->smem = smem;
    memcpy(m->grid, grid, sizeof m->grid);
    memcpy(m->block, block, sizeof m->block);
    m->id = id;
    atomic_store_explicit(&m->k, k, memory_order_relaxed);
    for (int probe = 0; probe < MEMO_BUCKETS; probe++, b = (b + 1) & (MEMO_BUCKETS - 1)) {
        uint16_t expect = 0;
        if (atomic_compare_exchange_strong_explicit(&memo_index[b], &expect, (uint16_t)(e + 1),
                                                    memory_order_release, memory_order_acquire)) {
            *mp = m;
            break;
        }
        if (fikit_memo_is(&fikit_memo[expect - 1], dev, f, grid, block, smem)) {
            *mp = &fikit_memo[expect - 1]; /* another thread remembered it first: this entry stays unused */
            break;
        }
    }
    return k;
}

/* The memo's pair, its slot moved: find the entry again in the new table. */
__attribute__((noinline, cold)) static struct fikit_kstat *refresh(struct fikit_slot *s, struct fikit_memo *m,
                                                                const uint32_t grid[3], const uint32_t block[3])
{
    uint64_t id;
    struct fikit_kstat *k = identify(s, m->f, grid, block, m->smem, &id);
    if (k && id == m->id)
        atomic_store_explicit(&m->k, k, memory_order_relaxed);
    return k;
}

/* The guess was wrong: the memo's entry of the pair through its index (or a new one, NULL when
 * the memo is full), and the kernel-table entry in *kp. */
__attribute__((noinline)) static struct fikit_memo *look_up(struct fikit_slot *s, int dev, CUfunction f,
                                                            const uint32_t grid[3], const uint32_t block[3],
                                                            uint32_t smem, struct fikit_kstat **kp)
{
    uint64_t b = memo_bucket(dev, f, grid, block, smem);
    for (int probe = 0; probe < MEMO_BUCKETS; probe++, b = (b + 1) & (MEMO_BUCKETS - 1)) {
        uint16_t v = atomic_load_explicit(&memo_index[b], memory_order_acquire);
        if (FIKIT_UNLIKELY(v == 0))
            break;
        struct fikit_memo *m = &fikit_memo[v - 1];
        if (fikit_memo_is(m, dev, f, grid, block, smem)) {
            *kp = NULL;
            return m;
        }
    }
    struct fikit_memo *m;
    *kp = remember(s, dev, f, grid, block, smem, b, &m);
    return m;
}

struct fikit_kstat *fikit_kernel_entry_missed(struct fikit_slot *s, int dev, CUfunction f, const uint32_t grid[3],
                                              const uint32_t block[3], uint32_t smem, struct fikit_memo_cursor *c,
                                              bool *first)
{
    uint32_t g = atomic_load_explicit(&c->guess, memory_order_acquire);
    struct fikit_memo *m = g - 1u < FIKIT_MEMO ? &fikit_memo[g - 1] : NULL;
    struct fikit_kstat *k = NULL;
    if (!m || !fikit_memo_is(m, dev, f, grid, block, smem)) {
        m = look_up(s, dev, f, grid, block, smem, &k);
        if (k) /* remembered just now, or (the memo full) never: taken for a first launch */
            *first = true;
        if (!m) {
            atomic_store_explicit(&c->prev, 0, memory_order_relaxed);
            atomic_store_explicit(&c->guess, 0, memory_order_relaxed);
            return k; /* the memo is full */
        }
        uint32_t prev = atomic_load_explicit(&c->prev, memory_order_relaxed);
        if (prev && prev <= FIKIT_MEMO)
            atomic_store_explicit(&fikit_memo[prev - 1].next, (uint32_t)(m - fikit_memo) + 1, memory_order_release);
    }
    if (FIKIT_LIKELY(!k)) { /* (k is set only when the pair was just remembered) */
        k = atomic_load_explicit(&m->k, memory_order_relaxed);
        if (FIKIT_UNLIKELY(!fikit_memo_valid(s, k, m->id)))
            k = refresh(s, m, grid, block);
    }
    fikit_memo_step(c, m);
    return k;
}
