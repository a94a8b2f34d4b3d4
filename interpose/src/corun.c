/*
 * Co-running: a low-priority launch that fits no gap of a busy high-priority
 * client still runs, beside it, on a green context confined to a share of the
 * SMs, so that the high-priority kernels find the rest of the GPU free.
 *
 * Why green contexts: on the H100 (bench/results/2026-11-25-h100/probe) a
 * kernel of the primary context launched onto a green-context stream of 72 of
 * the 132 SMs ran confined (2x longer), with or without MPS, and a small
 * kernel of the primary context launched beside it started at once (31 us,
 * as alone), where beside the same kernel on the whole GPU it waited 8 ms.
 * Unlike an MPS SM cap, the confinement is per launch: when HP idles, LP
 * launches go back to its own streams and the whole GPU.
 *
 * Order is kept with events: the green stream first waits for what the app
 * stream has queued, and the app stream then waits for the redirected
 * kernel, so the program sees its stream's order unchanged.  Anything the
 * driver refuses turns co-running off for that device (the launch is then
 * held as without it): fail-open to the gap-filling policy.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "fikit.h"

_Static_assert(sizeof(CUdevResource) == 144, "CUdevResource must match <cuda.h> (see cuda_abi_check.c)");

#define ORDER_EVENTS 64
#define MAX_PARTS 8 /* SM shares a device has co-run at; fikitd moves the share in steps */

/* One green context per share asked for: made on first use and kept (a
 * context with work in flight cannot be torn down under it, and fikitd's
 * controller revisits the same few shares). */
struct part {
    uint32_t pct;
    unsigned sms;
    CUstream gs;
};

/* Per device (indexed like the device table), set up in the first context
 * that co-runs on that device. */
struct corun {
    pthread_mutex_t lock;
    int state; /* 0 not tried, 1 ready, -1 unavailable */
    unsigned sms;
    CUcontext ctx;
    CUdevice dev;
    CUdevResource all;
    struct part parts[MAX_PARTS];
    unsigned n_parts;
    CUevent ev[ORDER_EVENTS];
    unsigned next;
};
static struct corun coruns[FIKIT_MAX_DEVS + 1];
static pthread_once_t coruns_once = PTHREAD_ONCE_INIT;

static void coruns_init(void)
{
    for (int i = 0; i <= FIKIT_MAX_DEVS; i++)
        pthread_mutex_init(&coruns[i].lock, NULL);
}

static void give_up(struct corun *co, const char *why, CUresult r)
{
    static _Atomic int warned;
    fikit_log_once(&warned, "co-running unavailable (%s failed: %d); low-priority work waits for gaps", why, r);
    co->state = -1;
}

#define TRY(call, what)              \
    do {                             \
        CUresult r_ = (call);        \
        if (r_ != CUDA_SUCCESS) {    \
            give_up(co, what, r_);   \
            return;                  \
        }                            \
    } while (0)

/* What every share needs: the context, its device's SMs, the ordering events. */
static void setup(struct corun *co)
{
    struct fikit_driver *d = &fikit_drv;
    if (!d->cuCtxGetCurrent || !d->cuCtxGetDevice || !d->cuDeviceGetDevResource || !d->cuDevSmResourceSplitByCount ||
        !d->cuDevResourceGenerateDesc || !d->cuGreenCtxCreate || !d->cuGreenCtxStreamCreate || !d->cuStreamWaitEvent ||
        !d->cuEventCreate || !d->cuEventRecord) {
        give_up(co, "resolving the green-context API", CUDA_ERROR_NOT_SUPPORTED);
        return;
    }
    TRY(d->cuCtxGetCurrent(&co->ctx), "cuCtxGetCurrent");
    if (!co->ctx) {
        give_up(co, "finding the current context", CUDA_ERROR_INVALID_CONTEXT);
        return;
    }
    TRY(d->cuCtxGetDevice(&co->dev), "cuCtxGetDevice");
    TRY(d->cuDeviceGetDevResource(co->dev, &co->all, CU_DEV_RESOURCE_TYPE_SM), "cuDeviceGetDevResource");
    for (int i = 0; i < ORDER_EVENTS; i++)
        TRY(d->cuEventCreate(&co->ev[i], CU_EVENT_DISABLE_TIMING), "cuEventCreate");
    co->sms = co->all.sm.smCount;
    co->state = 1;
}

static unsigned pct_dist(uint32_t a, uint32_t b) { return a > b ? a - b : b - a; }

