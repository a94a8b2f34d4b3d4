/*
 * How a program reaches the driver, and how it reaches us instead.
 *
 * Three doors lead to a driver entry point, and each must open on our wrapper:
 *  - the linked symbol: LD_PRELOAD puts our exported cuLaunchKernel first;
 *  - dlsym(handle, "cuLaunchKernel"): we export dlsym and answer hooked names
 *    with wrappers (the real dlsym comes from dlvsym);
 *  - cuGetProcAddress(_v2): the CUDA 12/13 runtime resolves every entry point
 *    through it, after first asking it for "cuGetProcAddress" itself; we
 *    answer hooked names, that one included, with wrappers.
 * The real entry points come from the driver library's own handle.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <string.h>

#include "fikit.h"

/* The real functions live in the hot page (fikit_hot.real): the launch hooks come first in
 * hooks.def, so a launch reads one line of them. */
_Static_assert(FIKIT_HOOK_cuGraphLaunch_ptsz < 8, "the launch hooks' real functions fit one cache line");
struct fikit_driver fikit_drv;

#define wrappers fikit_wrappers /* our wrappers, by hook id (launch.c) */
static const char *const names[FIKIT_HOOK_COUNT] = {
#define HOOK(name, kind, base) #name,
#include "hooks.def"
#undef HOOK
};
static const char *const bases[FIKIT_HOOK_COUNT] = {
#define HOOK(name, kind, base) #base,
#include "hooks.def"
#undef HOOK
};

typedef void *(*dlsym_fn)(void *, const char *);
static _Atomic(dlsym_fn) real_dlsym_p;
static void *libcuda;

static dlsym_fn real_dlsym(void)
{
    dlsym_fn f = atomic_load_explicit(&real_dlsym_p, memory_order_acquire);
    if (FIKIT_LIKELY(f))
        return f;
    /* glibc 2.34 moved dlsym into libc under a new version; older ones have 2.2.5. */
    f = (dlsym_fn)dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.34");
    if (!f)
        f = (dlsym_fn)dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.2.5");
    atomic_store_explicit(&real_dlsym_p, f, memory_order_release);
    return f;
}

static int hook_index(const char *symbol)
{
    if (!symbol || symbol[0] != 'c' || symbol[1] != 'u')
        return -1;
    for (int i = 0; i < FIKIT_HOOK_COUNT; i++)
        if (strcmp(symbol, names[i]) == 0)
            return i;
    return -1;
}

