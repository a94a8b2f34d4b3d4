/*
 * This process as a fikit client of each GPU it launches on: its slot in that
 * GPU's domain, its registration with fikitd, and its view of the more urgent
 * clients there.
 *
 * Which domain serves a device (docs/design.md, "Several GPUs"):
 *   1. FIKIT_DOMAIN, when its header names the device's uuid; a header that
 *      names no uuid (a domain made without a driver) serves device 0;
 *   2. else <root>/by-uuid/<uuid> (the daemon's links), or, when the driver
 *      gives no uuid and CUDA_VISIBLE_DEVICES does not renumber the devices,
 *      <root>/gpu<ordinal>; root is FIKIT_DOMAIN_ROOT, else the directory
 *      FIKIT_DOMAIN is in (above by-uuid/ for a link), else /run/fikit;
 *   3. else, for device 0 only, FIKIT_DOMAIN whatever uuid it names (as
 *      before several GPUs were known: a uuid we cannot match must not leave
 *      the one GPU of a job unscheduled).
 * A device no domain serves runs free (measured, never held).
 *
 * Everything here runs at a device's first launch, after fork, or when a
 * domain's generation moves; the per-launch path only reads what it prepared
 * (fikit_dev_for_launch: in a process that sees one device, that device; else
 * one driver call for the current context and a scan of a short table).
 * Anything that goes wrong leaves that device with a private slot: measured,
 * never held.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
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

#include "fikit.h"

int fikit_req_prio = FIKIT_PRIO_NORMAL;

/* Where domains are looked for, read once at start. */
static char env_domain[256]; /* FIKIT_DOMAIN, "" when unset */
static char env_root[256];   /* FIKIT_DOMAIN_ROOT, else the directory FIKIT_DOMAIN is in, else /run/fikit */
static bool env_renumbered;  /* CUDA_VISIBLE_DEVICES set: an ordinal is not an NVML index */

/* Attached devices, in the order of their first launch (fikit_hot.devs: the first ones' hot
 * lines share the hot page); published by n_devs. */
static struct fikit_dev *const devs = fikit_hot.devs;
static _Atomic int n_devs;
static struct fikit_dev spill; /* devices beyond FIKIT_MAX_DEVS: one private slot, never held */
static pthread_mutex_t attach_lock = PTHREAD_MUTEX_INITIALIZER;

/* Context -> device (fikit.h, in the hot page), filled under attach_lock and published by n. */
_Static_assert(offsetof(struct fikit_ctx_cache, e) + 2 * sizeof fikit_hot.ctxs.e[0] <= 64,
               "a launch reads one line of the context cache");

/* Peer slots are mapped one page each: the timing fields are all we read. */
#define PEER_MAP 4096
_Static_assert(offsetof(struct fikit_slot, ktab) <= PEER_MAP, "slot header must fit one page");

static int parse_prio(const char *s)
{
    static _Atomic int warned;
    if (!s || !*s || strcmp(s, "normal") == 0)
        return FIKIT_PRIO_NORMAL;
    if (strcmp(s, "high") == 0)
        return FIKIT_PRIO_HIGH;
    if (strcmp(s, "low") == 0)
        return FIKIT_PRIO_LOW;
    char *end;
    long v = strtol(s, &end, 10);
    if (*end == 0 && v >= 0 && v <= FIKIT_PRIO_MAX)
        return (int)v;
    fikit_log_once(&warned, "FIKIT_PRIO=%s is not high, normal, low or 0..%d; using normal", s, FIKIT_PRIO_MAX);
    return FIKIT_PRIO_NORMAL;
}

