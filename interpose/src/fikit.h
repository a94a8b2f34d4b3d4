/*
 * libfikit.so internals shared between its files.  Nothing here is exported;
 * the exported surface is the hooked driver symbols (hooks.def), dlsym, and
 * the fikit_* functions marked FIKIT_API (layout, policy, simulator).
 */
#ifndef FIKIT_INTERNAL_H
#define FIKIT_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "fikit_cuda.h"
#include "fikit_shm.h"

#define FIKIT_API __attribute__((visibility("default")))
#define FIKIT_LIKELY(x) __builtin_expect(!!(x), 1)
#define FIKIT_UNLIKELY(x) __builtin_expect(!!(x), 0)
/* Every launch runs it: the linker keeps such functions together (.text.hot), so the
 * launch path spans few cache lines and pages of code. */
#define FIKIT_HOT __attribute__((hot))
/* The launch path's own steps, inlined into each launch wrapper whatever the compiler would
 * choose: each call out of line is code lines of its own. */
#define FIKIT_INLINE inline __attribute__((always_inline))

/* The next free position of a table filled in order (its cursor below limit), taken for the
 * caller; UINT32_MAX when the table is full.  The kernel table and the launch memo both fill so. */
static inline uint32_t fikit_take_next(_Atomic uint32_t *cursor, uint32_t limit)
{
    uint32_t e = atomic_load_explicit(cursor, memory_order_relaxed);
    do {
        if (e >= limit)
            return UINT32_MAX;
    } while (!atomic_compare_exchange_weak_explicit(cursor, &e, e + 1, memory_order_relaxed, memory_order_relaxed));
    return e;
}

/* ---- layout.c ---------------------------------------------------------- */
unsigned fikit_held_bucket(uint64_t held_ns);

/* ---- clock.c ---------------------------------------------------------- */
/* The one clock every fikit timestamp uses, shared across processes: CLOCK_MONOTONIC through
 * the vDSO, no system call.  Inline, as everything a launch runs on its common path: each call
 * out of line is code lines a real program has evicted between two launches. */
static FIKIT_INLINE uint64_t fikit_clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
FIKIT_API uint64_t fikit_now_ns(void); /* the same clock, exported for bench/launch_loop.c */

