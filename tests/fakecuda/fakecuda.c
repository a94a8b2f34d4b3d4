/*
 * fakecuda: a stand-in libcuda.so.1 for machines without a GPU.
 *
 * CI has no GPU, yet libfikit.so must be exercised end to end: resolved by
 * every path a real program uses, measuring kernels whose durations are
 * known, and holding launches while another process's kernels occupy the
 * device.  This file implements just enough of the driver API for that, with
 * the types taken from interpose/include/fikit_cuda.h so that the ABI the
 * tests exercise is the one the library is built for.
 *
 * Time is simulated: every device has a timeline (optionally shared by all
 * processes through an mmap'd file), a launch occupies it for the kernel's
 * configured duration, and synchronising calls sleep until the simulated end.
 * Kernel effects are real where tests need to check results (kernels named
 * "inc..." add 1 to an int64 in host memory behind the device pointer), and
 * every launch is counted so that the library's own counts can be checked
 * against ground truth.
 *
 * Environment:
 *   FAKECUDA_DEVICES    number of devices of the host (default 1, at most 16);
 *                       device N's uuid is GPU-facec0da-0000-4000-8000-0000000000NN
 *                       (NN in hex), its name "fakecuda device N"
 *   CUDA_VISIBLE_DEVICES  as the real driver reads it: the devices this
 *                       process sees, in order, by index or uuid (a unique
 *                       prefix), up to the first entry that names none; the
 *                       timelines stay the host's devices', so two processes
 *                       that see one device under two ordinals share it
 *   FAKECUDA_DURATIONS  "conv=120,gemm=40,graph=300,*=10" in microseconds
 *                       (default 5; kernels named *_param run for their
 *                       first parameter, an unsigned int, in microseconds)
 *   FAKECUDA_TIMELINE   file holding the device timelines, shared by every
 *                       process that names it
 *   FAKECUDA_COUNTS     write launch counts as JSON here at exit (%p = pid),
 *                       with the calls of cuCtxGetCurrent ("ctx_queries")
 *   FAKECUDA_FAIL       comma-separated entry points that fail with
 *                       CUDA_ERROR_NOT_SUPPORTED (introspection calls only)
 *   FAKECUDA_STRICT_NAMES  1: cuGetProcAddress answers base names only
 *                       (default); 0: exported names (_v2, _ptsz) too
 *   FAKECUDA_LAUNCH_LATENCY_US  work queued on an idle stream starts this
 *                       long after it is submitted (the front end's setup),
 *                       while an event recorded there completes at once: so
 *                       event pairs over-read, as on a real GPU (default 0)
 *   FAKECUDA_LAZY_LOAD  1: the first launch of each function waits, as lazy
 *                       module loading may, for its stream's latest wait on
 *                       a memory word to be met (up to 1 s), and counts it
 *                       in "lazy_waits" (default 0)
 *   FAKECUDA_BLOCK_LAUNCH  N: the process's N-th launch (a forked child's
 *                       counted from its fork) waits so too, whatever
 *                       its function, as a driver call that synchronises
 *                       would (default 0: none)
 *   FAKECUDA_GRAPH_KERNEL  name of the one kernel inside every graph (shape:
 *                       grid 1, block 32, no shared memory), reported to the
 *                       fake CUPTI for each replay (default: none reported)
 *   CUDA_MPS_PIPE_DIRECTORY  as with the real driver: if a control daemon
 *                       listens there (the stand-in of tests/fakebin), cuInit
 *                       joins its MPS server, and once that server is gone
 *                       every launch and synchronisation fails with
 *                       CUDA_ERROR_MPS_CONNECTION_FAILED
 *   FAKECUDA_MPS_LOST   "hang": such calls block for ever instead of failing
 *                       (a client stuck on a dead server)
 *
 * The kernels run are handed to the fake CUPTI (fakecupti.c) through the
 * private export declared in fakecuda_runs.h.
 *
 * Link with -Wl,-Bsymbolic: cuGetProcAddress must hand out this library's own
 * entry points, as the real driver does, and not a preloaded library's
 * exports of the same names, which would otherwise interpose on the table.
 *
 * A forked child starts its counts from zero: it reports the launches it made.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "fakecuda_runs.h"
#include "fikit_cuda.h"

#define EXPORT __attribute__((visibility("default")))

/* Result codes the fake needs beyond those fikit_cuda.h declares. */
enum {
    FAKE_ERROR_OUT_OF_MEMORY = 2,
    FAKE_ERROR_INVALID_DEVICE = 101,
    FAKE_ERROR_INVALID_IMAGE = 200,
    FAKE_ERROR_ILLEGAL_ADDRESS = 700,
    FAKE_ERROR_MPS_CONNECTION_FAILED = 805,
    FAKE_PROC_VERSION_NOT_SUFFICIENT = 2,
};

#define FAKE_DRIVER_VERSION 13000
#define MAX_DEVICES 16
#define NAME_MAX_LEN 256
#define MAX_DURATIONS 64
#define CTX_STACK 16
#define CONFIG_TABLE 4096
#define DEFAULT_DURATION_US 5u

enum launch_api { API_KERNEL, API_EX, API_COOP, API_GRAPH, API_COUNT };
static const char *const api_names[API_COUNT] = {"cuLaunchKernel", "cuLaunchKernelEx",
                                                  "cuLaunchCooperativeKernel", "cuGraphLaunch"};

enum magic {
    MAGIC_CTX = 0x46430001,
    MAGIC_MOD,
    MAGIC_FUNC,
    MAGIC_KERN,
    MAGIC_LIB,
    MAGIC_STREAM,
    MAGIC_EVENT,
    MAGIC_GRAPH,
    MAGIC_EXEC,
    MAGIC_MEM,
    MAGIC_DEAD = 0x0dead000,
};

/* ------------------------------------------------------------------ */
/* Handles.  fikit_cuda.h leaves these structs incomplete; they are ours. */

struct CUstream_st {
    uint32_t magic;
    struct CUctx_st *ctx;
    unsigned int flags;
    _Atomic uint64_t tail; /* simulated end of the last work queued on it */
    unsigned int green_sms; /* a green-context stream: its SM partition, 0 for ordinary streams */
    uint32_t id;            /* for the fake CUPTI's records */
    /* Its latest wait on a memory word (>= value), for FAKECUDA_LAZY_LOAD. */
    _Atomic(uintptr_t) wait_word;
    _Atomic uint32_t wait_value;
};

struct CUctx_st {
    uint32_t magic;
    int device;
    _Atomic uint64_t tail; /* simulated end of all work of this context */
    struct CUstream_st legacy;
};

struct CUfunc_st {
    uint32_t magic;
    char name[NAME_MAX_LEN];
    uint64_t dur_ns;
    int by_param; /* duration is the first parameter, in microseconds */
    int inc;      /* adds 1 to *(int64_t *)param0 */
    _Atomic uint64_t launches;
    const void *owner; /* module or library */
    struct CUfunc_st *next;
};

struct CUkern_st {
    uint32_t magic;
    struct CUfunc_st *fn;
    struct CUkern_st *next;
};

struct CUmod_st {
    uint32_t magic;
};

struct CUlib_st {
    uint32_t magic;
};

struct CUevent_st {
    uint32_t magic;
    unsigned int flags;
    _Atomic int recorded;
    _Atomic uint64_t t;
};

struct CUgraph_st {
    uint32_t magic;
};

struct CUgraphExec_st {
    uint32_t magic;
    uint64_t dur_ns;
    uint32_t id;
};

struct mem_header {
    uint64_t magic;
    uint64_t size;
};

/* ------------------------------------------------------------------ */
/* Global state. */

struct timeline {
    _Atomic uint64_t tail[MAX_DEVICES];       /* simulated end of each device's queued work */
    _Atomic uint64_t green_tail[MAX_DEVICES]; /* the same for work confined to a green partition */
};

struct duration_rule {
    char name[NAME_MAX_LEN];
    uint64_t ns;
};

struct config_entry {
    const struct CUfunc_st *fn; /* NULL = empty */
    unsigned int grid[3], block[3], smem;
    uint64_t count;
};

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER; /* objects lists, config table */
static atomic_int g_initialized;
static int g_devices = 1;                /* devices this process sees */
static int g_host_devices = 1;           /* FAKECUDA_DEVICES */
static int g_visible[MAX_DEVICES];       /* ordinal -> host device */
static struct CUctx_st g_primary[MAX_DEVICES];
static struct timeline g_local_timeline;
static struct timeline *g_timeline = &g_local_timeline;
static struct duration_rule g_rules[MAX_DURATIONS];
static int g_nrules;
static uint64_t g_default_ns = DEFAULT_DURATION_US * 1000u;
static uint64_t g_graph_ns;
static int g_strict_names = 1;
static const char *g_graph_kernel; /* FAKECUDA_GRAPH_KERNEL */
static struct CUfunc_st *g_funcs;   /* every function object, for the counts */
static struct CUkern_st *g_kernels; /* every kernel object */
static _Atomic uint64_t g_api_count[API_COUNT];
static _Atomic uint64_t g_ctx_queries; /* cuCtxGetCurrent calls: what a launch asks the driver */
static struct config_entry g_configs[CONFIG_TABLE];

static _Thread_local struct CUctx_st *t_ctx_stack[CTX_STACK];
static _Thread_local int t_ctx_depth;
static _Thread_local struct CUstream_st t_ptds[MAX_DEVICES]; /* per-thread default streams */

/* Entry points that FAKECUDA_FAIL can break, to test the library's fail-open paths. */
enum failable {
    F_EVENT_CREATE,
    F_EVENT_RECORD,
    F_EVENT_QUERY,
    F_EVENT_SYNC,
    F_EVENT_ELAPSED,
    F_FUNC_GET_NAME,
    F_KERNEL_GET_NAME,
    F_STREAM_IS_CAPTURING,
    F_STREAM_GET_CTX,
    F_CTX_GET_CURRENT,
    F_CTX_GET_DEVICE,
    F_DEVICE_GET_UUID,
    F_COUNT
};
static const char *const failable_names[F_COUNT] = {
    "cuEventCreate",       "cuEventRecord",  "cuEventQuery",      "cuEventSynchronize",
    "cuEventElapsedTime",  "cuFuncGetName",  "cuKernelGetName",   "cuStreamIsCapturing",
    "cuStreamGetCtx",      "cuCtxGetCurrent", "cuCtxGetDevice",   "cuDeviceGetUuid",
};
static int g_fail[F_COUNT];
#define FAIL_IF(which)                         \
    do {                                       \
        if (g_fail[which])                     \
            return CUDA_ERROR_NOT_SUPPORTED;   \
    } while (0)