/* The profile key: FIKIT_PROG, else the script a python runs, else argv[0]. */
void fikit_program_name(char *out, size_t n)
{
    const char *env = getenv("FIKIT_PROG");
    char buf[4096] = {0};
    if (env && *env) {
        snprintf(buf, sizeof buf, "%s", env);
    } else {
        int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
        ssize_t len = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
        if (fd >= 0)
            close(fd);
        if (len <= 0)
            snprintf(buf, sizeof buf, "unknown");
        const char *a0 = strrchr(buf, '/') ? strrchr(buf, '/') + 1 : buf;
        size_t l0 = strlen(buf);
        if (strncmp(a0, "python", 6) == 0 && len > 0 && (ssize_t)l0 + 1 < len) {
            /* skip interpreter flags such as -u or -m */
            char *arg = buf + l0 + 1;
            while (arg < buf + len && arg[0] == '-' && strcmp(arg, "-m") != 0)
                arg += strlen(arg) + 1;
            if (arg < buf + len && strcmp(arg, "-m") == 0)
                arg += strlen(arg) + 1;
            if (arg < buf + len)
                memmove(buf, arg, strlen(arg) + 1);
        }
    }
    const char *base = strrchr(buf, '/') ? strrchr(buf, '/') + 1 : buf;
    size_t j = 0;
    for (size_t i = 0; base[i] && j + 1 < n; i++) {
        char c = base[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                 c == '_' || c == '-';
        out[j++] = ok ? c : '_';
    }
    out[j] = 0;
    if (j == 0)
        snprintf(out, n, "unknown");
}

static void *map_file(int fd, size_t size, int prot)
{
    void *p = mmap(NULL, size, prot, MAP_SHARED, fd, 0);
    return p == MAP_FAILED ? NULL : p;
}

/* ---- finding a device's domain ------------------------------------------ */

static void close_domain(struct fikit_dev *d)
{
    if (d->dom)
        munmap(d->dom, sizeof(struct fikit_domain));
    d->dom = NULL;
    d->n_slots = 0;
    d->dir[0] = 0;
}

/* Map dir/domain (read-write when we may: a self-granting domain); warn says whether a
 * failure is worth a line on stderr (a directory named by the user) or only a debug one. */
static bool open_domain(struct fikit_dev *d, const char *dir, bool warn)
{
    static _Atomic int warned;
    char path[300];
    if (snprintf(path, sizeof path, "%s/domain", dir) >= (int)sizeof path)
        return false;
    int fd = open(path, O_RDWR | O_CLOEXEC);
    bool writable = fd >= 0;
    if (fd < 0)
        fd = open(path, O_RDONLY | O_CLOEXEC);
    const char *why = NULL;
    char buf[160];
    struct fikit_domain *m = NULL;
    struct stat st;
    if (fd < 0) {
        snprintf(buf, sizeof buf, "no scheduling domain at %.100s (%s)", path, strerror(errno));
        why = buf;
    } else if (fstat(fd, &st) != 0 || (size_t)st.st_size < sizeof(struct fikit_domain)) {
        why = "too short to be a fikit domain";
    } else if (!(m = map_file(fd, sizeof(struct fikit_domain), writable ? PROT_READ | PROT_WRITE : PROT_READ))) {
        why = "cannot be mapped";
    } else if (m->magic != FIKIT_DOMAIN_MAGIC || m->version != FIKIT_SHM_VERSION ||
               m->domain_size != sizeof(struct fikit_domain) || m->slot_size != sizeof(struct fikit_slot) ||
               m->n_slots == 0 || m->n_slots > FIKIT_MAX_SLOTS || m->mode > FIKIT_MODE_OFF) {
        why = "not a fikit domain of this layout version";
    } else if ((atomic_load(&m->flags) & FIKIT_DOMAIN_SELF_GRANT) && !writable) {
        /* A self-granting domain must be writable, or we could never appear in it. */
        why = "self-granting but not writable";
    }
    if (fd >= 0)
        close(fd);
    if (why) {
        if (m)
            munmap(m, sizeof(struct fikit_domain));
        if (warn && fd < 0)
            fikit_log_once(&warned, "%s; measuring only", why);
        else if (warn)
            fikit_log_once(&warned, "%.200s is %s; measuring only", path, why);
        else if (fikit_debug)
            fikit_log("device %d: %.200s: %s", d->ordinal, path, why);
        return false;
    }
    d->dom = m;
    d->n_slots = m->n_slots;
    snprintf(d->dir, sizeof d->dir, "%s", dir);
    return true;
}

/* The GPU uuid a domain header names, "" for none. */
static void header_uuid(const struct fikit_domain *m, char *out, size_t n)
{
    size_t j = 0;
    for (; j + 1 < n && j < sizeof m->gpu_uuid && m->gpu_uuid[j]; j++)
        out[j] = m->gpu_uuid[j];
    out[j] = 0;
}

/* The device's uuid as NVML prints it (GPU-8-4-4-4-12 hex digits), "" when the driver will not say. */
static void device_uuid(int ordinal, char *out, size_t n)
{
    out[0] = 0;
    CUuuid u;
    if (!fikit_drv.cuDeviceGetUuid || fikit_drv.cuDeviceGetUuid(&u, ordinal) != CUDA_SUCCESS)
        return;
    const unsigned char *b = (const unsigned char *)u.bytes;
    snprintf(out, n, "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2],
             b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

static bool find_domain(struct fikit_dev *d)
{
    char hu[sizeof d->dom->gpu_uuid + 1];
    /* 1. FIKIT_DOMAIN serves the GPU its header names, or device 0 when it names none. */
    if (env_domain[0] && open_domain(d, env_domain, true)) {
        header_uuid(d->dom, hu, sizeof hu);
        if (d->uuid[0] && hu[0] ? strcasecmp(d->uuid, hu) == 0 : d->ordinal == 0)
            return true;
        close_domain(d);
    }
    /* 2. The daemon's layout: by uuid, or by index where the ordinal is one. */
    char path[sizeof env_root + 64];
    if (d->uuid[0]) {
        snprintf(path, sizeof path, "%s/by-uuid/%s", env_root, d->uuid);
        if (open_domain(d, path, false)) {
            header_uuid(d->dom, hu, sizeof hu);
            if (!hu[0] || strcasecmp(d->uuid, hu) == 0)
                return true;
            close_domain(d);
        }
    } else if (!env_renumbered) {
        snprintf(path, sizeof path, "%s/gpu%d", env_root, d->ordinal);
        if (open_domain(d, path, false))
            return true;
    }
    /* 3. Device 0 that no domain knows by its uuid: the one FIKIT_DOMAIN names. */
    if (env_domain[0] && d->ordinal == 0 && open_domain(d, env_domain, false)) {
        static _Atomic int warned;
        header_uuid(d->dom, hu, sizeof hu);
        fikit_log_once(&warned, "device 0 (%s) matches no domain under %.100s; scheduled in %.100s (%s)",
                       d->uuid[0] ? d->uuid : "uuid unknown", env_root, env_domain, hu);
        return true;
    }
    if (fikit_debug)
        fikit_log("device %d (%s): no scheduling domain; it runs free", d->ordinal, d->uuid[0] ? d->uuid : "?");
    return false;
}

/* ---- the slot ----------------------------------------------------------- */

/* The owner pid written in a slot file, and the file's age: a client fills its
 * slot (pid last) just after creating it, so a pid of 0 is a slot being born. */
static int32_t file_pid(const char *path, time_t *mtime)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    struct stat st;
    *mtime = fstat(fd, &st) == 0 ? st.st_mtime : 0;
    int32_t pid = 0;
    ssize_t r = pread(fd, &pid, sizeof pid, (off_t)offsetof(struct fikit_slot, pid));
    close(fd);
    return r == (ssize_t)sizeof pid ? pid : 0;
}

static bool pid_dead(int32_t pid) { return pid <= 0 || (kill(pid, 0) != 0 && errno == ESRCH); }

/* Create slot.<i> exclusively; a stale file of a dead owner (ours to remove) is replaced.
 * Sets d->me to the new mapping. */
static int claim_slot_file(struct fikit_dev *d)
{
    for (uint32_t i = 0; i < d->n_slots; i++) {
        char path[300];
        snprintf(path, sizeof path, "%s/slot.%u", d->dir, i);
        for (int attempt = 0; attempt < 2; attempt++) {
            int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
            if (fd >= 0) {
                if (ftruncate(fd, sizeof(struct fikit_slot)) != 0) {
                    close(fd);
                    unlink(path);
                    return -1;
                }
                struct stat st;
                d->slot_ino = fstat(fd, &st) == 0 ? (uint64_t)st.st_ino : 0;
                struct fikit_slot *s = map_file(fd, sizeof(struct fikit_slot), PROT_READ | PROT_WRITE);
                close(fd);
                if (!s) {
                    unlink(path);
                    return -1;
                }
                d->me = s;
                return (int)i;
            }
            if (errno != EEXIST)
                return -1;
            /* Another client's slot: replace it only if its owner is dead, or it never got an
             * owner in several seconds (never a slot another client is creating right now). */
            time_t mtime = 0;
            int32_t pid = file_pid(path, &mtime);
            bool stale = pid > 0 ? pid_dead(pid) : time(NULL) - mtime > 5;
            if (!stale || unlink(path) != 0)
                break;
        }
    }
    return -1;
}

static void self_grant(struct fikit_dev *d)
{
    struct fikit_grant *g = &d->dom->grants[d->slot_index];
    int32_t expect = atomic_load(&g->pid);
    if (expect != 0 && !pid_dead(expect))
        return;
    if (!atomic_compare_exchange_strong(&g->pid, &expect, (int32_t)getpid()))
        return;
    atomic_store(&g->prio, fikit_req_prio);
    atomic_store(&g->uid, (uint32_t)getuid());
    atomic_fetch_add(&g->gen, 1);
    atomic_fetch_add(&d->dom->generation, 1);
}

/* Find "key": in a flat JSON reply and copy its string or number value. */
static bool json_value(const char *js, const char *key, char *out, size_t n)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\"", key);
    const char *p = strstr(js, pat);
    if (!p)
        return false;
    p += strlen(pat);
    while (*p == ' ' || *p == ':')
        p++;
    size_t j = 0;
    if (*p == '"') {
        p++;
        while (*p && *p != '"' && j + 1 < n)
            out[j++] = *p++;
    } else {
        while (*p && *p != ',' && *p != '}' && *p != ' ' && j + 1 < n)
            out[j++] = *p++;
    }
    out[j] = 0;
    return true;
}

