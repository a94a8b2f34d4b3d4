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
struct name_entry {
    _Atomic(CUfunction) f;
    const char *_Atomic name;
    uint64_t hash;
};
static struct name_entry cache[NAME_CACHE];

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

const char *fikit_func_name(CUfunction f, uint64_t *name_hash)
{
    uint64_t slot = fikit_hash_bytes(&f, sizeof f, 0) & (NAME_CACHE - 1);
    for (int probe = 0; probe < NAME_CACHE; probe++) {
        struct name_entry *e = &cache[(slot + (uint64_t)probe) & (NAME_CACHE - 1)];
        CUfunction cur = atomic_load_explicit(&e->f, memory_order_acquire);
        if (cur == f) {
            const char *n = atomic_load_explicit(&e->name, memory_order_acquire);
            if (n) {
                *name_hash = e->hash;
                return n;
            }
            break; /* another thread is filling it: compute without caching */
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
