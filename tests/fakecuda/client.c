/*
 * A CUDA driver client for the interposition tests.
 *
 * Real programs reach the driver in several ways (linked symbols, dlopen +
 * dlsym, cuGetProcAddress, and cuGetProcAddress obtained from itself as the
 * CUDA 13 runtime does), with or without per-thread default streams, through
 * four launch APIs.  libfikit.so must see every launch whichever way was
 * taken, so this client can take each of them on demand and reports what it
 * did, for the tests to compare with the library's and the fake driver's
 * counts.
 *
 * Built twice: with -DCLIENT_DIRECT and linked against libcuda.so.1 (every
 * mode available), and without (the driver is only ever dlopen'ed, as the
 * CUDA runtime does, so the library cannot find it in the global scope).
 *
 * Prints one JSON line per process (the parent and, with --fork, the child).
 */
#define _POSIX_C_SOURCE 200809L

#include <dlfcn.h>
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fikit_cuda.h"

/* field, base name (asked of cuGetProcAddress), exported symbol, parameters */
#define PLAIN_FUNCS(X)                                                                               \
    X(Init, cuInit, cuInit, (unsigned int))                                                          \
    X(DeviceGet, cuDeviceGet, cuDeviceGet, (CUdevice *, int))                                        \
    X(PrimaryCtxRetain, cuDevicePrimaryCtxRetain, cuDevicePrimaryCtxRetain, (CUcontext *, CUdevice)) \
    X(PrimaryCtxRelease, cuDevicePrimaryCtxRelease, cuDevicePrimaryCtxRelease_v2, (CUdevice))        \
    X(CtxSetCurrent, cuCtxSetCurrent, cuCtxSetCurrent, (CUcontext))                                  \
    X(CtxSynchronize, cuCtxSynchronize, cuCtxSynchronize, (void))                                    \
    X(ModuleLoadData, cuModuleLoadData, cuModuleLoadData, (CUmodule *, const void *))                \
    X(ModuleGetFunction, cuModuleGetFunction, cuModuleGetFunction, (CUfunction *, CUmodule, const char *)) \
    X(LibraryLoadData, cuLibraryLoadData, cuLibraryLoadData,                                         \
      (CUlibrary *, const void *, int *, void **, unsigned int, int *, void **, unsigned int))       \
    X(LibraryGetKernel, cuLibraryGetKernel, cuLibraryGetKernel, (CUkernel *, CUlibrary, const char *)) \
    X(KernelGetFunction, cuKernelGetFunction, cuKernelGetFunction, (CUfunction *, CUkernel))         \
    X(StreamCreate, cuStreamCreate, cuStreamCreate, (CUstream *, unsigned int))                      \
    X(StreamDestroy, cuStreamDestroy, cuStreamDestroy_v2, (CUstream))                                \
    X(EventCreate, cuEventCreate, cuEventCreate, (CUevent *, unsigned int))                          \
    X(EventDestroy, cuEventDestroy, cuEventDestroy_v2, (CUevent))                                    \
    X(EventSynchronize, cuEventSynchronize, cuEventSynchronize, (CUevent))                           \
    X(MemAlloc, cuMemAlloc, cuMemAlloc_v2, (CUdeviceptr *, size_t))                                  \
    X(MemFree, cuMemFree, cuMemFree_v2, (CUdeviceptr))                                               \
    X(MemcpyHtoD, cuMemcpyHtoD, cuMemcpyHtoD_v2, (CUdeviceptr, const void *, size_t))                \
    X(MemcpyDtoH, cuMemcpyDtoH, cuMemcpyDtoH_v2, (void *, CUdeviceptr, size_t))                      \
    X(GraphCreate, cuGraphCreate, cuGraphCreate, (CUgraph *, unsigned int))                          \
    X(GraphInstantiate, cuGraphInstantiateWithFlags, cuGraphInstantiateWithFlags,                    \
      (CUgraphExec *, CUgraph, unsigned long long))                                                  \
    X(GraphExecDestroy, cuGraphExecDestroy, cuGraphExecDestroy, (CUgraphExec))                       \
    X(GraphDestroy, cuGraphDestroy, cuGraphDestroy, (CUgraph))

