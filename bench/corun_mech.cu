// Which mechanism keeps a high-priority (HP) process's short kernels fast while a low-priority (LP)
// process runs long kernels beside it, and how much LP throughput does each leave?  (Issue 11.)
//
// One program, two roles, driven by bench/corun_mech.py (one MPS client per role):
//   hp  batch-1 inference: requests back to back, each 40 short kernels with ~8 us of host work
//       between launches (a framework's CPU time), then a stream sync; prints request latencies.
//   lp  training-like: long streaming kernels back to back, kept 2 deep in the queue; prints one
//       "ready" line once running, and its completion times on SIGTERM.
// Options choose where the kernels go: --affinity N (an MPS execution-affinity context of N SMs,
// made current before the runtime starts so that the runtime adopts it), --green N (a green-context
// stream of N SMs), --stream-prio hi|lo|none.  The runtime only loads the kernels (cudaFree(0),
// cudaGetFuncBySymbol, as corun_probe.cu does); every launch is cuLaunchKernel on the chosen stream.
// Every CUDA call is checked: a failure prints {"error": NAME, "at": CALL} and exits 1.
// Build: nvcc -O2 -arch=sm_90 -o corun_mech corun_mech.cu -lcuda
#include <cuda.h>
#include <cuda_runtime.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <algorithm>
#include <vector>

// HP: each block reads its 32 KiB of a 1 MiB slice (8 float4 a thread, coalesced), then runs a
// dependent FMA chain.  32 blocks x 256 threads need a fraction of the GPU, as a batch-1 kernel
// does.  Time alone on an H100: ~1-2 us of DRAM latency + 4096 FMAs x 4 cycles / ~1.9 GHz
// ~ 8.5 us, so ~10 us: short next to the LP's blocks, long enough to be more than launch cost.
__global__ void hp_kernel(const float4 *buf, size_t base4, int iters, float *out)
{
    const float4 *p = buf + base4 + (size_t)blockIdx.x * blockDim.x * 8 + threadIdx.x;
    float acc = 0.f;
#pragma unroll
    for (int j = 0; j < 8; j++) {
        float4 v = p[j * blockDim.x];
        acc += v.x + v.y + v.z + v.w;
    }
#pragma unroll 8
    for (int i = 0; i < iters; i++)
        acc = fmaf(acc, 0.999999f, 0.5f);
    out[blockIdx.x * blockDim.x + threadIdx.x] = acc; // keeps the chain from being removed
}

// LP: x = a*x + 1 over the whole buffer (grid-stride).  768 MiB read + written = 1.6 GB of DRAM
// traffic, ~550 us at the H100's ~3 TB/s.  The grid is 4 waves of resident blocks, so a block
// lives ~1/4 of the kernel (~130 us, like a large GEMM tile): an HP block that finds every SM
// full waits for an LP block to retire, which is the contention the mechanisms must prevent.
__global__ void lp_kernel(float4 *buf, size_t n4, float a)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n4; i += (size_t)gridDim.x * blockDim.x) {
        float4 v = buf[i];
        v.x = v.x * a + 1.f;
        v.y = v.y * a + 1.f;
        v.z = v.z * a + 1.f;
        v.w = v.w * a + 1.f;
        buf[i] = v;
    }
}

static const int HP_BLOCKS = 32, HP_THREADS = 256, HP_LAUNCHES = 40;
static const size_t HP_BUF = 256ull << 20, HP_SLICE = 1ull << 20;
static const int LP_THREADS = 256;

static void die(const char *name, int code, const char *at)
{
    printf("{\"error\": \"%s\", \"code\": %d, \"at\": \"%s\"}\n", name ? name : "?", code, at);
    fflush(stdout);
    exit(1);
}

static void ck(CUresult r, const char *at)
{
    if (r != CUDA_SUCCESS) {
        const char *name = NULL;
        cuGetErrorName(r, &name);
        die(name, (int)r, at);
    }
}

static void rk(cudaError_t r, const char *at)
{
    if (r != cudaSuccess)
        die(cudaGetErrorName(r), (int)r, at);
}

#define CK(x) ck((x), #x)
#define RK(x) rk((x), #x)

static long long now_ns()
{
    timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t); // the clock Python's time.monotonic_ns() reads
    return t.tv_sec * 1000000000ll + t.tv_nsec;
}

