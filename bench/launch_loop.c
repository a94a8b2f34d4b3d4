/*
 * Per-launch host cost: launch an empty kernel N times through the driver API
 * and time the launch calls alone.  Built and run by bench/verify_interpose.py,
 * with and without libfikit.so preloaded.
 *
 *   launch_loop N [CHUNK [SHAPES [TOUCH_KB [EXTRA [CODE_KB [PAGES [SETTLE]]]]]]]
 *
 * The driver is opened with dlopen and its entry points found with dlsym, so a
 * preloaded library sees the same resolution path a runtime uses.  Launches go
 * in chunks of CHUNK (default 256); the stream is drained between chunks, out
 * of the timed region, so the queue never fills and the host never blocks on
 * the GPU.  Prints one JSON object: the median over chunks of the time per
 * launch, and the mean over all launches.
 *
 * A real program is unlike this loop in two ways that matter to a preloaded
 * library: it launches many kernels, and between two launches it runs code of
 * its own that evicts the library's state from the caches.  SHAPES (default 1)
 * launches in turn that many grid sizes (each a kernel id of its own, as the
 * library counts them), and TOUCH_KB (default 0) writes one byte a cache line
 * of a buffer that large before each launch.  The writes are left out of the
 * time (timed apart and taken off each chunk's), so their own variation (tens
 * of microseconds a launch for 2 MB) does not bury the library's cache misses,
 * which are what such a run prices.  The writes evict data, not the library's
 * code, which this small loop keeps in the instruction cache; a real program's
 * own code evicts that too.  CODE_KB (default 0, x86-64 only) runs a block of
 * code that large before each launch, one jump a cache line, left out of the
 * time as the writes are: with it, a run prices the library's code misses.
 * PAGES (default 0) writes one byte in each of that many 4 KB pages (small
 * pages, never huge ones) before each launch, untimed too: as many lines as
 * TOUCH_KB = PAGES / 16 writes, spread over PAGES pages instead of PAGES / 64,
 * so that the two read apart what the library's misses in the TLB cost from
 * what its misses in the caches do (a real program's data spans more pages
 * than the TLB holds).
 *
 * SETTLE (default 0) launches every one of the SHAPES kernel ids that many times
 * before the timing starts, in turn, as fast as it can.  libfikit.so times the
 * first launches of a kernel with events, every one of its first 8 and then 1
 * in 16 until it has 32 runs measured (392 launches), and 1 in 1024 once it is
 * settled so: a timed launch costs several driver calls.  A short loop of many
 * ids never settles them (20,000 launches of 200 ids, half of them bypassed:
 * by the sampling rule, about a fifth of the timed launches were sampled),
 * while a torch HP's kernels settle in its first seconds; 400 prices the
 * settled path, as an HP runs it.
 *
 * EXTRA (default 0) adds to every launch, in the loop itself and without any
 * library, one of the things a preloaded library does around a launch, so
 * that its cost next to the real driver can be read apart from the library's:
 *   1  cuCtxGetCurrent before the launch (the library asks for the device);
 *   2  a locked add right after the launch returns;
 *   4  a locked add before the launch (after the cache writes, if any);
 *   8  two clock_gettime calls, one before and one after the launch.
 * The bits add up.  With 16 added, the extra is done on odd chunks only, and
 * the output adds diff_ns: the median over pairs of chunks (even, odd) of the
 * odd one's time per launch less the even one's, a cost measured inside one
 * process (real-driver processes differ by more than the costs looked for).
 * With 32 added (and libfikit.so preloaded), the library measures on odd
 * chunks only (fikit_set_measuring), and diff_ns is what its measuring costs.
 * With 64 added to 8, the clock reads are libfikit.so's (fikit_now_ns).
 * With 128 added (libfikit.so preloaded), even chunks bypass the library
 * (fikit_set_bypass) and diff_ns is all it costs a launch but the call
 * through its wrapper (32 is then ignored: odd chunks measure, as shipped).
 */
#define _GNU_SOURCE /* RTLD_DEFAULT */
#include <dlfcn.h>
#include <sys/mman.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#if defined(__x86_64__)
#include <x86intrin.h>
#endif

