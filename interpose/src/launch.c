/*
 * The wrappers: every hooked launch, sync and resolution entry point.
 *
 * A launch goes through four steps, each skipped when it cannot help:
 *   count     always (per launch path), even in pass-through mode;
 *   identify  kernel id from name and shape, its kernel-table entry;
 *   decide    only for a client with a more urgent one above it in the
 *             domain: hold here until fikit_policy_decide lets it go;
 *   measure   a sample of launches is bracketed by timing events, harvested
 *             later (in profiling mode, CUPTI's records time every kernel
 *             instead: cupti.c); the gap before each launch is measured on
 *             the host.
 * Fail-open: a wrapper that has no real function to call returns the
 * driver's "not initialised" error, and everything else degrades to a plain
 * pass-through of the call.
 */
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "fikit.h"

struct fikit_hot fikit_hot = {.cfg = {.flags = FIKIT_CFG_UNREADY, .sample = 16, .quiet_gap_ns = UINT64_MAX}}; /* fikit.h */
static char stats_path[512]; /* FIKIT_STATS */
static pthread_once_t once = PTHREAD_ONCE_INIT;
static struct fikit_params params_default = {
    .mode = FIKIT_MODE_OFF, .budget_ns = 50000, .idle_ns = 500000, .unknown_ns = 1000000};

#define WARM_LAUNCHES 8     /* every launch of a kernel is measured until it has this many */
#define SETTLED_SAMPLES FIKIT_RING /* with its ring of recent runs full, its prediction is settled: */
#define SETTLED_FACTOR 64   /* it is sampled this many times less often */

/* Whether this launch of a kernel (its count-th; dur_n runs measured so far) is timed.  A
 * sample costs several driver calls and, on an idle stream, a gate (two event records, a stream
 * query, a stream wait), so once a kernel's ring of recent durations is full, 1 in
 * 64 x FIKIT_SAMPLE keeps it tracking drift at a fraction of the cost.  At 1 in 256, samples
 * still cost a batch-1 BERT 0.3-0.9% of its latency, measured inside one process on an H200
 * (bench/results/2026-11-26-h200-parts).  Settling goes by
 * measured runs, not launches: a kernel seeded from its program's stored profile is settled
 * from its first launches, and a new one after 8 + 24 x FIKIT_SAMPLE launches (392 by default;
 * counting 1024 launches kept a batch-1 model sampling 1 in 16 for its first seconds). */
static FIKIT_INLINE bool sample_due(uint64_t count, uint64_t dur_n, bool profile)
{
    if (profile || count < WARM_LAUNCHES)
        return true;
    uint64_t every = fikit_hot.cfg.sample;
    if (dur_n >= SETTLED_SAMPLES)
        every *= SETTLED_FACTOR;
    if (FIKIT_LIKELY((every & (every - 1)) == 0)) /* the default 16: a mask, not a division */
        return (count & (every - 1)) == 0;
    return count % every == 0;
}

/* ---- measurement: sampled event pairs ----------------------------------- */
/*
 * A kernel is timed by events recorded before and after it.  On an idle
 * stream the start event would fire at once, before the host has even
 * submitted the kernel, and the "duration" would include the submission (for
 * the microsecond kernels of batch-1 inference, several times the kernel).
 * So on an idle stream the sample is gated: the stream first waits on a host
 * word, the events and the kernel are submitted behind it, and the host then
 * opens the gate.  On a busy stream the start event fires when the work ahead
 * ends, with the kernel already queued behind it: no gate is needed, and none
 * is used (a wait queued behind a full push buffer could block the launch).
 * A launch can also block inside the driver for the device (the first launch
 * of a function loads its module lazily, and loading may synchronise): the
 * first launch of a kernel id, and of each function with that id (libraries
 * carry copies of one kernel), is never gated, and a watchdog thread looks at
 * any gate still closed after 2 ms.  If the thread that closed it is merely
 * waiting for a CPU (runnable, and it ran for less than half the time), its
 * launch is not blocked and the watchdog waits on, up to 20 ms; otherwise it
 * opens the gate and turns gating off for the process, so a blocked launch
 * costs one stall of 2-20 ms, never a hang.  FIKIT_GATE=0 turns gating off.
 */
#define POOL 256
struct sample {
    CUevent start, end;
    struct fikit_kstat *k;
    uint32_t gate_seq; /* 0: not gated */
    bool busy;
};
/* The gate word is one pinned host word (portable: every context may map it);
 * its sequence numbers are shared by every device's pool. */
static _Atomic uint32_t *_Atomic gate_host;
static _Atomic uint32_t gate_seq;
static _Atomic uint32_t gate_armed;     /* newest closed gate, 0 none: the watchdog's futex word */
static _Atomic uint64_t gate_deadline;  /* when the watchdog opens it */
/* Who closed the newest gate, on what, and when (and its thread's CPU time then): the watchdog
 * tells by them a launch blocked in the driver (asleep there, or spinning) from a thread the
 * host merely preempted (runnable, its CPU time still), and says which when it gives up. */
static struct {
    _Atomic int tid;
    _Atomic uint64_t armed_ns;
    _Atomic uint64_t cpu_ns;
    _Atomic uint64_t count; /* the kernel's launches so far */
    struct fikit_kstat *_Atomic k;
} gate_who;
static _Atomic uint64_t gate_waited;   /* looks at a shut gate that found its thread preempted */
static _Atomic bool gate_turned_off;   /* the watchdog gave up on one: no more gates */
static pthread_once_t watchdog_once = PTHREAD_ONCE_INIT;
static bool watchdog_ok;
static pthread_mutex_t gate_alloc_lock = PTHREAD_MUTEX_INITIALIZER;
static void *gate_alloc; /* the pinned word, once allocated (gating may be turned off later) */

/* Completion events for a held client's own queued work. */
#define DONE_EVENTS 32

/*
 * Measurement state of one device (indexed like the device table): its timing
 * events belong to the first context that launched on the device, and only
 * that context's launches are timed ("one context measured per device").
 */
struct pool {
    /* What every launch reads and writes of it is its device's (fikit_dev.pool, in the hot
     * page); this is for sampled launches and syncs. */
    pthread_mutex_t lock;
    struct fikit_dev *dev;
    CUcontext ctx;
    unsigned head, tail; /* FIFO of recorded samples */
    bool broken;
    CUdeviceptr gate_dev; /* the gate word as this context addresses it; 0: no gate here */
    unsigned done_next;
    _Atomic(CUevent) done_last;
    CUevent done_ev[DONE_EVENTS];
    struct sample s[POOL];
} __attribute__((aligned(64)));
static struct pool pools[FIKIT_MAX_DEVS + 1]; /* + the spill device's */

static FIKIT_INLINE struct pool *pool_of(struct fikit_dev *d) { return &pools[d->index]; }

static void pools_reset(void)
{
    for (int i = 0; i <= FIKIT_MAX_DEVS; i++) {
        memset(&pools[i], 0, sizeof pools[i]);
        pthread_mutex_init(&pools[i].lock, NULL);
    }
}