// n launches, each timed alone by an event pair on stream s (us appended to out).
template <typename Launch> static void time_launches(int n, CUstream s, Launch launch, std::vector<double> &out)
{
    CUevent a, b;
    CK(cuEventCreate(&a, 0));
    CK(cuEventCreate(&b, 0));
    for (int i = 0; i < n; i++) {
        CK(cuEventRecord(a, s));
        launch();
        CK(cuEventRecord(b, s));
        CK(cuEventSynchronize(b));
        float ms = 0;
        CK(cuEventElapsedTime(&ms, a, b));
        out.push_back(ms * 1e3);
    }
    CK(cuEventDestroy(a));
    CK(cuEventDestroy(b));
}

static double pct(std::vector<double> v, double q) // linear interpolation, as benchlib.quantile
{
    if (v.empty())
        return -1;
    std::sort(v.begin(), v.end());
    double pos = q * (v.size() - 1);
    size_t lo = (size_t)pos, hi = std::min(lo + 1, v.size() - 1);
    return v[lo] + (v[hi] - v[lo]) * (pos - lo);
}

struct Opts {
    const char *role = "";
    double seconds = 2.0, warmup = 0.3;
    int affinity = 0, green = 0, prio = 0; // prio: 1 greatest, -1 least, 0 none
    const char *prio_name = "none";
    int iters = 4096, lp_blocks = 132 * 32;
    size_t lp_bytes = 768ull << 20;
};

struct Where {
    CUstream s = NULL;
    int sms = 0, affinity_supported = -1, affinity_sms = -1, green_sms = -1, least = 0, greatest = 0,
        stream_prio = 0;
};

// The context and stream the role launches on.  For --affinity the context must exist and be
// current before the runtime's first call: the runtime then operates on it instead of the primary
// context, and the kernels are loaded into it.
static Where setup(const Opts &o, CUfunction *hp_f, CUfunction *lp_f)
{
    Where w;
    CUdevice dev;
    CK(cuInit(0));
    CK(cuDeviceGet(&dev, 0));
    CK(cuDeviceGetAttribute(&w.sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev));
    CK(cuDeviceGetExecAffinitySupport(&w.affinity_supported, CU_EXEC_AFFINITY_TYPE_SM_COUNT, dev));
    CUcontext made = NULL, cur = NULL;
    if (o.affinity > 0) {
        CUexecAffinityParam ap;
        memset(&ap, 0, sizeof ap);
        ap.type = CU_EXEC_AFFINITY_TYPE_SM_COUNT;
        ap.param.smCount.val = (unsigned)o.affinity;
        CUctxCreateParams cp = {&ap, 1, NULL};
        CK(cuCtxCreate(&made, &cp, 0, dev)); // CUDA 13: cuCtxCreate_v4, affinity in the params
        CUexecAffinityParam got;
        CK(cuCtxGetExecAffinity(&got, CU_EXEC_AFFINITY_TYPE_SM_COUNT));
        w.affinity_sms = (int)got.param.smCount.val; // rounded up to what the hardware allows
    }
    RK(cudaFree(0));
    CK(cuCtxGetCurrent(&cur));
    if (made && cur != made) // numbers from the primary context would be wrong, not just worse
        die("runtime did not adopt the affinity context (ctx_adopted false)", 0, "cudaFree(0)");
    RK(cudaGetFuncBySymbol((cudaFunction_t *)hp_f, (const void *)hp_kernel));
    RK(cudaGetFuncBySymbol((cudaFunction_t *)lp_f, (const void *)lp_kernel));
    CK(cuCtxGetStreamPriorityRange(&w.least, &w.greatest));
    w.stream_prio = o.prio > 0 ? w.greatest : o.prio < 0 ? w.least : 0;
    if (o.green > 0) {
        // Only the stream is confined: the kernels and memory stay in the runtime's context,
        // as when fikit moves an application's launch onto a green stream.
        CUdevResource all, part, rest;
        unsigned groups = 1;
        CK(cuDeviceGetDevResource(dev, &all, CU_DEV_RESOURCE_TYPE_SM));
        CK(cuDevSmResourceSplitByCount(&part, &groups, &all, &rest, 0, (unsigned)o.green));
        CUdevResourceDesc desc;
        CK(cuDevResourceGenerateDesc(&desc, &part, 1));
        CUgreenCtx g;
        CK(cuGreenCtxCreate(&g, desc, dev, CU_GREEN_CTX_DEFAULT_STREAM));
        CK(cuGreenCtxStreamCreate(&w.s, g, CU_STREAM_NON_BLOCKING, w.stream_prio));
        w.green_sms = (int)part.sm.smCount;
    } else {
        CK(cuStreamCreateWithPriority(&w.s, CU_STREAM_NON_BLOCKING, w.stream_prio));
    }
    return w;
}