/* Remember the real function for hook i; the first one seen wins. */
static void set_real(int i, void *p)
{
    if (!p || p == wrappers[i])
        return;
    void *expect = NULL;
    __atomic_compare_exchange_n(&fikit_hot.real[i], &expect, p, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

void *fikit_real_sym(const char *name)
{
    dlsym_fn d = real_dlsym();
    if (!d)
        return NULL;
    void *p = libcuda ? d(libcuda, name) : NULL;
    if (!p)
        p = d(RTLD_NEXT, name);
    return p;
}

void *fikit_sym(void *handle, const char *name)
{
    dlsym_fn d = real_dlsym();
    return d ? d(handle, name) : NULL;
}

void fikit_resolve_init(void)
{
    /* Loading the driver here costs nothing extra: the process is launching on it. */
    libcuda = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
    if (!libcuda)
        libcuda = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    for (int i = 0; i < FIKIT_HOOK_COUNT; i++)
        set_real(i, fikit_real_sym(names[i]));
    fikit_drv.cuFuncGetName = (fikit_pfn_cuFuncGetName)fikit_real_sym("cuFuncGetName");
    fikit_drv.cuKernelGetName = (fikit_pfn_cuKernelGetName)fikit_real_sym("cuKernelGetName");
    fikit_drv.cuEventCreate = (fikit_pfn_cuEventCreate)fikit_real_sym("cuEventCreate");
    fikit_drv.cuEventDestroy = (fikit_pfn_cuEventDestroy_v2)fikit_real_sym("cuEventDestroy_v2");
    fikit_drv.cuEventRecord = (fikit_pfn_cuEventRecord)fikit_real_sym("cuEventRecord");
    fikit_drv.cuEventQuery = (fikit_pfn_cuEventQuery)fikit_real_sym("cuEventQuery");
    fikit_drv.cuEventElapsedTime = (fikit_pfn_cuEventElapsedTime_v2)fikit_real_sym("cuEventElapsedTime_v2");
    fikit_drv.cuCtxGetCurrent = (fikit_pfn_cuCtxGetCurrent)fikit_real_sym("cuCtxGetCurrent");
    fikit_drv.cuStreamIsCapturing = (fikit_pfn_cuStreamIsCapturing)fikit_real_sym("cuStreamIsCapturing");
    fikit_drv.cuStreamQuery = (fikit_pfn_cuStreamQuery)fikit_real_sym("cuStreamQuery");
    fikit_drv.cuMemHostAlloc = (fikit_pfn_cuMemHostAlloc)fikit_real_sym("cuMemHostAlloc");
    fikit_drv.cuMemHostGetDevicePointer =
        (fikit_pfn_cuMemHostGetDevicePointer_v2)fikit_real_sym("cuMemHostGetDevicePointer_v2");
    fikit_drv.cuStreamWaitValue32 = (fikit_pfn_cuStreamWaitValue32_v2)fikit_real_sym("cuStreamWaitValue32_v2");
    fikit_drv.cuStreamWaitEvent = (fikit_pfn_cuStreamWaitEvent)fikit_real_sym("cuStreamWaitEvent");
    fikit_drv.cuCtxGetDevice = (fikit_pfn_cuCtxGetDevice)fikit_real_sym("cuCtxGetDevice");
    fikit_drv.cuDeviceGetCount = (fikit_pfn_cuDeviceGetCount)fikit_real_sym("cuDeviceGetCount");
    /* cuda.h maps cuDeviceGetUuid to _v2 (CUDA 11.4); the older symbol has the same signature. */
    fikit_drv.cuDeviceGetUuid = (fikit_pfn_cuDeviceGetUuid_v2)fikit_real_sym("cuDeviceGetUuid_v2");
    if (!fikit_drv.cuDeviceGetUuid)
        fikit_drv.cuDeviceGetUuid = (fikit_pfn_cuDeviceGetUuid_v2)fikit_real_sym("cuDeviceGetUuid");
    fikit_drv.cuDeviceGetDevResource = (fikit_pfn_cuDeviceGetDevResource)fikit_real_sym("cuDeviceGetDevResource");
    fikit_drv.cuDevSmResourceSplitByCount =
        (fikit_pfn_cuDevSmResourceSplitByCount)fikit_real_sym("cuDevSmResourceSplitByCount");
    fikit_drv.cuDevResourceGenerateDesc =
        (fikit_pfn_cuDevResourceGenerateDesc)fikit_real_sym("cuDevResourceGenerateDesc");
    fikit_drv.cuGreenCtxCreate = (fikit_pfn_cuGreenCtxCreate)fikit_real_sym("cuGreenCtxCreate");
    fikit_drv.cuGreenCtxStreamCreate = (fikit_pfn_cuGreenCtxStreamCreate)fikit_real_sym("cuGreenCtxStreamCreate");
}

FIKIT_API void *dlsym(void *handle, const char *symbol)
{
    dlsym_fn d = real_dlsym();
    if (FIKIT_UNLIKELY(!d))
        return NULL;
    int i = hook_index(symbol);
    if (i < 0)
        return d(handle, symbol);
    void *p = d(handle, symbol);
    if (!p)
        return NULL;
    set_real(i, p);
    return wrappers[i];
}

/*
 * What cuGetProcAddress handed out for `symbol` (a base name such as
 * "cuLaunchKernel"): our wrapper for the variant it is, or the real pointer
 * unchanged when we cannot tell which variant that is.
 */
void *fikit_wrap_procaddr(const char *symbol, void *p, int version, cuuint64_t flags)
{
    static _Atomic int warned;
    if (!symbol || !p || symbol[0] != 'c' || symbol[1] != 'u')
        return p;
    int cand[4], nc = 0;
    for (int i = 0; i < FIKIT_HOOK_COUNT && nc < 4; i++)
        if (strcmp(bases[i], symbol) == 0)
            cand[nc++] = i;
    if (nc == 0)
        return p;
    for (int c = 0; c < nc; c++)
        if (__atomic_load_n(&fikit_hot.real[cand[c]], __ATOMIC_ACQUIRE) == p)
            return wrappers[cand[c]];
    /* A pointer we know by no name is another version of the entry point,
     * maybe with another signature (CUDA 13's cuCtxSynchronize gives
     * cuCtxSynchronize_v2(CUcontext)): never wrap it.  Only when the driver
     * exports none of the names do we tell the variant by what was asked. */
    bool any_known = false;
    for (int c = 0; c < nc; c++)
        any_known |= __atomic_load_n(&fikit_hot.real[cand[c]], __ATOMIC_ACQUIRE) != NULL;
    if (any_known) {
        if (strncmp(symbol, "cuLaunch", 8) == 0 || strncmp(symbol, "cuGraphLaunch", 13) == 0)
            fikit_log_once(&warned, "cuGetProcAddress(%s) gave an entry point fikit does not know; "
                                    "those launches are not scheduled", symbol);
        else if (fikit_debug)
            fikit_log("cuGetProcAddress(%s, %d) gave another version; passed through", symbol, version);
        return p;
    }
    int pick = cand[0];
    for (int c = 0; c < nc; c++) {
        const char *nm = names[cand[c]];
        if (strstr(nm, "_ptsz") && (flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM))
            pick = cand[c];
        if (strstr(nm, "_v2") && version >= 12000)
            pick = cand[c];
    }
    void *expect = NULL;
    if (__atomic_compare_exchange_n(&fikit_hot.real[pick], &expect, p, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE) ||
        expect == p)
        return wrappers[pick];
    return p;
}