/* ------------------------------------------------------------------ */
/* Time. */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_until(uint64_t t)
{
    struct timespec ts = {.tv_sec = (time_t)(t / 1000000000u), .tv_nsec = (long)(t % 1000000000u)};
    while (now_ns() < t) {
        int rc = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
        if (rc != 0 && rc != EINTR)
            break;
    }
}

static void atomic_max_u64(_Atomic uint64_t *p, uint64_t v)
{
    uint64_t cur = atomic_load(p);
    while (cur < v && !atomic_compare_exchange_weak(p, &cur, v)) {
    }
}

static uint64_t max_u64(uint64_t a, uint64_t b)
{
    return a > b ? a : b;
}

/*
 * Queue dur_ns of work on stream s: it starts when the device and the stream
 * are both free (one kernel at a time per device, as a GPU time-slices
 * processes) and the call returns its simulated end.
 */
static int g_sms = 132; /* FAKECUDA_SMS */
static _Atomic unsigned long long g_green_launches;
static uint64_t g_latency_ns; /* FAKECUDA_LAUNCH_LATENCY_US */
static int g_lazy_load;       /* FAKECUDA_LAZY_LOAD */
static unsigned long long g_block_launch; /* FAKECUDA_BLOCK_LAUNCH */
static _Atomic unsigned long long g_launches_all;

/* Returns the end; *start_out gets the start. */
static uint64_t schedule(struct CUstream_st *s, uint64_t dur_ns, uint64_t *start_out)
{
    int host = g_visible[s->ctx->device];
    _Atomic uint64_t *dev_tail = &g_timeline->tail[host];
    if (s->green_sms) {
        /* Confined work runs on its own SMs, beside the rest of the device's
         * work, as long as the SMs it lacks make it (a full-width kernel). */
        dev_tail = &g_timeline->green_tail[host];
        dur_ns = dur_ns * (uint64_t)g_sms / s->green_sms;
        atomic_fetch_add(&g_green_launches, 1);
    }
    uint64_t now = now_ns();
    uint64_t stream_tail = atomic_load(&s->tail);
    /* On an idle stream nothing hides the front end's setup of the launch. */
    uint64_t ready = stream_tail <= now ? now + g_latency_ns : now;
    uint64_t old = atomic_load(dev_tail), end;
    do {
        end = max_u64(max_u64(ready, stream_tail), old) + dur_ns;
    } while (!atomic_compare_exchange_weak(dev_tail, &old, end));
    atomic_max_u64(&s->tail, end);
    atomic_max_u64(&s->ctx->tail, end);
    *start_out = end - dur_ns;
    return end;
}

/* ------------------------------------------------------------------ */
/* The kernels run, for the fake CUPTI (fakecuda_runs.h). */

#define RUNS 65536
static pthread_mutex_t g_runs_lock = PTHREAD_MUTEX_INITIALIZER;
static struct fakecuda_run g_runs[RUNS];
static uint64_t g_runs_head, g_runs_tail; /* appended at head, taken at tail */
static atomic_int g_runs_on;
static size_t g_runs_dropped;
static _Atomic uint32_t g_correlation;
static _Atomic unsigned long long g_runs_taken; /* handed to the fake CUPTI: in the counts */

static void note_run(const char *name, const unsigned int grid[3], const unsigned int block[3], unsigned int smem,
                     uint64_t start, uint64_t end, const struct CUstream_st *s, uint32_t graph_id)
{
    if (!atomic_load(&g_runs_on))
        return;
    struct fakecuda_run r = {.name = name, .smem = smem, .start = start, .end = end, .stream_id = s->id,
                             .device = (uint32_t)(s->ctx ? s->ctx->device : 0), .graph_id = graph_id,
                             .correlation = atomic_fetch_add(&g_correlation, 1) + 1};
    memcpy(r.grid, grid, sizeof r.grid);
    memcpy(r.block, block, sizeof r.block);
    pthread_mutex_lock(&g_runs_lock);
    if (g_runs_head - g_runs_tail >= RUNS) {
        g_runs_tail++; /* the oldest is lost, as a full CUPTI buffer loses records */
        g_runs_dropped++;
    }
    g_runs[g_runs_head++ % RUNS] = r;
    pthread_mutex_unlock(&g_runs_lock);
}

EXPORT void fakecuda_runs_enable(int on)
{
    atomic_store(&g_runs_on, on);
}

EXPORT size_t fakecuda_runs_take(struct fakecuda_run *out, size_t max, uint64_t until, int all)
{
    size_t n = 0;
    pthread_mutex_lock(&g_runs_lock);
    while (n < max && g_runs_tail != g_runs_head) {
        const struct fakecuda_run *r = &g_runs[g_runs_tail % RUNS];
        if (!all && r->end > until)
            break;
        out[n++] = *r;
        g_runs_tail++;
    }
    pthread_mutex_unlock(&g_runs_lock);
    atomic_fetch_add(&g_runs_taken, n);
    return n;
}

EXPORT size_t fakecuda_runs_dropped(void)
{
    pthread_mutex_lock(&g_runs_lock);
    size_t d = g_runs_dropped;
    g_runs_dropped = 0;
    pthread_mutex_unlock(&g_runs_lock);
    return d;
}

/* ------------------------------------------------------------------ */
/* Configuration. */

static void parse_durations(const char *spec)
{
    while (spec && *spec) {
        const char *end = strchr(spec, ',');
        size_t len = end ? (size_t)(end - spec) : strlen(spec);
        const char *eq = memchr(spec, '=', len);
        if (eq && eq > spec && (size_t)(eq - spec) < NAME_MAX_LEN) {
            char name[NAME_MAX_LEN];
            size_t nlen = (size_t)(eq - spec);
            memcpy(name, spec, nlen);
            name[nlen] = '\0';
            double us = strtod(eq + 1, NULL);
            uint64_t ns = us > 0 ? (uint64_t)(us * 1000.0 + 0.5) : 0;
            if (strcmp(name, "*") == 0) {
                g_default_ns = ns;
            } else if (strcmp(name, "graph") == 0) {
                g_graph_ns = ns;
            } else if (g_nrules < MAX_DURATIONS) {
                memcpy(g_rules[g_nrules].name, name, nlen + 1);
                g_rules[g_nrules].ns = ns;
                g_nrules++;
            }
        }
        spec = end ? end + 1 : NULL;
    }
}

static void parse_failures(const char *spec)
{
    while (spec && *spec) {
        const char *end = strchr(spec, ',');
        size_t len = end ? (size_t)(end - spec) : strlen(spec);
        for (int i = 0; i < F_COUNT; i++)
            if (strlen(failable_names[i]) == len && strncmp(failable_names[i], spec, len) == 0)
                g_fail[i] = 1;
        spec = end ? end + 1 : NULL;
    }
}

static void map_timeline(const char *path)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0) {
        fprintf(stderr, "fakecuda: cannot open FAKECUDA_TIMELINE %s: %s\n", path, strerror(errno));
        return;
    }
    struct stat st;
    if (fstat(fd, &st) == 0 && st.st_size < (off_t)sizeof(struct timeline) &&
        ftruncate(fd, (off_t)sizeof(struct timeline)) != 0) {
        fprintf(stderr, "fakecuda: cannot size %s: %s\n", path, strerror(errno));
        close(fd);
        return;
    }
    void *p = mmap(NULL, sizeof(struct timeline), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        fprintf(stderr, "fakecuda: cannot map %s: %s\n", path, strerror(errno));
        return;
    }
    g_timeline = p;
}

static void init_stream(struct CUstream_st *s, struct CUctx_st *ctx, unsigned int flags)
{
    static _Atomic uint32_t next_id;
    s->id = atomic_fetch_add(&next_id, 1) + 1;
    s->magic = MAGIC_STREAM;
    s->ctx = ctx;
    s->flags = flags;
    atomic_store(&s->tail, 0);
}

static void reset_counts(void)
{
    for (int i = 0; i < API_COUNT; i++)
        atomic_store(&g_api_count[i], 0);
    atomic_store(&g_ctx_queries, 0);
    for (struct CUfunc_st *f = g_funcs; f; f = f->next)
        atomic_store(&f->launches, 0);
    memset(g_configs, 0, sizeof g_configs);
    atomic_store(&g_runs_on, 0);
    g_runs_head = g_runs_tail = 0;
    g_runs_dropped = 0;
    atomic_store(&g_runs_taken, 0);
    atomic_store(&g_launches_all, 0);
}

static void atfork_prepare(void)
{
    pthread_mutex_lock(&g_lock);
}

static void atfork_parent(void)
{
    pthread_mutex_unlock(&g_lock);
}

/* ------------------------------------------------------------------ */
/* MPS, as the stand-in control daemon of tests/fakebin serves it. */

static int g_mps_fd = -1; /* connection to our MPS server; EOF on it = the server is gone */
static atomic_int g_mps_lost;
static int g_mps_hang;
static CUresult g_mps_rc = CUDA_SUCCESS;
static pthread_once_t g_mps_once = PTHREAD_ONCE_INIT;