static void print_where(const Opts &o, const Where &w)
{
    const char *cp = getenv("CUDA_MPS_CLIENT_PRIORITY"), *tp = getenv("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE");
    printf("\"role\": \"%s\", \"sms\": %d, \"affinity\": %d, \"affinity_supported\": %d, \"affinity_sms\": %d, "
           "\"ctx_adopted\": %s, \"green\": %d, \"green_sms\": %d, \"stream_prio\": \"%s\", "
           "\"stream_prio_value\": %d, \"stream_prio_range\": [%d, %d], \"mps\": %s, "
           "\"mps_client_priority\": \"%s\", \"active_thread_pct\": \"%s\"",
           o.role, w.sms, o.affinity, w.affinity_supported, w.affinity_sms, o.affinity > 0 ? "true" : "null",
           o.green, w.green_sms, o.prio_name, w.stream_prio, w.least, w.greatest,
           getenv("CUDA_MPS_PIPE_DIRECTORY") ? "true" : "false", cp ? cp : "", tp ? tp : "");
}

static int run_hp(const Opts &o, const Where &w, CUfunction f)
{
    CUdeviceptr buf, out;
    CK(cuMemAlloc(&buf, HP_BUF));
    CK(cuMemAlloc(&out, HP_BLOCKS * HP_THREADS * sizeof(float)));
    CK(cuMemsetD32(buf, 0, HP_BUF / 4));
    CK(cuCtxSynchronize());
    const size_t slices = HP_BUF / HP_SLICE, slice4 = HP_SLICE / 16;
    size_t k = 0, base4 = 0;
    int iters = o.iters;
    const float4 *bp = (const float4 *)buf;
    float *op = (float *)out;
    void *args[] = {&bp, &base4, &iters, &op};
    auto launch = [&]() {
        base4 = (k++ % slices) * slice4; // a new slice each time: 256 MiB cycle, past the 50 MB L2
        CK(cuLaunchKernel(f, HP_BLOCKS, 1, 1, HP_THREADS, 1, 1, 0, w.s, args, NULL));
    };
    auto request = [&]() -> double {
        long long t0 = now_ns();
        for (int i = 0; i < HP_LAUNCHES; i++) {
            launch();
            if (i + 1 < HP_LAUNCHES) {
                long long until = now_ns() + 8000; // the framework's CPU time between launches
                while (now_ns() < until) {
                }
            }
        }
        CK(cuStreamSynchronize(w.s));
        return (now_ns() - t0) / 1e3;
    };
    long long warm_end = now_ns() + (long long)(o.warmup * 1e9);
    while (now_ns() < warm_end)
        request();
    std::vector<double> lat;
    lat.reserve(1 << 16);
    long long t0 = now_ns(), end = t0 + (long long)(o.seconds * 1e9);
    while (now_ns() < end)
        lat.push_back(request());
    long long t1 = now_ns();
    // Kernel time by events, after the window (still beside the LP, if one runs): queueing included.
    std::vector<double> kev;
    time_launches(20, w.s, launch, kev);
    double sum = 0, mx = 0;
    for (double x : lat) {
        sum += x;
        mx = std::max(mx, x);
    }
    printf("{");
    print_where(o, w);
    printf(", \"n\": %zu, \"p50_us\": %.2f, \"p90_us\": %.2f, \"p99_us\": %.2f, \"mean_us\": %.2f, "
           "\"max_us\": %.2f, \"kernel_ev_us_p50\": %.2f, \"kernel_ev_us_min\": %.2f, \"win_ns\": [%lld, %lld], "
           "\"launches_per_req\": %d, \"iters\": %d}\n",
           lat.size(), pct(lat, 0.5), pct(lat, 0.9), pct(lat, 0.99), lat.empty() ? -1 : sum / lat.size(), mx,
           pct(kev, 0.5), *std::min_element(kev.begin(), kev.end()), t0, t1, HP_LAUNCHES, o.iters);
    return 0;
}

