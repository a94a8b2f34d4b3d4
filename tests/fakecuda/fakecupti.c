/*
 * fakecupti: a stand-in libcupti.so.13 for machines without a GPU.
 *
 * Just the CUPTI calls libfikit.so's profiling mode makes (interpose/src/
 * cupti.c), with the types of interpose/include/fikit_cupti.h, so that the
 * ABI the tests exercise is the one the library was built for.  Kernel
 * activity records come from the fake driver's simulated timeline (the runs
 * of fakecuda_runs.h): the record of a kernel carries exactly the start and
 * end the fake GPU gave it, so the library's durations can be checked
 * against known answers to the nanosecond.
 *
 * As real CUPTI: one subscriber at a time; records only for kernels launched
 * after cuptiActivityEnable(CONCURRENT_KERNEL); buffers from the client's
 * request callback, handed back through its completion callback by
 * cuptiActivityFlushAll (a default flush hands back the completed records,
 * a forced one every record, those still running with no timestamps).  No
 * worker thread of its own: the client flushes.
 *
 * Environment:
 *   FAKECUDA_CUPTI_FAIL     comma-separated calls that fail: cuptiSubscribe
 *                           (as when another tool holds CUPTI),
 *                           cuptiActivityEnable, cuptiActivityRegisterCallbacks
 *   FAKECUDA_CUPTI_VERSION  what cuptiGetVersion reports (default 130001)
 *
 * Linked against the fake libcuda.so.1, whose private export it reads.
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fakecuda_runs.h"
#include "fikit_cupti.h"

#define EXPORT __attribute__((visibility("default")))
#define RECORD_BYTES 216 /* sizeof(CUpti_ActivityKernel10), what CUDA 13 emits */
#define BATCH 256

_Static_assert(sizeof(struct fikit_cupti_kernel) <= RECORD_BYTES, "a record holds fikit's fields");

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER; /* flushes */
static atomic_int g_subscribed, g_enabled;
static CUpti_BuffersCallbackRequestFunc g_request;
static CUpti_BuffersCallbackCompleteFunc g_complete;
static int g_fail_subscribe, g_fail_enable, g_fail_register;
static uint32_t g_version = 130001;

static int listed(const char *list, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = list; p && *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && strncmp(p, name, n) == 0)
            return 1;
        p = end ? end + 1 : NULL;
    }
    return 0;
}