typedef int CUresult;
typedef int CUdevice;
typedef void *CUcontext;
typedef void *CUmodule;
typedef void *CUfunction;
typedef void *CUstream;

typedef CUresult (*pInit)(unsigned);
typedef CUresult (*pDeviceGet)(CUdevice *, int);
typedef CUresult (*pPrimaryCtxRetain)(CUcontext *, CUdevice);
typedef CUresult (*pCtxSetCurrent)(CUcontext);
typedef CUresult (*pModuleLoadData)(CUmodule *, const void *);
typedef CUresult (*pModuleGetFunction)(CUfunction *, CUmodule, const char *);
typedef CUresult (*pLaunchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                                  unsigned, CUstream, void **, void **);
typedef CUresult (*pCtxSynchronize)(void);
typedef CUresult (*pCtxGetCurrent)(CUcontext *);
#define IN_PROCESS (16 | 32 | 128) /* EXTRA bits that alternate chunks and report diff_ns */
typedef int (*pSwitch)(int); /* fikit_set_measuring, fikit_set_bypass */
typedef uint64_t (*pNowNs)(void);

static const char PTX[] = ".version 6.0\n"
                          ".target sm_50\n"
                          ".address_size 64\n"
                          ".visible .entry fikit_bench_noop()\n"
                          "{\n"
                          "  ret;\n"
                          "}\n";

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* The loop times itself by the TSC where there is one, scaled against the kernel's clock once:
 * a clock_gettime before each launch would keep the vDSO's pages (and glibc's way to them) in
 * the TLB for the library's own clock read, which a real program's launches do not find there. */