/* The gate word and its address in the current context; 0 when gating is unavailable. */
static CUdeviceptr gate_for_context(void)
{
    if (!fikit_drv.cuMemHostAlloc || !fikit_drv.cuMemHostGetDevicePointer || !fikit_drv.cuStreamWaitValue32 ||
        !fikit_drv.cuStreamQuery)
        return 0;
    const char *g = getenv("FIKIT_GATE");
    if (g && strcmp(g, "0") == 0)
        return 0;
    pthread_mutex_lock(&gate_alloc_lock);
    if (!gate_alloc) {
        void *host = NULL;
        if (fikit_drv.cuMemHostAlloc(&host, 64, FIKIT_CU_MEMHOSTALLOC_PORTABLE | FIKIT_CU_MEMHOSTALLOC_DEVICEMAP) ==
            CUDA_SUCCESS) {
            atomic_store((_Atomic uint32_t *)host, 0);
            gate_alloc = host;
            atomic_store(&gate_host, host);
        }
    }
    void *host = gate_alloc;
    pthread_mutex_unlock(&gate_alloc_lock);
    CUdeviceptr dev = 0;
    if (!host || fikit_drv.cuMemHostGetDevicePointer(&dev, host, 0) != CUDA_SUCCESS)
        return 0;
    return dev;
}

static bool pool_ready(struct pool *p, struct fikit_dev *d, CUcontext cur)
{
    if (p->broken || !fikit_drv.cuEventCreate || !fikit_drv.cuEventRecord || !fikit_drv.cuEventQuery ||
        !fikit_drv.cuEventElapsedTime || !cur)
        return false;
    if (p->ctx)
        return p->ctx == cur; /* one context measured per device */
    for (int i = 0; i < POOL; i++) {
        if (fikit_drv.cuEventCreate(&p->s[i].start, CU_EVENT_DEFAULT) != CUDA_SUCCESS ||
            fikit_drv.cuEventCreate(&p->s[i].end, CU_EVENT_DEFAULT) != CUDA_SUCCESS) {
            static _Atomic int warned;
            fikit_log_once(&warned, "cannot create timing events; kernel durations not measured");
            p->broken = true;
            return false;
        }
    }
    for (int i = 0; i < DONE_EVENTS; i++)
        if (fikit_drv.cuEventCreate(&p->done_ev[i], CU_EVENT_DISABLE_TIMING) != CUDA_SUCCESS)
            p->done_ev[i] = NULL;
    p->gate_dev = gate_for_context();
    p->dev = d;
    p->ctx = cur; /* last: harvest() takes a pool with a context as set up */
    return true;
}

static void gate_open_at(_Atomic uint32_t *word, uint32_t seq)
{
    /* GEQ waits: opening a later gate opens every earlier one too. */
    uint32_t cur = atomic_load_explicit(word, memory_order_relaxed);
    while ((int32_t)(seq - cur) > 0 &&
           !atomic_compare_exchange_weak_explicit(word, &cur, seq, memory_order_release, memory_order_relaxed)) {
    }
}

static void futex_sleep(_Atomic uint32_t *word, uint32_t val, uint64_t ns);

#define GATE_WAIT_NS 2000000ull /* a gate still closed this long after it closed is looked at */
#define GATE_MAX_NS 20000000ull /* and one closed this long is opened, whatever its thread does */

static uint64_t thread_cpu_ns(int tid)
{
    /* A thread's CPU clock, as clock_getcpuclockid's encoding names it (see clock_getcpuclockid(3)). */
    clockid_t cid = (clockid_t)((~(unsigned)tid << 3) | 6u);
    struct timespec ts;
    if (clock_gettime(cid, &ts) != 0)
        return 0;
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* A thread's scheduler state ('R' runnable, 'S'/'D' asleep, '?' unknown) and where it sleeps. */
static char thread_state(int tid, char *wchan, size_t n_wchan)
{
    char path[64], stat[512] = "";
    char state = '?';
    wchan[0] = 0;
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", tid);
    FILE *f = fopen(path, "r");
    if (f) {
        size_t n = fread(stat, 1, sizeof stat - 1, f);
        stat[n] = 0;
        fclose(f);
        const char *close = strrchr(stat, ')'); /* the name may hold spaces: the state follows ") " */
        if (close && close[1] && close[2])
            state = close[2];
    }
    snprintf(path, sizeof path, "/proc/self/task/%d/wchan", tid);
    if ((f = fopen(path, "r"))) {
        size_t n = fread(wchan, 1, n_wchan - 1, f);
        wchan[n] = 0;
        fclose(f);
    }
    return state;
}

/* A gate shut shut_ns ago: whether the thread that shut it is merely waiting for a CPU (runnable,
 * and it ran for less than half that time), as a host's other work made the HP processes of
 * two-GPU runs 17-18 wait 4-6 ms early in their lives.  Its launch is not blocked then, and
 * opens the gate itself once it runs again; a thread asleep in the driver, or spinning there,
 * is blocked. */
FIKIT_API int fikit_gate_preempted(char state, uint64_t cpu_ns, uint64_t shut_ns)
{
    return state == 'R' && cpu_ns * 2 < shut_ns;
}

/* What the watchdog sees of the thread that shut the gate, shut_ns after it did. */
struct gate_look {
    uint64_t shut_ns;
    int tid;
    char state;
    char wchan[64];
    int64_t cpu_ns; /* its CPU time since, -1 unknown */
};

static struct gate_look gate_look_now(uint64_t shut_ns)
{
    struct gate_look l = {.shut_ns = shut_ns, .tid = atomic_load(&gate_who.tid), .state = '?', .cpu_ns = -1};
    if (l.tid <= 0)
        return l;
    l.state = thread_state(l.tid, l.wchan, sizeof l.wchan);
    uint64_t cpu0 = atomic_load(&gate_who.cpu_ns), cpu = thread_cpu_ns(l.tid);
    if (cpu && cpu0 && cpu >= cpu0)
        l.cpu_ns = (int64_t)(cpu - cpu0);
    return l;
}

/* The one line a process logs when the watchdog gives up on a gate: how long it was shut, the
 * state of the thread that shut it and where it sleeps, its CPU time since (as the watchdog saw
 * them when it decided), and the kernel launched. */
static void gate_stall_report(const struct gate_look *l)
{
    struct fikit_kstat *k = atomic_load(&gate_who.k);
    fikit_log("a launch blocked behind a measurement gate; gating turned off (shut %.1f ms; thread %d %c in %s, "
              "%.2f ms of CPU since; kernel %.60s, launch %llu)",
              (double)l->shut_ns / 1e6, l->tid, l->state, l->wchan[0] ? l->wchan : "?",
              l->cpu_ns >= 0 ? (double)l->cpu_ns / 1e6 : -1.0, k ? k->name : "?",
              (unsigned long long)atomic_load(&gate_who.count) + 1);
}

static void *gate_watchdog(void *arg)
{
    _Atomic uint32_t *word = arg;
    for (;;) {
        uint32_t armed = atomic_load(&gate_armed);
        if (!armed) {
            futex_sleep(&gate_armed, 0, 1000000000ull);
            continue;
        }
        uint64_t now = fikit_clock_ns(), due = atomic_load(&gate_deadline);
        if (now < due) {
            futex_sleep(&gate_armed, armed, due - now);
            continue;
        }
        if (atomic_load(&gate_armed) == armed && (int32_t)(armed - atomic_load(word)) > 0) {
            struct gate_look look = gate_look_now(now - atomic_load(&gate_who.armed_ns));
            if (look.shut_ns < GATE_MAX_NS && look.cpu_ns >= 0 &&
                fikit_gate_preempted(look.state, (uint64_t)look.cpu_ns, look.shut_ns)) {
                atomic_fetch_add(&gate_waited, 1);
                uint64_t again = now + GATE_WAIT_NS;
                atomic_compare_exchange_strong(&gate_deadline, &due, again); /* unless a new gate moved it */
                continue;
            }
            gate_open_at(word, armed);
            atomic_store(&gate_host, NULL); /* no more gates in this process */
            if (!atomic_exchange(&gate_turned_off, true))
                gate_stall_report(&look);
        }
        uint32_t expect = armed;
        atomic_compare_exchange_strong(&gate_armed, &expect, 0);
    }
    return NULL;
}

void fikit_gate_counts(struct fikit_gate_counts *out)
{
    out->preempted_waits = atomic_load(&gate_waited);
    out->turned_off = atomic_load(&gate_turned_off);
}

static void start_watchdog(void)
{
    pthread_t t;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&a, 64 * 1024);
    watchdog_ok = pthread_create(&t, &a, gate_watchdog, gate_alloc) == 0;
    pthread_attr_destroy(&a);
}