/* Functions with a per-thread-default-stream (_ptsz) variant. */
#define STREAM_FUNCS(X)                                                                             \
    X(StreamSynchronize, cuStreamSynchronize, cuStreamSynchronize, (CUstream))                      \
    X(EventRecord, cuEventRecord, cuEventRecord, (CUevent, CUstream))                               \
    X(LaunchKernel, cuLaunchKernel, cuLaunchKernel,                                                 \
      (CUfunction, unsigned int, unsigned int, unsigned int, unsigned int, unsigned int,            \
       unsigned int, unsigned int, CUstream, void **, void **))                                     \
    X(LaunchKernelEx, cuLaunchKernelEx, cuLaunchKernelEx,                                           \
      (const CUlaunchConfig *, CUfunction, void **, void **))                                       \
    X(LaunchCooperativeKernel, cuLaunchCooperativeKernel, cuLaunchCooperativeKernel,                \
      (CUfunction, unsigned int, unsigned int, unsigned int, unsigned int, unsigned int,            \
       unsigned int, unsigned int, CUstream, void **))                                              \
    X(GraphLaunch, cuGraphLaunch, cuGraphLaunch, (CUgraphExec, CUstream))

#define FIELD(field, base, sym, params) CUresult (*field) params;
struct driver {
    PLAIN_FUNCS(FIELD)
    STREAM_FUNCS(FIELD)
};

#ifdef CLIENT_DIRECT
#define PROTO(field, base, sym, params) CUresult sym params;
#define PROTO_PTSZ(field, base, sym, params) CUresult sym params; CUresult sym##_ptsz params;
PLAIN_FUNCS(PROTO)
STREAM_FUNCS(PROTO_PTSZ)
CUresult cuGetProcAddress_v2(const char *, void **, int, cuuint64_t, CUdriverProcAddressQueryResult *);
#endif

enum api { A_KERNEL, A_EX, A_COOP, A_GRAPH, A_COUNT };
static const char *const api_names[A_COUNT] = {"cuLaunchKernel", "cuLaunchKernelEx",
                                                "cuLaunchCooperativeKernel", "cuGraphLaunch"};

struct options {
    const char *mode;
    int ptsz;
    int apis[A_COUNT];
    long n;
    char kernels[64][128];
    int nkernels;
    int threads;
    int fork;
    long prefork;
    const char *sync;
    long sleep_us;
    long short_from, short_us; /* from iteration short_from on, sleep short_us instead (-1: never) */
    int check;
    unsigned int grid[3], block[3], smem;
    unsigned int param_us;
    int created_stream;
    const char *load;
    int version;
    int dlopen_global;
    int vary_block; /* odd iterations launch with twice the block: one name, two shapes */
    long unmeasured; /* the first N iterations with libfikit.so's measuring off (fikit_set_measuring) */
};

static struct options opt = {
    .mode = "dlsym",
    .n = 100,
    .threads = 1,
    .sync = "none",
    .short_from = -1,
    .grid = {1, 1, 1},
    .block = {32, 1, 1},
    .param_us = 10,
    .load = "module",
    .version = 13000,
};

static struct driver drv;
static CUcontext g_ctx;
static CUfunction g_funcs[64];
static CUdeviceptr g_counter;
static _Atomic long g_done[A_COUNT];
static _Atomic long g_inc_expected;
static _Atomic long g_per_kernel[64];
static _Atomic int g_failed;
/* Asked by name at CUDA >= 13.0, "cuCtxSynchronize" is the variant that takes the context. */
typedef CUresult (*ctx_sync_v2_fn)(CUcontext);
static int g_ctx_sync_v2;

static CUresult ctx_sync(void)
{
    if (g_ctx_sync_v2) {
        ctx_sync_v2_fn f;
        void *raw = *(void **)&drv.CtxSynchronize;
        memcpy(&f, &raw, sizeof f);
        return f(g_ctx);
    }
    return drv.CtxSynchronize();
}

