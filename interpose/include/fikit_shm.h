/*
 * fikit shared-memory layout: the one statement of it.
 *
 * A scheduling domain is one GPU.  Its state lives in a directory
 * (<runtime_dir>/gpu<N>, linked from <runtime_dir>/by-uuid/<uuid>; a process
 * joins the domain of each GPU it launches on, docs/design.md) holding
 *
 *   domain        struct fikit_domain, written only by fikitd (root, 0644):
 *                 mode, budgets, and the priority *granted* to every slot.
 *                 Clients map it read-only, so no client can raise itself.
 *   slot.<i>      struct fikit_slot, one file per client, created by that
 *                 client (0644 in a sticky 1777 directory): its live timing
 *                 state, counters and kernel table (dense, in order of first
 *                 launch, found through its index).  Only its owner writes it;
 *                 every client of the domain reads it.
 *
 * The hot path reads these with plain atomic loads: no system call and no
 * round trip to the daemon.  Python reads the same layout through
 * fikitd/shm.py, which asks libfikit.so for the field table
 * (fikit_layout_fields) instead of restating offsets, so this file is the
 * only place the layout is written.
 *
 * Fields are declared once, through X-macros: F(type, name) for a scalar,
 * A(type, name, count) for an array, S(struct, name, count) for an array of
 * described structs.  Times are CLOCK_MONOTONIC nanoseconds; durations are
 * nanoseconds unless the name says otherwise.
 */
#ifndef FIKIT_SHM_H
#define FIKIT_SHM_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define FIKIT_SHM_VERSION 3u /* 3: quiet launches (domain quiet_stride, quiet_gap_us; slot stride) */
#define FIKIT_DOMAIN_MAGIC 0x4e4d44544b4946ull /* "FIKTDMN" */
#define FIKIT_SLOT_MAGIC 0x544f4c534b4946ull   /* "FIKSLOT" */
#define FIKIT_MAX_SLOTS 64
#define FIKIT_KTAB_SIZE 1024 /* kernel table entries per slot, power of two */
#define FIKIT_KINDEX_SIZE (2 * FIKIT_KTAB_SIZE) /* buckets of the kernel table's index */
#define FIKIT_NAME_LEN 128   /* kernel names are truncated to this */
#define FIKIT_PROG_LEN 64
#define FIKIT_RING 32 /* recent samples kept per kernel for quantiles */
#define FIKIT_HELD_BUCKETS 12 /* held-time histogram; bounds from fikit_held_bucket_bounds_us() */

/* Scheduler modes (fikit_domain.mode). */
#define FIKIT_MODE_FIKIT 0u  /* hold LP while HP is busy, fill HP gaps */
#define FIKIT_MODE_STRICT 1u /* LP only while every higher client is idle */
#define FIKIT_MODE_OFF 2u    /* measure only, never hold */

/* Priority levels: smaller is more urgent (as MPS client priorities are). */
#define FIKIT_PRIO_HIGH 0
#define FIKIT_PRIO_NORMAL 1
#define FIKIT_PRIO_LOW 2
#define FIKIT_PRIO_MAX 7

/* fikit_domain.flags */
#define FIKIT_DOMAIN_SELF_GRANT 1u /* no daemon: clients' requested priority counts */

/* fikit_slot.state: what the client is doing now (for top and metrics). */
#define FIKIT_STATE_IDLE 0u
#define FIKIT_STATE_RUNNING 1u /* launching freely (top of its domain, or none above) */
#define FIKIT_STATE_HELD 2u    /* a launch is waiting in the library */
#define FIKIT_STATE_FILLING 3u /* launching into a higher client's gap */

typedef _Atomic uint64_t fikit_au64;
typedef _Atomic uint32_t fikit_au32;
typedef _Atomic int32_t fikit_ai32;

/* Which grant a slot holds in the domain (written by fikitd). */
#define FIKIT_GRANT_FIELDS(F, A, S)                                                   \
    F(fikit_ai32, pid)  /* owner pid, 0 = free */                                     \
    F(fikit_ai32, prio) /* granted level */                                           \
    F(fikit_au32, uid)                                                                \
    F(fikit_au32, gen) /* bumped when the slot changes hands */