static int unix_connect(const char *path)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof a.sun_path)
        return -1;
    strcpy(a.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int send_all(int fd, const char *s)
{
    for (size_t n = strlen(s); n;) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w <= 0)
            return -1;
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

/* No control daemon: run without MPS, as the driver does.  One that answers: its server or fail. */
static void mps_join(void)
{
    const char *dir = getenv("CUDA_MPS_PIPE_DIRECTORY");
    char path[512], msg[64], reply[600] = {0};
    if (!dir || !*dir || snprintf(path, sizeof path, "%s/control", dir) >= (int)sizeof path)
        return;
    int fd = unix_connect(path);
    if (fd < 0)
        return;
    snprintf(msg, sizeof msg, "client %d\n", (int)getpid());
    size_t got = 0;
    if (send_all(fd, msg) == 0) {
        ssize_t r;
        while (got < sizeof reply - 1 && (r = recv(fd, reply + got, sizeof reply - 1 - got, 0)) > 0)
            got += (size_t)r;
    }
    close(fd);
    reply[strcspn(reply, "\n")] = 0;
    g_mps_rc = FAKE_ERROR_MPS_CONNECTION_FAILED;
    if (strncmp(reply, "server ", 7) != 0)
        return;
    fd = unix_connect(reply + 7);
    if (fd < 0)
        return;
    if (send_all(fd, "hello\n") != 0) {
        close(fd);
        return;
    }
    const char *lost = getenv("FAKECUDA_MPS_LOST");
    g_mps_hang = lost && strcmp(lost, "hang") == 0;
    g_mps_fd = fd;
    g_mps_rc = CUDA_SUCCESS;
}

/* Every launch and synchronisation asks: has our server gone (sticky)? */
static CUresult mps_check(void)
{
    if (g_mps_fd < 0)
        return CUDA_SUCCESS;
    if (!atomic_load(&g_mps_lost)) {
        struct pollfd p = {.fd = g_mps_fd, .events = POLLIN};
        char c;
        if (poll(&p, 1, 0) > 0 && recv(g_mps_fd, &c, 1, MSG_PEEK) <= 0)
            atomic_store(&g_mps_lost, 1);
    }
    if (!atomic_load(&g_mps_lost))
        return CUDA_SUCCESS;
    while (g_mps_hang)
        pause();
    return FAKE_ERROR_MPS_CONNECTION_FAILED;
}

/* A forked child reports the launches it makes itself, as a new process would. */
static void atfork_child(void)
{
    pthread_mutex_init(&g_runs_lock, NULL);
    reset_counts();
    if (g_mps_fd >= 0) { /* the parent's MPS connection is the parent's */
        close(g_mps_fd);
        g_mps_fd = -1;
    }
    pthread_mutex_unlock(&g_lock);
}

/* Host device d's uuid, as the driver's 16 bytes. */
static void host_uuid(int d, unsigned char out[16])
{
    static const unsigned char base[16] = {0xfa, 0xce, 0xc0, 0xda, 0x00, 0x00, 0x40, 0x00,
                                           0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
    memcpy(out, base, sizeof base);
    out[15] = (unsigned char)d;
}

/* The host device a CUDA_VISIBLE_DEVICES entry names, or -1: an index, or a unique uuid prefix. */
static int visible_entry(const char *e, size_t len)
{
    while (len && (*e == ' ' || *e == '\t'))
        e++, len--;
    while (len && (e[len - 1] == ' ' || e[len - 1] == '\t'))
        len--;
    if (len == 0)
        return -1;
    if (strspn(e, "0123456789") >= len) {
        long n = strtol(e, NULL, 10);
        return n < g_host_devices ? (int)n : -1;
    }
    if (len < 4 || strncasecmp(e, "GPU-", 4) != 0)
        return -1;
    int found = -1;
    for (int d = 0; d < g_host_devices; d++) {
        unsigned char b[16];
        host_uuid(d, b);
        char text[48];
        snprintf(text, sizeof text, "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
                 b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
        if (len <= strlen(text) && strncasecmp(text, e, len) == 0) {
            if (found >= 0)
                return -1; /* ambiguous */
            found = d;
        }
    }
    return found;
}

static void parse_visible(const char *spec)
{
    g_devices = 0;
    while (spec && g_devices < MAX_DEVICES) {
        const char *end = strchr(spec, ',');
        size_t len = end ? (size_t)(end - spec) : strlen(spec);
        int d = visible_entry(spec, len);
        for (int i = 0; i < g_devices; i++)
            if (g_visible[i] == d)
                d = -1; /* a device named twice: stop there */
        if (d < 0)
            break;
        g_visible[g_devices++] = d;
        spec = end ? end + 1 : NULL;
    }
}

__attribute__((constructor)) static void fake_setup(void)
{
    const char *s = getenv("FAKECUDA_DEVICES");
    if (s && *s) {
        int n = atoi(s);
        g_host_devices = n < 0 ? 0 : n > MAX_DEVICES ? MAX_DEVICES : n;
    }
    g_devices = g_host_devices;
    for (int d = 0; d < MAX_DEVICES; d++)
        g_visible[d] = d;
    s = getenv("CUDA_VISIBLE_DEVICES");
    if (s)
        parse_visible(s);
    for (int d = 0; d < MAX_DEVICES; d++) {
        g_primary[d].magic = MAGIC_CTX;
        g_primary[d].device = d;
        init_stream(&g_primary[d].legacy, &g_primary[d], 0);
    }
    parse_durations(getenv("FAKECUDA_DURATIONS"));
    s = getenv("FAKECUDA_SMS");
    if (s && atoi(s) >= 8 && atoi(s) <= 1024)
        g_sms = atoi(s);
    parse_failures(getenv("FAKECUDA_FAIL"));
    s = getenv("FAKECUDA_STRICT_NAMES");
    if (s && strcmp(s, "0") == 0)
        g_strict_names = 0;
    s = getenv("FAKECUDA_TIMELINE");
    if (s && *s)
        map_timeline(s);
    s = getenv("FAKECUDA_LAUNCH_LATENCY_US");
    if (s && *s)
        g_latency_ns = (uint64_t)(strtod(s, NULL) * 1000.0 + 0.5);
    s = getenv("FAKECUDA_LAZY_LOAD");
    g_lazy_load = s && strcmp(s, "1") == 0;
    s = getenv("FAKECUDA_BLOCK_LAUNCH");
    g_block_launch = s ? strtoull(s, NULL, 10) : 0;
    s = getenv("FAKECUDA_GRAPH_KERNEL");
    if (s && *s)
        g_graph_kernel = s;
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

/* ------------------------------------------------------------------ */
/* Ground truth at exit. */

static void json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static void expand_pid(const char *pattern, char *out, size_t cap)
{
    size_t o = 0;
    for (const char *p = pattern; *p && o + 1 < cap; p++) {
        if (p[0] == '%' && p[1] == 'p') {
            int n = snprintf(out + o, cap - o, "%ld", (long)getpid());
            if (n < 0 || (size_t)n >= cap - o)
                break;
            o += (size_t)n;
            p++;
        } else {
            out[o++] = *p;
        }
    }
    out[o] = '\0';
}

static _Atomic unsigned long long wait_value_calls; /* stream waits on memory, for the tests */
static _Atomic unsigned long long lazy_waits;       /* first launches that waited on one */

__attribute__((destructor)) static void fake_write_counts(void)
{
    const char *pattern = getenv("FAKECUDA_COUNTS");
    if (!pattern || !*pattern)
        return;
    char path[4096], tmp[4200];
    expand_pid(pattern, path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return;
    pthread_mutex_lock(&g_lock);
    fprintf(f, "{\"pid\": %ld, \"wait_value\": %llu, \"lazy_waits\": %llu, \"green_launches\": %llu, "
            "\"cupti_records\": %llu, \"ctx_queries\": %llu",
            (long)getpid(), (unsigned long long)atomic_load(&wait_value_calls),
            (unsigned long long)atomic_load(&lazy_waits),
            (unsigned long long)atomic_load(&g_green_launches), (unsigned long long)atomic_load(&g_runs_taken),
            (unsigned long long)atomic_load(&g_ctx_queries));
    for (int i = 0; i < API_COUNT; i++)
        fprintf(f, ", \"%s\": %llu", api_names[i], (unsigned long long)atomic_load(&g_api_count[i]));
    /* Per name: several function objects (modules, libraries) may share one. */
    fputs(", \"kernels\": {", f);
    int first = 1;
    for (struct CUfunc_st *a = g_funcs; a; a = a->next) {
        int seen = 0;
        for (struct CUfunc_st *b = g_funcs; b != a; b = b->next)
            if (strcmp(a->name, b->name) == 0)
                seen = 1;
        if (seen)
            continue;
        uint64_t n = 0;
        for (struct CUfunc_st *b = a; b; b = b->next)
            if (strcmp(a->name, b->name) == 0)
                n += atomic_load(&b->launches);
        if (n == 0)
            continue;
        fputs(first ? "" : ", ", f);
        first = 0;
        json_string(f, a->name);
        fprintf(f, ": %llu", (unsigned long long)n);
    }
    fputs("}, \"configs\": [", f);
    first = 1;
    for (int i = 0; i < CONFIG_TABLE; i++) {
        const struct config_entry *c = &g_configs[i];
        if (!c->fn)
            continue;
        fputs(first ? "{\"name\": " : ", {\"name\": ", f);
        first = 0;
        json_string(f, c->fn->name);
        fprintf(f, ", \"grid\": [%u, %u, %u], \"block\": [%u, %u, %u], \"smem\": %u, \"count\": %llu}",
                c->grid[0], c->grid[1], c->grid[2], c->block[0], c->block[1], c->block[2], c->smem,
                (unsigned long long)c->count);
    }
    fputs("]}\n", f);
    pthread_mutex_unlock(&g_lock);
    if (fclose(f) == 0)
        rename(tmp, path);
}

/* ------------------------------------------------------------------ */
/* Lookups. */

static CUresult need_init(void)
{
    return atomic_load(&g_initialized) ? CUDA_SUCCESS : CUDA_ERROR_NOT_INITIALIZED;
}

static struct CUctx_st *current_ctx(void)
{
    return t_ctx_depth > 0 ? t_ctx_stack[t_ctx_depth - 1] : NULL;
}

static int valid_ctx(const struct CUctx_st *c)
{
    return c && c->magic == MAGIC_CTX;
}

/*
 * The stream a call addresses: the handle itself, or for 0 / the legacy and
 * per-thread handles, the current context's default stream of that kind.
 */
static CUresult get_stream(CUstream h, int ptsz, struct CUstream_st **out)
{
    if (h == NULL || h == FIKIT_CU_STREAM_LEGACY || h == FIKIT_CU_STREAM_PER_THREAD) {
        struct CUctx_st *ctx = current_ctx();
        if (!valid_ctx(ctx))
            return CUDA_ERROR_INVALID_CONTEXT;
        int per_thread = h == FIKIT_CU_STREAM_PER_THREAD || (h == NULL && ptsz);
        if (per_thread) {
            struct CUstream_st *s = &t_ptds[ctx->device];
            if (s->magic != MAGIC_STREAM)
                init_stream(s, ctx, 0);
            *out = s;
        } else {
            *out = &ctx->legacy;
        }
        return CUDA_SUCCESS;
    }
    if (h->magic != MAGIC_STREAM)
        return CUDA_ERROR_INVALID_HANDLE;
    *out = h;
    return CUDA_SUCCESS;
}

/* A CUkernel may be passed where a CUfunction is expected, as the real driver allows. */
static struct CUfunc_st *get_func(const void *h)
{
    if (!h)
        return NULL;
    uint32_t magic = *(const uint32_t *)h;
    if (magic == MAGIC_FUNC)
        return (struct CUfunc_st *)(uintptr_t)h;
    if (magic == MAGIC_KERN)
        return ((const struct CUkern_st *)h)->fn;
    return NULL;
}

static struct mem_header *get_mem(CUdeviceptr p)
{
    if (p == 0 || p % 16 != 0)
        return NULL;
    struct mem_header *h = (struct mem_header *)(uintptr_t)(p - sizeof(struct mem_header));
    return h->magic == MAGIC_MEM ? h : NULL;
}

static uint64_t rule_ns(const char *name)
{
    for (int i = 0; i < g_nrules; i++)
        if (strcmp(g_rules[i].name, name) == 0)
            return g_rules[i].ns;
    return g_default_ns;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Find or make the function object of (owner, name); called with g_lock held. */
static struct CUfunc_st *intern_func(const void *owner, const char *name)
{
    for (struct CUfunc_st *f = g_funcs; f; f = f->next)
        if (f->owner == owner && strcmp(f->name, name) == 0)
            return f;
    struct CUfunc_st *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    f->magic = MAGIC_FUNC;
    snprintf(f->name, sizeof f->name, "%s", name);
    f->dur_ns = rule_ns(f->name);
    f->by_param = ends_with(f->name, "_param");
    f->inc = strncmp(f->name, "inc", 3) == 0;
    f->owner = owner;
    f->next = g_funcs;
    g_funcs = f;
    return f;
}

/* ------------------------------------------------------------------ */
/* Launches. */

/* The first kernel parameter, from kernelParams or the packed `extra` buffer. */
static const void *first_param(void **params, void **extra, size_t size)
{
    if (params)
        return params[0];
    for (void **e = extra; e && e[0] != (void *)0; e += 2) {
        if (e[0] == (void *)1) { /* CU_LAUNCH_PARAM_BUFFER_POINTER */
            for (void **z = extra; z[0] != (void *)0; z += 2)
                if (z[0] == (void *)2 && *(const size_t *)z[1] < size) /* BUFFER_SIZE */
                    return NULL;
            return e[1];
        }
    }
    return NULL;
}

static void count_config(const struct CUfunc_st *fn, const unsigned int grid[3], const unsigned int block[3],
                         unsigned int smem)
{
    uint64_t h = (uintptr_t)fn;
    for (int i = 0; i < 3; i++)
        h = h * 1000003u ^ grid[i] ^ ((uint64_t)block[i] << 32);
    h = h * 1000003u ^ smem;
    pthread_mutex_lock(&g_lock);
    for (unsigned int k = 0; k < CONFIG_TABLE; k++) {
        struct config_entry *c = &g_configs[(h + k) % CONFIG_TABLE];
        if (!c->fn) {
            c->fn = fn;
            memcpy(c->grid, grid, sizeof c->grid);
            memcpy(c->block, block, sizeof c->block);
            c->smem = smem;
        }
        if (c->fn == fn && memcmp(c->grid, grid, sizeof c->grid) == 0 &&
            memcmp(c->block, block, sizeof c->block) == 0 && c->smem == smem) {
            c->count++;
            break;
        }
    }
    pthread_mutex_unlock(&g_lock);
}

/* Lazy loading: a function's first launch may wait for the device, so for work already queued
 * on its stream, a wait on a memory word included; the wait is met when the host writes it. */
static void lazy_load(struct CUstream_st *s)
{
    volatile uint32_t *word = (volatile uint32_t *)atomic_load(&s->wait_word);
    uint32_t value = atomic_load(&s->wait_value);
    if (!word || *word >= value)
        return;
    atomic_fetch_add(&lazy_waits, 1);
    for (int i = 0; i < 20000 && *word < value; i++) {
        struct timespec ts = {0, 50000};
        nanosleep(&ts, NULL);
    }
}

static CUresult launch(enum launch_api api, CUfunction hf, const unsigned int grid[3],
                       const unsigned int block[3], unsigned int smem, CUstream hs, int ptsz, void **params,
                       void **extra)
{
    CUresult rc = need_init();
    if (rc == CUDA_SUCCESS)
        rc = mps_check();
    if (rc != CUDA_SUCCESS)
        return rc;
    struct CUfunc_st *fn = get_func(hf);
    if (!fn)
        return CUDA_ERROR_INVALID_HANDLE;
    struct CUstream_st *s;
    rc = get_stream(hs, ptsz, &s);
    if (rc != CUDA_SUCCESS)
        return rc;
    if (!grid[0] || !grid[1] || !grid[2] || !block[0] || !block[1] || !block[2] ||
        (uint64_t)block[0] * block[1] * block[2] > 1024 || block[2] > 64 || grid[1] > 65535 ||
        grid[2] > 65535 || smem > 228 * 1024)
        return CUDA_ERROR_INVALID_VALUE;
    if (params && extra)
        return CUDA_ERROR_INVALID_VALUE;
    if (g_lazy_load && atomic_load(&fn->launches) == 0)
        lazy_load(s);
    if (g_block_launch && atomic_fetch_add(&g_launches_all, 1) + 1 == g_block_launch)
        lazy_load(s);

    uint64_t dur = fn->dur_ns;
    if (fn->by_param) {
        const unsigned int *us = first_param(params, extra, sizeof *us);
        if (!us)
            return CUDA_ERROR_INVALID_VALUE;
        dur = (uint64_t)*us * 1000u;
    }
    if (fn->inc) {
        const CUdeviceptr *p = first_param(params, extra, sizeof *p);
        if (!p)
            return CUDA_ERROR_INVALID_VALUE;
        struct mem_header *m = get_mem(*p);
        if (!m || m->size < sizeof(int64_t))
            return FAKE_ERROR_ILLEGAL_ADDRESS;
        __atomic_fetch_add((int64_t *)(uintptr_t)*p, 1, __ATOMIC_SEQ_CST);
    }
    uint64_t start, end = schedule(s, dur, &start);
    note_run(fn->name, grid, block, smem, start, end, s, 0);
    atomic_fetch_add(&fn->launches, 1);
    atomic_fetch_add(&g_api_count[api], 1);
    count_config(fn, grid, block, smem);
    return CUDA_SUCCESS;
}

#define GRID3 const unsigned int grid[3] = {gx, gy, gz}, block[3] = {bx, by, bz}

EXPORT CUresult cuLaunchKernel(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx,
                               unsigned int by, unsigned int bz, unsigned int smem, CUstream s, void **params,
                               void **extra)
{
    GRID3;
    return launch(API_KERNEL, f, grid, block, smem, s, 0, params, extra);
}

EXPORT CUresult cuLaunchKernel_ptsz(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz,
                                    unsigned int bx, unsigned int by, unsigned int bz, unsigned int smem,
                                    CUstream s, void **params, void **extra)
{
    GRID3;
    return launch(API_KERNEL, f, grid, block, smem, s, 1, params, extra);
}

static CUresult launch_ex(const CUlaunchConfig *c, CUfunction f, void **params, void **extra, int ptsz)
{
    if (!c)
        return CUDA_ERROR_INVALID_VALUE;
    if (c->numAttrs && !c->attrs)
        return CUDA_ERROR_INVALID_VALUE;
    const unsigned int grid[3] = {c->gridDimX, c->gridDimY, c->gridDimZ};
    const unsigned int block[3] = {c->blockDimX, c->blockDimY, c->blockDimZ};
    return launch(API_EX, f, grid, block, c->sharedMemBytes, c->hStream, ptsz, params, extra);
}

EXPORT CUresult cuLaunchKernelEx(const CUlaunchConfig *c, CUfunction f, void **params, void **extra)
{
    return launch_ex(c, f, params, extra, 0);
}

EXPORT CUresult cuLaunchKernelEx_ptsz(const CUlaunchConfig *c, CUfunction f, void **params, void **extra)
{
    return launch_ex(c, f, params, extra, 1);
}

EXPORT CUresult cuLaunchCooperativeKernel(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz,
                                          unsigned int bx, unsigned int by, unsigned int bz, unsigned int smem,
                                          CUstream s, void **params)
{
    GRID3;
    return launch(API_COOP, f, grid, block, smem, s, 0, params, NULL);
}

EXPORT CUresult cuLaunchCooperativeKernel_ptsz(CUfunction f, unsigned int gx, unsigned int gy,
                                               unsigned int gz, unsigned int bx, unsigned int by,
                                               unsigned int bz, unsigned int smem, CUstream s, void **params)
{
    GRID3;
    return launch(API_COOP, f, grid, block, smem, s, 1, params, NULL);
}

static CUresult graph_launch(CUgraphExec g, CUstream hs, int ptsz)
{
    CUresult rc = need_init();
    if (rc != CUDA_SUCCESS)
        return rc;
    if (!g || g->magic != MAGIC_EXEC)
        return CUDA_ERROR_INVALID_HANDLE;
    struct CUstream_st *s;
    rc = get_stream(hs, ptsz, &s);
    if (rc != CUDA_SUCCESS)
        return rc;
    uint64_t start, end = schedule(s, g->dur_ns, &start);
    if (g_graph_kernel) {
        static const unsigned int one[3] = {1, 1, 1}, warp[3] = {32, 1, 1};
        note_run(g_graph_kernel, one, warp, 0, start, end, s, g->id);
    }
    atomic_fetch_add(&g_api_count[API_GRAPH], 1);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuGraphLaunch(CUgraphExec g, CUstream s)
{
    return graph_launch(g, s, 0);
}

EXPORT CUresult cuGraphLaunch_ptsz(CUgraphExec g, CUstream s)
{
    return graph_launch(g, s, 1);
}

/* ------------------------------------------------------------------ */
/* Initialisation, devices, contexts. */

EXPORT CUresult cuInit(unsigned int flags)
{
    if (flags != 0)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_once(&g_mps_once, mps_join);
    if (g_mps_rc != CUDA_SUCCESS)
        return g_mps_rc;
    atomic_store(&g_initialized, 1);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDriverGetVersion(int *v)
{
    if (!v)
        return CUDA_ERROR_INVALID_VALUE;
    *v = FAKE_DRIVER_VERSION;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGetCount(int *n)
{
    CUresult rc = need_init();
    if (rc != CUDA_SUCCESS)
        return rc;
    if (!n)
        return CUDA_ERROR_INVALID_VALUE;
    *n = g_devices;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGet(CUdevice *d, int ordinal)
{
    CUresult rc = need_init();
    if (rc != CUDA_SUCCESS)
        return rc;
    if (!d)
        return CUDA_ERROR_INVALID_VALUE;
    if (ordinal < 0 || ordinal >= g_devices)
        return FAKE_ERROR_INVALID_DEVICE;
    *d = ordinal;
    return CUDA_SUCCESS;
}

static CUresult check_device(CUdevice d)
{
    CUresult rc = need_init();
    if (rc != CUDA_SUCCESS)
        return rc;
    return d >= 0 && d < g_devices ? CUDA_SUCCESS : FAKE_ERROR_INVALID_DEVICE;
}

EXPORT CUresult cuDeviceGetName(char *name, int len, CUdevice d)
{
    CUresult rc = check_device(d);
    if (rc != CUDA_SUCCESS)
        return rc;
    if (!name || len <= 0)
        return CUDA_ERROR_INVALID_VALUE;
    snprintf(name, (size_t)len, "fakecuda device %d", g_visible[d]);
    return CUDA_SUCCESS;
}

struct fake_uuid {
    unsigned char bytes[16];
};

static CUresult device_uuid(struct fake_uuid *u, CUdevice d)
{
    FAIL_IF(F_DEVICE_GET_UUID);
    CUresult rc = check_device(d);
    if (rc != CUDA_SUCCESS)
        return rc;
    if (!u)
        return CUDA_ERROR_INVALID_VALUE;
    host_uuid(g_visible[d], u->bytes);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGetUuid(struct fake_uuid *u, CUdevice d)
{
    return device_uuid(u, d);
}

EXPORT CUresult cuDeviceGetUuid_v2(struct fake_uuid *u, CUdevice d)
{
    return device_uuid(u, d);
}

EXPORT CUresult cuDevicePrimaryCtxRetain(CUcontext *c, CUdevice d)
{
    CUresult rc = check_device(d);
    if (rc != CUDA_SUCCESS)
        return rc;
    if (!c)
        return CUDA_ERROR_INVALID_VALUE;
    *c = &g_primary[d];
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDevicePrimaryCtxRelease_v2(CUdevice d)
{
    return check_device(d);
}

EXPORT CUresult cuCtxGetCurrent(CUcontext *c)
{
    atomic_fetch_add_explicit(&g_ctx_queries, 1, memory_order_relaxed);
    FAIL_IF(F_CTX_GET_CURRENT);
    CUresult rc = need_init();
    if (rc != CUDA_SUCCESS)
        return rc;
    if (!c)
        return CUDA_ERROR_INVALID_VALUE;
    *c = current_ctx();
    return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxSetCurrent(CUcontext c)
{
    CUresult rc = need_init();
    if (rc != CUDA_SUCCESS)
        return rc;
    if (c && !valid_ctx(c))
        return CUDA_ERROR_INVALID_CONTEXT;
    if (!c) {
        if (t_ctx_depth > 0)
            t_ctx_depth--;
        return CUDA_SUCCESS;
    }
    if (t_ctx_depth == 0)
        t_ctx_depth = 1;
    t_ctx_stack[t_ctx_depth - 1] = c;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxPushCurrent_v2(CUcontext c)
{
    CUresult rc = need_init();
    if (rc != CUDA_SUCCESS)
        return rc;
    if (!valid_ctx(c))
        return CUDA_ERROR_INVALID_CONTEXT;
    if (t_ctx_depth >= CTX_STACK)
        return CUDA_ERROR_INVALID_VALUE;
    t_ctx_stack[t_ctx_depth++] = c;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxPopCurrent_v2(CUcontext *c)
{
    CUresult rc = need_init();
    if (rc != CUDA_SUCCESS)
        return rc;
    if (t_ctx_depth == 0)
        return CUDA_ERROR_INVALID_CONTEXT;
    struct CUctx_st *top = t_ctx_stack[--t_ctx_depth];
    if (c)
        *c = top;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxGetDevice(CUdevice *d)
{
    FAIL_IF(F_CTX_GET_DEVICE);
    CUresult rc = need_init();
    if (rc != CUDA_SUCCESS)
        return rc;
    if (!d)
        return CUDA_ERROR_INVALID_VALUE;
    struct CUctx_st *c = current_ctx();
    if (!valid_ctx(c))
        return CUDA_ERROR_INVALID_CONTEXT;
    *d = c->device;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxSynchronize(void)
{
    CUresult rc = need_init();
    if (rc == CUDA_SUCCESS)
        rc = mps_check();
    if (rc != CUDA_SUCCESS)
        return rc;
    struct CUctx_st *c = current_ctx();
    if (!valid_ctx(c))
        return CUDA_ERROR_INVALID_CONTEXT;
    sleep_until(atomic_load(&c->tail));
    return CUDA_SUCCESS;
}

/* CUDA 13: the context is named; NULL means the current one. */
EXPORT CUresult cuCtxSynchronize_v2(CUcontext c)
{
    CUresult rc = need_init();
    if (rc != CUDA_SUCCESS)
        return rc;
    if (!c)
        c = current_ctx();
    if (!valid_ctx(c))
        return CUDA_ERROR_INVALID_CONTEXT;
    sleep_until(atomic_load(&c->tail));
    return CUDA_SUCCESS;
}

/* ------------------------------------------------------------------ */
/* Modules, libraries, functions. */

/* The image is text, one kernel name a line; names not listed are made on demand. */
EXPORT CUresult cuModuleLoadData(CUmodule *m, const void *image)
{
    CUresult rc = need_init();
    if (rc != CUDA_SUCCESS)
        return rc;
    if (!m || !image)
        return CUDA_ERROR_INVALID_VALUE;
    if (!valid_ctx(current_ctx()))
        return CUDA_ERROR_INVALID_CONTEXT;
    struct CUmod_st *mod = calloc(1, sizeof *mod);
    if (!mod)
        return FAKE_ERROR_OUT_OF_MEMORY;
    mod->magic = MAGIC_MOD;
    pthread_mutex_lock(&g_lock);
    for (const char *p = image; *p;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        if (len > 0 && len < NAME_MAX_LEN) {
            char name[NAME_MAX_LEN];
            memcpy(name, p, len);
            name[len] = '\0';
            intern_func(mod, name);
        }
        p = nl ? nl + 1 : p + len;
    }
    pthread_mutex_unlock(&g_lock);
    *m = mod;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuModuleUnload(CUmodule m)
{
    if (!m || m->magic != MAGIC_MOD)
        return CUDA_ERROR_INVALID_HANDLE;
    return CUDA_SUCCESS; /* functions stay alive: their counts are reported at exit */
}

EXPORT CUresult cuModuleGetFunction(CUfunction *f, CUmodule m, const char *name)
{
    CUresult rc = need_init();
    if (rc != CUDA_SUCCESS)
        return rc;
    if (!f || !name || !*name || strlen(name) >= NAME_MAX_LEN)
        return CUDA_ERROR_INVALID_VALUE;
    if (!m || m->magic != MAGIC_MOD)
        return CUDA_ERROR_INVALID_HANDLE;
    pthread_mutex_lock(&g_lock);
    struct CUfunc_st *fn = intern_func(m, name);
    pthread_mutex_unlock(&g_lock);
    if (!fn)
        return FAKE_ERROR_OUT_OF_MEMORY;
    *f = fn;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuLibraryLoadData(CUlibrary *l, const void *code, int *jit_opts, void **jit_vals,
                                  unsigned int njit, int *lib_opts, void **lib_vals, unsigned int nlib)
{
    (void)jit_opts, (void)jit_vals, (void)njit, (void)lib_opts, (void)lib_vals, (void)nlib;
    CUresult rc = need_init();
    if (rc != CUDA_SUCCESS)
        return rc;
    if (!l || !code)
        return CUDA_ERROR_INVALID_VALUE;
    struct CUlib_st *lib = calloc(1, sizeof *lib);
    if (!lib)
        return FAKE_ERROR_OUT_OF_MEMORY;
    lib->magic = MAGIC_LIB;
    *l = lib;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuLibraryUnload(CUlibrary l)
{
    return l && l->magic == MAGIC_LIB ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

EXPORT CUresult cuLibraryGetKernel(CUkernel *k, CUlibrary l, const char *name)
{
    CUresult rc = need_init();
    if (rc != CUDA_SUCCESS)
        return rc;
    if (!k || !name || !*name || strlen(name) >= NAME_MAX_LEN)
        return CUDA_ERROR_INVALID_VALUE;
    if (!l || l->magic != MAGIC_LIB)
        return CUDA_ERROR_INVALID_HANDLE;
    pthread_mutex_lock(&g_lock);
    struct CUkern_st *kern = NULL;
    for (struct CUkern_st *x = g_kernels; x; x = x->next)
        if (x->fn->owner == l && strcmp(x->fn->name, name) == 0)
            kern = x;
    if (!kern) {
        struct CUfunc_st *fn = intern_func(l, name);
        kern = fn ? calloc(1, sizeof *kern) : NULL;
        if (kern) {
            kern->magic = MAGIC_KERN;
            kern->fn = fn;
            kern->next = g_kernels;
            g_kernels = kern;
        }
    }
    pthread_mutex_unlock(&g_lock);
    if (!kern)
        return FAKE_ERROR_OUT_OF_MEMORY;
    *k = kern;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuKernelGetFunction(CUfunction *f, CUkernel k)
{
    CUresult rc = need_init();
    if (rc != CUDA_SUCCESS)
        return rc;
    if (!f)
        return CUDA_ERROR_INVALID_VALUE;
    if (!k || k->magic != MAGIC_KERN)
        return CUDA_ERROR_INVALID_HANDLE;
    if (!valid_ctx(current_ctx()))
        return CUDA_ERROR_INVALID_CONTEXT;
    *f = k->fn;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuFuncGetName(const char **name, CUfunction f)
{
    FAIL_IF(F_FUNC_GET_NAME);
    if (!name)
        return CUDA_ERROR_INVALID_VALUE;
    struct CUfunc_st *fn = get_func(f);
    if (!fn)
        return CUDA_ERROR_INVALID_HANDLE;
    *name = fn->name;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuKernelGetName(const char **name, CUkernel k)
{
    FAIL_IF(F_KERNEL_GET_NAME);
    if (!name)
        return CUDA_ERROR_INVALID_VALUE;
    if (!k || k->magic != MAGIC_KERN)
        return CUDA_ERROR_INVALID_HANDLE;
    *name = k->fn->name;
    return CUDA_SUCCESS;
}

/* ------------------------------------------------------------------ */
/* Streams. */

EXPORT CUresult cuStreamCreate(CUstream *out, unsigned int flags)
{
    CUresult rc = need_init();
    if (rc != CUDA_SUCCESS)
        return rc;
    if (!out || (flags & ~(unsigned int)CU_STREAM_NON_BLOCKING))
        return CUDA_ERROR_INVALID_VALUE;
    struct CUctx_st *c = current_ctx();
    if (!valid_ctx(c))
        return CUDA_ERROR_INVALID_CONTEXT;
    struct CUstream_st *s = calloc(1, sizeof *s);
    if (!s)
        return FAKE_ERROR_OUT_OF_MEMORY;
    init_stream(s, c, flags);
    *out = s;
    return CUDA_SUCCESS;
}

/* Green contexts: an SM partition of the device (granularity 8, as on Hopper),
 * whose streams run work confined to it (see schedule). */
struct CUdevResourceDesc_st {
    unsigned int sms;
};
struct CUgreenCtx_st {
    int device;
    unsigned int sms;
};

EXPORT CUresult cuDeviceGetDevResource(CUdevice dev, CUdevResource *res, CUdevResourceType type)
{
    CUresult rc = need_init();
    if (rc != CUDA_SUCCESS)
        return rc;
    if (!res || type != CU_DEV_RESOURCE_TYPE_SM || dev < 0 || dev >= g_devices)
        return CUDA_ERROR_INVALID_VALUE;
    memset(res, 0, sizeof *res);
    res->type = CU_DEV_RESOURCE_TYPE_SM;
    res->sm.smCount = (unsigned int)g_sms;
    res->sm.minSmPartitionSize = 8;
    res->sm.smCoscheduledAlignment = 8;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDevSmResourceSplitByCount(CUdevResource *result, unsigned int *groups, const CUdevResource *input,
                                            CUdevResource *remaining, unsigned int flags, unsigned int min_count)
{
    if (!result || !groups || *groups < 1 || !input || input->type != CU_DEV_RESOURCE_TYPE_SM || flags)
        return CUDA_ERROR_INVALID_VALUE;
    unsigned int want = min_count < 8 ? 8 : (min_count + 7) / 8 * 8;
    if (want > input->sm.smCount)
        return CUDA_ERROR_INVALID_VALUE;
    memset(result, 0, sizeof *result);
    result->type = CU_DEV_RESOURCE_TYPE_SM;
    result->sm.smCount = want;
    if (remaining) {
        memset(remaining, 0, sizeof *remaining);
        remaining->type = CU_DEV_RESOURCE_TYPE_SM;
        remaining->sm.smCount = input->sm.smCount - want;
    }
    *groups = 1;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDevResourceGenerateDesc(CUdevResourceDesc *desc, CUdevResource *res, unsigned int n)
{
    if (!desc || !res || n != 1 || res->type != CU_DEV_RESOURCE_TYPE_SM || res->sm.smCount == 0)
        return CUDA_ERROR_INVALID_VALUE;
    struct CUdevResourceDesc_st *d = calloc(1, sizeof *d);
    if (!d)
        return FAKE_ERROR_OUT_OF_MEMORY;
    d->sms = res->sm.smCount;
    *desc = d;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuGreenCtxCreate(CUgreenCtx *out, CUdevResourceDesc desc, CUdevice dev, unsigned int flags)
{
    CUresult rc = need_init();
    if (rc != CUDA_SUCCESS)
        return rc;
    if (!out || !desc || dev < 0 || dev >= g_devices || !(flags & CU_GREEN_CTX_DEFAULT_STREAM))
        return CUDA_ERROR_INVALID_VALUE;
    struct CUgreenCtx_st *g = calloc(1, sizeof *g);
    if (!g)
        return FAKE_ERROR_OUT_OF_MEMORY;
    g->device = dev;
    g->sms = desc->sms;
    *out = g;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuGreenCtxStreamCreate(CUstream *out, CUgreenCtx g, unsigned int flags, int priority)
{
    (void)priority;
    if (!out || !g || (flags & ~(unsigned int)CU_STREAM_NON_BLOCKING))
        return CUDA_ERROR_INVALID_VALUE;
    struct CUstream_st *s = calloc(1, sizeof *s);
    if (!s)
        return FAKE_ERROR_OUT_OF_MEMORY;
    /* The green context shares the primary context's memory and modules. */
    init_stream(s, &g_primary[g->device], flags);
    s->green_sms = g->sms;
    *out = s;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuStreamDestroy_v2(CUstream h)
{
    if (!h || h == FIKIT_CU_STREAM_LEGACY || h == FIKIT_CU_STREAM_PER_THREAD || h->magic != MAGIC_STREAM)
        return CUDA_ERROR_INVALID_HANDLE;
    h->magic = MAGIC_DEAD; /* kept allocated: a stale handle must fail, not crash */
    return CUDA_SUCCESS;
}

/* What waiting on s waits for: the legacy stream waits for all of its context's work. */
static _Atomic uint64_t *reach(struct CUstream_st *s)
{
    return s == &s->ctx->legacy ? &s->ctx->tail : &s->tail;
}

static CUresult stream_sync(CUstream h, int ptsz)
{
    CUresult rc = need_init();
    struct CUstream_st *s;
    if (rc == CUDA_SUCCESS)
        rc = mps_check();
    if (rc == CUDA_SUCCESS)
        rc = get_stream(h, ptsz, &s);
    if (rc != CUDA_SUCCESS)
        return rc;
    sleep_until(atomic_load(reach(s)));
    return CUDA_SUCCESS;
}

EXPORT CUresult cuStreamSynchronize(CUstream h)
{
    return stream_sync(h, 0);
}

EXPORT CUresult cuStreamSynchronize_ptsz(CUstream h)
{
    return stream_sync(h, 1);
}

/* The stream of an entry point that takes one, once the driver is initialised. */
static CUresult ready_stream(CUstream h, int ptsz, struct CUstream_st **s)
{
    CUresult rc = need_init();
    return rc == CUDA_SUCCESS ? get_stream(h, ptsz, s) : rc;
}

static CUresult stream_query(CUstream h, int ptsz)
{
    struct CUstream_st *s;
    CUresult rc = ready_stream(h, ptsz, &s);
    if (rc != CUDA_SUCCESS)
        return rc;
    return now_ns() >= atomic_load(reach(s)) ? CUDA_SUCCESS : CUDA_ERROR_NOT_READY;
}

EXPORT CUresult cuStreamQuery(CUstream h)
{
    return stream_query(h, 0);
}

EXPORT CUresult cuStreamQuery_ptsz(CUstream h)
{
    return stream_query(h, 1);
}

static CUresult stream_is_capturing(CUstream h, CUstreamCaptureStatus *st, int ptsz)
{
    FAIL_IF(F_STREAM_IS_CAPTURING);
    struct CUstream_st *s;
    CUresult rc = ready_stream(h, ptsz, &s);
    if (rc != CUDA_SUCCESS)
        return rc;
    if (!st)
        return CUDA_ERROR_INVALID_VALUE;
    *st = CU_STREAM_CAPTURE_STATUS_NONE;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuStreamIsCapturing(CUstream h, CUstreamCaptureStatus *st)
{
    return stream_is_capturing(h, st, 0);
}

EXPORT CUresult cuStreamIsCapturing_ptsz(CUstream h, CUstreamCaptureStatus *st)
{
    return stream_is_capturing(h, st, 1);
}

static CUresult stream_get_ctx(CUstream h, CUcontext *c, int ptsz)
{
    FAIL_IF(F_STREAM_GET_CTX);
    struct CUstream_st *s;
    CUresult rc = ready_stream(h, ptsz, &s);
    if (rc != CUDA_SUCCESS)
        return rc;
    if (!c)
        return CUDA_ERROR_INVALID_VALUE;
    *c = s->ctx;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuStreamGetCtx(CUstream h, CUcontext *c)
{
    return stream_get_ctx(h, c, 0);
}

EXPORT CUresult fakecuda_stream_id(CUstream h, int per_thread, uint32_t *id)
{
    CUresult rc = need_init();
    struct CUstream_st *s;
    if (rc == CUDA_SUCCESS)
        rc = get_stream(h, per_thread, &s);
    if (rc == CUDA_SUCCESS && !id)
        rc = CUDA_ERROR_INVALID_VALUE;
    if (rc == CUDA_SUCCESS)
        *id = s->id;
    return rc;
}

EXPORT CUresult cuStreamGetCtx_ptsz(CUstream h, CUcontext *c)
{
    return stream_get_ctx(h, c, 1);
}

static CUresult stream_wait_event(CUstream h, CUevent e, unsigned int flags, int ptsz)
{
    struct CUstream_st *s;
    CUresult rc = ready_stream(h, ptsz, &s);
    if (rc != CUDA_SUCCESS)
        return rc;
    if (!e || e->magic != MAGIC_EVENT)
        return CUDA_ERROR_INVALID_HANDLE;
    if (flags > 1)
        return CUDA_ERROR_INVALID_VALUE;
    if (atomic_load(&e->recorded))
        atomic_max_u64(&s->tail, atomic_load(&e->t));
    return CUDA_SUCCESS;
}

EXPORT CUresult cuStreamWaitEvent(CUstream h, CUevent e, unsigned int flags)
{
    return stream_wait_event(h, e, flags, 0);
}

EXPORT CUresult cuStreamWaitEvent_ptsz(CUstream h, CUevent e, unsigned int flags)
{
    return stream_wait_event(h, e, flags, 1);
}

/* ------------------------------------------------------------------ */
/* Events. */

EXPORT CUresult cuEventCreate(CUevent *out, unsigned int flags)
{
    FAIL_IF(F_EVENT_CREATE);
    CUresult rc = need_init();
    if (rc != CUDA_SUCCESS)
        return rc;
    if (!out || flags > 0xf)
        return CUDA_ERROR_INVALID_VALUE;
    if (!valid_ctx(current_ctx()))
        return CUDA_ERROR_INVALID_CONTEXT;
    struct CUevent_st *e = calloc(1, sizeof *e);
    if (!e)
        return FAKE_ERROR_OUT_OF_MEMORY;
    e->magic = MAGIC_EVENT;
    e->flags = flags;
    *out = e;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuEventDestroy_v2(CUevent e)
{
    if (!e || e->magic != MAGIC_EVENT)
        return CUDA_ERROR_INVALID_HANDLE;
    e->magic = MAGIC_DEAD;
    return CUDA_SUCCESS;
}

/* An event completes when its stream reaches it: after the work queued before it. */
static CUresult event_record(CUevent e, CUstream h, int ptsz)
{
    FAIL_IF(F_EVENT_RECORD);
    CUresult rc = need_init();
    if (rc != CUDA_SUCCESS)
        return rc;
    if (!e || e->magic != MAGIC_EVENT)
        return CUDA_ERROR_INVALID_HANDLE;
    struct CUstream_st *s;
    rc = get_stream(h, ptsz, &s);
    if (rc != CUDA_SUCCESS)
        return rc;
    atomic_store(&e->t, max_u64(now_ns(), atomic_load(reach(s))));
    atomic_store(&e->recorded, 1);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuEventRecord(CUevent e, CUstream s)
{
    return event_record(e, s, 0);
}

EXPORT CUresult cuEventRecord_ptsz(CUevent e, CUstream s)
{
    return event_record(e, s, 1);
}

EXPORT CUresult cuEventQuery(CUevent e)
{
    FAIL_IF(F_EVENT_QUERY);
    if (!e || e->magic != MAGIC_EVENT)
        return CUDA_ERROR_INVALID_HANDLE;
    if (!atomic_load(&e->recorded))
        return CUDA_SUCCESS;
    return now_ns() >= atomic_load(&e->t) ? CUDA_SUCCESS : CUDA_ERROR_NOT_READY;
}

EXPORT CUresult cuEventSynchronize(CUevent e)
{
    FAIL_IF(F_EVENT_SYNC);
    if (!e || e->magic != MAGIC_EVENT)
        return CUDA_ERROR_INVALID_HANDLE;
    if (atomic_load(&e->recorded))
        sleep_until(atomic_load(&e->t));
    return CUDA_SUCCESS;
}

static CUresult event_elapsed(float *ms, CUevent a, CUevent b)
{
    FAIL_IF(F_EVENT_ELAPSED);
    if (!ms)
        return CUDA_ERROR_INVALID_VALUE;
    if (!a || a->magic != MAGIC_EVENT || !b || b->magic != MAGIC_EVENT)
        return CUDA_ERROR_INVALID_HANDLE;
    if ((a->flags | b->flags) & CU_EVENT_DISABLE_TIMING)
        return CUDA_ERROR_INVALID_HANDLE;
    if (!atomic_load(&a->recorded) || !atomic_load(&b->recorded))
        return CUDA_ERROR_INVALID_HANDLE;
    uint64_t ta = atomic_load(&a->t), tb = atomic_load(&b->t), now = now_ns();
    if (now < ta || now < tb)
        return CUDA_ERROR_NOT_READY;
    *ms = (float)(((double)tb - (double)ta) / 1e6);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuEventElapsedTime(float *ms, CUevent a, CUevent b)
{
    return event_elapsed(ms, a, b);
}

EXPORT CUresult cuEventElapsedTime_v2(float *ms, CUevent a, CUevent b)
{
    return event_elapsed(ms, a, b);
}

/* ------------------------------------------------------------------ */
/* Memory: host memory behind the device pointer, so kernels can have effects. */

EXPORT CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t size)
{
    CUresult rc = need_init();
    if (rc != CUDA_SUCCESS)
        return rc;
    if (!p || size == 0)
        return CUDA_ERROR_INVALID_VALUE;
    if (!valid_ctx(current_ctx()))
        return CUDA_ERROR_INVALID_CONTEXT;
    if (size > ((size_t)1 << 40))
        return FAKE_ERROR_OUT_OF_MEMORY;
    struct mem_header *h = NULL;
    if (posix_memalign((void **)&h, 16, sizeof *h + size) != 0)
        return FAKE_ERROR_OUT_OF_MEMORY;
    memset(h + 1, 0, size);
    h->magic = MAGIC_MEM;
    h->size = size;
    *p = (CUdeviceptr)(uintptr_t)(h + 1);
    return CUDA_SUCCESS;
}

/* Pinned host memory mapped for the device: plain host memory here, and its
 * device pointer is the host address (the fake GPU reads host memory). */
EXPORT CUresult cuMemHostAlloc(void **pp, size_t size, unsigned int flags)
{
    CUresult rc = need_init();
    if (rc != CUDA_SUCCESS)
        return rc;
    if (!pp || size == 0 || (flags & ~0x7u))
        return CUDA_ERROR_INVALID_VALUE;
    void *p = calloc(1, size);
    if (!p)
        return FAKE_ERROR_OUT_OF_MEMORY;
    *pp = p;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemFreeHost(void *p)
{
    free(p);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemHostGetDevicePointer_v2(CUdeviceptr *d, void *p, unsigned int flags)
{
    if (!d || !p || flags)
        return CUDA_ERROR_INVALID_VALUE;
    *d = (CUdeviceptr)(uintptr_t)p;
    return CUDA_SUCCESS;
}

/* A stream wait on a memory word.  The fake's timeline is fixed when work is
 * submitted, so the wait cannot hold the stream back; it is counted, so tests
 * can see that the library gated a measurement, and checked for a valid stream.
 * The latest >= wait is kept for a function's first launch (FAKECUDA_LAZY_LOAD). */
static CUresult stream_wait_value(CUstream h, CUdeviceptr addr, uint32_t value, unsigned int flags, int ptsz)
{
    struct CUstream_st *s;
    CUresult rc = ready_stream(h, ptsz, &s);
    if (rc != CUDA_SUCCESS)
        return rc;
    if (!addr || flags > 3)
        return CUDA_ERROR_INVALID_VALUE;
    atomic_fetch_add(&wait_value_calls, 1);
    if (flags == CU_STREAM_WAIT_VALUE_GEQ) {
        atomic_store(&s->wait_value, value);
        atomic_store(&s->wait_word, (uintptr_t)addr);
    }
    return CUDA_SUCCESS;
}

EXPORT CUresult cuStreamWaitValue32_v2(CUstream h, CUdeviceptr addr, uint32_t value, unsigned int flags)
{
    return stream_wait_value(h, addr, value, flags, 0);
}

EXPORT CUresult cuStreamWaitValue32_v2_ptsz(CUstream h, CUdeviceptr addr, uint32_t value, unsigned int flags)
{
    return stream_wait_value(h, addr, value, flags, 1);
}

EXPORT CUresult cuMemFree_v2(CUdeviceptr p)
{
    struct mem_header *h = get_mem(p);
    if (!h)
        return CUDA_ERROR_INVALID_VALUE;
    h->magic = MAGIC_DEAD;
    free(h);
    return CUDA_SUCCESS;
}

/* Synchronous copies wait for the context's queued work, as legacy-stream copies do. */
static CUresult copy_wait(void)
{
    CUresult rc = need_init();
    if (rc != CUDA_SUCCESS)
        return rc;
    struct CUctx_st *c = current_ctx();
    if (!valid_ctx(c))
        return CUDA_ERROR_INVALID_CONTEXT;
    sleep_until(atomic_load(&c->tail));
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void *src, size_t n)
{
    CUresult rc = copy_wait();
    if (rc != CUDA_SUCCESS)
        return rc;
    struct mem_header *h = get_mem(dst);
    if (!h || !src || n > h->size)
        return CUDA_ERROR_INVALID_VALUE;
    memcpy((void *)(uintptr_t)dst, src, n);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemcpyDtoH_v2(void *dst, CUdeviceptr src, size_t n)
{
    CUresult rc = copy_wait();
    if (rc != CUDA_SUCCESS)
        return rc;
    struct mem_header *h = get_mem(src);
    if (!h || !dst || n > h->size)
        return CUDA_ERROR_INVALID_VALUE;
    memcpy(dst, (const void *)(uintptr_t)src, n);
    return CUDA_SUCCESS;
}

/* ------------------------------------------------------------------ */
/* Graphs: an executable graph is one unit of work of the "graph" duration. */

EXPORT CUresult cuGraphCreate(CUgraph *g, unsigned int flags)
{
    CUresult rc = need_init();
    if (rc != CUDA_SUCCESS)
        return rc;
    if (!g || flags != 0)
        return CUDA_ERROR_INVALID_VALUE;
    struct CUgraph_st *graph = calloc(1, sizeof *graph);
    if (!graph)
        return FAKE_ERROR_OUT_OF_MEMORY;
    graph->magic = MAGIC_GRAPH;
    *g = graph;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuGraphDestroy(CUgraph g)
{
    if (!g || g->magic != MAGIC_GRAPH)
        return CUDA_ERROR_INVALID_HANDLE;
    g->magic = MAGIC_DEAD;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuGraphInstantiateWithFlags(CUgraphExec *out, CUgraph g, unsigned long long flags)
{
    (void)flags;
    CUresult rc = need_init();
    if (rc != CUDA_SUCCESS)
        return rc;
    if (!out)
        return CUDA_ERROR_INVALID_VALUE;
    if (!g || g->magic != MAGIC_GRAPH)
        return CUDA_ERROR_INVALID_HANDLE;
    struct CUgraphExec_st *e = calloc(1, sizeof *e);
    if (!e)
        return FAKE_ERROR_OUT_OF_MEMORY;
    static _Atomic uint32_t next_id;
    e->magic = MAGIC_EXEC;
    e->dur_ns = g_graph_ns ? g_graph_ns : g_default_ns;
    e->id = atomic_fetch_add(&next_id, 1) + 1;
    *out = e;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuGraphExecDestroy(CUgraphExec e)
{
    if (!e || e->magic != MAGIC_EXEC)
        return CUDA_ERROR_INVALID_HANDLE;
    e->magic = MAGIC_DEAD;
    return CUDA_SUCCESS;
}

/* ------------------------------------------------------------------ */
/* Errors. */

struct error_name {
    int code;
    const char *name;
};
static const struct error_name error_names[] = {
    {CUDA_SUCCESS, "CUDA_SUCCESS"},
    {CUDA_ERROR_INVALID_VALUE, "CUDA_ERROR_INVALID_VALUE"},
    {FAKE_ERROR_OUT_OF_MEMORY, "CUDA_ERROR_OUT_OF_MEMORY"},
    {CUDA_ERROR_NOT_INITIALIZED, "CUDA_ERROR_NOT_INITIALIZED"},
    {FAKE_ERROR_INVALID_DEVICE, "CUDA_ERROR_INVALID_DEVICE"},
    {FAKE_ERROR_INVALID_IMAGE, "CUDA_ERROR_INVALID_IMAGE"},
    {CUDA_ERROR_INVALID_CONTEXT, "CUDA_ERROR_INVALID_CONTEXT"},
    {CUDA_ERROR_INVALID_HANDLE, "CUDA_ERROR_INVALID_HANDLE"},
    {CUDA_ERROR_NOT_FOUND, "CUDA_ERROR_NOT_FOUND"},
    {CUDA_ERROR_NOT_READY, "CUDA_ERROR_NOT_READY"},
    {FAKE_ERROR_ILLEGAL_ADDRESS, "CUDA_ERROR_ILLEGAL_ADDRESS"},
    {FAKE_ERROR_MPS_CONNECTION_FAILED, "CUDA_ERROR_MPS_CONNECTION_FAILED"},
    {CUDA_ERROR_NOT_SUPPORTED, "CUDA_ERROR_NOT_SUPPORTED"},
};

EXPORT CUresult cuGetErrorName(CUresult e, const char **s)
{
    if (!s)
        return CUDA_ERROR_INVALID_VALUE;
    for (size_t i = 0; i < sizeof error_names / sizeof error_names[0]; i++) {
        if (error_names[i].code == e) {
            *s = error_names[i].name;
            return CUDA_SUCCESS;
        }
    }
    *s = NULL;
    return CUDA_ERROR_INVALID_VALUE;
}

EXPORT CUresult cuGetErrorString(CUresult e, const char **s)
{
    return cuGetErrorName(e, s);
}

/* ------------------------------------------------------------------ */
/* cuGetProcAddress: entry points by base name, newest version the caller knows. */

struct proc {
    const char *name;   /* base name, as asked */
    int since;          /* first CUDA version with this variant */
    const char *symbol; /* exported name of the variant */
    void *fn;
    void *ptsz; /* per-thread-default-stream variant, if any */
};

#define P(name, since, sym) {#name, since, #sym, (void *)sym, NULL}
#define PT(name, since, sym) {#name, since, #sym, (void *)sym, (void *)sym##_ptsz}

EXPORT CUresult cuGetProcAddress(const char *symbol, void **pfn, int version, cuuint64_t flags);
EXPORT CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int version, cuuint64_t flags,
                                    CUdriverProcAddressQueryResult *status);

static const struct proc procs[] = {
    P(cuInit, 2000, cuInit),
    P(cuDriverGetVersion, 2020, cuDriverGetVersion),
    P(cuDeviceGetCount, 2000, cuDeviceGetCount),
    P(cuDeviceGet, 2000, cuDeviceGet),
    P(cuDeviceGetName, 2000, cuDeviceGetName),
    P(cuDeviceGetUuid, 9020, cuDeviceGetUuid),
    P(cuDeviceGetUuid, 11040, cuDeviceGetUuid_v2),
    P(cuDevicePrimaryCtxRetain, 7000, cuDevicePrimaryCtxRetain),
    P(cuDevicePrimaryCtxRelease, 11000, cuDevicePrimaryCtxRelease_v2),
    P(cuCtxGetCurrent, 4000, cuCtxGetCurrent),
    P(cuCtxSetCurrent, 4000, cuCtxSetCurrent),
    P(cuCtxPushCurrent, 4000, cuCtxPushCurrent_v2),
    P(cuCtxPopCurrent, 4000, cuCtxPopCurrent_v2),
    P(cuCtxGetDevice, 2000, cuCtxGetDevice),
    P(cuCtxSynchronize, 2000, cuCtxSynchronize),
    P(cuCtxSynchronize, 13000, cuCtxSynchronize_v2),
    P(cuModuleLoadData, 2000, cuModuleLoadData),
    P(cuModuleUnload, 2000, cuModuleUnload),
    P(cuModuleGetFunction, 2000, cuModuleGetFunction),
    P(cuLibraryLoadData, 12000, cuLibraryLoadData),
    P(cuLibraryUnload, 12000, cuLibraryUnload),
    P(cuLibraryGetKernel, 12000, cuLibraryGetKernel),
    P(cuKernelGetFunction, 12000, cuKernelGetFunction),
    P(cuKernelGetName, 12030, cuKernelGetName),
    P(cuFuncGetName, 12030, cuFuncGetName),
    P(cuStreamCreate, 2000, cuStreamCreate),
    P(cuStreamDestroy, 4000, cuStreamDestroy_v2),
    PT(cuStreamSynchronize, 2000, cuStreamSynchronize),
    PT(cuStreamQuery, 2000, cuStreamQuery),
    PT(cuStreamIsCapturing, 10000, cuStreamIsCapturing),
    PT(cuStreamGetCtx, 9020, cuStreamGetCtx),
    PT(cuStreamWaitEvent, 3020, cuStreamWaitEvent),
    P(cuEventCreate, 2000, cuEventCreate),
    P(cuEventDestroy, 4000, cuEventDestroy_v2),
    PT(cuEventRecord, 2000, cuEventRecord),
    P(cuEventQuery, 2000, cuEventQuery),
    P(cuEventSynchronize, 2000, cuEventSynchronize),
    P(cuEventElapsedTime, 2000, cuEventElapsedTime),
    P(cuEventElapsedTime, 12080, cuEventElapsedTime_v2),
    P(cuMemAlloc, 3020, cuMemAlloc_v2),
    P(cuMemFree, 3020, cuMemFree_v2),
    P(cuMemHostAlloc, 2020, cuMemHostAlloc),
    P(cuDeviceGetDevResource, 12040, cuDeviceGetDevResource),
    P(cuDevSmResourceSplitByCount, 12040, cuDevSmResourceSplitByCount),
    P(cuDevResourceGenerateDesc, 12040, cuDevResourceGenerateDesc),
    P(cuGreenCtxCreate, 12040, cuGreenCtxCreate),
    P(cuGreenCtxStreamCreate, 12040, cuGreenCtxStreamCreate),
    P(cuMemFreeHost, 2000, cuMemFreeHost),
    P(cuMemHostGetDevicePointer, 3020, cuMemHostGetDevicePointer_v2),
    PT(cuStreamWaitValue32, 11070, cuStreamWaitValue32_v2),
    P(cuMemcpyHtoD, 3020, cuMemcpyHtoD_v2),
    P(cuMemcpyDtoH, 3020, cuMemcpyDtoH_v2),
    PT(cuLaunchKernel, 4000, cuLaunchKernel),
    PT(cuLaunchKernelEx, 11060, cuLaunchKernelEx),
    PT(cuLaunchCooperativeKernel, 9000, cuLaunchCooperativeKernel),
    P(cuGraphCreate, 10000, cuGraphCreate),
    P(cuGraphDestroy, 10000, cuGraphDestroy),
    P(cuGraphInstantiateWithFlags, 11040, cuGraphInstantiateWithFlags),
    P(cuGraphInstantiate, 12000, cuGraphInstantiateWithFlags),
    PT(cuGraphLaunch, 10000, cuGraphLaunch),
    P(cuGraphExecDestroy, 10000, cuGraphExecDestroy),
    P(cuGetErrorName, 6000, cuGetErrorName),
    P(cuGetErrorString, 6000, cuGetErrorString),
    P(cuGetProcAddress, 11030, cuGetProcAddress),
    P(cuGetProcAddress, 12000, cuGetProcAddress_v2),
};

static CUresult get_proc(const char *symbol, void **pfn, int version, cuuint64_t flags, int *status)
{
    *status = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
    if (!symbol || !pfn)
        return CUDA_ERROR_INVALID_VALUE;
    *pfn = NULL;
    const struct proc *best = NULL;
    int found = 0;
    for (size_t i = 0; i < sizeof procs / sizeof procs[0]; i++) {
        const struct proc *p = &procs[i];
        int match = strcmp(p->name, symbol) == 0;
        if (!match && !g_strict_names) {
            match = strcmp(p->symbol, symbol) == 0;
            if (!match && p->ptsz) {
                size_t n = strlen(p->symbol);
                match = strncmp(p->symbol, symbol, n) == 0 && strcmp(symbol + n, "_ptsz") == 0;
                if (match) {
                    *pfn = p->ptsz;
                    *status = CU_GET_PROC_ADDRESS_SUCCESS;
                    return CUDA_SUCCESS;
                }
            }
        }
        if (!match)
            continue;
        found = 1;
        if (p->since <= version && (!best || p->since > best->since))
            best = p;
    }
    if (!best) {
        if (found)
            *status = FAKE_PROC_VERSION_NOT_SUFFICIENT;
        return CUDA_ERROR_NOT_FOUND;
    }
    *pfn = (flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) && best->ptsz ? best->ptsz : best->fn;
    *status = CU_GET_PROC_ADDRESS_SUCCESS;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuGetProcAddress(const char *symbol, void **pfn, int version, cuuint64_t flags)
{
    int status;
    return get_proc(symbol, pfn, version, flags, &status);
}

EXPORT CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int version, cuuint64_t flags,
                                    CUdriverProcAddressQueryResult *status)
{
    int st;
    CUresult rc = get_proc(symbol, pfn, version, flags, &st);
    if (status)
        *status = st;
    return rc;
}