static void gate_open(uint32_t seq)
{
    _Atomic uint32_t *word = atomic_load(&gate_host);
    if (!word)
        return; /* the watchdog opened it and turned gating off */
    gate_open_at(word, seq);
    uint32_t expect = seq;
    atomic_compare_exchange_strong(&gate_armed, &expect, 0);
}

/* Collect one device's finished samples, oldest first; with wait_all, wait for them. */
static void harvest(struct pool *p, bool wait_all)
{
    if (!p->ctx || pthread_mutex_trylock(&p->lock) != 0)
        return;
    fikit_pfn_cuEventSynchronize esync =
        (fikit_pfn_cuEventSynchronize)fikit_hot.real[FIKIT_HOOK_cuEventSynchronize];
    while (p->tail != p->head) {
        struct sample *s = &p->s[p->tail % POOL];
        CUresult q = fikit_drv.cuEventQuery(s->end);
        if (q == CUDA_ERROR_NOT_READY && wait_all && esync)
            q = esync(s->end);
        if (q == CUDA_ERROR_NOT_READY)
            break;
        float ms = 0;
        if (q == CUDA_SUCCESS && fikit_drv.cuEventElapsedTime(&ms, s->start, s->end) == CUDA_SUCCESS && ms >= 0) {
            fikit_measured(p->dev->me, s->k, (uint64_t)((double)ms * 1e6));
        }
        s->busy = false;
        p->tail++;
    }
    pthread_mutex_unlock(&p->lock);
}

/* Every device's finished samples (at exit with wait_all; after syncs without). */
void fikit_harvest(bool wait_all)
{
    for (int i = 0; i <= FIKIT_MAX_DEVS; i++)
        if (pools[i].ctx)
            harvest(&pools[i], wait_all);
}

__attribute__((noinline, cold)) static struct sample *sample_begin(struct fikit_dev *d, CUcontext ctx,
                                                                   struct fikit_kstat *k, CUstream stream,
                                                                   bool gate, uint64_t count)
{
    struct pool *p = pool_of(d);
    if (!ctx)
        ctx = fikit_ctx_current(); /* a process of one device does not ask at every launch (fikit_dev_for_launch) */
    if (pthread_mutex_lock(&p->lock) != 0)
        return NULL;
    struct sample *s = NULL;
    if (pool_ready(p, d, ctx) && p->head - p->tail < POOL) {
        s = &p->s[p->head % POOL];
        s->gate_seq = 0;
        if (gate && p->gate_dev && atomic_load(&gate_host))
            pthread_once(&watchdog_once, start_watchdog);
        if (gate && p->gate_dev && watchdog_ok && atomic_load(&gate_host) &&
            fikit_drv.cuStreamQuery(stream) == CUDA_SUCCESS) {
            uint32_t seq = atomic_fetch_add(&gate_seq, 1) + 1;
            if (!seq)
                seq = atomic_fetch_add(&gate_seq, 1) + 1;
            uint64_t armed_ns = fikit_clock_ns();
            atomic_store(&gate_deadline, armed_ns + GATE_WAIT_NS);
            if (fikit_drv.cuStreamWaitValue32(stream, p->gate_dev, seq, CU_STREAM_WAIT_VALUE_GEQ) == CUDA_SUCCESS) {
                int tid = (int)syscall(SYS_gettid);
                atomic_store(&gate_who.tid, tid);
                atomic_store(&gate_who.armed_ns, armed_ns);
                atomic_store(&gate_who.cpu_ns, thread_cpu_ns(tid));
                atomic_store(&gate_who.count, count);
                atomic_store(&gate_who.k, k);
                s->gate_seq = seq;
                atomic_store(&gate_armed, seq);
                syscall(SYS_futex, (uint32_t *)&gate_armed, FUTEX_WAKE, 1, NULL, NULL, 0);
            } else {
                static _Atomic int warned;
                fikit_log_once(&warned, "stream memory operations refused; short kernels measured less exactly");
                atomic_store(&gate_host, NULL);
            }
        }
        if (fikit_drv.cuEventRecord(s->start, stream) != CUDA_SUCCESS) {
            if (s->gate_seq)
                gate_open(s->gate_seq);
            s = NULL;
        } else {
            s->k = k;
            s->busy = true;
        }
    }
    pthread_mutex_unlock(&p->lock);
    return s;
}

static void sample_end(struct pool *p, struct sample *s, CUstream stream, CUresult launched)
{
    pthread_mutex_lock(&p->lock);
    bool recorded = launched == CUDA_SUCCESS && fikit_drv.cuEventRecord(s->end, stream) == CUDA_SUCCESS;
    if (s->gate_seq)
        gate_open(s->gate_seq); /* whatever happened: the stream must never stay shut */
    if (recorded)
        p->head++;
    else
        s->busy = false;
    pthread_mutex_unlock(&p->lock);
}

static bool capturing(CUstream stream)
{
    CUstreamCaptureStatus st = CU_STREAM_CAPTURE_STATUS_NONE;
    if (!fikit_drv.cuStreamIsCapturing)
        return false;
    /* An error (say, a stream of another context) is taken as capturing: do nothing to it. */
    return fikit_drv.cuStreamIsCapturing(stream, &st) != CUDA_SUCCESS || st != CU_STREAM_CAPTURE_STATUS_NONE;
}

/* ---- the decision: hold a launch while a more urgent client needs the GPU -- */
static void futex_sleep(_Atomic uint32_t *word, uint32_t val, uint64_t ns)
{
    struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000ull), .tv_nsec = (long)(ns % 1000000000ull)};
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT, val, &ts, NULL, 0);
}

/* The driver knows better than our prediction whether our own work is done. */
static void correct_own_busy(struct fikit_dev *d, uint64_t now)
{
    struct fikit_slot *me = d->me;
    CUevent ev = atomic_load_explicit(&pool_of(d)->done_last, memory_order_acquire);
    if (ev && atomic_load_explicit(&me->busy_until_ns, memory_order_relaxed) > now &&
        fikit_drv.cuEventQuery(ev) == CUDA_SUCCESS)
        atomic_store_explicit(&me->busy_until_ns, now, memory_order_relaxed);
}