static void merge_profile(struct fikit_dev *d, const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    struct fikit_kstat k;
    while (read(fd, &k, sizeof k) == (ssize_t)sizeof k) {
        uint64_t id = atomic_load(&k.id);
        if (id == 0)
            continue;
        k.name[FIKIT_NAME_LEN - 1] = 0;
        struct fikit_kstat *e = fikit_ktab_get(d->me, id, k.name, k.grid, k.block, k.smem, k.kind);
        if (!e || atomic_load(&e->dur_n) != 0)
            continue;
        /* Stored predictions seed the entry; counts stay this run's own. */
        uint64_t n_dur = atomic_load(&k.dur_n), n_gap = atomic_load(&k.gap_n);
        n_dur = n_dur < FIKIT_RING ? n_dur : FIKIT_RING;
        n_gap = n_gap < FIKIT_RING ? n_gap : FIKIT_RING;
        for (uint64_t i = 0; i < n_dur; i++)
            fikit_kstat_add_dur(e, k.dur_ring_ns[i]);
        for (uint64_t i = 0; i < n_gap; i++)
            fikit_kstat_add_gap(e, k.gap_ring_ns[i]);
        d->profile_kernels++;
    }
    close(fd);
}

/* ---- registration ------------------------------------------------------- */

/* One request, one reply, 1 s at most (a daemon busy on a loaded machine can
 * take a few hundred ms; a silent one must not stall the program); the
 * connection stays open so the daemon sees this process end.  One connection
 * per domain: the daemon knows a client by (GPU, slot). */
