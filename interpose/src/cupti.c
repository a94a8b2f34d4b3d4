/*
 * Profiling mode (FIKIT_PROFILE=1): kernel durations from CUPTI's activity
 * records, the GPU timestamps the PyTorch profiler reads, instead of events.
 *
 * Why: a pair of events around a launch times the front end's handling of
 * the events and of the launch along with the kernel, on the H100 2-7 us more
 * than the profiler reports for kernels of 1-3 us.  CUPTI's records of kind
 * CONCURRENT_KERNEL carry each kernel's start and end on the SMs, and taking
 * them does not serialise kernels.
 *
 * libcupti is dlopen'ed at the first launch in profiling mode, never linked:
 * $FIKIT_CUPTI alone when it is set, else libcupti.so.13, libcupti.so.12,
 * libcupti.so.  The library then takes CUPTI for itself with cuptiSubscribe,
 * as CUPTI asks every client to, so that a process another tool already
 * profiles (the PyTorch profiler, Nsight Systems) is left to that tool.
 * Whatever fails: one line on stderr, and kernels are timed by events exactly
 * as without CUPTI (fail-open; the program is not touched either way).
 *
 * Each record's kernel id is computed as a launch's (kid.c: the mangled name,
 * grid, block and dynamic shared memory, all in the record) and end - start
 * goes into that kernel's statistics (measure.c), the same ring, average and
 * prediction the event samples feed in the other modes.  Skipped: records of
 * kernels replayed from a graph (the graph launch is timed by events as a
 * whole, as in the other modes; its kernels are not launches the library saw)
 * and of kernels co-running on the green-context stream (corun.c: confined to
 * part of the GPU, they say nothing of their time on the whole of it).
 *
 * Records come back in buffers.  A thread of ours flushes the completed ones
 * every FLUSH_MS, so that predictions follow the program; an exit handler,
 * registered after libcupti is loaded so that it runs before libcupti's own
 * teardown and before FIKIT_STATS is written, flushes the rest.
 */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fikit.h"
#include "fikit_cupti.h"

#define FLUSH_MS 100
#define BUFFER_BYTES (1u << 20) /* about 4800 records of CUDA 13's 216 bytes */
#define MAX_IGNORED 64 /* green streams: up to 8 shares on each of several GPUs */
#define EXIT_WAIT_S 2 /* the exit flush waits this long for a periodic one */
#define START_WAIT_NS 1000000000ull /* a launch waits this long for another thread starting CUPTI */

enum { UNTRIED, STARTING, ON, OFF, STOPPED };
static _Atomic int state;

static struct {
#define FIKIT_CUPTI_FIELD(name, required) fikit_pfn_##name name;
    FIKIT_CUPTI_FUNCS(FIKIT_CUPTI_FIELD)
#undef FIKIT_CUPTI_FIELD
} api;

static CUpti_SubscriberHandle subscriber;
static pthread_mutex_t records_lock = PTHREAD_MUTEX_INITIALIZER; /* records into the kernel table */
static pthread_mutex_t flush_lock = PTHREAD_MUTEX_INITIALIZER;   /* a periodic flush against the exit one */
static struct fikit_cupti_counts counts;                         /* under records_lock */
static _Atomic uint32_t ignored[MAX_IGNORED];                    /* CUPTI stream ids not timed */
static _Atomic unsigned n_ignored;
static _Atomic int warned;
static _Thread_local bool starting_here; /* CUPTI's start may come back into a hook on this thread */

static const char *result_name(CUptiResult r)
{
    const char *s = NULL;
    if (api.cuptiGetResultString && api.cuptiGetResultString(r, &s) == CUPTI_SUCCESS && s)
        return s;
    return "unknown error";
}

/* ---- records -------------------------------------------------------------- */
static void buffer_requested(uint8_t **buffer, size_t *size, size_t *max_records)
{
    *buffer = aligned_alloc(8, BUFFER_BYTES); /* CUPTI's records are 8-byte aligned */
    *size = *buffer ? BUFFER_BYTES : 0;       /* NULL: CUPTI drops records, and counts them */
    *max_records = 0;                         /* as many as fit */
}

static bool stream_ignored(uint32_t id)
{
    unsigned n = atomic_load_explicit(&n_ignored, memory_order_acquire);
    for (unsigned i = 0; i < n && i < MAX_IGNORED; i++)
        if (atomic_load_explicit(&ignored[i], memory_order_relaxed) == id)
            return true;
    return false;
}

