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

/* One green context per device (indexed like the device table), made in the
 * first context that co-runs on that device. */
struct corun {
    pthread_mutex_t lock;
    int state; /* 0 not tried, 1 ready, -1 unavailable */
    uint32_t pct;
    unsigned sms, part_sms;
    CUcontext ctx;
    CUstream gs;
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

static void setup(struct corun *co, uint32_t pct)
{
    struct fikit_driver *d = &fikit_drv;
    if (!d->cuCtxGetCurrent || !d->cuCtxGetDevice || !d->cuDeviceGetDevResource || !d->cuDevSmResourceSplitByCount ||
        !d->cuDevResourceGenerateDesc || !d->cuGreenCtxCreate || !d->cuGreenCtxStreamCreate || !d->cuStreamWaitEvent ||
        !d->cuEventCreate || !d->cuEventRecord) {
        give_up(co, "resolving the green-context API", CUDA_ERROR_NOT_SUPPORTED);
        return;
    }
    CUdevice dev;
    TRY(d->cuCtxGetCurrent(&co->ctx), "cuCtxGetCurrent");
    if (!co->ctx) {
        give_up(co, "finding the current context", CUDA_ERROR_INVALID_CONTEXT);
        return;
    }
    TRY(d->cuCtxGetDevice(&dev), "cuCtxGetDevice");
    CUdevResource all = {0}, part = {0}, rest = {0};
    TRY(d->cuDeviceGetDevResource(dev, &all, CU_DEV_RESOURCE_TYPE_SM), "cuDeviceGetDevResource");
    unsigned want = (all.sm.smCount * pct + 99) / 100;
    if (want < 1)
        want = 1;
    unsigned groups = 1;
    TRY(d->cuDevSmResourceSplitByCount(&part, &groups, &all, &rest, 0, want), "cuDevSmResourceSplitByCount");
    if (groups != 1) {
        give_up(co, "splitting the SMs", CUDA_ERROR_INVALID_VALUE);
        return;
    }
    CUdevResourceDesc desc;
    CUgreenCtx g;
    TRY(d->cuDevResourceGenerateDesc(&desc, &part, 1), "cuDevResourceGenerateDesc");
    TRY(d->cuGreenCtxCreate(&g, desc, dev, CU_GREEN_CTX_DEFAULT_STREAM), "cuGreenCtxCreate");
    TRY(d->cuGreenCtxStreamCreate(&co->gs, g, CU_STREAM_NON_BLOCKING, 0), "cuGreenCtxStreamCreate");
    for (int i = 0; i < ORDER_EVENTS; i++)
        TRY(d->cuEventCreate(&co->ev[i], CU_EVENT_DISABLE_TIMING), "cuEventCreate");
    co->sms = all.sm.smCount;
    co->part_sms = part.sm.smCount;
    co->pct = pct;
    co->state = 1;
    if (fikit_debug)
        fikit_log("co-running on %u of %u SMs of device %d", co->part_sms, co->sms, (int)dev);
}

bool fikit_corun_begin(int di, CUstream app, uint32_t pct, CUstream *run_on)
{
    if (pct == 0 || pct >= 100 || di < 0 || di > FIKIT_MAX_DEVS)
        return false;
    pthread_once(&coruns_once, coruns_init);
    struct corun *co = &coruns[di];
    pthread_mutex_lock(&co->lock);
    if (co->state == 0)
        setup(co, pct);
    CUcontext cur = NULL;
    bool ok = co->state == 1 && fikit_drv.cuCtxGetCurrent(&cur) == CUDA_SUCCESS && cur == co->ctx;
    if (ok) {
        /* The green stream starts after everything the app stream holds. */
        CUevent e = co->ev[co->next++ % ORDER_EVENTS];
        CUresult r = fikit_drv.cuEventRecord(e, app);
        if (r == CUDA_SUCCESS)
            r = fikit_drv.cuStreamWaitEvent(co->gs, e, 0);
        if (r != CUDA_SUCCESS) {
            give_up(co, "ordering the green stream after the app stream", r);
            ok = false;
        }
    }
    if (ok)
        *run_on = co->gs;
    pthread_mutex_unlock(&co->lock);
    return ok;
}

void fikit_corun_end(int di, CUstream app)
{
    struct corun *co = &coruns[di];
    pthread_mutex_lock(&co->lock);
    if (co->state == 1) {
        /* What the app stream holds next starts after the redirected kernel. */
        CUevent e = co->ev[co->next++ % ORDER_EVENTS];
        CUresult r = fikit_drv.cuEventRecord(e, co->gs);
        if (r == CUDA_SUCCESS)
            r = fikit_drv.cuStreamWaitEvent(app, e, 0);
        if (r != CUDA_SUCCESS) {
            /* The order can no longer be kept: wait here rather than break it. */
            fikit_pfn_cuStreamSynchronize sync = (fikit_pfn_cuStreamSynchronize)fikit_real[FIKIT_HOOK_cuStreamSynchronize];
            if (sync)
                sync(co->gs);
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