__attribute__((noinline)) static void mark_own_done(struct pool *p, CUstream stream)
{
    if (!p->ctx)
        return;
    unsigned i = __atomic_fetch_add(&p->done_next, 1, __ATOMIC_RELAXED) % DONE_EVENTS;
    if (p->done_ev[i] && fikit_drv.cuEventRecord(p->done_ev[i], stream) == CUDA_SUCCESS)
        atomic_store_explicit(&p->done_last, p->done_ev[i], memory_order_release);
}

/* Co-running is offered to the policy only where it can happen. */
static void domain_params(struct fikit_dev *d, struct fikit_params *p, bool can_corun)
{
    fikit_params_from_domain(d->dom, p);
    if (!can_corun || !fikit_corun_usable(d->index))
        p->corun_sm_pct = 0;
}

/* Returns true when the launch had a more urgent client (in its device's domain) to
 * defer to; sets *run_on when the launch is to run on the co-running stream instead. */
__attribute__((noinline)) static bool decide(struct fikit_dev *d, struct fikit_kstat *k, CUstream stream,
                                             bool can_corun, CUstream *run_on)
{
    struct fikit_slot *me = d->me;
    struct fikit_peer peers[FIKIT_MAX_SLOTS];
    int pids[FIKIT_MAX_SLOTS];
    int n = fikit_peers_snapshot(d, peers, FIKIT_MAX_SLOTS, pids);
    if (n == 0)
        return false; /* the top of its domain (every HP launch): nothing more to read */
    struct fikit_params p;
    domain_params(d, &p, can_corun);
    if (p.mode == FIKIT_MODE_OFF)
        return false;
    if (capturing(stream))
        return false; /* recorded into a graph, not run: nothing to hold */
    uint64_t now = fikit_clock_ns();
    correct_own_busy(d, now);
    uint64_t dur = k ? fikit_kstat_dur_pred(k) : 0;
    struct fikit_self self = {.busy_until_ns = atomic_load(&me->busy_until_ns), .held_since_ns = 0};
    uint64_t retry = 0, held_from = 0, last_live = now;
    int v;
    for (;;) {
        v = fikit_policy_decide(&p, peers, n, &self, now, dur, dur != 0, &retry);
        if (v == FIKIT_GO_CORUN) {
            if (fikit_corun_begin(d->index, stream, p.corun_sm_pct, run_on))
                break;
            p.corun_sm_pct = 0; /* unavailable now: the gap-filling policy alone */
            continue;
        }
        if (v != FIKIT_WAIT)
            break;
        if (!held_from) {
            held_from = now;
            self.held_since_ns = now;
            atomic_store_explicit(&me->state, FIKIT_STATE_HELD, memory_order_relaxed);
        }
        uint64_t wait = retry > now ? retry - now : 0;
        if (now - held_from < 50000) {
            sched_yield(); /* brief: most HP gaps are tens of microseconds */
        } else {
            if (wait < 20000)
                wait = 20000;
            if (wait > 2000000)
                wait = 2000000;
            futex_sleep(&me->wake, atomic_load(&me->wake), wait);
        }
        now = fikit_clock_ns();
        if (now - last_live > 10000000ull) {
            /* Nobody waits on a dead pid. */
            last_live = now;
            for (int i = 0; i < n; i++)
                if (kill(pids[i], 0) != 0 && errno == ESRCH)
                    fikit_peer_dead(d, pids[i]);
        }
        domain_params(d, &p, can_corun);
        correct_own_busy(d, now);
        self.busy_until_ns = atomic_load(&me->busy_until_ns);
        n = fikit_peers_snapshot(d, peers, FIKIT_MAX_SLOTS, pids);
        if (n == 0 || p.mode == FIKIT_MODE_OFF) {
            v = FIKIT_GO_FREE;
            break;
        }
    }
    if (held_from) {
        atomic_fetch_add_explicit(&me->held_launches, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&me->held_ns, now - held_from, memory_order_relaxed);
        atomic_fetch_add_explicit(&me->held_hist[fikit_held_bucket(now - held_from)], 1, memory_order_relaxed);
    }
    fikit_au64 *ctr = v == FIKIT_GO_GAP     ? &me->released_gap
                      : v == FIKIT_GO_IDLE  ? &me->released_idle
                      : v == FIKIT_GO_GUARD ? &me->released_guard
                      : v == FIKIT_GO_CORUN ? &me->released_corun
                                            : NULL;
    if (ctr)
        atomic_fetch_add_explicit(ctr, 1, memory_order_relaxed);
    /* GPU time (predicted) we put into more urgent clients' idle time: the fill. */
    if (v == FIKIT_GO_GAP || v == FIKIT_GO_IDLE)
        atomic_fetch_add_explicit(&me->filled_ns, dur ? dur : p.unknown_ns, memory_order_relaxed);
    atomic_store_explicit(&me->state, v == FIKIT_GO_GAP ? FIKIT_STATE_FILLING : FIKIT_STATE_RUNNING,
                          memory_order_relaxed);
    return true;
}

/* ---- one launch, start to end -------------------------------------------- */
struct launch {
    struct fikit_dev *dev; /* the launch's device: its slot, domain and pool */
    struct fikit_kstat *k;
    struct sample *sample;
    CUstream stream; /* the program's */
    CUstream run;    /* where it runs: the program's, or the co-running stream */
    uint64_t t;
    bool deferred; /* had a more urgent client to defer to */
    bool counted_only; /* pass-through, measuring turned off, or quiet: after() has nothing to finish */
    bool stride;       /* publishes a quiet burst's cover (quiet.c), not its own predictions */
};

__attribute__((noinline)) static const char *graph_name(CUgraphExec g, uint64_t *hash)
{
    /* Graph execs are numbered in the order a process first launches them:
     * stable across runs of a deterministic program, like kernel ids. */
    enum { GMAX = 1024 };
    static _Atomic(CUgraphExec) seen[GMAX];
    static char gnames[GMAX][24];
    static _Atomic unsigned n_seen;
    unsigned n = atomic_load(&n_seen);
    for (unsigned i = 0; i < n && i < GMAX; i++)
        if (atomic_load(&seen[i]) == g) {
            *hash = fikit_name_hash(gnames[i]);
            return gnames[i];
        }
    unsigned i = atomic_fetch_add(&n_seen, 1);
    if (i >= GMAX) {
        *hash = 0x9a9a;
        return "cudaGraph#overflow";
    }
    snprintf(gnames[i], sizeof gnames[i], "cudaGraph#%u", i);
    atomic_store(&seen[i], g);
    *hash = fikit_name_hash(gnames[i]);
    return gnames[i];
}

__attribute__((noinline)) static struct fikit_kstat *graph_entry(struct fikit_slot *me, CUgraphExec g)
{
    uint64_t nh = 0;
    static const uint32_t zero[3] = {0, 0, 0};
    const char *name = graph_name(g, &nh);
    return fikit_ktab_get(me, fikit_kernel_id(nh, zero, zero, 0), name, zero, zero, 0, 1u);
}

/* 1 gap in 8 after a settled kernel is recorded (the hash's top 3 bits all 0), chosen by the
 * clock's low bits, hashed: counting a kernel's launches would pick the same place in each of a
 * program's cycles, and that place's gap alone would stand for all of them. */