/* One kernel id's measurements, in a client's kernel table.  Every launch reads and
 * writes only the first 64 bytes (and one line of the gap ring); entries are aligned
 * to cache lines (struct fikit_kstat below), so that is one line, not two. */
#define FIKIT_KSTAT_FIELDS(F, A, S)                                                   \
    F(fikit_au64, id)        /* 0 = empty entry */                                    \
    F(fikit_au64, count)     /* launches */                                           \
    F(fikit_au64, dur_n)     /* measured durations */                                 \
    F(fikit_au64, gap_n)     /* measured gaps */                                      \
    F(fikit_au64, dur_sum_ns)                                                         \
    F(fikit_au64, gap_sum_ns)                                                         \
    F(uint32_t, dur_ewma_ns) /* prediction: recent duration */                        \
    F(uint32_t, gap_ewma_ns) /* prediction: recent gap after this kernel */           \
    F(uint32_t, gap_min_ns)  /* shortest gap seen recently (conservative) */          \
    F(uint32_t, dur_pred_ns) /* predicted duration, kept current as samples come */   \
    F(uint32_t, kind)        /* 0 kernel, 1 graph */                                  \
    A(uint32_t, grid, 3)                                                              \
    A(uint32_t, block, 3)                                                             \
    F(uint32_t, smem)                                                                 \
    F(uint32_t, ring_pos)                                                             \
    A(uint32_t, dur_ring_ns, FIKIT_RING)                                              \
    A(uint32_t, gap_ring_ns, FIKIT_RING)                                              \
    A(char, name, FIKIT_NAME_LEN)

/* The domain header: configuration and grants, written by fikitd only. */
#define FIKIT_DOMAIN_FIELDS(F, A, S)                                                  \
    F(uint64_t, magic)                                                                \
    F(uint32_t, version)                                                              \
    F(uint32_t, domain_size)                                                          \
    F(uint32_t, slot_size)                                                            \
    F(uint32_t, n_slots)                                                              \
    F(uint32_t, gpu_index)                                                            \
    F(fikit_au32, flags)                                                              \
    A(char, gpu_uuid, 48)                                                             \
    F(fikit_au32, mode)                                                               \
    F(fikit_au32, budget_us)      /* most an HP launch may wait for LP work */        \
    F(fikit_au32, idle_us)        /* HP quiet this long past its prediction = idle */ \
    F(fikit_au32, unknown_us)     /* assumed length of a never-measured kernel */     \
    F(fikit_au32, min_lp_share_pm) /* starvation guard, per mille; 0 = off */         \
    F(fikit_au32, corun_sm_pct)   /* LP SM share beside busy HP; 0 = no co-run */     \
    F(fikit_au32, quiet_stride)   /* a settled HP's launches a prediction; 1: every one */ \
    F(fikit_au32, quiet_gap_us)   /* a gap this long in its bursts keeps it at every one */ \
    F(fikit_au64, generation)     /* bumped on every change by fikitd */              \
    F(fikit_au64, daemon_heartbeat_ns)                                                \
    S(grant, grants, FIKIT_MAX_SLOTS)

/* A client's slot: written by its owner only.  Grouped by cache line (checked in
 * layout.c): every launch writes the first line from `path_launches` on, every launch that
 * publishes (all, or a quiet burst's strides: quiet.c) the second too, and the clients below
 * read only the second, so their polling never meets the counters. */