static bool register_with_daemon(struct fikit_dev *d, int slot)
{
    static _Atomic int warned;
    const char *sockpath = getenv("FIKIT_SOCKET");
    if (!sockpath || !*sockpath)
        sockpath = "/run/fikit/fikitd.sock";
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(sockpath) >= sizeof sa.sun_path)
        return false;
    strcpy(sa.sun_path, sockpath);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        if (getenv("FIKIT_SOCKET"))
            fikit_log_once(&warned, "fikitd not reachable at %s (%s); running unregistered", sockpath,
                           strerror(errno));
        close(fd);
        return false;
    }
    char job[32] = "";
    const char *j = getenv("FIKIT_JOB");
    if (j && strspn(j, "0123456789") == strlen(j) && strlen(j) < sizeof job)
        snprintf(job, sizeof job, "%s", j);
    char msg[512];
    int len = snprintf(msg, sizeof msg,
                       "{\"v\": 1, \"op\": \"register\", \"pid\": %d, \"slot\": %d, \"prio\": %d, \"gpu\": %u, "
                       "\"prog\": \"%s\", \"job\": \"%s\"}\n",
                       (int)getpid(), slot, fikit_req_prio, d->dom ? d->dom->gpu_index : 0, d->me->prog, job);
    if (len <= 0 || len >= (int)sizeof msg || send(fd, msg, (size_t)len, MSG_NOSIGNAL) != len) {
        close(fd);
        return false;
    }
    char reply[2048];
    size_t got = 0;
    uint64_t deadline = fikit_clock_ns() + 1000000000ull;
    while (got + 1 < sizeof reply && !memchr(reply, '\n', got)) {
        uint64_t now = fikit_clock_ns();
        if (now >= deadline)
            break;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, (int)((deadline - now) / 1000000ull) + 1) <= 0)
            break;
        ssize_t r = recv(fd, reply + got, sizeof reply - 1 - got, 0);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    reply[got] = 0;
    /* The reply is shown in logs: nothing a terminal would act on. */
    for (size_t i = 0; i < got; i++)
        if ((unsigned char)reply[i] < 0x20 || (unsigned char)reply[i] >= 0x7f)
            reply[i] = '?';
    if (!strstr(reply, "\"ok\": true") && !strstr(reply, "\"ok\":true")) {
        fikit_log_once(&warned, "fikitd did not register this process (%.200s); running unregistered",
                       got ? reply : "no reply");
        close(fd);
        return false;
    }
    char profile[300];
    if (!d->profile_merged && json_value(reply, "profile", profile, sizeof profile) && profile[0]) {
        merge_profile(d, profile);
        d->profile_merged = true;
    }
    atomic_store(&d->sock, fd);
    return true;
}