/* ---- log.c ------------------------------------------------------------ */
void fikit_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Logs once per distinct call site: the flag lives with the caller. */
void fikit_log_once(_Atomic int *flag, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
extern int fikit_debug;

/* ---- kid.c: kernel identity ------------------------------------------- */
uint64_t fikit_hash_bytes(const void *p, uint64_t n, uint64_t seed);
uint64_t fikit_name_hash(const char *name); /* the name part of a kernel id */
uint64_t fikit_kernel_id(uint64_t name_hash, const uint32_t grid[3], const uint32_t block[3], uint32_t smem);
/* Where a device's launches are in the launch memo (kid.c): the entry of its latest launch,
 * and the entry that followed that one last time (entry + 1; 0 none).  Programs launch their
 * kernels in cycles, so the guess is usually right, and a right guess reads no index. */
struct fikit_memo_cursor {
    _Atomic uint32_t prev, guess;
};
/* The launch memo's entries (kid.c says how it works): (device, function, shape) -> its entry
 * in the kernel table, one line each, in order of first launch.  A key never changes once
 * published; k is replaced when the device's slot moves. */
#define FIKIT_MEMO 2048
struct fikit_memo {
    CUfunction f;
    uint32_t dev, smem;
    uint32_t grid[3], block[3];
    uint64_t id;
    struct fikit_kstat *_Atomic k;
    _Atomic uint32_t next; /* the entry launched after this one last time, + 1 (0: none yet) */
} __attribute__((aligned(64)));
extern struct fikit_memo fikit_memo[FIKIT_MEMO];

static FIKIT_INLINE bool fikit_memo_is(const struct fikit_memo *m, int dev, CUfunction f, const uint32_t grid[3],
                                       const uint32_t block[3], uint32_t smem)
{
    return m->f == f && m->dev == (uint32_t)dev && m->smem == smem && m->grid[0] == grid[0] &&
           m->grid[1] == grid[1] && m->grid[2] == grid[2] && m->block[0] == block[0] && m->block[1] == block[1] &&
           m->block[2] == block[2];
}

/* k is still id's entry in slot s's table (a slot moved to a new file, or a child's fresh one,
 * is another table). */
static FIKIT_INLINE bool fikit_memo_valid(const struct fikit_slot *s, struct fikit_kstat *k, uint64_t id)
{
    uintptr_t off = (uintptr_t)k - (uintptr_t)s->ktab;
    return k && off < sizeof s->ktab && atomic_load_explicit(&k->id, memory_order_relaxed) == id;
}

/* The cursor moves to m, and guesses what followed m last time; that entry is fetched into the
 * cache now, since it was last touched a whole cycle of the program ago. */
static FIKIT_INLINE void fikit_memo_step(struct fikit_memo_cursor *c, struct fikit_memo *m)
{
    atomic_store_explicit(&c->prev, (uint32_t)(m - fikit_memo) + 1, memory_order_relaxed);
    uint32_t next = atomic_load_explicit(&m->next, memory_order_acquire);
    atomic_store_explicit(&c->guess, next, memory_order_release);
    if (FIKIT_LIKELY(next - 1u < FIKIT_MEMO))
        __builtin_prefetch(&fikit_memo[next - 1], 0, 3);
}

/* fikit_kernel_entry when the cursor's guess was not the launch's pair (or its entry moved). */
struct fikit_kstat *fikit_kernel_entry_missed(struct fikit_slot *s, int dev, CUfunction f, const uint32_t grid[3],
                                              const uint32_t block[3], uint32_t smem, struct fikit_memo_cursor *c,
                                              bool *first);

/* The kernel-table entry (in slot s, device dev's) of a launch of f with this shape, created on
 * first sight; NULL when the table is full.  Remembered per (device, function, shape): a launch
 * repeating a pair reads one memo line (its index's too when c guessed wrong) and the entry.
 * Sets *first (and leaves it alone otherwise) when the pair is new to this process: this may
 * be the function's first launch, though its entry (an id: a name and a shape) is not new.
 * The cursor and links are hints, read and written without locks: each guess is checked. */
static FIKIT_INLINE struct fikit_kstat *fikit_kernel_entry(struct fikit_slot *s, int dev, CUfunction f,
                                                           const uint32_t grid[3], const uint32_t block[3],
                                                           uint32_t smem, struct fikit_memo_cursor *c, bool *first)
{
    uint32_t g = atomic_load_explicit(&c->guess, memory_order_acquire);
    if (FIKIT_LIKELY(g - 1u < FIKIT_MEMO)) {
        struct fikit_memo *m = &fikit_memo[g - 1];
        struct fikit_kstat *k = atomic_load_explicit(&m->k, memory_order_relaxed);
        if (FIKIT_LIKELY(fikit_memo_is(m, dev, f, grid, block, smem) && fikit_memo_valid(s, k, m->id))) {
            fikit_memo_step(c, m);
            return k;
        }
    }
    return fikit_kernel_entry_missed(s, dev, f, grid, block, smem, c, first);
}

/* ---- measure.c: kernel table and statistics (no driver calls) ---------- */
struct fikit_kstat *fikit_ktab_get(struct fikit_slot *s, uint64_t id, const char *name, const uint32_t grid[3],
                                   const uint32_t block[3], uint32_t smem, uint32_t kind);
struct fikit_kstat *fikit_ktab_find(struct fikit_slot *s, uint64_t id);
void fikit_kstat_add_dur(struct fikit_kstat *k, uint64_t ns);
/* One measured run of kernel k (events or CUPTI): its statistics and the slot's GPU time. */
void fikit_measured(struct fikit_slot *s, struct fikit_kstat *k, uint64_t ns);
void fikit_kstat_add_gap(struct fikit_kstat *k, uint64_t ns);
/* A kernel's predicted duration, 0 when never measured. */
static FIKIT_INLINE uint64_t fikit_kstat_dur_pred(const struct fikit_kstat *k)
{
    return atomic_load_explicit(&k->dur_n, memory_order_relaxed) ? k->dur_pred_ns : 0;
}
/* The gap predicted after it: conservative, the shortest recent one. */
static FIKIT_INLINE uint64_t fikit_kstat_gap_pred(const struct fikit_kstat *k)
{
    if (k->gap_n == 0 || k->gap_min_ns == UINT32_MAX)
        return 0;
    return k->gap_min_ns;
}
double fikit_ring_quantile(const uint32_t *ring, uint64_t n, double q);

/* ---- policy.c: the hold / release decision (pure: no driver, no clock) -- */
struct fikit_params {
    uint32_t mode;
    uint64_t budget_ns;
    uint64_t idle_ns;
    uint64_t unknown_ns;
    uint32_t min_lp_share_pm;
    uint32_t corun_sm_pct;
};
/* A more urgent client, as its slot says now. */
struct fikit_peer {
    uint64_t last_launch_ns;
    uint64_t busy_until_ns;
    uint64_t next_launch_ns;
    uint32_t syncing; /* its host waits for its GPU work: busy whatever the prediction */
    uint32_t _pad;
};
/* The deciding client's own state. */
struct fikit_self {
    uint64_t busy_until_ns; /* predicted end of its own queued GPU work */
    uint64_t held_since_ns; /* 0 when this launch is not waiting yet */
};
enum fikit_verdict {
    FIKIT_GO_FREE = 0, /* nobody above: launch */
    FIKIT_GO_IDLE,     /* everyone above idles: launch */
    FIKIT_GO_GAP,      /* fits the gap of the clients above: launch */
    FIKIT_GO_GUARD,    /* starvation guard: launch */
    FIKIT_GO_CORUN,    /* run beside busy HP on the LP share of SMs */
    FIKIT_WAIT,        /* hold until *retry_at (or a change) */
};
FIKIT_API int fikit_policy_decide(const struct fikit_params *p, const struct fikit_peer *peers, int n_peers,
                                  const struct fikit_self *self, uint64_t now, uint64_t dur_ns, int known,
                                  uint64_t *retry_at);
/* After a launch: advance the launching client's own predictions (inline on the launch path;
 * exported as fikit_policy_note_launch for the simulator and tests). */
static FIKIT_INLINE void fikit_note_launch(struct fikit_slot *s, uint64_t now, uint64_t dur_pred_ns,
                                           uint64_t gap_pred_ns, uint64_t unknown_ns)
{
    uint64_t d = dur_pred_ns ? dur_pred_ns : unknown_ns;
    uint64_t busy = atomic_load_explicit(&s->busy_until_ns, memory_order_relaxed);
    busy = (busy > now ? busy : now) + d;
    atomic_store_explicit(&s->last_launch_ns, now, memory_order_relaxed);
    atomic_store_explicit(&s->busy_until_ns, busy, memory_order_relaxed);
    atomic_store_explicit(&s->next_launch_ns, busy + gap_pred_ns, memory_order_release);
}
FIKIT_API void fikit_policy_note_launch(struct fikit_slot *s, uint64_t now, uint64_t dur_pred_ns,
                                        uint64_t gap_pred_ns, uint64_t unknown_ns);
void fikit_params_from_domain(const struct fikit_domain *d, struct fikit_params *p);

/* ---- client.c: per-GPU domains, slots, registration, peers ------------- */
/*
 * A process is a client of every GPU it launches on: one fikit_dev per
 * device, attached at the first launch on it, each with its own slot (in that
 * GPU's domain, or private when the GPU has none), registration, peers and
 * measurement pool.  A launch finds its device through a cache keyed by the
 * current context: one driver call (no system call) and a short scan.
 */
#define FIKIT_MAX_DEVS 16

struct fikit_peer_map {
    struct fikit_slot *s; /* mapped header, or NULL */
    uint32_t gen;         /* grant generation it was mapped for */
    int32_t pid;
};

/* What every launch reads and writes of its device's measurement pool (launch.c's): the
 * previous launch on the device, for the gap after it, with what the gap needs of its kernel's
 * entry, so that the launch after it need not read that entry. */
struct fikit_pool_hot {
    _Atomic uint64_t last_launch_t;
    struct fikit_kstat *_Atomic last_launch_k;
    _Atomic uint64_t last_end_pred; /* when that kernel should end, as predicted at its launch */
    _Atomic uint32_t last_gap_pred; /* its shortest recent gap: a shorter one is always recorded */
    _Atomic bool last_gap_every;    /* its gaps not settled yet: each one is recorded */
    _Atomic bool several_streams;   /* see last_stream */
    _Atomic uint64_t last_sync_end;
    /* The stream of the latest launch, and whether work may be queued on another one too: a
     * sync of that stream then says the device has finished all this client queued. */
    _Atomic(CUstream) last_stream;
    struct fikit_memo_cursor memo; /* where this device's launches are in the launch memo */
} __attribute__((aligned(64)));
_Static_assert(sizeof(struct fikit_pool_hot) == 64, "a device's measurement pool: one line a launch");

/* fikit_dev.launcher: no launch yet (NONE), the one launching thread's pointer, that pointer
 * | 1 while a second thread switches the device to locked adds (thread pointers are aligned, so
 * the low bit is free), then SEVERAL for good (launch.c says why). */
enum { FIKIT_LAUNCHERS_NONE = 0, FIKIT_LAUNCHERS_SEVERAL = 1 };

struct fikit_dev {
    /* Read by every launch: kept in the struct's first two cache lines. */
    struct fikit_slot *me;    /* our slot: in the domain, or a private anonymous one */
    struct fikit_domain *dom; /* NULL: no domain for this GPU (measured, never held) */
    int index;                /* in the device table; also the measurement pool's and co-run state's */
    _Atomic int n_peer_idx;   /* higher-priority peers (peer_idx below) */
    _Atomic uint64_t peers_gen; /* the domain generation they were read at */
    _Atomic uint64_t gen_seen_ns; /* when a launch last read that generation */
    _Atomic uintptr_t launcher;   /* its one launching thread's pointer, or FIKIT_LAUNCHERS_* (above) */
    struct fikit_pool_hot pool;   /* the second line */
    int ordinal;              /* the CUdevice, as this process numbers them */
    int slot_index;           /* -1 without a domain slot */
    _Atomic int sock;         /* registration connection kept open, -1 none */
    bool shared;              /* me lives in the domain */
    bool profile_merged;      /* the stored profile is merged once, whichever registration succeeds first */
    unsigned profile_kernels; /* kernels merged from it */
    uint32_t n_slots;
    uint64_t slot_ino;        /* our slot file, to tell whether it is still there */
    char uuid[48];            /* GPU-..., "" when the driver would not say */
    char dir[256];            /* the domain directory */
    /* Higher-priority peers' slots, refreshed when the domain's generation moves. */
    pthread_mutex_t peer_lock;
    int peer_idx[FIKIT_MAX_SLOTS];
    struct fikit_peer_map peer_maps[FIKIT_MAX_SLOTS];
} __attribute__((aligned(64)));
_Static_assert(offsetof(struct fikit_dev, pool) == 64, "what a launch reads of its device: its first two lines");

extern int fikit_req_prio; /* FIKIT_PRIO: the level this process asks for */
void fikit_client_start(void);
void fikit_client_after_fork(void);
void fikit_client_stop(void);
/* Context -> device, as launches find their device: the one device, the driver's query, the
 * count and the first two entries are one cache line (checked in client.c).  A process that sees
 * one device (the common case: CUDA_VISIBLE_DEVICES names one GPU) launches on it whatever its
 * context, so `only` names it once attached and its launches ask the driver nothing. */
#define FIKIT_CTX_CACHE 64
struct fikit_ctx_cache {
    _Atomic(struct fikit_dev *) only;      /* the device, when the driver counts one; else NULL */
    fikit_pfn_cuCtxGetCurrent get_current; /* fikit_drv's, copied here at start */
    _Atomic int n;
    struct {
        CUcontext ctx;
        struct fikit_dev *dev;
    } e[FIKIT_CTX_CACHE];
} __attribute__((aligned(64)));

/* ---- the hot page (defined in launch.c) ---------------------------------- */
enum fikit_hook_id {
#define HOOK(name, kind, base) FIKIT_HOOK_##name,
#include "hooks.def"
#undef HOOK
    FIKIT_HOOK_COUNT
};
/* What sets a launch off the common path, one bit each in fikit_config.flags: a launch reads the
 * one word, and with it 0 (initialised, none of the rest) it checks nothing else of these. */
enum fikit_cfg_flag {
    FIKIT_CFG_UNREADY = 1,       /* not initialised yet */
    FIKIT_CFG_MEASURING_OFF = 2, /* fikit_set_measuring(0) */
    FIKIT_CFG_BYPASS = 4,        /* fikit_set_bypass(1) */
    FIKIT_CFG_PASSTHROUGH = 8,   /* FIKIT_PASSTHROUGH=1 */
    FIKIT_CFG_PROFILE = 16,      /* FIKIT_PROFILE=1 */
    FIKIT_CFG_BURST = 32,        /* the next launch starts a burst (quiet.c) */
    FIKIT_CFG_QUIET = 64,        /* a quiet burst: launches between strides are only counted */
};
struct fikit_config {
    _Atomic uint32_t flags; /* enum fikit_cfg_flag */
    uint32_t sample;        /* measure 1 in N after the first FIKIT_WARM launches */
    _Atomic uint32_t quiet_mask;   /* the quiet stride - 1: a launch whose count has these bits 0 publishes */
    _Atomic uint64_t quiet_gap_ns; /* a gap this long inside a burst keeps its client publishing every launch
                                    * (UINT64_MAX: none does, quiet launches being off) */
} __attribute__((aligned(64)));
/*
 * What every launch reads of the process's own state, in one page: between two launches a real
 * program's own work evicts the TLB as well as the caches, and each page a launch touches may
 * cost it a page walk.  Next to the real driver, with 4,096 lines written between launches, the
 * whole library cost a launch 227 ns with those lines over 64 pages and 406 ns over 4,096; with
 * this page, 164 and 258 (bench/launch_loop.c PAGES, bench/results/2026-11-26-h100-price8).
 * Laid out in one page-aligned object: the config's flags, the launch hooks' real functions
 * (resolve.c), the context cache (client.c) and the first two devices' hot lines with their
 * pools' (client.c, launch.c); the rest of the devices follow.
 */
struct fikit_hot {
    struct fikit_config cfg;
    void *real[FIKIT_HOOK_COUNT] __attribute__((aligned(64))); /* the launch hooks come first: one line */
    struct fikit_ctx_cache ctxs;
    struct fikit_dev devs[FIKIT_MAX_DEVS];
} __attribute__((aligned(4096)));
_Static_assert(offsetof(struct fikit_hot, devs[1].pool) + sizeof(struct fikit_pool_hot) <= 4096,
               "the flags, the real functions, the context cache and two devices' hot lines: one page");
extern struct fikit_hot fikit_hot;
/* ctx's device, attached on first use; NULL only when no slot could be made. */
struct fikit_dev *fikit_dev_for_ctx(CUcontext ctx);
/* The device of every launch in pass-through mode (one private slot), without a driver call. */
struct fikit_dev *fikit_dev_passthrough(void);
/* The calling thread's current context, NULL when the driver cannot say. */
static FIKIT_INLINE CUcontext fikit_ctx_current(void)
{
    CUcontext c = NULL;
    if (FIKIT_UNLIKELY(!fikit_hot.ctxs.get_current) || fikit_hot.ctxs.get_current(&c) != CUDA_SUCCESS)
        return NULL;
    return c;
}
/* The device of a launch (the current context's): *ctx gets the current context (NULL if
 * unknown, or not asked for: a process of one device).  A process's first context is checked
 * inline, the rest out of line. */
static FIKIT_INLINE struct fikit_dev *fikit_dev_for_launch(CUcontext *ctx)
{
    struct fikit_dev *only = atomic_load_explicit(&fikit_hot.ctxs.only, memory_order_acquire);
    if (FIKIT_LIKELY(only)) {
        *ctx = NULL;
        return only;
    }
    *ctx = fikit_ctx_current();
    if (FIKIT_LIKELY(atomic_load_explicit(&fikit_hot.ctxs.n, memory_order_acquire) > 0 &&
                     fikit_hot.ctxs.e[0].ctx == *ctx))
        return fikit_hot.ctxs.e[0].dev;
    return fikit_dev_for_ctx(*ctx);
}
/* Whether a launch on d at `now` may have a more urgent client to defer to (decide() then
 * says whether it does).  A client with no one above it (every HP launch) reads the domain's
 * generation at most once a millisecond, so a new client above it is seen within 1 ms: the
 * domain's line is left alone in between (a launch that reads it meets a miss, and an HP
 * launches every few microseconds). */
#define FIKIT_GEN_CHECK_NS 1000000ull
bool fikit_may_defer_now(struct fikit_dev *d, uint64_t now); /* the generation read now */
static FIKIT_INLINE bool fikit_may_defer(struct fikit_dev *d, uint64_t now)
{
    if (!d->dom)
        return false;
    if (atomic_load_explicit(&d->n_peer_idx, memory_order_relaxed) == 0 &&
        now - atomic_load_explicit(&d->gen_seen_ns, memory_order_relaxed) < FIKIT_GEN_CHECK_NS)
        return false;
    return fikit_may_defer_now(d, now);
}
/* The device already attached for ctx (NULL: the current one); NULL if none: never attaches. */
struct fikit_dev *fikit_dev_of_ctx(CUcontext ctx);
int fikit_dev_count(void);             /* attached devices, the one of those beyond the table included */
struct fikit_dev *fikit_dev_at(int i); /* 0 <= i < fikit_dev_count() */
void fikit_peer_dead(struct fikit_dev *d, int32_t pid);
int fikit_peers_snapshot(struct fikit_dev *d, struct fikit_peer *out, int max, int *pids);
int fikit_effective_prio(const struct fikit_dev *d); /* d NULL: the requested level */
void fikit_program_name(char *out, size_t n);        /* the profile key */

/* A slot's launches: the sum of its per-path counts (there is no second count to keep). */
static inline uint64_t fikit_slot_launches(const struct fikit_slot *s)
{
    uint64_t n = 0;
    for (int i = 0; i < 4; i++)
        n += atomic_load_explicit(&s->path_launches[i], memory_order_relaxed);
    return n;
}

/* ---- quiet.c: an HP that publishes once a stride ----------------------- */
/* A burst's first launch (FIKIT_CFG_BURST): t is its time, before the burst's launches. */
void fikit_quiet_burst(struct fikit_dev *d, uint64_t t);
/* A quiet burst's stride launch (after its first): false when it is quiet no more. */
bool fikit_quiet_stride(struct fikit_dev *d, uint64_t t, CUstream stream);
/* After a launch that publishes for its stride: the predictions it covers. */
void fikit_quiet_publish(struct fikit_dev *d, uint64_t t);
/* A gap of quiet_gap_ns or more inside a burst, after kernel `after`. */
void fikit_quiet_wide_gap(struct fikit_dev *d, const struct fikit_kstat *after);
/* A sync that left nothing queued: the burst ends; whether the next is quiet. */
void fikit_quiet_synced(struct fikit_dev *d);
void fikit_quiet_leave(struct fikit_dev *d); /* a more urgent client came, or measuring changed */
void fikit_quiet_reset(void);                /* a forked child's: none of its parent's bursts */
struct fikit_quiet_counts {
    uint32_t stride;      /* the stride it publishes at while quiet (1: quiet launches off) */
    uint64_t quiet_bursts; /* bursts published once a stride */
    uint64_t full_bursts;  /* bursts published every launch (learning, refreshing, wide gaps) */
    uint64_t quiet_launches; /* launches only counted */
    uint64_t wide_gaps;   /* gaps inside bursts, predicted as long, that kept it publishing every launch */
};
void fikit_quiet_counts(const struct fikit_dev *d, struct fikit_quiet_counts *out);

/* ---- stats.c ----------------------------------------------------------- */
void fikit_stats_write(const char *path_template);

/* ---- resolve.c --------------------------------------------------------- */
extern void *const fikit_wrappers[FIKIT_HOOK_COUNT];
void *fikit_wrap_procaddr(const char *symbol, void *p, int version, cuuint64_t flags);
void *fikit_real_sym(const char *name); /* a driver symbol, unwrapped */
void *fikit_sym(void *handle, const char *name); /* any other library's symbol, through the real dlsym */
void fikit_resolve_init(void);

/* Driver functions fikit calls for itself (not hooked). */
struct fikit_driver {
    fikit_pfn_cuFuncGetName cuFuncGetName;
    fikit_pfn_cuKernelGetName cuKernelGetName;
    fikit_pfn_cuEventCreate cuEventCreate;
    fikit_pfn_cuEventDestroy_v2 cuEventDestroy;
    fikit_pfn_cuEventRecord cuEventRecord;
    fikit_pfn_cuEventQuery cuEventQuery;
    fikit_pfn_cuEventElapsedTime_v2 cuEventElapsedTime;
    fikit_pfn_cuCtxGetCurrent cuCtxGetCurrent;
    fikit_pfn_cuStreamIsCapturing cuStreamIsCapturing;
    fikit_pfn_cuStreamQuery cuStreamQuery;
    fikit_pfn_cuMemHostAlloc cuMemHostAlloc;
    fikit_pfn_cuMemHostGetDevicePointer_v2 cuMemHostGetDevicePointer;
    fikit_pfn_cuStreamWaitValue32_v2 cuStreamWaitValue32;
    fikit_pfn_cuStreamWaitEvent cuStreamWaitEvent;
    fikit_pfn_cuCtxGetDevice cuCtxGetDevice;
    fikit_pfn_cuDeviceGetCount cuDeviceGetCount;
    fikit_pfn_cuDeviceGetUuid_v2 cuDeviceGetUuid;
    fikit_pfn_cuDeviceGetDevResource cuDeviceGetDevResource;
    fikit_pfn_cuDevSmResourceSplitByCount cuDevSmResourceSplitByCount;
    fikit_pfn_cuDevResourceGenerateDesc cuDevResourceGenerateDesc;
    fikit_pfn_cuGreenCtxCreate cuGreenCtxCreate;
    fikit_pfn_cuGreenCtxStreamCreate cuGreenCtxStreamCreate;
};

/* ---- corun.c: LP launches beside busy HP on a green context ------------- */
/* Prepare a redirected launch: *run_on is the stream to launch on. */
/* Per device (d->index): each GPU has its own green contexts, one per share. */
bool fikit_corun_begin(int di, CUstream app, uint32_t pct, CUstream *run_on);
void fikit_corun_end(int di, CUstream app, CUstream green);
bool fikit_corun_usable(int di);
void fikit_corun_after_fork(void);
extern struct fikit_driver fikit_drv;

/* ---- cupti.c: kernel durations from CUPTI in profiling mode ------------- */
/* Starts CUPTI at the first call; true while CUPTI, not events, times kernel
 * launches (false: CUPTI unavailable, time them by events). */
bool fikit_cupti_timing(void);
/* Leaves a stream's kernels untimed; false when that cannot be done while CUPTI times kernels. */
bool fikit_cupti_ignore_stream(CUstream stream);
struct fikit_cupti_counts {
    uint64_t records;    /* kernel records received */
    uint64_t timed;      /* fed into a kernel's statistics */
    uint64_t graph;      /* kernels replayed from a graph: not timed */
    uint64_t ignored;    /* on a stream left untimed (co-running) */
    uint64_t unmatched;  /* no kernel of the table has the record's id */
    uint64_t incomplete; /* CUPTI had no timestamps for it */
    uint64_t dropped;    /* records CUPTI dropped for want of buffer space */
};
/* False unless CUPTI timed kernels in this process. */
bool fikit_cupti_counts(struct fikit_cupti_counts *out);
void fikit_cupti_after_fork(void);

/* ---- launch.c ---------------------------------------------------------- */
void fikit_init(void); /* pthread_once; safe from any hook */
static inline bool fikit_cfg_has(uint32_t flag)
{
    return (atomic_load_explicit(&fikit_hot.cfg.flags, memory_order_relaxed) & flag) != 0;
}
void fikit_harvest(bool wait_all);
/* The measurement gates' watchdog, for FIKIT_STATS: how often it found a shut gate's thread
 * merely waiting for a CPU (and waited on), and whether it turned gating off. */
struct fikit_gate_counts {
    uint64_t preempted_waits;
    bool turned_off;
};
void fikit_gate_counts(struct fikit_gate_counts *out);
/* The watchdog's rule for a gate shut shut_ns ago, whose thread is in scheduler state `state`
 * ('R' runnable, 'S'/'D' asleep) and ran cpu_ns since: 1 when that thread merely waits for a
 * CPU, so its launch is not blocked (exported for the tests). */
FIKIT_API int fikit_gate_preempted(char state, uint64_t cpu_ns, uint64_t shut_ns);
/* Benchmarks of the library's own cost: with `on` 0, launches are counted but neither
 * identified, decided nor measured, as in pass-through, until it is called with 1 again, so
 * one process can alternate both states (bench/overhead_probe.py --toggle-ms).  Returns the
 * previous state.  Never for a client below another: a paused client defers to no one. */
FIKIT_API int fikit_set_measuring(int on);
/* Benchmarks of the whole library's cost: with `on` 1, launches go straight to the driver, not
 * even counted or looked up by device, until it is called with 0 again; what remains is the
 * call through the wrapper (bench/launch_loop.c EXTRA 128, bench/overhead_probe.py
 * toggle_bypass).  Returns the previous state.  Never for a client below another. */
FIKIT_API int fikit_set_bypass(int on);

#endif /* FIKIT_INTERNAL_H */