#define CK(call)                                                                               \
    do {                                                                                       \
        CUresult rc_ = (call);                                                                 \
        if (rc_ != CUDA_SUCCESS) {                                                             \
            fprintf(stderr, "client: %s failed: %d (line %d)\n", #call, (int)rc_, __LINE__); \
            atomic_store(&g_failed, 1);                                                        \
            return -1;                                                                         \
        }                                                                                      \
    } while (0)

static void die(const char *msg)
{
    fprintf(stderr, "client: %s\n", msg);
    exit(2);
}

/* ------------------------------------------------------------------ */
/* Resolution: the point of the exercise. */

static void *lib_handle(void)
{
    static void *h;
    if (!h) {
        h = dlopen("libcuda.so.1", RTLD_NOW | (opt.dlopen_global ? RTLD_GLOBAL : RTLD_LOCAL));
        if (!h) {
            fprintf(stderr, "client: dlopen libcuda.so.1: %s\n", dlerror());
            exit(2);
        }
    }
    return h;
}

static void *by_dlsym(const char *sym, int ptsz)
{
    char name[160];
    snprintf(name, sizeof name, "%s%s", sym, ptsz ? "_ptsz" : "");
    void *p = dlsym(lib_handle(), name);
    if (!p)
        fprintf(stderr, "client: dlsym %s: not found\n", name);
    return p;
}

static fikit_pfn_cuGetProcAddress_v2 g_gpa;
static fikit_pfn_cuGetProcAddress g_gpa_v1;

static void *by_procaddr(const char *base, int ptsz)
{
    void *p = NULL;
    cuuint64_t flags = ptsz ? CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM : CU_GET_PROC_ADDRESS_DEFAULT;
    CUresult rc;
    if (g_gpa_v1) {
        rc = g_gpa_v1(base, &p, opt.version, flags);
    } else {
        CUdriverProcAddressQueryResult st = -1;
        rc = g_gpa(base, &p, opt.version, flags, &st);
        if (rc == CUDA_SUCCESS && st != CU_GET_PROC_ADDRESS_SUCCESS) {
            fprintf(stderr, "client: cuGetProcAddress %s: status %d\n", base, (int)st);
            return NULL;
        }
    }
    if (rc != CUDA_SUCCESS || !p) {
        fprintf(stderr, "client: cuGetProcAddress %s: %d\n", base, (int)rc);
        return NULL;
    }
    return p;
}

static void *resolve(const char *base, const char *sym, int has_ptsz)
{
    int ptsz = opt.ptsz && has_ptsz;
    if (strcmp(opt.mode, "dlsym") == 0)
        return by_dlsym(sym, ptsz);
    return by_procaddr(base, ptsz);
}

/* Entry points this run does not use: an older runtime version may not have them. */
static int optional(const char *base)
{
    return strncmp(opt.load, "module", 6) == 0 &&
           (strncmp(base, "cuLibrary", 9) == 0 || strcmp(base, "cuKernelGetFunction") == 0);
}

static void resolve_all(void)
{
    if (strcmp(opt.mode, "direct") == 0) {
#ifdef CLIENT_DIRECT
#define SET_DIRECT(field, base, sym, params) drv.field = sym;
#define SET_DIRECT_PTSZ(field, base, sym, params) drv.field = opt.ptsz ? sym##_ptsz : sym;
        PLAIN_FUNCS(SET_DIRECT)
        STREAM_FUNCS(SET_DIRECT_PTSZ)
        return;
#else
        die("mode direct needs the client built with -DCLIENT_DIRECT");
#endif
    }
    if (strcmp(opt.mode, "procaddr") == 0 || strcmp(opt.mode, "procaddr_self") == 0) {
        *(void **)&g_gpa = by_dlsym("cuGetProcAddress_v2", 0);
        if (!g_gpa)
            die("no cuGetProcAddress_v2");
        if (strcmp(opt.mode, "procaddr_self") == 0) {
            /* What the CUDA 13 runtime does: everything through what the driver hands back. */
            void *p = NULL;
            CUdriverProcAddressQueryResult st = -1;
            if (g_gpa("cuGetProcAddress", &p, opt.version, 0, &st) != CUDA_SUCCESS || !p ||
                st != CU_GET_PROC_ADDRESS_SUCCESS)
                die("cuGetProcAddress(\"cuGetProcAddress\") failed");
            /* Before CUDA 12 the name meant the 4-argument version. */
            if (opt.version < 12000) {
                *(void **)&g_gpa_v1 = p;
                g_gpa = NULL;
            } else {
                *(void **)&g_gpa = p;
            }
        }
    } else if (strcmp(opt.mode, "procaddr_v1") == 0) {
        *(void **)&g_gpa_v1 = by_dlsym("cuGetProcAddress", 0);
        if (!g_gpa_v1)
            die("no cuGetProcAddress");
    } else if (strcmp(opt.mode, "dlsym") != 0) {
        die("unknown --mode");
    }
#define SET(field, base, sym, params) *(void **)&drv.field = optional(#base) ? NULL : resolve(#base, #sym, 0);
#define SET_PTSZ(field, base, sym, params) *(void **)&drv.field = resolve(#base, #sym, 1);
    PLAIN_FUNCS(SET)
    STREAM_FUNCS(SET_PTSZ)
    g_ctx_sync_v2 = strcmp(opt.mode, "dlsym") != 0 && opt.version >= 13000;
    int missing = 0;
#define NEED(field, base, sym, params) missing |= !drv.field && !optional(#base);
    PLAIN_FUNCS(NEED)
    STREAM_FUNCS(NEED)
    if (missing)
        die("could not resolve every entry point");
}

/* ------------------------------------------------------------------ */
/* The work. */

static void sleep_us(long us)
{
    struct timespec ts = {.tv_sec = us / 1000000, .tv_nsec = (us % 1000000) * 1000};
    while (clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &ts) == EINTR) {
    }
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

struct worker {
    CUstream stream;
    CUgraph graph;
    CUgraphExec exec;
    CUevent event;
};

static int worker_setup(struct worker *w)
{
    memset(w, 0, sizeof *w);
    CK(drv.CtxSetCurrent(g_ctx));
    if (opt.created_stream)
        CK(drv.StreamCreate(&w->stream, 0));
    if (opt.apis[A_GRAPH]) {
        CK(drv.GraphCreate(&w->graph, 0));
        CK(drv.GraphInstantiate(&w->exec, w->graph, 0));
    }
    if (strcmp(opt.sync, "event") == 0)
        CK(drv.EventCreate(&w->event, CU_EVENT_DISABLE_TIMING));
    return 0;
}

static int launch_one(struct worker *w, enum api a, long i)
{
    int k = (int)(i % opt.nkernels);
    CUfunction f = g_funcs[k];
    unsigned int us = opt.param_us;
    CUdeviceptr dptr = g_counter;
    void *params_param[] = {&us, &dptr};
    void *params_ptr[] = {&dptr, &us};
    void **params = ends_with(opt.kernels[k], "_param") ? params_param : params_ptr;
    const unsigned int *g = opt.grid, *b = opt.block;
    unsigned int doubled[3] = {opt.block[0] * 2, opt.block[1], opt.block[2]};
    if (opt.vary_block && (i & 1))
        b = doubled;
    switch (a) {
    case A_KERNEL:
        CK(drv.LaunchKernel(f, g[0], g[1], g[2], b[0], b[1], b[2], opt.smem, w->stream, params, NULL));
        break;
    case A_EX: {
        CUlaunchConfig cfg;
        memset(&cfg, 0, sizeof cfg);
        cfg.gridDimX = g[0], cfg.gridDimY = g[1], cfg.gridDimZ = g[2];
        cfg.blockDimX = b[0], cfg.blockDimY = b[1], cfg.blockDimZ = b[2];
        cfg.sharedMemBytes = opt.smem;
        cfg.hStream = w->stream;
        CK(drv.LaunchKernelEx(&cfg, f, params, NULL));
        break;
    }
    case A_COOP:
        CK(drv.LaunchCooperativeKernel(f, g[0], g[1], g[2], b[0], b[1], b[2], opt.smem, w->stream, params));
        break;
    case A_GRAPH:
        CK(drv.GraphLaunch(w->exec, w->stream));
        break;
    default:
        return -1;
    }
    atomic_fetch_add(&g_done[a], 1);
    if (a != A_GRAPH) {
        atomic_fetch_add(&g_per_kernel[k], 1);
        if (strncmp(opt.kernels[k], "inc", 3) == 0)
            atomic_fetch_add(&g_inc_expected, 1);
    }
    return 0;
}

/* libfikit.so's fikit_set_measuring when it is preloaded; a no-op without it. */
static void set_measuring(int on)
{
    int (*fn)(int) = (int (*)(int))dlsym(RTLD_DEFAULT, "fikit_set_measuring");
    if (fn)
        fn(on);
}

static int run_iterations(struct worker *w, long n)
{
    for (long i = 0; i < n; i++) {
        if (opt.unmeasured > 0 && (i == 0 || i == opt.unmeasured))
            set_measuring(i >= opt.unmeasured);
        for (int a = 0; a < A_COUNT; a++)
            if (opt.apis[a] && launch_one(w, (enum api)a, i) != 0)
                return -1;
        if (strcmp(opt.sync, "stream") == 0) {
            CK(drv.StreamSynchronize(w->stream));
        } else if (strcmp(opt.sync, "ctx") == 0) {
            CK(ctx_sync());
        } else if (strcmp(opt.sync, "event") == 0) {
            CK(drv.EventRecord(w->event, w->stream));
            CK(drv.EventSynchronize(w->event));
        }
        long us = opt.short_from >= 0 && i >= opt.short_from ? opt.short_us : opt.sleep_us;
        if (us > 0)
            sleep_us(us);
    }
    return 0;
}

static void *thread_main(void *arg)
{
    (void)arg;
    struct worker w;
    if (worker_setup(&w) != 0 || run_iterations(&w, opt.n) != 0)
        atomic_store(&g_failed, 1);
    if (drv.StreamSynchronize(w.stream) != CUDA_SUCCESS)
        atomic_store(&g_failed, 1);
    return NULL;
}

static int run_threads(void)
{
    if (opt.threads <= 1) {
        thread_main(NULL);
        return atomic_load(&g_failed) ? -1 : 0;
    }
    pthread_t th[256];
    int n = opt.threads > 256 ? 256 : opt.threads;
    for (int i = 0; i < n; i++)
        if (pthread_create(&th[i], NULL, thread_main, NULL) != 0)
            die("pthread_create");
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    return atomic_load(&g_failed) ? -1 : 0;
}

static int setup(void)
{
    CUdevice dev;
    CK(drv.Init(0));
    CK(drv.DeviceGet(&dev, 0));
    CK(drv.PrimaryCtxRetain(&g_ctx, dev));
    CK(drv.CtxSetCurrent(g_ctx));
    char image[64 * 130] = "";
    for (int k = 0; k < opt.nkernels; k++) {
        strcat(image, opt.kernels[k]);
        strcat(image, "\n");
    }
    if (strcmp(opt.load, "module") == 0) {
        CUmodule mod;
        CK(drv.ModuleLoadData(&mod, image));
        for (int k = 0; k < opt.nkernels; k++)
            CK(drv.ModuleGetFunction(&g_funcs[k], mod, opt.kernels[k]));
    } else if (strcmp(opt.load, "module_each") == 0) {
        /* a module per kernel: a name listed twice is two functions, as in a program whose
         * libraries each carry their own copy of a kernel */
        for (int k = 0; k < opt.nkernels; k++) {
            CUmodule mod;
            CK(drv.ModuleLoadData(&mod, opt.kernels[k]));
            CK(drv.ModuleGetFunction(&g_funcs[k], mod, opt.kernels[k]));
        }
    } else {
        CUlibrary lib;
        CK(drv.LibraryLoadData(&lib, image, NULL, NULL, 0, NULL, NULL, 0));
        for (int k = 0; k < opt.nkernels; k++) {
            CUkernel kern;
            CK(drv.LibraryGetKernel(&kern, lib, opt.kernels[k]));
            if (strcmp(opt.load, "library_kernel") == 0)
                g_funcs[k] = (CUfunction)(void *)kern; /* the driver accepts a CUkernel here */
            else
                CK(drv.KernelGetFunction(&g_funcs[k], kern));
        }
    }
    CK(drv.MemAlloc(&g_counter, sizeof(int64_t)));
    int64_t zero = 0;
    CK(drv.MemcpyHtoD(g_counter, &zero, sizeof zero));
    return 0;
}

static int finish(int *check_ok)
{
    CK(ctx_sync());
    int64_t value = -1;
    CK(drv.MemcpyDtoH(&value, g_counter, sizeof value));
    *check_ok = value == atomic_load(&g_inc_expected);
    if (opt.check && !*check_ok)
        fprintf(stderr, "client: check failed: counter %lld, expected %ld\n", (long long)value,
                atomic_load(&g_inc_expected));
    return 0;
}

static void report(long child, int ok, int check_ok)
{
    printf("{\"pid\": %ld, \"child\": %ld, \"ok\": %s, \"check\": %s, \"launches\": {", (long)getpid(), child,
           ok ? "true" : "false", opt.check ? (check_ok ? "true" : "false") : "null");
    for (int a = 0; a < A_COUNT; a++)
        printf("%s\"%s\": %ld", a ? ", " : "", api_names[a], atomic_load(&g_done[a]));
    printf("}, \"kernels\": {");
    int first = 1;
    for (int k = 0; k < opt.nkernels; k++) {
        long n = atomic_load(&g_per_kernel[k]);
        if (n == 0)
            continue;
        printf("%s\"%s\": %ld", first ? "" : ", ", opt.kernels[k], n);
        first = 0;
    }
    printf("}}\n");
    fflush(stdout);
}

/* ------------------------------------------------------------------ */

static void parse_triple(const char *s, unsigned int out[3])
{
    unsigned int v[3] = {1, 1, 1};
    char *end;
    for (int i = 0; i < 3 && *s; i++) {
        v[i] = (unsigned int)strtoul(s, &end, 10);
        s = *end == ',' ? end + 1 : end;
    }
    memcpy(out, v, sizeof v);
}

static void parse_kernels(const char *s)
{
    opt.nkernels = 0;
    while (*s && opt.nkernels < 64) {
        const char *c = strchr(s, ',');
        size_t len = c ? (size_t)(c - s) : strlen(s);
        if (len == 0 || len >= sizeof opt.kernels[0])
            die("bad kernel name");
        memcpy(opt.kernels[opt.nkernels], s, len);
        opt.kernels[opt.nkernels][len] = '\0';
        opt.nkernels++;
        s = c ? c + 1 : s + len;
    }
}

static void parse_api(const char *s)
{
    memset(opt.apis, 0, sizeof opt.apis);
    if (strcmp(s, "all") == 0) {
        for (int a = 0; a < A_COUNT; a++)
            opt.apis[a] = 1;
    } else if (strcmp(s, "kernel") == 0) {
        opt.apis[A_KERNEL] = 1;
    } else if (strcmp(s, "ex") == 0) {
        opt.apis[A_EX] = 1;
    } else if (strcmp(s, "coop") == 0) {
        opt.apis[A_COOP] = 1;
    } else if (strcmp(s, "graph") == 0) {
        opt.apis[A_GRAPH] = 1;
    } else {
        die("unknown --api");
    }
}

static void usage(void)
{
    fputs("usage: client [--mode direct|dlsym|procaddr|procaddr_v1|procaddr_self] [--ptsz]\n"
          "  [--api kernel|ex|coop|graph|all] [-n N] [--kernels a,b] [--threads T]\n"
          "  [--fork] [--prefork N] [--sync none|stream|ctx|event] [--sleep-us G] [--check]\n"
          "  [--grid x,y,z] [--block x,y,z] [--smem B] [--param-us U] [--stream default|created]\n"
          "  [--load module|module_each|library|library_kernel] [--version V] [--dlopen-global] [--vary-block]\n"
          "  [--unmeasured N] [--short-from I --short-us S]\n",
          stderr);
    exit(2);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"mode", required_argument, NULL, 'm'},    {"ptsz", no_argument, NULL, 'P'},
        {"api", required_argument, NULL, 'a'},     {"kernels", required_argument, NULL, 'k'},
        {"threads", required_argument, NULL, 't'}, {"fork", no_argument, NULL, 'f'},
        {"prefork", required_argument, NULL, 'F'}, {"sync", required_argument, NULL, 's'},
        {"sleep-us", required_argument, NULL, 'S'}, {"check", no_argument, NULL, 'c'},
        {"grid", required_argument, NULL, 'g'},    {"block", required_argument, NULL, 'b'},
        {"smem", required_argument, NULL, 'M'},    {"param-us", required_argument, NULL, 'u'},
        {"stream", required_argument, NULL, 'r'},  {"load", required_argument, NULL, 'l'},
        {"version", required_argument, NULL, 'v'}, {"dlopen-global", no_argument, NULL, 'G'},
        {"vary-block", no_argument, NULL, 'V'},    {"help", no_argument, NULL, 'h'},
        {"unmeasured", required_argument, NULL, 'U'}, {"short-from", required_argument, NULL, 'I'},
        {"short-us", required_argument, NULL, 'i'},
        {NULL, 0, NULL, 0},
    };
    parse_api("kernel");
    parse_kernels("k");
    int c;
    while ((c = getopt_long(argc, argv, "n:", longopts, NULL)) != -1) {
        switch (c) {
        case 'm': opt.mode = optarg; break;
        case 'P': opt.ptsz = 1; break;
        case 'a': parse_api(optarg); break;
        case 'n': opt.n = strtol(optarg, NULL, 10); break;
        case 'k': parse_kernels(optarg); break;
        case 't': opt.threads = atoi(optarg); break;
        case 'f': opt.fork = 1; break;
        case 'F': opt.prefork = strtol(optarg, NULL, 10); break;
        case 's': opt.sync = optarg; break;
        case 'S': opt.sleep_us = strtol(optarg, NULL, 10); break;
        case 'c': opt.check = 1; break;
        case 'g': parse_triple(optarg, opt.grid); break;
        case 'b': parse_triple(optarg, opt.block); break;
        case 'M': opt.smem = (unsigned int)strtoul(optarg, NULL, 10); break;
        case 'u': opt.param_us = (unsigned int)strtoul(optarg, NULL, 10); break;
        case 'r': opt.created_stream = strcmp(optarg, "created") == 0; break;
        case 'l': opt.load = optarg; break;
        case 'v': opt.version = atoi(optarg); break;
        case 'G': opt.dlopen_global = 1; break;
        case 'V': opt.vary_block = 1; break;
        case 'U': opt.unmeasured = strtol(optarg, NULL, 10); break;
        case 'I': opt.short_from = strtol(optarg, NULL, 10); break;
        case 'i': opt.short_us = strtol(optarg, NULL, 10); break;
        default: usage();
        }
    }
    if (optind != argc || opt.nkernels == 0)
        usage();
    if (strcmp(opt.sync, "none") && strcmp(opt.sync, "stream") && strcmp(opt.sync, "ctx") &&
        strcmp(opt.sync, "event"))
        usage();

    resolve_all();
    if (setup() != 0)
        return 1;

    long child = 0;
    if (opt.prefork > 0 || opt.fork) {
        struct worker w;
        if (worker_setup(&w) != 0 || run_iterations(&w, opt.prefork) != 0)
            return 1;
    }
    if (opt.fork) {
        fflush(stdout);
        pid_t pid = fork();
        if (pid < 0)
            die("fork");
        if (pid == 0) {
            /* The child starts its own report from zero, as the driver's counts do. */
            for (int a = 0; a < A_COUNT; a++)
                atomic_store(&g_done[a], 0);
            for (int k = 0; k < 64; k++)
                atomic_store(&g_per_kernel[k], 0);
            int ok = run_threads() == 0, check_ok = 0;
            ok = finish(&check_ok) == 0 && ok;
            report(-1, ok, check_ok);
            exit(ok && (!opt.check || check_ok) ? 0 : 1);
        }
        child = pid;
    }
    int ok = run_threads() == 0, check_ok = 0;
    ok = finish(&check_ok) == 0 && ok;
    if (child > 0) {
        int status = 0;
        if (waitpid((pid_t)child, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "client: child %ld failed (status 0x%x)\n", child, status);
            ok = 0;
        }
    }
    report(child, ok, check_ok);
    return ok && (!opt.check || check_ok) ? 0 : 1;
}