__attribute__((constructor)) static void fake_cupti_setup(void)
{
    const char *fail = getenv("FAKECUDA_CUPTI_FAIL");
    g_fail_subscribe = listed(fail, "cuptiSubscribe");
    g_fail_enable = listed(fail, "cuptiActivityEnable");
    g_fail_register = listed(fail, "cuptiActivityRegisterCallbacks");
    const char *v = getenv("FAKECUDA_CUPTI_VERSION");
    if (v && *v)
        g_version = (uint32_t)strtoul(v, NULL, 10);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

EXPORT CUptiResult cuptiGetVersion(uint32_t *version)
{
    if (!version)
        return CUPTI_ERROR_INVALID_PARAMETER;
    *version = g_version;
    return CUPTI_SUCCESS;
}

EXPORT CUptiResult cuptiGetResultString(CUptiResult r, const char **s)
{
    if (!s)
        return CUPTI_ERROR_INVALID_PARAMETER;
    switch (r) {
    case CUPTI_SUCCESS: *s = "CUPTI_SUCCESS"; break;
    case CUPTI_ERROR_INVALID_PARAMETER: *s = "CUPTI_ERROR_INVALID_PARAMETER"; break;
    case CUPTI_ERROR_MAX_LIMIT_REACHED: *s = "CUPTI_ERROR_MAX_LIMIT_REACHED"; break;
    case CUPTI_ERROR_NOT_INITIALIZED: *s = "CUPTI_ERROR_NOT_INITIALIZED"; break;
    case CUPTI_ERROR_NOT_SUPPORTED: *s = "CUPTI_ERROR_NOT_SUPPORTED"; break;
    case CUPTI_ERROR_MULTIPLE_SUBSCRIBERS_NOT_SUPPORTED: *s = "CUPTI_ERROR_MULTIPLE_SUBSCRIBERS_NOT_SUPPORTED"; break;
    default: *s = "CUPTI_ERROR_UNKNOWN"; return CUPTI_ERROR_INVALID_PARAMETER;
    }
    return CUPTI_SUCCESS;
}

EXPORT CUptiResult cuptiSubscribe(CUpti_SubscriberHandle *sub, CUpti_CallbackFunc cb, void *userdata)
{
    (void)cb, (void)userdata;
    if (!sub)
        return CUPTI_ERROR_INVALID_PARAMETER;
    int expect = 0;
    if (g_fail_subscribe || !atomic_compare_exchange_strong(&g_subscribed, &expect, 1))
        return CUPTI_ERROR_MULTIPLE_SUBSCRIBERS_NOT_SUPPORTED;
    static int handle;
    *sub = (CUpti_SubscriberHandle)(void *)&handle;
    return CUPTI_SUCCESS;
}

EXPORT CUptiResult cuptiUnsubscribe(CUpti_SubscriberHandle sub)
{
    if (!sub || !atomic_exchange(&g_subscribed, 0))
        return CUPTI_ERROR_INVALID_PARAMETER;
    return CUPTI_SUCCESS;
}

EXPORT CUptiResult cuptiActivityRegisterCallbacks(CUpti_BuffersCallbackRequestFunc req,
                                                  CUpti_BuffersCallbackCompleteFunc done)
{
    if (!req || !done)
        return CUPTI_ERROR_INVALID_PARAMETER;
    if (g_fail_register)
        return CUPTI_ERROR_NOT_INITIALIZED;
    pthread_mutex_lock(&g_lock);
    g_request = req;
    g_complete = done;
    pthread_mutex_unlock(&g_lock);
    return CUPTI_SUCCESS;
}

EXPORT CUptiResult cuptiActivityEnable(CUpti_ActivityKind kind)
{
    if (kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL)
        return CUPTI_ERROR_NOT_SUPPORTED; /* all this fake knows */
    if (g_fail_enable)
        return CUPTI_ERROR_NOT_INITIALIZED;
    atomic_store(&g_enabled, 1);
    fakecuda_runs_enable(1);
    return CUPTI_SUCCESS;
}

EXPORT CUptiResult cuptiActivityDisable(CUpti_ActivityKind kind)
{
    if (kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL)
        return CUPTI_ERROR_NOT_SUPPORTED;
    atomic_store(&g_enabled, 0);
    fakecuda_runs_enable(0);
    return CUPTI_SUCCESS;
}

static void fill(uint8_t *rec, const struct fakecuda_run *run, uint64_t now)
{
    memset(rec, 0, RECORD_BYTES);
    struct fikit_cupti_kernel *k = (struct fikit_cupti_kernel *)(void *)rec;
    k->kind = CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL;
    if (run->end <= now) { /* still running: CUPTI has no timestamps for it yet */
        k->start = run->start;
        k->end = run->end;
    }
    k->streamId = run->stream_id;
    k->deviceId = run->device;
    k->gridX = (int32_t)run->grid[0], k->gridY = (int32_t)run->grid[1], k->gridZ = (int32_t)run->grid[2];
    k->blockX = (int32_t)run->block[0], k->blockY = (int32_t)run->block[1], k->blockZ = (int32_t)run->block[2];
    k->dynamicSharedMemory = (int32_t)run->smem;
    k->correlationId = run->correlation;
    k->name = run->name;
    k->graphId = run->graph_id;
}

EXPORT CUptiResult cuptiActivityFlushAll(uint32_t flag)
{
    pthread_mutex_lock(&g_lock);
    if (!g_request || !g_complete) {
        pthread_mutex_unlock(&g_lock);
        return CUPTI_ERROR_NOT_INITIALIZED;
    }
    int forced = (flag & CUPTI_ACTIVITY_FLAG_FLUSH_FORCED) != 0;
    struct fakecuda_run runs[BATCH];
    for (;;) {
        uint64_t now = now_ns();
        size_t n = fakecuda_runs_take(runs, BATCH, now, forced);
        if (n == 0)
            break;
        uint8_t *buf = NULL;
        size_t size = 0, max_records = 0;
        g_request(&buf, &size, &max_records);
        if (!buf || size < RECORD_BYTES) {
            free(buf);
            break; /* declined: the records are lost, as CUPTI drops them */
        }
        size_t fit = size / RECORD_BYTES;
        if (max_records && max_records < fit)
            fit = max_records;
        size_t i = 0;
        for (; i < n && i < fit; i++)
            fill(buf + i * RECORD_BYTES, &runs[i], now);
        g_complete(NULL, 0, buf, size, i * RECORD_BYTES);
        if (i < n)
            break; /* a buffer smaller than a batch: the rest are lost */
    }
    pthread_mutex_unlock(&g_lock);
    return CUPTI_SUCCESS;
}

EXPORT CUptiResult cuptiActivityGetNextRecord(uint8_t *buffer, size_t valid, CUpti_Activity **record)
{
    if (!buffer || !record)
        return CUPTI_ERROR_INVALID_PARAMETER;
    uint8_t *next = *record ? (uint8_t *)*record + RECORD_BYTES : buffer;
    if (next + RECORD_BYTES > buffer + valid)
        return CUPTI_ERROR_MAX_LIMIT_REACHED;
    *record = (CUpti_Activity *)(void *)next;
    return CUPTI_SUCCESS;
}

EXPORT CUptiResult cuptiActivityGetNumDroppedRecords(CUcontext ctx, uint32_t stream_id, size_t *dropped)
{
    (void)ctx, (void)stream_id;
    if (!dropped)
        return CUPTI_ERROR_INVALID_PARAMETER;
    *dropped = fakecuda_runs_dropped();
    return CUPTI_SUCCESS;
}

EXPORT CUptiResult cuptiGetStreamIdEx(CUcontext ctx, CUstream stream, uint8_t per_thread, uint32_t *id)
{
    (void)ctx;
    if (!id)
        return CUPTI_ERROR_INVALID_PARAMETER;
    return fakecuda_stream_id(stream, per_thread, id) == CUDA_SUCCESS ? CUPTI_SUCCESS : CUPTI_ERROR_INVALID_PARAMETER;
}