static void take(const struct fikit_cupti_kernel *r)
{
    counts.records++;
    if (r->end <= r->start) { /* 0 and 0: CUPTI could not time it */
        counts.incomplete++;
        return;
    }
    if (r->graphId) {
        counts.graph++;
        return;
    }
    if (stream_ignored(r->streamId)) {
        counts.ignored++;
        return;
    }
    /* The record's device: each GPU keeps its kernels in its own slot. */
    struct fikit_slot *me = NULL;
    for (int i = 0, n = fikit_dev_count(); i < n && !me; i++) {
        struct fikit_dev *d = fikit_dev_at(i);
        if (d->ordinal == (int)r->deviceId)
            me = d->me;
    }
    struct fikit_kstat *k = NULL;
    if (me && r->name) {
        const uint32_t grid[3] = {(uint32_t)r->gridX, (uint32_t)r->gridY, (uint32_t)r->gridZ};
        const uint32_t block[3] = {(uint32_t)r->blockX, (uint32_t)r->blockY, (uint32_t)r->blockZ};
        uint64_t id = fikit_kernel_id(fikit_name_hash(r->name), grid, block, (uint32_t)r->dynamicSharedMemory);
        k = fikit_ktab_find(me, id);
    }
    if (!k || k->kind != 0) { /* a kernel no hooked launch identified (or the table was full) */
        counts.unmatched++;
        return;
    }
    fikit_measured(me, k, r->end - r->start);
    counts.timed++;
}

static void buffer_completed(CUcontext ctx, uint32_t stream_id, uint8_t *buffer, size_t size, size_t valid)
{
    (void)size;
    pthread_mutex_lock(&records_lock);
    CUpti_Activity *rec = NULL;
    while (buffer && api.cuptiActivityGetNextRecord(buffer, valid, &rec) == CUPTI_SUCCESS)
        if (rec->kind == CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL || rec->kind == CUPTI_ACTIVITY_KIND_KERNEL)
            take((const struct fikit_cupti_kernel *)(const void *)rec);
    size_t dropped = 0;
    if (api.cuptiActivityGetNumDroppedRecords &&
        api.cuptiActivityGetNumDroppedRecords(ctx, stream_id, &dropped) == CUPTI_SUCCESS)
        counts.dropped += dropped;
    pthread_mutex_unlock(&records_lock);
    free(buffer);
}

/* ---- flushing ------------------------------------------------------------- */
static void *flusher(void *arg)
{
    (void)arg;
    struct timespec period = {.tv_sec = FLUSH_MS / 1000, .tv_nsec = (long)(FLUSH_MS % 1000) * 1000000L};
    for (;;) {
        while (nanosleep(&period, NULL) != 0 && errno == EINTR) {
        }
        pthread_mutex_lock(&flush_lock);
        int s = atomic_load(&state);
        if (s == ON)
            api.cuptiActivityFlushAll(0); /* the buffers whose records are all complete */
        pthread_mutex_unlock(&flush_lock);
        if (s != ON && s != STARTING)
            return NULL;
    }
}

/* Registered after libcupti is loaded: runs before its teardown, and before
 * launch.c's exit handler writes FIKIT_STATS. */
static void flush_at_exit(void)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += EXIT_WAIT_S;
    bool locked = pthread_mutex_timedlock(&flush_lock, &until) == 0;
    int expect = ON;
    if (atomic_compare_exchange_strong(&state, &expect, STOPPED) && locked) {
        /* The program has usually synchronised; what is still running comes back untimed. */
        CUptiResult r = api.cuptiActivityFlushAll(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);
        if (r != CUPTI_SUCCESS && fikit_debug)
            fikit_log("CUPTI: the final flush failed: %s", result_name(r));
    }
    if (locked)
        pthread_mutex_unlock(&flush_lock);
}

/* ---- starting -------------------------------------------------------------- */
static void no_callback(void *userdata, CUpti_CallbackDomain domain, CUpti_CallbackId cbid, const void *data)
{
    (void)userdata, (void)domain, (void)cbid, (void)data;
}

static void *load(char *why, size_t n)
{
    const char *given = getenv("FIKIT_CUPTI");
    if (given && *given) {
        /* Where the user says, and only there: a wrong path is said, not guessed around. */
        void *h = dlopen(given, RTLD_NOW | RTLD_LOCAL);
        if (!h)
            snprintf(why, n, "cannot load FIKIT_CUPTI=%s (%s)", given, dlerror());
        return h;
    }
    static const char *const names[] = {"libcupti.so.13", "libcupti.so.12", "libcupti.so"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        void *h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
        if (h)
            return h;
    }
    snprintf(why, n, "no libcupti.so.13, libcupti.so.12 or libcupti.so on the library path; set FIKIT_CUPTI");
    return NULL;
}

