/*
 * This process as a fikit client: its slot in the GPU's domain, its
 * registration with fikitd, and its view of the more urgent clients.
 *
 * Everything here runs at start, after fork, or when the domain's generation
 * moves; the per-launch path only reads what it prepared.  Anything that goes
 * wrong leaves the process with a private slot: measured, never held.
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
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "fikit.h"

struct fikit_client fikit_cl = {.slot_index = -1, .sock = -1, .prio = FIKIT_PRIO_NORMAL};

static char domain_dir[256];
static uint32_t n_slots;
/* Peer slots are mapped one page each: the timing fields are all we read. */
#define PEER_MAP 4096
_Static_assert(offsetof(struct fikit_slot, ktab) <= PEER_MAP, "slot header must fit one page");

struct peer_map {
    struct fikit_slot *s; /* mapped header, or NULL */
    uint32_t gen;         /* grant generation it was mapped for */
    int32_t pid;
};
static struct peer_map peer_maps[FIKIT_MAX_SLOTS];
static pthread_mutex_t peer_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic uint64_t peers_gen = UINT64_MAX;
static int peer_idx[FIKIT_MAX_SLOTS];
static _Atomic int n_peer_idx;

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
static void program_name(char *out, size_t n)
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

static bool attach_domain(void)
{
    static _Atomic int warned;
    const char *dir = getenv("FIKIT_DOMAIN");
    if (!dir || !*dir)
        dir = "/run/fikit/gpu0";
    snprintf(domain_dir, sizeof domain_dir, "%s", dir);
    char path[300];
    snprintf(path, sizeof path, "%s/domain", domain_dir);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    bool writable = fd >= 0;
    if (fd < 0)
        fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (getenv("FIKIT_DOMAIN"))
            fikit_log_once(&warned, "no scheduling domain at %s (%s); measuring only", path, strerror(errno));
        return false;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || (size_t)st.st_size < sizeof(struct fikit_domain)) {
        fikit_log_once(&warned, "%s is too short to be a fikit domain; measuring only", path);
        close(fd);
        return false;
    }
    struct fikit_domain *d =
        map_file(fd, sizeof(struct fikit_domain), writable ? PROT_READ | PROT_WRITE : PROT_READ);
    close(fd);
    if (!d) {
        fikit_log_once(&warned, "cannot map %s; measuring only", path);
        return false;
    }
    if (d->magic != FIKIT_DOMAIN_MAGIC || d->version != FIKIT_SHM_VERSION ||
        d->domain_size != sizeof(struct fikit_domain) || d->slot_size != sizeof(struct fikit_slot) ||
        d->n_slots == 0 || d->n_slots > FIKIT_MAX_SLOTS || d->mode > FIKIT_MODE_OFF) {
        fikit_log_once(&warned, "%s is not a fikit domain of layout version %u; measuring only", path,
                       FIKIT_SHM_VERSION);
        munmap(d, sizeof(struct fikit_domain));
        return false;
    }
    /* A self-granting domain must be writable, or we could never appear in it. */
    if ((atomic_load(&d->flags) & FIKIT_DOMAIN_SELF_GRANT) && !writable) {
        fikit_log_once(&warned, "%s is self-granting but not writable; measuring only", path);
        munmap(d, sizeof(struct fikit_domain));
        return false;
    }
    n_slots = d->n_slots;
    fikit_cl.dom = d;
    return true;
}

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

static ino_t slot_ino; /* our slot file, to tell whether it is still there */