/*
 * Each registration connection stays open so that fikitd sees this process
 * end.  When fikitd ends instead (a restart, a kill -9), the device's watcher
 * thread, blocked in read() and costing nothing meanwhile, notices the EOF
 * and registers the same slot again once a second until a daemon answers:
 * the new daemon then knows the client, shows it, and stores its
 * measurements when it exits.  One watcher per attached domain.
 */

/* Is slot.<i> still the file we created?  A daemon that registered us after
 * we had stopped waiting removed it when it saw our connection close. */
static bool slot_file_ours(const struct fikit_dev *d, int slot)
{
    char path[300];
    snprintf(path, sizeof path, "%s/slot.%d", d->dir, slot);
    struct stat st;
    return stat(path, &st) == 0 && (uint64_t)st.st_ino == d->slot_ino;
}

/* Carry our slot over to a fresh file: what was measured so far goes along. */
static int move_to_new_slot(struct fikit_dev *d)
{
    struct fikit_slot *old = d->me;
    int i = claim_slot_file(d); /* sets d->me to the new, empty mapping */
    if (i < 0) {
        d->me = old;
        return -1;
    }
    memcpy(d->me, old, sizeof *old);
    d->slot_index = i;
    return i;
}

static void *watch_registration(void *arg)
{
    struct fikit_dev *d = arg;
    int slot = d->slot_index;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL); /* the program's signal handlers run elsewhere */
    char buf[256];
    for (;;) {
        int fd = atomic_load(&d->sock);
        ssize_t r = fd >= 0 ? read(fd, buf, sizeof buf) : 0;
        if (r > 0 || (r < 0 && errno == EINTR))
            continue; /* the daemon has nothing to say on this connection: ignore it */
        if (fd >= 0) {
            atomic_store(&d->sock, -1);
            close(fd);
        }
        while (!register_with_daemon(d, slot)) { /* merges the profile if the first try did not */
            sleep(1);
            if (!slot_file_ours(d, slot)) {
                int moved = move_to_new_slot(d);
                if (moved >= 0)
                    slot = moved;
            }
        }
        if (fikit_debug)
            fikit_log("registered again with fikitd (gpu %u, slot %d)", d->dom->gpu_index, slot);
    }
    return NULL;
}

static void start_watcher(struct fikit_dev *d)
{
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&a, 64 * 1024);
    pthread_t t;
    if (pthread_create(&t, &a, watch_registration, d) != 0)
        fikit_log("cannot start the registration watcher; a daemon restart will not see this process");
    pthread_attr_destroy(&a);
}