static FIKIT_INLINE bool gap_sampled(uint64_t t) { return (t * 0x9e3779b97f4a7c15ull) >> 61 == 0; }

/*
 * The gap after the previous launch on this device: host time since that kernel's predicted
 * end, or since the host last waited for the GPU.  The slot's idle time counts every gap.  The
 * kernel's gap statistics take each gap until its ring of recent gaps is full; then one in
 * 8, and every gap shorter than its shortest recent one, so that its prediction
 * (conservative: the shortest) never misses a shorter gap.  What this needs of the previous
 * kernel's entry was kept in the device's pool at its launch: a launch reads that entry only to
 * record.  Plain loads and stores, no locked exchange (this is every launch): threads launching
 * on one device at the same instant may pair a gap with the wrong predecessor, an estimate
 * either way.  Returns the gap when it is one inside a burst (not from a sync's return), with
 * the kernel it followed in *after, else 0.
 */
FIKIT_HOT static FIKIT_INLINE uint64_t note_gap(struct fikit_pool_hot *h, struct fikit_slot *me, struct fikit_kstat *k,
                                                  uint64_t t, struct fikit_kstat **after)
{
    uint64_t prev_t = atomic_load_explicit(&h->last_launch_t, memory_order_relaxed);
    struct fikit_kstat *prev_k = atomic_load_explicit(&h->last_launch_k, memory_order_relaxed);
    uint64_t prev_end = atomic_load_explicit(&h->last_end_pred, memory_order_relaxed);
    uint32_t prev_gap_pred = atomic_load_explicit(&h->last_gap_pred, memory_order_relaxed);
    bool prev_every = atomic_load_explicit(&h->last_gap_every, memory_order_relaxed);
    atomic_store_explicit(&h->last_launch_t, t, memory_order_relaxed);
    atomic_store_explicit(&h->last_launch_k, k, memory_order_relaxed);
    if (k) { /* its entry's first line: read already for its count */
        atomic_store_explicit(&h->last_end_pred, t + fikit_kstat_dur_pred(k), memory_order_relaxed);
        atomic_store_explicit(&h->last_gap_pred, (uint32_t)fikit_kstat_gap_pred(k), memory_order_relaxed);
        atomic_store_explicit(&h->last_gap_every, atomic_load_explicit(&k->gap_n, memory_order_relaxed) < FIKIT_RING,
                              memory_order_relaxed);
    }
    if (!prev_t || !prev_k || t <= prev_t)
        return 0;
    /* The host waited after that launch: the GPU was done when the wait returned. */
    uint64_t synced = atomic_load_explicit(&h->last_sync_end, memory_order_relaxed);
    uint64_t end = synced > prev_t ? synced : prev_end;
    uint64_t gap = t > end ? t - end : 0;
    if (prev_every || gap < prev_gap_pred || gap_sampled(t))
        fikit_kstat_add_gap(prev_k, gap);
    atomic_store_explicit(&me->idle_gap_ns, atomic_load_explicit(&me->idle_gap_ns, memory_order_relaxed) + gap,
                          memory_order_relaxed);
    *after = prev_k;
    return synced > prev_t ? 0 : gap; /* a gap inside a burst: what quiet.c asks of it */
}

/* A burst's first launch, or a quiet burst's stride launch: whether it publishes a cover. */
__attribute__((noinline, cold)) static bool quiet_step(struct fikit_dev *d, struct fikit_kstat *k, uint64_t t,
                                                       CUstream stream, uint32_t flags)
{
    struct fikit_kstat *after = NULL;
    if (flags & FIKIT_CFG_BURST) {
        (void)note_gap(&d->pool, d->me, k, t, &after); /* the gap since the sync, for what came before it */
        fikit_quiet_burst(d, t);
        return fikit_cfg_has(FIKIT_CFG_QUIET);
    }
    if (fikit_quiet_stride(d, t, stream))
        return true;
    (void)note_gap(&d->pool, d->me, k, t, &after); /* quiet no more: measured from here on */
    return false;
}

/*
 * A launch counts itself twice: in its slot (path_launches) and in its kernel's entry.  With a
 * locked add each count is exact whatever the threads, but a locked add is a full barrier: it
 * waits for every store before it (a real program's own, just made) and keeps the launch's
 * other misses from overlapping its own.  A device with one launching thread, the common case,
 * needs no lock: its counts are a plain load and store.  Next to the real driver that took
 * 23-40 ns off a launch with the caches warm, in four pricings on three machines (the cold rows
 * overlapping; bench/results/2026-11-26-h100-price10 to -price13).  So each device remembers
 * its one launching thread (by its thread pointer); a second thread ends that for good, and
 * every thread adds with a lock from then on: the first at once, the others from a moment after
 * the switch (SWITCH_NS, long enough for the first thread to finish the plain add it may have
 * been in).  Counts stay exact, unless the first thread was preempted inside those few
 * instructions just then.
 */
#define SWITCH_NS 1000000ull

/* The thread pointer: one register read where the compiler has it, else libc's pthread_self. */
#if defined(__has_builtin)
#if __has_builtin(__builtin_thread_pointer)
#define THREAD_TOKEN() ((uintptr_t)__builtin_thread_pointer())
#endif
#endif
#ifndef THREAD_TOKEN
#define THREAD_TOKEN() ((uintptr_t)pthread_self())
#endif

/* Off the common path: a device's first launching thread claims it; a second one switches it to
 * locked adds, and every thread but the first waits out the switch before its first add. */
__attribute__((noinline, cold)) static bool launcher_claim(struct fikit_dev *d, uintptr_t tok)
{
    uintptr_t seen = FIKIT_LAUNCHERS_NONE;
    if (atomic_compare_exchange_strong(&d->launcher, &seen, tok) || seen == tok)
        return true;
    if (!(seen & 1) && atomic_compare_exchange_strong(&d->launcher, &seen, seen | 1)) {
        /* seen launched alone so far: the switch is this thread's */
        struct timespec ts = {0, (long)SWITCH_NS};
        nanosleep(&ts, NULL);
        atomic_store_explicit(&d->launcher, (uintptr_t)FIKIT_LAUNCHERS_SEVERAL, memory_order_release);
        return false;
    }
    /* The thread that launched alone (seen == tok | 1) goes on at once: its plain adds came
     * before, in its own order, and the others wait for them, so an HP's serving thread never
     * stalls because another thread launched. */
    while (seen != FIKIT_LAUNCHERS_SEVERAL && seen != (tok | 1)) {
        sched_yield();
        seen = atomic_load_explicit(&d->launcher, memory_order_acquire);
    }
    return false;
}