/* Create slot.<i> exclusively; a stale file of a dead owner (ours to remove) is replaced. */
static int claim_slot_file(void)
{
    for (uint32_t i = 0; i < n_slots; i++) {
        char path[300];
        snprintf(path, sizeof path, "%s/slot.%u", domain_dir, i);
        for (int attempt = 0; attempt < 2; attempt++) {
            int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
            if (fd >= 0) {
                if (ftruncate(fd, sizeof(struct fikit_slot)) != 0) {
                    close(fd);
                    unlink(path);
                    return -1;
                }
                struct stat st;
                slot_ino = fstat(fd, &st) == 0 ? st.st_ino : 0;
                struct fikit_slot *s = map_file(fd, sizeof(struct fikit_slot), PROT_READ | PROT_WRITE);
                close(fd);
                if (!s) {
                    unlink(path);
                    return -1;
                }
                fikit_cl.me = s;
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

static void self_grant(int i)
{
    struct fikit_domain *d = fikit_cl.dom;
    struct fikit_grant *g = &d->grants[i];
    int32_t expect = atomic_load(&g->pid);
    if (expect != 0 && !pid_dead(expect))
        return;
    if (!atomic_compare_exchange_strong(&g->pid, &expect, (int32_t)getpid()))
        return;
    atomic_store(&g->prio, fikit_cl.prio);
    atomic_store(&g->uid, (uint32_t)getuid());
    atomic_fetch_add(&g->gen, 1);
    atomic_fetch_add(&d->generation, 1);
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

unsigned fikit_profile_kernels; /* kernels merged from the daemon's stored profile at start */
static bool profile_merged;     /* once per client, whichever registration succeeds first */

static void merge_profile(const char *path)
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
        struct fikit_kstat *e = fikit_ktab_get(fikit_cl.me, id, k.name, k.grid, k.block, k.smem, k.kind);
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
        fikit_profile_kernels++;
    }
    close(fd);
}

/* One request, one reply, 1 s at most (a daemon busy on a loaded machine can
 * take a few hundred ms; a silent one must not stall the program); the
 * connection stays open so the daemon sees this process end. */
static bool register_with_daemon(int slot)
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
                       (int)getpid(), slot, fikit_cl.prio, fikit_cl.dom ? fikit_cl.dom->gpu_index : 0,
                       fikit_cl.me->prog, job);
    if (len <= 0 || len >= (int)sizeof msg || send(fd, msg, (size_t)len, MSG_NOSIGNAL) != len) {
        close(fd);
        return false;
    }
    char reply[2048];
    size_t got = 0;
    uint64_t deadline = fikit_now_ns() + 1000000000ull;
    while (got + 1 < sizeof reply && !memchr(reply, '\n', got)) {
        uint64_t now = fikit_now_ns();
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
    if (!profile_merged && json_value(reply, "profile", profile, sizeof profile) && profile[0]) {
        merge_profile(profile);
        profile_merged = true;
    }
    fikit_cl.sock = fd;
    return true;
}

/*
 * The registration connection stays open so that fikitd sees this process
 * end.  When fikitd ends instead (a restart, a kill -9), this thread, blocked
 * in read() and costing nothing meanwhile, notices the EOF and registers the
 * same slot again once a second until a daemon answers: the new daemon then
 * knows the client, shows it, and stores its measurements when it exits.
 */

/* Is slot.<i> still the file we created?  A daemon that registered us after
 * we had stopped waiting removed it when it saw our connection close. */
static bool slot_file_ours(int slot)
{
    char path[300];
    snprintf(path, sizeof path, "%s/slot.%d", domain_dir, slot);
    struct stat st;
    return stat(path, &st) == 0 && st.st_ino == slot_ino;
}

/* Carry our slot over to a fresh file: what was measured so far goes along. */
static int move_to_new_slot(void)
{
    struct fikit_slot *old = fikit_cl.me;
    int i = claim_slot_file(); /* sets fikit_cl.me to the new, empty mapping */
    if (i < 0) {
        fikit_cl.me = old;
        return -1;
    }
    memcpy(fikit_cl.me, old, sizeof *old);
    fikit_cl.slot_index = i;
    return i;
}

static void *watch_registration(void *arg)
{
    int slot = (int)(intptr_t)arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL); /* the program's signal handlers run elsewhere */
    char buf[256];
    for (;;) {
        int fd = fikit_cl.sock;
        ssize_t r = fd >= 0 ? read(fd, buf, sizeof buf) : 0;
        if (r > 0 || (r < 0 && errno == EINTR))
            continue; /* the daemon has nothing to say on this connection: ignore it */
        if (fd >= 0) {
            fikit_cl.sock = -1;
            close(fd);
        }
        while (!register_with_daemon(slot)) { /* merges the profile if the first try did not */
            sleep(1);
            if (!slot_file_ours(slot)) {
                int moved = move_to_new_slot();
                if (moved >= 0)
                    slot = moved;
            }
        }
        if (fikit_debug)
            fikit_log("registered again with fikitd (slot %d)", slot);
    }
    return NULL;
}

static void start_watcher(int slot)
{
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&a, 64 * 1024);
    pthread_t t;
    if (pthread_create(&t, &a, watch_registration, (void *)(intptr_t)slot) != 0)
        fikit_log("cannot start the registration watcher; a daemon restart will not see this process");
    pthread_attr_destroy(&a);
}