static struct fikit_slot *private_slot(void)
{
    void *p = mmap(NULL, sizeof(struct fikit_slot), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static void fill_slot_header(struct fikit_slot *s)
{
    s->magic = FIKIT_SLOT_MAGIC;
    s->version = FIKIT_SHM_VERSION;
    s->slot_size = sizeof(struct fikit_slot);
    atomic_store(&s->uid, (uint32_t)getuid());
    atomic_store(&s->prio_req, fikit_req_prio);
    fikit_program_name(s->prog, sizeof s->prog);
    uint64_t now = fikit_clock_ns();
    atomic_store(&s->start_ns, now);
    atomic_store(&s->heartbeat_ns, now);
    atomic_store(&s->pid, (int32_t)getpid()); /* last: readers take pid != 0 as ready */
}

/* ---- devices ------------------------------------------------------------ */

static void dev_init(struct fikit_dev *d, int index, int ordinal)
{
    memset(d, 0, sizeof *d);
    d->index = index;
    d->ordinal = ordinal;
    d->slot_index = -1;
    atomic_store(&d->sock, -1);
    pthread_mutex_init(&d->peer_lock, NULL);
    atomic_store(&d->peers_gen, UINT64_MAX);
}

/* A private slot only: measured, never held (pass-through, devices beyond the table). */
static bool dev_private(struct fikit_dev *d)
{
    d->me = private_slot();
    if (!d->me)
        return false;
    fill_slot_header(d->me);
    return true;
}

/* The first launch on a device: its domain, a slot there, registration.  Under attach_lock. */
static struct fikit_dev *dev_attach(int ordinal)
{
    int i = atomic_load(&n_devs);
    if (i >= FIKIT_MAX_DEVS) {
        static _Atomic int warned;
        fikit_log_once(&warned, "more than %d devices: device %d and later are measured, never held",
                       FIKIT_MAX_DEVS, ordinal);
        if (!spill.me) {
            dev_init(&spill, FIKIT_MAX_DEVS, ordinal);
            if (!dev_private(&spill))
                return NULL;
        }
        return &spill;
    }
    struct fikit_dev *d = &devs[i];
    dev_init(d, i, ordinal);
    device_uuid(ordinal, d->uuid, sizeof d->uuid);
    if (find_domain(d)) {
        int s = claim_slot_file(d);
        if (s >= 0) {
            d->slot_index = s;
            d->shared = true;
        } else {
            static _Atomic int warned;
            fikit_log_once(&warned, "no free slot in %s; measuring only", d->dir);
        }
    }
    if (!d->me && !dev_private(d))
        return NULL;
    if (d->shared) {
        fill_slot_header(d->me);
        if (atomic_load(&d->dom->flags) & FIKIT_DOMAIN_SELF_GRANT) {
            self_grant(d);
        } else {
            /* Registered or not (a daemon slow to answer, or not up yet), the
             * watcher keeps this process known to whichever daemon runs. */
            register_with_daemon(d, d->slot_index);
            start_watcher(d);
        }
    }
    if (fikit_debug)
        fikit_log("device %d (%s): %s%s, slot %d", ordinal, d->uuid[0] ? d->uuid : "uuid unknown",
                  d->dom ? "domain " : "no domain", d->dom ? d->dir : "", d->slot_index);
    atomic_store_explicit(&n_devs, i + 1, memory_order_release);
    return d;
}

static struct fikit_dev *cached(CUcontext ctx)
{
    int n = atomic_load_explicit(&fikit_hot.ctxs.n, memory_order_acquire);
    for (int i = 0; i < n; i++)
        if (fikit_hot.ctxs.e[i].ctx == ctx)
            return fikit_hot.ctxs.e[i].dev;
    return NULL;
}

__attribute__((noinline, cold)) static struct fikit_dev *attach_ctx(CUcontext ctx)
{
    pthread_mutex_lock(&attach_lock);
    struct fikit_dev *d = cached(ctx);
    if (!d) {
        /* The context is the current one: its device is the current device.  A launch whose
         * context or device the driver will not tell is taken for device 0's. */
        CUdevice ordinal = 0;
        if (!ctx || !fikit_drv.cuCtxGetDevice || fikit_drv.cuCtxGetDevice(&ordinal) != CUDA_SUCCESS || ordinal < 0)
            ordinal = 0;
        int n = atomic_load(&n_devs);
        for (int i = 0; i < n && !d; i++)
            if (devs[i].ordinal == ordinal)
                d = &devs[i];
        if (!d && spill.me && spill.ordinal == ordinal)
            d = &spill;
        if (!d)
            d = dev_attach(ordinal);
        int c = atomic_load(&fikit_hot.ctxs.n);
        if (d && c < FIKIT_CTX_CACHE) { /* a full cache costs a lock per launch of the others, nothing else */
            fikit_hot.ctxs.e[c].ctx = ctx;
            fikit_hot.ctxs.e[c].dev = d;
            atomic_store_explicit(&fikit_hot.ctxs.n, c + 1, memory_order_release);
        }
        /* The driver numbers the devices a process may use once, at cuInit: with one, every
         * context is on it.  Asked only once a context is current (the driver is initialised). */
        int count = 0;
        if (d && ctx && fikit_drv.cuDeviceGetCount && fikit_drv.cuDeviceGetCount(&count) == CUDA_SUCCESS &&
            count == 1)
            atomic_store_explicit(&fikit_hot.ctxs.only, d, memory_order_release);
    }
    pthread_mutex_unlock(&attach_lock);
    return d;
}

struct fikit_dev *fikit_dev_for_ctx(CUcontext ctx)
{
    struct fikit_dev *d = cached(ctx);
    return d ? d : attach_ctx(ctx);
}

struct fikit_dev *fikit_dev_passthrough(void)
{
    return atomic_load_explicit(&n_devs, memory_order_acquire) ? &devs[0] : NULL;
}

struct fikit_dev *fikit_dev_of_ctx(CUcontext ctx)
{
    struct fikit_dev *only = atomic_load_explicit(&fikit_hot.ctxs.only, memory_order_acquire);
    if (only)
        return only;
    if (atomic_load_explicit(&fikit_hot.ctxs.n, memory_order_acquire) == 0)
        return fikit_cfg_has(FIKIT_CFG_PASSTHROUGH) ? fikit_dev_passthrough() : NULL;
    if (!ctx)
        ctx = fikit_ctx_current();
    return cached(ctx);
}

int fikit_dev_count(void)
{
    int n = atomic_load_explicit(&n_devs, memory_order_acquire);
    return n + (n == FIKIT_MAX_DEVS && spill.me ? 1 : 0);
}

/* Pass-through: one private slot, and no driver call per launch to find a device. */
static void passthrough_slot(void)
{
    if (fikit_cfg_has(FIKIT_CFG_PASSTHROUGH)) {
        dev_init(&devs[0], 0, 0);
        if (dev_private(&devs[0]))
            atomic_store(&n_devs, 1);
    }
}

struct fikit_dev *fikit_dev_at(int i) { return i < FIKIT_MAX_DEVS ? &devs[i] : &spill; }

void fikit_client_start(void)
{
    fikit_req_prio = parse_prio(getenv("FIKIT_PRIO"));
    const char *dom = getenv("FIKIT_DOMAIN"), *root = getenv("FIKIT_DOMAIN_ROOT");
    snprintf(env_domain, sizeof env_domain, "%s", dom && *dom ? dom : "");
    if (root && *root) {
        snprintf(env_root, sizeof env_root, "%s", root);
    } else if (env_domain[0]) {
        snprintf(env_root, sizeof env_root, "%s", env_domain);
        size_t n = strlen(env_root);
        while (n > 1 && env_root[n - 1] == '/') /* ".../gpu1/" names .../gpu1 */
            env_root[--n] = 0;
        /* The runtime dir is the parent of gpu<N>, and the grandparent of by-uuid/<uuid>. */
        for (int up = 0; up < 2; up++) {
            char *slash = strrchr(env_root, '/');
            if (slash == env_root)
                env_root[1] = 0;
            else if (slash)
                *slash = 0;
            else
                snprintf(env_root, sizeof env_root, ".");
            const char *last = strrchr(env_root, '/');
            if (strcmp(last ? last + 1 : env_root, "by-uuid") != 0)
                break;
        }
    } else {
        snprintf(env_root, sizeof env_root, "/run/fikit");
    }
    env_renumbered = getenv("CUDA_VISIBLE_DEVICES") != NULL;
    fikit_hot.ctxs.get_current = fikit_drv.cuCtxGetCurrent; /* resolved before this runs (init_once) */
    atomic_store(&fikit_hot.ctxs.only, NULL);
    atomic_store(&fikit_hot.ctxs.n, 0);
    atomic_store(&n_devs, 0);
    passthrough_slot();
}

/*
 * The child of a fork is a new client, but most children (data-loader
 * workers, shells) never launch a kernel: at the fork it only forgets the
 * parent's devices (their slots, sockets and domains stay mapped, unused), and
 * attaches each device at its own first launch on it, as any process does.
 * So forks cost no slot, no registration and no daemon round trip, and a
 * child that exits never touches the parent's slot files.
 */
void fikit_client_after_fork(void)
{
    pthread_mutex_init(&attach_lock, NULL);
    int n = atomic_load(&n_devs);
    for (int i = 0; i < n; i++) {
        int fd = atomic_load(&devs[i].sock);
        if (fd >= 0)
            close(fd);
    }
    /* (the watcher threads do not survive the fork) */
    memset(fikit_hot.devs, 0, sizeof fikit_hot.devs);
    memset(&spill, 0, sizeof spill);
    atomic_store(&fikit_hot.ctxs.only, NULL);
    atomic_store(&fikit_hot.ctxs.n, 0);
    atomic_store(&n_devs, 0);
    passthrough_slot();
}

void fikit_client_stop(void)
{
    int n = atomic_load(&n_devs);
    for (int k = 0; k < n; k++) {
        struct fikit_dev *d = &devs[k];
        if (!d->shared || !d->dom || !(atomic_load(&d->dom->flags) & FIKIT_DOMAIN_SELF_GRANT))
            continue; /* with a daemon, it reads the slot's measurements on EOF, then removes it */
        int i = d->slot_index;
        int32_t me = (int32_t)getpid();
        if (atomic_compare_exchange_strong(&d->dom->grants[i].pid, &me, 0)) {
            atomic_fetch_add(&d->dom->grants[i].gen, 1);
            atomic_fetch_add(&d->dom->generation, 1);
        }
        char path[300];
        snprintf(path, sizeof path, "%s/slot.%d", d->dir, i);
        unlink(path);
    }
}

/* ---- peers -------------------------------------------------------------- */

int fikit_effective_prio(const struct fikit_dev *d)
{
    if (d && d->dom && d->slot_index >= 0) {
        struct fikit_grant *g = &d->dom->grants[d->slot_index];
        if (atomic_load_explicit(&g->pid, memory_order_relaxed) == (int32_t)getpid())
            return atomic_load_explicit(&g->prio, memory_order_relaxed);
    }
    return fikit_req_prio;
}

static struct fikit_slot *map_peer(struct fikit_dev *d, int i, uint32_t gen, int32_t pid)
{
    struct fikit_peer_map *m = &d->peer_maps[i];
    if (m->s && m->gen == gen && m->pid == pid)
        return m->s;
    char path[300];
    snprintf(path, sizeof path, "%s/slot.%d", d->dir, i);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct stat st;
    struct fikit_slot *s = NULL;
    if (fstat(fd, &st) == 0 && (size_t)st.st_size >= PEER_MAP)
        s = map_file(fd, PEER_MAP, PROT_READ);
    close(fd);
    if (!s)
        return NULL;
    if (s->magic != FIKIT_SLOT_MAGIC || s->version != FIKIT_SHM_VERSION) {
        munmap(s, PEER_MAP);
        return NULL;
    }
    /* The old mapping may still be read by another thread: it stays mapped. */
    m->s = s;
    m->gen = gen;
    m->pid = pid;
    return s;
}

static void refresh_peers(struct fikit_dev *d, uint64_t gen)
{
    int mine = fikit_effective_prio(d);
    int n = 0;
    for (uint32_t i = 0; i < d->n_slots; i++) {
        if ((int)i == d->slot_index)
            continue;
        struct fikit_grant *g = &d->dom->grants[i];
        int32_t pid = atomic_load(&g->pid);
        int prio = atomic_load(&g->prio);
        if (pid <= 0 || prio >= mine)
            continue;
        if (map_peer(d, (int)i, atomic_load(&g->gen), pid))
            d->peer_idx[n++] = (int)i;
    }
    atomic_store(&d->n_peer_idx, n);
    atomic_store(&d->peers_gen, gen);
}

/* The more urgent peers as of the domain's generation now. */
static void peers_current(struct fikit_dev *d)
{
    uint64_t gen = atomic_load_explicit(&d->dom->generation, memory_order_acquire);
    if (gen != atomic_load_explicit(&d->peers_gen, memory_order_acquire)) {
        pthread_mutex_lock(&d->peer_lock);
        if (gen != atomic_load(&d->peers_gen))
            refresh_peers(d, gen);
        pthread_mutex_unlock(&d->peer_lock);
    }
}

bool fikit_may_defer_now(struct fikit_dev *d, uint64_t now)
{
    atomic_store_explicit(&d->gen_seen_ns, now, memory_order_relaxed);
    peers_current(d);
    return atomic_load_explicit(&d->n_peer_idx, memory_order_acquire) > 0;
}

FIKIT_HOT int fikit_peers_snapshot(struct fikit_dev *d, struct fikit_peer *out, int max, int *pids)
{
    if (!d->dom)
        return 0;
    peers_current(d);
    int n = atomic_load_explicit(&d->n_peer_idx, memory_order_acquire);
    int k = 0;
    for (int j = 0; j < n && k < max; j++) {
        int i = d->peer_idx[j];
        struct fikit_slot *s = d->peer_maps[i].s;
        if (!s)
            continue;
        out[k].last_launch_ns = atomic_load_explicit(&s->last_launch_ns, memory_order_relaxed);
        out[k].busy_until_ns = atomic_load_explicit(&s->busy_until_ns, memory_order_relaxed);
        out[k].next_launch_ns = atomic_load_explicit(&s->next_launch_ns, memory_order_acquire);
        out[k].syncing = atomic_load_explicit(&s->syncing, memory_order_relaxed);
        out[k]._pad = 0;
        if (pids)
            pids[k] = d->peer_maps[i].pid;
        k++;
    }
    return k;
}

/* A peer found dead while we waited: stop seeing it (and free its grant if
 * grants are ours to keep). */
void fikit_peer_dead(struct fikit_dev *d, int32_t pid)
{
    if (!d->dom)
        return;
    for (uint32_t i = 0; i < d->n_slots; i++) {
        int32_t cur = atomic_load(&d->dom->grants[i].pid);
        if (cur != pid)
            continue;
        if (atomic_load(&d->dom->flags) & FIKIT_DOMAIN_SELF_GRANT) {
            if (atomic_compare_exchange_strong(&d->dom->grants[i].pid, &cur, 0)) {
                atomic_fetch_add(&d->dom->grants[i].gen, 1);
                atomic_fetch_add(&d->dom->generation, 1);
            }
        }
    }
    /* Without write access the daemon frees it; until then it is skipped here. */
    pthread_mutex_lock(&d->peer_lock);
    int n = atomic_load(&d->n_peer_idx), k = 0;
    for (int j = 0; j < n; j++)
        if (d->peer_maps[d->peer_idx[j]].pid != pid)
            d->peer_idx[k++] = d->peer_idx[j];
    atomic_store(&d->n_peer_idx, k);
    pthread_mutex_unlock(&d->peer_lock);
}