/* The green stream of a share: found, made, or (table full) the nearest made. */
static struct part *part_for(struct corun *co, uint32_t pct)
{
    struct part *near = NULL;
    for (unsigned i = 0; i < co->n_parts; i++) {
        struct part *p = &co->parts[i];
        if (p->pct == pct)
            return p;
        if (!near || pct_dist(p->pct, pct) < pct_dist(near->pct, pct))
            near = p;
    }
    if (co->n_parts == MAX_PARTS)
        return near;
    struct fikit_driver *d = &fikit_drv;
    unsigned want = (co->sms * pct + 99) / 100;
    if (want < 1)
        want = 1;
    unsigned groups = 1;
    CUdevResource part = {0}, rest = {0}, all = co->all;
    CUdevResourceDesc desc;
    CUgreenCtx g;
    CUstream gs;
    CUresult r = d->cuDevSmResourceSplitByCount(&part, &groups, &all, &rest, 0, want);
    if (r == CUDA_SUCCESS && groups != 1)
        r = CUDA_ERROR_INVALID_VALUE;
    if (r == CUDA_SUCCESS)
        r = d->cuDevResourceGenerateDesc(&desc, &part, 1);
    if (r == CUDA_SUCCESS)
        r = d->cuGreenCtxCreate(&g, desc, co->dev, CU_GREEN_CTX_DEFAULT_STREAM);
    if (r == CUDA_SUCCESS)
        r = d->cuGreenCtxStreamCreate(&gs, g, CU_STREAM_NON_BLOCKING, 0);
    if (r != CUDA_SUCCESS) {
        give_up(co, "making a green context", r);
        return NULL;
    }
    if (!fikit_cupti_ignore_stream(gs)) {
        /* Profiling mode must not take a confined kernel's time for its time on the whole GPU. */
        give_up(co, "leaving the green stream out of CUPTI's timing", CUDA_ERROR_NOT_SUPPORTED);
        return NULL;
    }
    struct part *p = &co->parts[co->n_parts++];
    *p = (struct part){.pct = pct, .sms = part.sm.smCount, .gs = gs};
    if (fikit_debug)
        fikit_log("co-running at %u%%: %u of %u SMs of device %d", pct, p->sms, co->sms, (int)co->dev);
    return p;
}

bool fikit_corun_begin(int di, CUstream app, uint32_t pct, CUstream *run_on)
{
    if (pct == 0 || pct >= 100 || di < 0 || di > FIKIT_MAX_DEVS)
        return false;
    pthread_once(&coruns_once, coruns_init);
    struct corun *co = &coruns[di];
    pthread_mutex_lock(&co->lock);
    if (co->state == 0)
        setup(co);
    CUcontext cur = NULL;
    bool ok = co->state == 1 && fikit_drv.cuCtxGetCurrent(&cur) == CUDA_SUCCESS && cur == co->ctx;
    struct part *p = ok ? part_for(co, pct) : NULL;
    if (p) {
        /* The green stream starts after everything the app stream holds. */
        CUevent e = co->ev[co->next++ % ORDER_EVENTS];
        CUresult r = fikit_drv.cuEventRecord(e, app);
        if (r == CUDA_SUCCESS)
            r = fikit_drv.cuStreamWaitEvent(p->gs, e, 0);
        if (r != CUDA_SUCCESS) {
            give_up(co, "ordering the green stream after the app stream", r);
            p = NULL;
        }
    }
    if (p)
        *run_on = p->gs;
    pthread_mutex_unlock(&co->lock);
    return p != NULL;
}

void fikit_corun_end(int di, CUstream app, CUstream green)
{
    struct corun *co = &coruns[di];
    pthread_mutex_lock(&co->lock);
    if (co->state == 1) {
        /* What the app stream holds next starts after the redirected kernel. */
        CUevent e = co->ev[co->next++ % ORDER_EVENTS];
        CUresult r = fikit_drv.cuEventRecord(e, green);
        if (r == CUDA_SUCCESS)
            r = fikit_drv.cuStreamWaitEvent(app, e, 0);
        if (r != CUDA_SUCCESS) {
            /* The order can no longer be kept: wait here rather than break it. */
            fikit_pfn_cuStreamSynchronize sync =
                (fikit_pfn_cuStreamSynchronize)fikit_hot.real[FIKIT_HOOK_cuStreamSynchronize];
            if (sync)
                sync(green);
            give_up(co, "ordering the app stream after the green stream", r);
        }
    }
    pthread_mutex_unlock(&co->lock);
}

bool fikit_corun_usable(int di) { return di >= 0 && di <= FIKIT_MAX_DEVS && coruns[di].state != -1; }

void fikit_corun_after_fork(void)
{
    memset(coruns, 0, sizeof coruns);
    coruns_init();
}