static void private_slot(void)
{
    void *p = mmap(NULL, sizeof(struct fikit_slot), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    fikit_cl.me = p == MAP_FAILED ? NULL : p;
}

static void fill_slot_header(struct fikit_slot *s)
{
    s->magic = FIKIT_SLOT_MAGIC;
    s->version = FIKIT_SHM_VERSION;
    s->slot_size = sizeof(struct fikit_slot);
    atomic_store(&s->uid, (uint32_t)getuid());
    atomic_store(&s->prio_req, fikit_cl.prio);
    program_name(s->prog, sizeof s->prog);
    uint64_t now = fikit_now_ns();
    atomic_store(&s->start_ns, now);
    atomic_store(&s->heartbeat_ns, now);
    atomic_store(&s->pid, (int32_t)getpid()); /* last: readers take pid != 0 as ready */
}

void fikit_client_start(void)
{
    fikit_cl.prio = parse_prio(getenv("FIKIT_PRIO"));
    fikit_cl.me = NULL;
    fikit_cl.dom = NULL;
    fikit_cl.slot_index = -1;
    fikit_cl.shared = false;
    if (!fikit_cfg.passthrough && attach_domain()) {
        int i = claim_slot_file();
        if (i >= 0) {
            fikit_cl.slot_index = i;
            fikit_cl.shared = true;
        } else {
            static _Atomic int warned;
            fikit_log_once(&warned, "no free slot in %s; measuring only", domain_dir);
        }
    }
    if (!fikit_cl.me)
        private_slot();
    if (!fikit_cl.me)
        return;
    fill_slot_header(fikit_cl.me);
    if (fikit_cl.shared) {
        if (atomic_load(&fikit_cl.dom->flags) & FIKIT_DOMAIN_SELF_GRANT)
            self_grant(fikit_cl.slot_index);
        else {
            /* Registered or not (a daemon slow to answer, or not up yet), the
             * watcher keeps this process known to whichever daemon runs. */
            register_with_daemon(fikit_cl.slot_index);
            start_watcher(fikit_cl.slot_index);
        }
    }
    atomic_store(&peers_gen, UINT64_MAX);
}

/*
 * The child of a fork is a new client, but most children (data-loader
 * workers, shells) never launch a kernel: at the fork it only drops the
 * parent's slot, socket and domain for a private, empty slot, and claims a
 * slot of its own (and registers) at its first launch.  So forks cost no
 * slot, no registration and no daemon round trip, and a child that exits
 * never touches the parent's slot file.
 */
static _Atomic int restart_pending;

void fikit_client_after_fork(void)
{
    if (fikit_cl.sock >= 0)
        close(fikit_cl.sock);
    fikit_cl.sock = -1;
    pthread_mutex_init(&peer_lock, NULL);
    /* (the watcher thread does not survive the fork: the child starts its own at its first launch) */
    fikit_cl.dom = NULL;
    fikit_cl.slot_index = -1;
    fikit_cl.shared = false;
    fikit_cl.me = NULL;
    private_slot();
    if (fikit_cl.me)
        fill_slot_header(fikit_cl.me);
    atomic_store(&peers_gen, UINT64_MAX);
    atomic_store(&n_peer_idx, 0);
    memset(peer_maps, 0, sizeof peer_maps); /* the parent's mappings stay mapped, unused */
    fikit_profile_kernels = 0;
    profile_merged = false;
    atomic_store(&restart_pending, 1);
}

void fikit_client_first_launch_after_fork(void)
{
    if (!atomic_exchange(&restart_pending, 0))
        return;
    /* Counters so far (none: no launch yet) stay in the private slot's place. */
    fikit_client_start();
}

bool fikit_client_restart_pending(void)
{
    return atomic_load_explicit(&restart_pending, memory_order_relaxed) != 0;
}

void fikit_client_stop(void)
{
    if (!fikit_cl.shared || !fikit_cl.dom)
        return;
    int i = fikit_cl.slot_index;
    if (atomic_load(&fikit_cl.dom->flags) & FIKIT_DOMAIN_SELF_GRANT) {
        int32_t me = (int32_t)getpid();
        if (atomic_compare_exchange_strong(&fikit_cl.dom->grants[i].pid, &me, 0)) {
            atomic_fetch_add(&fikit_cl.dom->grants[i].gen, 1);
            atomic_fetch_add(&fikit_cl.dom->generation, 1);
        }
        char path[300];
        snprintf(path, sizeof path, "%s/slot.%d", domain_dir, i);
        unlink(path);
    }
    /* With a daemon, it reads the slot's measurements on EOF, then removes it. */
}

int fikit_effective_prio(void)
{
    struct fikit_domain *d = fikit_cl.dom;
    if (d && fikit_cl.slot_index >= 0) {
        struct fikit_grant *g = &d->grants[fikit_cl.slot_index];
        if (atomic_load_explicit(&g->pid, memory_order_relaxed) == (int32_t)getpid())
            return atomic_load_explicit(&g->prio, memory_order_relaxed);
    }
    return fikit_cl.prio;
}

static struct fikit_slot *map_peer(int i, uint32_t gen, int32_t pid)
{
    struct peer_map *m = &peer_maps[i];
    if (m->s && m->gen == gen && m->pid == pid)
        return m->s;
    char path[300];
    snprintf(path, sizeof path, "%s/slot.%d", domain_dir, i);
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

static void refresh_peers(uint64_t gen)
{
    struct fikit_domain *d = fikit_cl.dom;
    int mine = fikit_effective_prio();
    int n = 0;
    for (uint32_t i = 0; i < n_slots; i++) {
        if ((int)i == fikit_cl.slot_index)
            continue;
        struct fikit_grant *g = &d->grants[i];
        int32_t pid = atomic_load(&g->pid);
        int prio = atomic_load(&g->prio);
        if (pid <= 0 || prio >= mine)
            continue;
        if (map_peer((int)i, atomic_load(&g->gen), pid))
            peer_idx[n++] = (int)i;
    }
    atomic_store(&n_peer_idx, n);
    atomic_store(&peers_gen, gen);
}

int fikit_peers_snapshot(struct fikit_peer *out, int max, int *pids)
{
    struct fikit_domain *d = fikit_cl.dom;
    if (!d)
        return 0;
    uint64_t gen = atomic_load_explicit(&d->generation, memory_order_acquire);
    if (gen != atomic_load_explicit(&peers_gen, memory_order_acquire)) {
        pthread_mutex_lock(&peer_lock);
        if (gen != atomic_load(&peers_gen))
            refresh_peers(gen);
        pthread_mutex_unlock(&peer_lock);
    }
    int n = atomic_load_explicit(&n_peer_idx, memory_order_acquire);
    int k = 0;
    for (int j = 0; j < n && k < max; j++) {
        int i = peer_idx[j];
        struct fikit_slot *s = peer_maps[i].s;
        if (!s)
            continue;
        out[k].last_launch_ns = atomic_load_explicit(&s->last_launch_ns, memory_order_relaxed);
        out[k].busy_until_ns = atomic_load_explicit(&s->busy_until_ns, memory_order_relaxed);
        out[k].next_launch_ns = atomic_load_explicit(&s->next_launch_ns, memory_order_acquire);
        out[k].syncing = atomic_load_explicit(&s->syncing, memory_order_relaxed);
        out[k]._pad = 0;
        if (pids)
            pids[k] = peer_maps[i].pid;
        k++;
    }
    return k;
}

/* A peer found dead while we waited: stop seeing it (and free its grant if
 * grants are ours to keep). */
void fikit_peer_dead(int32_t pid)
{
    struct fikit_domain *d = fikit_cl.dom;
    if (!d)
        return;
    for (uint32_t i = 0; i < n_slots; i++) {
        int32_t cur = atomic_load(&d->grants[i].pid);
        if (cur != pid)
            continue;
        if (atomic_load(&d->flags) & FIKIT_DOMAIN_SELF_GRANT) {
            if (atomic_compare_exchange_strong(&d->grants[i].pid, &cur, 0)) {
                atomic_fetch_add(&d->grants[i].gen, 1);
                atomic_fetch_add(&d->generation, 1);
            }
        }
    }
    /* Without write access the daemon frees it; until then it is skipped here. */
    pthread_mutex_lock(&peer_lock);
    int n = atomic_load(&n_peer_idx), k = 0;
    for (int j = 0; j < n; j++)
        if (peer_maps[peer_idx[j]].pid != pid)
            peer_idx[k++] = peer_idx[j];
    atomic_store(&n_peer_idx, k);
    pthread_mutex_unlock(&peer_lock);
}