#if defined(__x86_64__)
static double ns_per_tick;
static void calibrate_ticks(void)
{
    double n0 = now_ns();
    unsigned long long t0 = __rdtsc();
    while (now_ns() - n0 < 20e6) /* 20 ms */
        ;
    ns_per_tick = (now_ns() - n0) / (double)(__rdtsc() - t0);
}
static double loop_ns(void) { return (double)__rdtsc() * ns_per_tick; }
#else
static void calibrate_ticks(void) {}
static double loop_ns(void) { return now_ns(); }
#endif

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* CODE_KB: a block of code that touches every line of its own, returning at the end. */
typedef void (*pCode)(void);
static pCode make_code(long bytes)
{
#if defined(__x86_64__)
    unsigned char *p = mmap(NULL, (size_t)bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    for (long at = 0; at < bytes; at += 64) {
        p[at] = 0xEB; /* jmp rel8: to the next line */
        p[at + 1] = 0x3E;
    }
    p[bytes - 64] = 0xC3; /* the last line returns */
    if (mprotect(p, (size_t)bytes, PROT_READ | PROT_EXEC) != 0)
        return NULL;
    return (pCode)(void *)p;
#else
    (void)bytes;
    return NULL;
#endif
}

static int fail(const char *what, int rc)
{
    printf("{\"error\": \"%s failed (CUresult %d)\"}\n", what, rc);
    return 2;
}

#define SYM(type, var, name)                                  \
    type var = (type)dlsym(h, name);                          \
    if (!var) {                                               \
        printf("{\"error\": \"no symbol %s\"}\n", name);      \
        return 2;                                             \
    }

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    long chunk = argc > 2 ? atol(argv[2]) : 256;
    long shapes = argc > 3 ? atol(argv[3]) : 1;
    long touch = (argc > 4 ? atol(argv[4]) : 0) * 1024;
    long extra = argc > 5 ? atol(argv[5]) : 0;
    long code_bytes = (argc > 6 ? atol(argv[6]) : 0) * 1024;
    long pages = argc > 7 ? atol(argv[7]) : 0;
    long settle = argc > 8 ? atol(argv[8]) : 0;
    if (n <= 0 || chunk <= 0 || shapes <= 0 || touch < 0 || extra < 0 || extra > 255 || code_bytes < 0 ||
        pages < 0 || settle < 0) {
        printf("{\"error\": \"usage: launch_loop N [CHUNK [SHAPES [TOUCH_KB [EXTRA 0-255 [CODE_KB [PAGES [SETTLE]]]]]]]\"}\n");
        return 2;
    }
    volatile unsigned char *spread = NULL;
    if (pages) {
        void *m = mmap(NULL, (size_t)pages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED)
            return fail("mmap (PAGES)", -1);
#ifdef MADV_NOHUGEPAGE
        madvise(m, (size_t)pages * 4096, MADV_NOHUGEPAGE); /* one TLB entry a page, as meant */
#endif
        spread = m;
    }
    pCode code = code_bytes ? make_code(code_bytes) : NULL;
    if (code_bytes && !code)
        return fail("CODE_KB (an executable block: x86-64 only)", -1);
    volatile unsigned char *buf = touch ? calloc((size_t)touch, 1) : NULL;
    if (touch && !buf)
        return fail("calloc", -1);
    unsigned char stamp = 0;
    _Atomic unsigned long counter = 0;
    CUcontext cur = NULL;
    volatile double clocks = 0; /* EXTRA 8: the clock reads are kept */
    void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
    if (!h) {
        printf("{\"error\": \"dlopen libcuda.so.1: no driver\"}\n");
        return 2;
    }
    SYM(pInit, cuInit, "cuInit")
    SYM(pDeviceGet, cuDeviceGet, "cuDeviceGet")
    SYM(pPrimaryCtxRetain, cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain")
    SYM(pCtxSetCurrent, cuCtxSetCurrent, "cuCtxSetCurrent")
    SYM(pModuleLoadData, cuModuleLoadData, "cuModuleLoadData")
    SYM(pModuleGetFunction, cuModuleGetFunction, "cuModuleGetFunction")
    SYM(pLaunchKernel, cuLaunchKernel, "cuLaunchKernel")
    SYM(pCtxSynchronize, cuCtxSynchronize, "cuCtxSynchronize")
    SYM(pCtxGetCurrent, cuCtxGetCurrent, "cuCtxGetCurrent")

    CUdevice dev;
    CUcontext ctx;
    CUmodule mod;
    CUfunction fn;
    int rc;
    if ((rc = cuInit(0)))
        return fail("cuInit", rc);
    if ((rc = cuDeviceGet(&dev, 0)))
        return fail("cuDeviceGet", rc);
    if ((rc = cuDevicePrimaryCtxRetain(&ctx, dev)))
        return fail("cuDevicePrimaryCtxRetain", rc);
    if ((rc = cuCtxSetCurrent(ctx)))
        return fail("cuCtxSetCurrent", rc);
    if ((rc = cuModuleLoadData(&mod, PTX)))
        return fail("cuModuleLoadData", rc);
    if ((rc = cuModuleGetFunction(&fn, mod, "fikit_bench_noop")))
        return fail("cuModuleGetFunction", rc);

    /* warm-up: first launches pay for lazy loading and the library's name lookup */
    for (int i = 0; i < 1000; i++)
        if ((rc = cuLaunchKernel(fn, 1, 1, 1, 32, 1, 1, 0, NULL, NULL, NULL)))
            return fail("cuLaunchKernel", rc);
    if ((rc = cuCtxSynchronize()))
        return fail("cuCtxSynchronize", rc);
    /* SETTLE: every id launched that many times, drained now and then so the queue never fills */
    for (long i = 0; i < settle * shapes; i++) {
        if ((rc = cuLaunchKernel(fn, 1 + (unsigned)(i % shapes), 1, 1, 32, 1, 1, 0, NULL, NULL, NULL)))
            return fail("cuLaunchKernel", rc);
        if (i % chunk == chunk - 1 && (rc = cuCtxSynchronize()))
            return fail("cuCtxSynchronize", rc);
    }
    if ((rc = cuCtxSynchronize()))
        return fail("cuCtxSynchronize", rc);

    pSwitch set_measuring = (extra & 32) ? (pSwitch)dlsym(RTLD_DEFAULT, "fikit_set_measuring") : NULL;
    if ((extra & 32) && !set_measuring) {
        printf("{\"error\": \"EXTRA 32 needs libfikit.so preloaded (no fikit_set_measuring)\"}\n");
        return 2;
    }
    pSwitch set_bypass = (extra & 128) ? (pSwitch)dlsym(RTLD_DEFAULT, "fikit_set_bypass") : NULL;
    if ((extra & 128) && !set_bypass) {
        printf("{\"error\": \"EXTRA 128 needs libfikit.so preloaded (no fikit_set_bypass)\"}\n");
        return 2;
    }
    pNowNs lib_now = (extra & 64) ? (pNowNs)dlsym(RTLD_DEFAULT, "fikit_now_ns") : NULL;
    if ((extra & 64) && !lib_now) {
        printf("{\"error\": \"EXTRA 64 needs libfikit.so preloaded (no fikit_now_ns)\"}\n");
        return 2;
    }
    long chunks = (n + chunk - 1) / chunk;
    double *per = malloc(sizeof(double) * (size_t)chunks);
    if (!per)
        return fail("malloc", -1);
    double total = 0;
    long done = 0;
    calibrate_ticks();
    double wall0 = now_ns();
    for (long c = 0; c < chunks; c++) {
        long k = (n - done) < chunk ? (n - done) : chunk;
        long x = (extra & IN_PROCESS) && c % 2 == 0 ? 0 : extra;
        if (set_measuring && !set_bypass)
            set_measuring(c % 2 == 1);
        if (set_bypass)
            set_bypass(c % 2 == 0);
        double t0 = loop_ns(), untimed = 0;
        for (long i = 0; i < k; i++) {
            stamp++;
            if (touch || code || pages) {
                double w0 = loop_ns();
                for (long b = 0; b < touch; b += 64)
                    buf[b] = stamp;
                /* a different line of each page from page to page: the lines spread over the cache sets */
                for (long pg = 0; pg < pages; pg++)
                    spread[pg * 4096 + (pg % 64) * 64] = stamp;
                if (code)
                    code();
                untimed += loop_ns() - w0;
            }
            unsigned gx = 1 + (unsigned)((done + i) % shapes);
            if (x & 1)
                cuCtxGetCurrent(&cur);
            if (x & 4)
                atomic_fetch_add_explicit(&counter, 1, memory_order_relaxed);
            if (x & 8)
                clocks -= lib_now ? (double)lib_now() : now_ns();
            if ((rc = cuLaunchKernel(fn, gx, 1, 1, 32, 1, 1, 0, NULL, NULL, NULL)))
                return fail("cuLaunchKernel", rc);
            if (x & 8)
                clocks += lib_now ? (double)lib_now() : now_ns();
            if (x & 2)
                atomic_fetch_add_explicit(&counter, 1, memory_order_relaxed);
        }
        double t1 = loop_ns() - untimed;
        per[c] = (t1 - t0) / (double)k;
        total += t1 - t0;
        done += k;
        if ((rc = cuCtxSynchronize()))
            return fail("cuCtxSynchronize", rc);
    }
    double wall = now_ns() - wall0;
    double diff_ns = 0;
    if ((extra & IN_PROCESS) && chunks >= 2) {
        long pairs = chunks / 2;
        double *d = malloc(sizeof(double) * (size_t)pairs);
        if (!d)
            return fail("malloc", -1);
        for (long i = 0; i < pairs; i++)
            d[i] = per[2 * i + 1] - per[2 * i];
        qsort(d, (size_t)pairs, sizeof(double), cmp_double);
        diff_ns = d[pairs / 2];
        free(d);
    }
    qsort(per, (size_t)chunks, sizeof(double), cmp_double);
    printf("{\"launches\": %ld, \"chunk\": %ld, \"shapes\": %ld, \"touch_kb\": %ld, \"code_kb\": %ld, "
           "\"pages\": %ld, \"settle\": %ld, \"extra\": %ld, \"diff_ns\": %.1f, \"median_us\": %.4f, \"p10_us\": %.4f, \"p90_us\": %.4f, "
           "\"mean_us\": %.4f, \"wall_s\": %.3f}\n",
           done, chunk, shapes, touch / 1024, code_bytes / 1024, pages, settle, extra, diff_ns, per[chunks / 2] / 1000.0,
           per[chunks / 10] / 1000.0, per[(chunks * 9) / 10] / 1000.0, total / (double)done / 1000.0, wall / 1e9);
    free(per);
    free((void *)buf);
    return 0;
}
