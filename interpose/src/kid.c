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
 * The launch memo: (function, shape) -> its kernel-table entry, direct-mapped,
 * one cache line an entry.  A launch that repeats a recent (function, shape)
 * pair on a device, nearly every launch of a settled program, neither hashes
 * the name and shape byte by byte nor probes the kernel table.  Entries are read under a
 * sequence count: a reader that sees it odd or changed takes the slow way,
 * never a torn entry.  Two pairs that share an entry take turns in it.
 */
#define MEMO 4096
#define MEMO_BITS 12
_Static_assert(MEMO == 1 << MEMO_BITS, "the memo is indexed by MEMO_BITS bits");
struct memo {
    _Atomic uint32_t seq; /* odd while the entry is being written */
    _Atomic uint32_t smem;
    _Atomic(CUfunction) f;
    _Atomic uint32_t grid[3], block[3];
    _Atomic uint64_t id;
    struct fikit_kstat *_Atomic k;
} __attribute__((aligned(64)));
_Static_assert(sizeof(struct memo) == 64, "a memo entry is one cache line");
static struct memo memo[MEMO];

static inline struct memo *memo_of(const struct fikit_slot *s, CUfunction f, const uint32_t grid[3],
                                   const uint32_t block[3], uint32_t smem)
{
    /* Grids and blocks are small: shifted apart, they rarely cancel each other.  The slot
     * (one per device) is in the key, so one kernel launched on two GPUs keeps two entries. */
    uint64_t v = (uint64_t)(uintptr_t)f ^ ((uint64_t)(uintptr_t)s >> 12) ^ ((uint64_t)grid[0] << 17) ^ ((uint64_t)grid[1] << 37) ^
                 ((uint64_t)grid[2] << 49) ^ ((uint64_t)block[0] << 3) ^ ((uint64_t)block[1] << 27) ^
                 ((uint64_t)block[2] << 45) ^ ((uint64_t)smem << 31);
    return &memo[fib(v, MEMO_BITS)];
}

#define RLX(x) atomic_load_explicit(&(x), memory_order_relaxed)
static inline bool memo_matches(const struct memo *m, CUfunction f, const uint32_t grid[3],
                                const uint32_t block[3], uint32_t smem)
{
    return RLX(m->f) == f && RLX(m->smem) == smem && RLX(m->grid[0]) == grid[0] && RLX(m->grid[1]) == grid[1] &&
           RLX(m->grid[2]) == grid[2] && RLX(m->block[0]) == block[0] && RLX(m->block[1]) == block[1] &&
           RLX(m->block[2]) == block[2];
}

/* Not in the memo: identify the launch, find or make its entry, and remember it. */
__attribute__((noinline, cold)) static struct fikit_kstat *kernel_entry_slow(struct fikit_slot *s, struct memo *m,
                                                                          uint32_t seq, CUfunction f,
                                                                          const uint32_t grid[3],
                                                                          const uint32_t block[3], uint32_t smem)
{
    uint64_t nh;
    const char *name = func_name(f, &nh);
    uint64_t id = fikit_kernel_id(nh, grid, block, smem);
    struct fikit_kstat *k = fikit_ktab_get(s, id, name, grid, block, smem, 0);
    /* Remember it, unless another thread is writing this entry now. */
    if (!k || (seq & 1) ||
        !atomic_compare_exchange_strong_explicit(&m->seq, &seq, seq + 1, memory_order_acquire, memory_order_relaxed))
        return k;
    atomic_thread_fence(memory_order_release);
#define SET(x, v) atomic_store_explicit(&(x), (v), memory_order_relaxed)
    SET(m->f, f);
    SET(m->smem, smem);
    for (int d = 0; d < 3; d++) {
        SET(m->grid[d], grid[d]);
        SET(m->block[d], block[d]);
    }
    SET(m->id, id);
    SET(m->k, k);
#undef SET
    atomic_store_explicit(&m->seq, seq + 2, memory_order_release);
    return k;
}

struct fikit_kstat *fikit_kernel_entry(struct fikit_slot *s, CUfunction f, const uint32_t grid[3],
                                       const uint32_t block[3], uint32_t smem)
{
    struct memo *m = memo_of(s, f, grid, block, smem);
    uint32_t seq = atomic_load_explicit(&m->seq, memory_order_acquire);
    struct fikit_kstat *k = RLX(m->k);
    uint64_t id = RLX(m->id);
    bool hit = !(seq & 1) && k && memo_matches(m, f, grid, block, smem);
    atomic_thread_fence(memory_order_acquire);
    /* k must still be this id's entry in this slot's table: a slot moved to a new file (or a
     * child's fresh one) is another table. */
    uintptr_t off = (uintptr_t)k - (uintptr_t)s->ktab;
    if (FIKIT_LIKELY(hit && RLX(m->seq) == seq && off < sizeof s->ktab && RLX(k->id) == id))
        return k;
    return kernel_entry_slow(s, m, seq, f, grid, block, smem);
}