static volatile sig_atomic_t stop_flag = 0;
static void on_term(int) { stop_flag = 1; }

static int run_lp(const Opts &o, const Where &w, CUfunction f)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, NULL);
    CUdeviceptr buf;
    CK(cuMemAlloc(&buf, o.lp_bytes));
    CK(cuMemsetD32(buf, 0, o.lp_bytes / 4));
    CK(cuCtxSynchronize());
    float4 *bp = (float4 *)buf;
    size_t n4 = o.lp_bytes / 16;
    float a = 0.5f;
    void *args[] = {&bp, &n4, &a};
    auto launch = [&]() { CK(cuLaunchKernel(f, o.lp_blocks, 1, 1, LP_THREADS, 1, 1, 0, w.s, args, NULL)); };
    // Its kernel time on its own share, before the HP starts: what the confinement costs it.
    launch();
    std::vector<double> kus;
    time_launches(3, w.s, launch, kus);
    printf("{\"ready\": true, ");
    print_where(o, w);
    printf(", \"kernel_us\": %.1f, \"lp_blocks\": %d, \"lp_mib\": %zu}\n", pct(kus, 0.5), o.lp_blocks,
           o.lp_bytes >> 20);
    fflush(stdout);
    // Two kernels always queued: the GPU never waits for this thread, and the queue never grows,
    // so a stop (SIGTERM) is seen within one kernel.  Blocking-sync events: no CPU spin needed.
    CUevent ring[3];
    for (auto &e : ring)
        CK(cuEventCreate(&e, CU_EVENT_DISABLE_TIMING | CU_EVENT_BLOCKING_SYNC));
    std::vector<long long> done;
    done.reserve(1 << 18);
    long long t0 = now_ns(), end = t0 + (long long)(o.seconds * 1e9);
    for (long long k = 0; !stop_flag && now_ns() < end; k++) {
        launch();
        CK(cuEventRecord(ring[k % 3], w.s));
        if (k >= 2) {
            CK(cuEventSynchronize(ring[(k - 2) % 3]));
            done.push_back(now_ns());
        }
    }
    double secs = (now_ns() - t0) / 1e9;
    printf("{");
    print_where(o, w);
    printf(", \"kernels\": %zu, \"seconds\": %.3f, \"kernels_per_s\": %.2f, \"kernel_us\": %.1f, \"done_ns\": [",
           done.size(), secs, done.size() / secs, pct(kus, 0.5));
    for (size_t i = 0; i < done.size(); i++)
        printf(i ? ",%lld" : "%lld", done[i]);
    printf("]}\n");
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    Opts o;
    if (argc < 2 || (strcmp(argv[1], "hp") && strcmp(argv[1], "lp")))
        die("usage: corun_mech hp|lp [--seconds S] [--warmup S] [--affinity N] [--green N] "
            "[--stream-prio hi|lo|none] [--iters N] [--lp-blocks N] [--lp-mib N]", 0, "argv");
    o.role = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            die("option without a value", 0, k);
        i++;
        if (!strcmp(k, "--seconds"))
            o.seconds = atof(v);
        else if (!strcmp(k, "--warmup"))
            o.warmup = atof(v);
        else if (!strcmp(k, "--affinity"))
            o.affinity = atoi(v);
        else if (!strcmp(k, "--green"))
            o.green = atoi(v);
        else if (!strcmp(k, "--iters"))
            o.iters = atoi(v);
        else if (!strcmp(k, "--lp-blocks"))
            o.lp_blocks = atoi(v);
        else if (!strcmp(k, "--lp-mib"))
            o.lp_bytes = (size_t)atoi(v) << 20;
        else if (!strcmp(k, "--stream-prio")) {
            o.prio_name = !strcmp(v, "hi") ? "hi" : !strcmp(v, "lo") ? "lo" : "none";
            o.prio = !strcmp(v, "hi") ? 1 : !strcmp(v, "lo") ? -1 : 0;
        } else
            die("unknown option", 0, k);
    }
    if (o.affinity > 0 && o.green > 0)
        die("--affinity and --green are exclusive", 0, "argv");
    CUfunction hp_f, lp_f;
    Where w = setup(o, &hp_f, &lp_f);
    return o.role[0] == 'h' ? run_hp(o, w, hp_f) : run_lp(o, w, lp_f);
}