#define FIKIT_SLOT_FIELDS(F, A, S)                                                    \
    F(uint64_t, magic)                                                                \
    F(uint32_t, version)                                                              \
    F(uint32_t, slot_size)                                                            \
    F(fikit_ai32, pid)                                                                \
    F(fikit_au32, uid)                                                                \
    F(fikit_ai32, prio_req)  /* priority the client asked for */                      \
    F(fikit_au32, state)                                                              \
    A(char, prog, FIKIT_PROG_LEN)                                                     \
    F(fikit_au64, start_ns)                                                           \
    F(fikit_au64, heartbeat_ns)   /* last time the library touched the slot */        \
    F(fikit_au64, syncs)                                                              \
    F(fikit_au32, ktab_used)      /* entries taken, in order of first launch */      \
    F(fikit_au32, wake)           /* futex word that held launches sleep on */        \
    /* line 2: the owner's counters (launches: the sum of path_launches) */          \
    A(fikit_au64, path_launches, 4) /* by fikit_path: Kernel, Ex, Coop, Graph */      \
    F(fikit_au64, idle_gap_ns)    /* measured idle time between its kernels */        \
    F(fikit_au64, _pad1)          /* free: the predictions start the next line */     \
    F(fikit_au64, filled_ns)      /* its GPU time (predicted) run in higher clients' idle time */ \
    F(fikit_au64, gpu_ns)         /* measured GPU time of its kernels */              \
    /* line 3: its predictions, what the clients below read */                        \
    F(fikit_au64, last_launch_ns)                                                     \
    F(fikit_au64, busy_until_ns)  /* predicted end of the GPU work it queued */       \
    F(fikit_au64, next_launch_ns) /* predicted earliest next launch */                \
    F(fikit_au32, syncing)        /* threads now waiting in a sync call: not idle */  \
    F(fikit_au32, stride)         /* launches per published prediction: 1, or quiet */ \
    F(fikit_au64, held_launches)                                                      \
    F(fikit_au64, held_ns)                                                            \
    A(fikit_au64, held_hist, FIKIT_HELD_BUCKETS) /* held launches by time held */     \
    F(fikit_au64, released_gap)   /* LP launches let into a higher client's gap */    \
    F(fikit_au64, released_idle)  /* LP launches while every higher client idled */   \
    F(fikit_au64, released_guard) /* released by the starvation guard */              \
    F(fikit_au64, released_corun) /* released to run beside busy HP */                \
    S(kstat, ktab, FIKIT_KTAB_SIZE) /* dense: ktab[0, ktab_used), id 0 = unused */   \
    A(fikit_au32, kindex, FIKIT_KINDEX_SIZE) /* id -> entry: (id >> 48) << 16 | entry + 1 */

#define FIKIT_DECL_F(type, name) type name;
#define FIKIT_DECL_A(type, name, n) type name[n];
#define FIKIT_DECL_S(sname, name, n) struct fikit_##sname name[n];

struct fikit_grant {
    FIKIT_GRANT_FIELDS(FIKIT_DECL_F, FIKIT_DECL_A, FIKIT_DECL_S)
};
struct fikit_kstat {
    FIKIT_KSTAT_FIELDS(FIKIT_DECL_F, FIKIT_DECL_A, FIKIT_DECL_S)
} __attribute__((aligned(64)));
struct fikit_domain {
    FIKIT_DOMAIN_FIELDS(FIKIT_DECL_F, FIKIT_DECL_A, FIKIT_DECL_S)
};
struct fikit_slot {
    FIKIT_SLOT_FIELDS(FIKIT_DECL_F, FIKIT_DECL_A, FIKIT_DECL_S)
};

/* Launch paths, in fikit_slot.path_launches order. */
enum fikit_path { FIKIT_PATH_KERNEL, FIKIT_PATH_EX, FIKIT_PATH_COOP, FIKIT_PATH_GRAPH };

/*
 * Layout description exported by libfikit.so for readers in other languages.
 * fikit_layout_fields(which, &n) returns n entries for which in
 * "domain", "slot", "grant", "kstat"; fikit_layout_size(which) the struct size.
 */
struct fikit_field_desc {
    const char *name;
    const char *type;   /* C type name, or "struct <name>" */
    uint32_t offset;
    uint32_t size;      /* of one element */
    uint32_t count;     /* 1 for scalars */
    uint32_t _pad;
};
const struct fikit_field_desc *fikit_layout_fields(const char *which, uint32_t *n);
uint32_t fikit_layout_size(const char *which);
uint32_t fikit_layout_version(void);
/* Upper bounds (us) of the held-time histogram's buckets; the last is unbounded (UINT32_MAX). */
const uint32_t *fikit_held_bucket_bounds_us(uint32_t *n);

#endif /* FIKIT_SHM_H */