static bool start(char *why, size_t n)
{
    void *h = load(why, n);
    if (!h)
        return false;
#define FIKIT_CUPTI_RESOLVE(name, required)                                  \
    api.name = (fikit_pfn_##name)fikit_sym(h, #name);                        \
    if ((required) && !api.name) {                                           \
        snprintf(why, n, "libcupti has no %s", #name);                       \
        return false;                                                        \
    }
    FIKIT_CUPTI_FUNCS(FIKIT_CUPTI_RESOLVE)
#undef FIKIT_CUPTI_RESOLVE
    uint32_t version = 0;
    CUptiResult r = api.cuptiGetVersion(&version);
    if (r != CUPTI_SUCCESS) {
        snprintf(why, n, "cuptiGetVersion: %s", result_name(r));
        return false;
    }
    if (version < FIKIT_CUPTI_MIN_API_VERSION) {
        snprintf(why, n, "CUPTI API version %u, %u or later needed", version, FIKIT_CUPTI_MIN_API_VERSION);
        return false;
    }
    r = api.cuptiSubscribe(&subscriber, no_callback, NULL);
    if (r != CUPTI_SUCCESS) {
        snprintf(why, n, "cuptiSubscribe: %s%s", result_name(r),
                 r == CUPTI_ERROR_MULTIPLE_SUBSCRIBERS_NOT_SUPPORTED ? " (another tool holds CUPTI)" : "");
        return false;
    }
    r = api.cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed);
    const char *step = "cuptiActivityRegisterCallbacks";
    if (r == CUPTI_SUCCESS) {
        r = api.cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL);
        step = "cuptiActivityEnable(CONCURRENT_KERNEL)";
    }
    if (r != CUPTI_SUCCESS) {
        snprintf(why, n, "%s: %s", step, result_name(r));
        api.cuptiUnsubscribe(subscriber);
        return false;
    }
    pthread_t t;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&a, 64 * 1024);
    bool thread_ok = pthread_create(&t, &a, flusher, NULL) == 0;
    pthread_attr_destroy(&a);
    if (!thread_ok || atexit(flush_at_exit) != 0) {
        snprintf(why, n, "cannot start the flushing thread or the exit handler");
        api.cuptiActivityDisable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL);
        api.cuptiUnsubscribe(subscriber);
        return false;
    }
    if (fikit_debug)
        fikit_log("kernel durations from CUPTI (API version %u)", version);
    return true;
}

bool fikit_cupti_timing(void)
{
    int s = atomic_load_explicit(&state, memory_order_acquire);
    if (FIKIT_LIKELY(s == ON))
        return true;
    if (s == UNTRIED) {
        int expect = UNTRIED;
        if (atomic_compare_exchange_strong(&state, &expect, STARTING)) {
            char why[400] = "";
            starting_here = true;
            bool ok = start(why, sizeof why);
            starting_here = false;
            atomic_store_explicit(&state, ok ? ON : OFF, memory_order_release);
            if (!ok)
                fikit_log_once(&warned, "FIKIT_PROFILE=1: CUPTI unavailable (%s); kernels timed by events", why);
            return ok;
        }
        s = expect;
    }
    if (s == STARTING && !starting_here) {
        /* Another thread is starting CUPTI: wait for it, so that this launch is
         * timed once, by one or the other; bounded, in case CUPTI's start were
         * to wait for this thread.  Past that the launch goes untimed. */
        uint64_t until = fikit_clock_ns() + START_WAIT_NS;
        struct timespec nap = {.tv_sec = 0, .tv_nsec = 20000};
        while ((s = atomic_load_explicit(&state, memory_order_acquire)) == STARTING && fikit_clock_ns() < until)
            nanosleep(&nap, NULL);
    }
    /* Starting (on this thread, or past the wait): neither events nor, maybe,
     * CUPTI time the launch; never both.  Stopped: the process is exiting. */
    return s != OFF;
}

bool fikit_cupti_ignore_stream(CUstream stream)
{
    int s = atomic_load(&state);
    if (s == OFF || s == UNTRIED)
        return true; /* nothing to exclude from */
    if (s != ON || !api.cuptiGetStreamIdEx)
        return false;
    uint32_t id = 0;
    if (api.cuptiGetStreamIdEx(NULL, stream, 0, &id) != CUPTI_SUCCESS)
        return false;
    unsigned i = atomic_load(&n_ignored);
    if (i >= MAX_IGNORED)
        return false;
    atomic_store_explicit(&ignored[i], id, memory_order_relaxed);
    atomic_store_explicit(&n_ignored, i + 1, memory_order_release);
    return true;
}

bool fikit_cupti_counts(struct fikit_cupti_counts *out)
{
    int s = atomic_load(&state);
    if (s != ON && s != STOPPED)
        return false;
    pthread_mutex_lock(&records_lock);
    *out = counts;
    pthread_mutex_unlock(&records_lock);
    return true;
}

void fikit_cupti_after_fork(void)
{
    /* CUPTI's threads and ours did not come along: the child times by events. */
    pthread_mutex_init(&records_lock, NULL);
    pthread_mutex_init(&flush_lock, NULL);
    memset(&counts, 0, sizeof counts);
    atomic_store(&n_ignored, 0);
    int s = atomic_load(&state);
    atomic_store(&state, s == UNTRIED ? UNTRIED : OFF);
}