static FIKIT_INLINE uint64_t count_add(_Atomic uint64_t *c, bool alone)
{
    if (FIKIT_LIKELY(alone)) {
        uint64_t v = atomic_load_explicit(c, memory_order_relaxed);
        atomic_store_explicit(c, v + 1, memory_order_relaxed);
        return v;
    }
    return atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

/*
 * Before and after the driver's call.  Both are inlined into each wrapper, and everything off
 * the common path (a flag set, a context not the first, a guess missed, a client above, a
 * sample due) is a call out of line: between two launches a real program runs enough code of
 * its own to evict the library's, so each line of code a launch runs is a miss, and a call
 * out of line costs lines of its own.  flags: fikit_hot.cfg.flags as the wrapper read it.
 */
FIKIT_HOT static FIKIT_INLINE void before(struct launch *L, uint32_t flags, int path, CUfunction f, CUgraphExec g,
                                          const uint32_t grid[3], const uint32_t block[3], uint32_t smem,
                                          CUstream stream)
{
    L->k = NULL;
    L->sample = NULL;
    L->stream = stream;
    L->run = stream;
    L->counted_only = true; /* after() reads nothing else then */
    L->deferred = false;
    L->stride = false;
    L->dev = NULL;
    if (FIKIT_UNLIKELY(flags & FIKIT_CFG_BYPASS))
        return;
    CUcontext ctx = NULL;
    struct fikit_dev *d =
        FIKIT_UNLIKELY(flags & FIKIT_CFG_PASSTHROUGH) ? fikit_dev_passthrough() : fikit_dev_for_launch(&ctx);
    L->dev = d;
    if (FIKIT_UNLIKELY(!d))
        return;
    struct fikit_slot *me = d->me;
    uintptr_t tok = THREAD_TOKEN(), launcher = atomic_load_explicit(&d->launcher, memory_order_relaxed);
    bool alone = launcher == tok;
    if (FIKIT_UNLIKELY(!alone && launcher != FIKIT_LAUNCHERS_SEVERAL))
        alone = launcher_claim(d, tok);
    uint64_t n = count_add(&me->path_launches[path], alone);
    bool stride = false; /* a quiet burst's first launch, or its stride's (quiet.c) */
    if (FIKIT_UNLIKELY(flags & (FIKIT_CFG_PASSTHROUGH | FIKIT_CFG_MEASURING_OFF | FIKIT_CFG_BURST | FIKIT_CFG_QUIET))) {
        if (flags & (FIKIT_CFG_PASSTHROUGH | FIKIT_CFG_MEASURING_OFF))
            return;
        if ((flags & FIKIT_CFG_QUIET) && (n & atomic_load_explicit(&fikit_hot.cfg.quiet_mask, memory_order_relaxed)))
            return; /* quiet: only counted, inside the cover its stride's launch published */
        stride = true;
    }
    L->counted_only = false;

    /* Profiling mode: CUPTI times kernel launches (it starts here, before any
     * decision may set up co-running); graph launches are timed by events. */
    bool profile = flags & FIKIT_CFG_PROFILE;
    bool by_cupti = FIKIT_UNLIKELY(profile) && fikit_cupti_timing() && !g;

    struct fikit_pool_hot *h = &d->pool;
    bool first = false; /* this function's first launch, maybe: never gated (see "gated" above) */
    struct fikit_kstat *k =
        g ? graph_entry(me, g) : fikit_kernel_entry(me, d->index, f, grid, block, smem, &h->memo, &first);
    L->k = k;
    uint64_t count = k ? count_add(&k->count, alone) : 0;

    uint64_t t = fikit_clock_ns();
    if (FIKIT_UNLIKELY(fikit_may_defer(d, t))) {
        if (stride) { /* a more urgent client came: this one is quiet no more */
            fikit_quiet_leave(d);
            stride = false;
        }
        L->deferred = decide(d, k, stream, path != FIKIT_PATH_COOP, &L->run);
        t = fikit_clock_ns(); /* it may have waited */
    }
    L->t = t;
    if (FIKIT_LIKELY(!stride)) {
        struct fikit_kstat *after = NULL;
        uint64_t gap = note_gap(h, me, k, t, &after);
        if (FIKIT_UNLIKELY(gap >= atomic_load_explicit(&fikit_hot.cfg.quiet_gap_ns, memory_order_relaxed)))
            fikit_quiet_wide_gap(d, after);
    } else {
        L->stride = quiet_step(d, k, t, stream, flags);
    }

    /* A co-running kernel is not timed: confined to part of the GPU, it says
     * nothing of how long it runs on the whole of it. */
    if (FIKIT_UNLIKELY(k && sample_due(count, atomic_load_explicit(&k->dur_n, memory_order_relaxed), profile)) &&
        L->run == stream && !by_cupti && !capturing(stream))
        L->sample = sample_begin(d, ctx, k, stream, count > 0 && !first && !g, count); /* see "gated" above */
}

/* A launch that ran on the co-running stream, or was timed. */
__attribute__((noinline, cold)) static void after_rare(struct launch *L, struct pool *p, CUresult r)
{
    if (L->run != L->stream)
        fikit_corun_end(L->dev->index, L->stream, L->run);
    if (L->sample) {
        sample_end(p, L->sample, L->stream, r);
        if (fikit_cfg_has(FIKIT_CFG_PROFILE)) {
            harvest(p, true);
            atomic_store_explicit(&L->dev->pool.last_sync_end, fikit_clock_ns(), memory_order_relaxed);
        } else {
            harvest(p, false);
        }
    }
}

FIKIT_HOT static FIKIT_INLINE void after(struct launch *L, CUresult r)
{
    struct fikit_dev *d = L->dev;
    if (FIKIT_UNLIKELY(!d) || L->counted_only)
        return; /* decided in before(): a toggle between the two must not leave a gate shut */
    struct fikit_slot *me = d->me;
    struct pool *p = pool_of(d);
    if (FIKIT_UNLIKELY(L->run != L->stream || L->sample))
        after_rare(L, p, r);
    if (FIKIT_UNLIKELY(r != CUDA_SUCCESS || !L->k))
        return;
    /* The stream rarely changes: a plain load on the common path, the exchange only on a change. */
    struct fikit_pool_hot *h = &d->pool;
    if (atomic_load_explicit(&h->last_stream, memory_order_relaxed) != L->stream &&
        atomic_exchange_explicit(&h->last_stream, L->stream, memory_order_relaxed) != L->stream &&
        atomic_load_explicit(&me->busy_until_ns, memory_order_relaxed) > L->t)
        atomic_store_explicit(&h->several_streams, true, memory_order_relaxed);
    if (FIKIT_UNLIKELY(L->stride)) {
        fikit_quiet_publish(d, L->t);
        return;
    }
    uint64_t dur = fikit_kstat_dur_pred(L->k), unknown_ns = 0;
    if (FIKIT_UNLIKELY(!dur)) /* the domain's line is read only for a kernel never measured */
        unknown_ns = d->dom ? (uint64_t)atomic_load_explicit(&d->dom->unknown_us, memory_order_relaxed) * 1000u
                            : params_default.unknown_ns;
    fikit_note_launch(me, L->t, dur, fikit_kstat_gap_pred(L->k), unknown_ns);
    if (FIKIT_UNLIKELY(L->deferred))
        mark_own_done(p, L->stream);
}

/* A sync marks the slot of the device it waits on (its context's, or the current one's):
 * a more urgent client waiting for its GPU work is never taken for idle. */
static inline struct fikit_dev *sync_begin(CUcontext ctx)
{
    struct fikit_dev *d = fikit_dev_of_ctx(ctx);
    if (d)
        atomic_fetch_add_explicit(&d->me->syncing, 1, memory_order_relaxed);
    return d;
}

enum sync_kind { SYNC_CONTEXT, SYNC_STREAM, SYNC_OTHER /* an event, or a failed sync: says nothing of the rest */ };

/*
 * After a sync that leaves nothing of ours queued (the context's, or the only
 * stream we launched on since the last such sync), our predictions restart
 * from the truth: the GPU is done now, and the next launch is due a gap after
 * now (gaps are measured from a sync's return).  Without this, a client whose
 * kernels were predicted longer than they ran (say, measured once behind
 * another client's queue) saw its busy_until run further ahead with every
 * launch, and the clients below it never found it idle.
 */
static void sync_done(struct fikit_dev *d, enum sync_kind kind, CUstream stream)
{
    if (!d)
        return;
    struct fikit_slot *me = d->me;
    struct fikit_pool_hot *h = &d->pool;
    atomic_fetch_sub_explicit(&me->syncing, 1, memory_order_relaxed);
    uint64_t now = fikit_clock_ns();
    atomic_store_explicit(&h->last_sync_end, now, memory_order_relaxed);
    atomic_fetch_add_explicit(&me->syncs, 1, memory_order_relaxed);
    bool drained = kind == SYNC_CONTEXT ||
                   (kind == SYNC_STREAM && stream == atomic_load_explicit(&h->last_stream, memory_order_relaxed) &&
                    !atomic_load_explicit(&h->several_streams, memory_order_relaxed));
    if (drained) {
        atomic_store_explicit(&h->several_streams, false, memory_order_relaxed);
        if (atomic_load(&me->busy_until_ns) > now)
            atomic_store(&me->busy_until_ns, now);
        uint64_t gap = atomic_load_explicit(&h->last_launch_k, memory_order_relaxed)
                           ? atomic_load_explicit(&h->last_gap_pred, memory_order_relaxed)
                           : 0;
        atomic_store_explicit(&me->next_launch_ns, now + gap, memory_order_release);
        fikit_quiet_synced(d);
    }
    if (!fikit_cfg_has(FIKIT_CFG_PASSTHROUGH))
        harvest(pool_of(d), false);
}

/* ---- initialisation, fork, exit ------------------------------------------ */
static void write_stats(void)
{
    static _Atomic int written;
    if (!stats_path[0] || atomic_exchange(&written, 1))
        return;
    fikit_harvest(true);
    fikit_stats_write(stats_path);
}

static void at_exit(void)
{
    write_stats();
    fikit_client_stop();
}

static void child_after_fork(void)
{
    /* The child is a new client: fresh slots at its first launches, counters from zero. */
    pools_reset(); /* the parent's events and pinned gate are not the child's */
    fikit_quiet_reset();
    pthread_mutex_init(&gate_alloc_lock, NULL);
    gate_alloc = NULL;
    fikit_cupti_after_fork();
    atomic_store(&gate_host, NULL);
    atomic_store(&gate_armed, 0);
    atomic_store(&gate_waited, 0);
    atomic_store(&gate_turned_off, false);
    /* The parent's watchdog thread is not the child's: the child's first gate starts its own. */
    watchdog_once = (pthread_once_t)PTHREAD_ONCE_INIT;
    watchdog_ok = false;
    fikit_corun_after_fork();
    fikit_client_after_fork();
}

static void init_once(void)
{
    const char *v;
    fikit_debug = (v = getenv("FIKIT_LOG")) && strcmp(v, "debug") == 0;
    if ((v = getenv("FIKIT_PASSTHROUGH")) && strcmp(v, "1") == 0)
        atomic_fetch_or(&fikit_hot.cfg.flags, FIKIT_CFG_PASSTHROUGH);
    if ((v = getenv("FIKIT_PROFILE")) && strcmp(v, "1") == 0)
        atomic_fetch_or(&fikit_hot.cfg.flags, FIKIT_CFG_PROFILE);
    if ((v = getenv("FIKIT_SAMPLE"))) {
        long s = strtol(v, NULL, 10);
        fikit_hot.cfg.sample = s >= 1 && s <= 1000000 ? (uint32_t)s : 16;
    }
    if ((v = getenv("FIKIT_STATS")))
        snprintf(stats_path, sizeof stats_path, "%s", v);
    fikit_resolve_init();
    pools_reset();
    fikit_client_start();
    pthread_atfork(NULL, NULL, child_after_fork);
    atexit(at_exit);
    atomic_fetch_and_explicit(&fikit_hot.cfg.flags, ~(uint32_t)FIKIT_CFG_UNREADY, memory_order_release);
}

FIKIT_API int fikit_set_measuring(int on)
{
    uint32_t was = on ? atomic_fetch_and(&fikit_hot.cfg.flags, ~(uint32_t)FIKIT_CFG_MEASURING_OFF)
                      : atomic_fetch_or(&fikit_hot.cfg.flags, FIKIT_CFG_MEASURING_OFF);
    return !(was & FIKIT_CFG_MEASURING_OFF);
}

FIKIT_API int fikit_set_bypass(int on)
{
    uint32_t was = on ? atomic_fetch_or(&fikit_hot.cfg.flags, FIKIT_CFG_BYPASS)
                      : atomic_fetch_and(&fikit_hot.cfg.flags, ~(uint32_t)FIKIT_CFG_BYPASS);
    return (was & FIKIT_CFG_BYPASS) != 0;
}

/* What a launch wrapper reads first: the flags, once initialised. */
static FIKIT_INLINE uint32_t launch_flags(void)
{
    uint32_t flags = atomic_load_explicit(&fikit_hot.cfg.flags, memory_order_acquire);
    if (FIKIT_LIKELY(!(flags & FIKIT_CFG_UNREADY)))
        return flags;
    pthread_once(&once, init_once);
    return atomic_load_explicit(&fikit_hot.cfg.flags, memory_order_acquire);
}

void fikit_init(void) { (void)launch_flags(); }

/* ---- the exported wrappers ------------------------------------------------ */
#define WRAPPER FIKIT_API FIKIT_HOT /* exported, and on the launch path */
#define REAL(name) ((fikit_pfn_##name)fikit_hot.real[FIKIT_HOOK_##name])
#define REAL_AS(hook, type) ((fikit_pfn_##type)fikit_hot.real[FIKIT_HOOK_##hook])

#define WRAP_LAUNCH_KERNEL(name)                                                                           \
    WRAPPER CUresult name(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx,   \
                            unsigned int by, unsigned int bz, unsigned int smem, CUstream s, void **params,  \
                            void **extra)                                                                    \
    {                                                                                                        \
        uint32_t flags = launch_flags();                                                                     \
        fikit_pfn_cuLaunchKernel real = REAL_AS(name, cuLaunchKernel);                                       \
        if (FIKIT_UNLIKELY(!real))                                                                           \
            return CUDA_ERROR_NOT_INITIALIZED;                                                               \
        const uint32_t grid[3] = {gx, gy, gz}, block[3] = {bx, by, bz};                                      \
        struct launch L;                                                                                     \
        before(&L, flags, FIKIT_PATH_KERNEL, f, NULL, grid, block, smem, s);                                        \
        CUresult r = real(f, gx, gy, gz, bx, by, bz, smem, L.run, params, extra);                            \
        after(&L, r);                                                                                        \
        return r;                                                                                            \
    }

#define WRAP_LAUNCH_EX(name)                                                                              \
    WRAPPER CUresult name(const CUlaunchConfig *cfg, CUfunction f, void **params, void **extra)           \
    {                                                                                                     \
        uint32_t flags = launch_flags();                                                                  \
        fikit_pfn_cuLaunchKernelEx real = REAL_AS(name, cuLaunchKernelEx);                                \
        if (FIKIT_UNLIKELY(!real))                                                                        \
            return CUDA_ERROR_NOT_INITIALIZED;                                                            \
        if (FIKIT_UNLIKELY(!cfg))                                                                         \
            return real(cfg, f, params, extra);                                                           \
        const uint32_t grid[3] = {cfg->gridDimX, cfg->gridDimY, cfg->gridDimZ};                           \
        const uint32_t block[3] = {cfg->blockDimX, cfg->blockDimY, cfg->blockDimZ};                       \
        struct launch L;                                                                                  \
        before(&L, flags, FIKIT_PATH_EX, f, NULL, grid, block, cfg->sharedMemBytes, cfg->hStream);               \
        CUlaunchConfig run_cfg = *cfg;                                                                    \
        run_cfg.hStream = L.run;                                                                          \
        CUresult r = real(L.run == cfg->hStream ? cfg : &run_cfg, f, params, extra);                      \
        after(&L, r);                                                                                     \
        return r;                                                                                         \
    }

#define WRAP_LAUNCH_COOP(name)                                                                             \
    WRAPPER CUresult name(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx,   \
                            unsigned int by, unsigned int bz, unsigned int smem, CUstream s, void **params)  \
    {                                                                                                        \
        uint32_t flags = launch_flags();                                                                     \
        fikit_pfn_cuLaunchCooperativeKernel real = REAL_AS(name, cuLaunchCooperativeKernel);                 \
        if (FIKIT_UNLIKELY(!real))                                                                           \
            return CUDA_ERROR_NOT_INITIALIZED;                                                               \
        const uint32_t grid[3] = {gx, gy, gz}, block[3] = {bx, by, bz};                                      \
        struct launch L;                                                                                     \
        before(&L, flags, FIKIT_PATH_COOP, f, NULL, grid, block, smem, s);                                          \
        CUresult r = real(f, gx, gy, gz, bx, by, bz, smem, s, params);                                       \
        after(&L, r);                                                                                        \
        return r;                                                                                            \
    }

#define WRAP_LAUNCH_GRAPH(name)                                                \
    WRAPPER CUresult name(CUgraphExec g, CUstream s)                           \
    {                                                                          \
        uint32_t flags = launch_flags();                                       \
        fikit_pfn_cuGraphLaunch real = REAL_AS(name, cuGraphLaunch);           \
        if (FIKIT_UNLIKELY(!real))                                             \
            return CUDA_ERROR_NOT_INITIALIZED;                                 \
        static const uint32_t zero[3] = {0, 0, 0};                             \
        struct launch L;                                                       \
        before(&L, flags, FIKIT_PATH_GRAPH, NULL, g ? g : (CUgraphExec)1, zero, zero, 0, s); \
        CUresult r = real(g, L.run);                                           \
        after(&L, r);                                                          \
        return r;                                                              \
    }

WRAP_LAUNCH_KERNEL(cuLaunchKernel)
WRAP_LAUNCH_KERNEL(cuLaunchKernel_ptsz)
WRAP_LAUNCH_EX(cuLaunchKernelEx)
WRAP_LAUNCH_EX(cuLaunchKernelEx_ptsz)
WRAP_LAUNCH_COOP(cuLaunchCooperativeKernel)
WRAP_LAUNCH_COOP(cuLaunchCooperativeKernel_ptsz)
WRAP_LAUNCH_GRAPH(cuGraphLaunch)
WRAP_LAUNCH_GRAPH(cuGraphLaunch_ptsz)

#define WRAP_STREAM_SYNC(name)                                         \
    WRAPPER CUresult name(CUstream s)                                  \
    {                                                                  \
        fikit_init();                                                  \
        fikit_pfn_cuStreamSynchronize real = REAL_AS(name, cuStreamSynchronize); \
        if (FIKIT_UNLIKELY(!real))                                     \
            return CUDA_ERROR_NOT_INITIALIZED;                         \
        struct fikit_dev *d = sync_begin(NULL);                        \
        CUresult r = real(s);                                          \
        sync_done(d, r == CUDA_SUCCESS ? SYNC_STREAM : SYNC_OTHER, s); \
        return r;                                                      \
    }
WRAP_STREAM_SYNC(cuStreamSynchronize)
WRAP_STREAM_SYNC(cuStreamSynchronize_ptsz)

FIKIT_API CUresult cuCtxSynchronize(void)
{
    fikit_init();
    fikit_pfn_cuCtxSynchronize real = REAL(cuCtxSynchronize);
    if (FIKIT_UNLIKELY(!real))
        return CUDA_ERROR_NOT_INITIALIZED;
    struct fikit_dev *d = sync_begin(NULL);
    CUresult r = real();
    sync_done(d, r == CUDA_SUCCESS ? SYNC_CONTEXT : SYNC_OTHER, NULL);
    return r;
}

FIKIT_API CUresult cuCtxSynchronize_v2(CUcontext ctx)
{
    fikit_init();
    fikit_pfn_cuCtxSynchronize_v2 real = REAL(cuCtxSynchronize_v2);
    if (FIKIT_UNLIKELY(!real))
        return CUDA_ERROR_NOT_INITIALIZED;
    struct fikit_dev *d = sync_begin(ctx);
    CUresult r = real(ctx);
    sync_done(d, r == CUDA_SUCCESS ? SYNC_CONTEXT : SYNC_OTHER, NULL);
    return r;
}

FIKIT_API CUresult cuEventSynchronize(CUevent e)
{
    fikit_init();
    fikit_pfn_cuEventSynchronize real = REAL(cuEventSynchronize);
    if (FIKIT_UNLIKELY(!real))
        return CUDA_ERROR_NOT_INITIALIZED;
    struct fikit_dev *d = sync_begin(NULL);
    CUresult r = real(e);
    sync_done(d, SYNC_OTHER, NULL);
    return r;
}

FIKIT_API CUresult cuGetProcAddress(const char *symbol, void **pfn, int version, cuuint64_t flags)
{
    fikit_init();
    fikit_pfn_cuGetProcAddress real = REAL(cuGetProcAddress);
    if (FIKIT_UNLIKELY(!real))
        return CUDA_ERROR_NOT_INITIALIZED;
    CUresult r = real(symbol, pfn, version, flags);
    if (r == CUDA_SUCCESS && pfn && *pfn)
        *pfn = fikit_wrap_procaddr(symbol, *pfn, version, flags);
    return r;
}

FIKIT_API CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int version, cuuint64_t flags,
                                       CUdriverProcAddressQueryResult *status)
{
    fikit_init();
    fikit_pfn_cuGetProcAddress_v2 real = REAL(cuGetProcAddress_v2);
    if (FIKIT_UNLIKELY(!real))
        return CUDA_ERROR_NOT_INITIALIZED;
    CUresult r = real(symbol, pfn, version, flags, status);
    if (r == CUDA_SUCCESS && pfn && *pfn)
        *pfn = fikit_wrap_procaddr(symbol, *pfn, version, flags);
    return r;
}

void *const fikit_wrappers[FIKIT_HOOK_COUNT] = {
#define HOOK(name, kind, base) (void *)name,
#include "hooks.def"
#undef HOOK
};
