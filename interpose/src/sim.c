/*
 * The trace simulator behind `fikitctl simulate`: clients replay kernel
 * lists on a simulated GPU in virtual time, and every launch of a client with
 * someone more urgent above it asks fikit_policy_decide, the function the
 * library asks, fed by the same kernel-table learning (measure.c).  So what
 * the simulator shows is what the policy does, not a model of it.
 *
 * The GPU: kernels start in launch order (head of line first) when enough of
 * the SMs are free; a kernel needs sm_pct of them (100 unless the trace says
 * otherwise).  A kernel released to co-run is confined to the LP SM share and
 * stretched in proportion when that is less than it wanted.
 * With `warm`, every client starts knowing each of its kernels' duration and
 * gap once, as a client of fikitd does from the stored profile of its program;
 * without it, clients start cold and learn as they go.
 * Each client keeps one kernel in flight: it launches, waits for the end,
 * spends the kernel's gap on the host, and launches the next.
 */
#include <stdlib.h>
#include <string.h>

#include "fikit.h"

struct fikit_sim_kernel {
    uint64_t dur_ns;
    uint64_t gap_ns;
    uint64_t id;
    uint32_t sm_pct;
    uint32_t _pad;
};
struct fikit_sim_client {
    int32_t prio;
    uint32_t n_kernels;
    uint64_t repeat;
    const struct fikit_sim_kernel *kernels;
};
struct fikit_sim_result {
    uint64_t jct_ns;       /* 0 when it did not finish */
    uint64_t kernels_done;
    uint64_t gpu_ns;
    uint64_t held_ns;
    uint64_t released_gap;
    uint64_t released_idle;
    uint64_t released_corun;
    uint64_t released_guard;
};

enum { Q_MAX = 256 };
#define SIM_T0 1000000ull /* virtual time starts at 1 ms: a timestamp of 0 means "never" */
struct job {
    int client;
    uint64_t dur;
    uint32_t share;
    uint64_t start, end;
    int running;
};

struct sim_client {
    const struct fikit_sim_client *spec;
    struct fikit_slot *slot;
    uint64_t total;      /* kernels to run */
    uint64_t done;
    uint64_t next_try;   /* when it next tries to launch; UINT64_MAX while its kernel runs */
    uint64_t held_since;
    uint64_t last_end;
    bool in_flight;
    bool finished;
    bool top;            /* nobody above it: never asks the policy */
};

static uint64_t minu(uint64_t a, uint64_t b) { return a < b ? a : b; }

static const struct fikit_sim_kernel *kernel_at(const struct sim_client *c, uint64_t i)
{
    return &c->spec->kernels[i % c->spec->n_kernels];
}

FIKIT_API int fikit_sim_run(const struct fikit_sim_client *spec, int n, const struct fikit_params *p, int warm,
                            struct fikit_sim_result *out, uint64_t *fill_ppm, uint64_t *end_ns)
{
    if (n <= 0 || n > FIKIT_MAX_SLOTS)
        return -1;
    struct sim_client cl[FIKIT_MAX_SLOTS];
    memset(cl, 0, sizeof cl);
    int lowest = spec[0].prio;
    for (int i = 0; i < n; i++)
        if (spec[i].prio > lowest)
            lowest = spec[i].prio;
    bool any_above_lowest = false;
    for (int i = 0; i < n; i++) {
        if (spec[i].n_kernels == 0 || !spec[i].kernels)
            return -1;
        cl[i].spec = &spec[i];
        cl[i].slot = aligned_alloc(_Alignof(struct fikit_slot), sizeof(struct fikit_slot)); /* whole lines */
        if (!cl[i].slot) {
            for (int j = 0; j < i; j++)
                free(cl[j].slot);
            return -2;
        }
        memset(cl[i].slot, 0, sizeof(struct fikit_slot));
        cl[i].total = spec[i].repeat * spec[i].n_kernels;
        cl[i].next_try = SIM_T0;
        cl[i].finished = cl[i].total == 0;
        cl[i].top = true;
        for (int j = 0; j < n; j++)
            if (spec[j].prio < spec[i].prio)
                cl[i].top = false;
        if (spec[i].prio != lowest)
            any_above_lowest = true;
        memset(&out[i], 0, sizeof out[i]);
        /* warm: each kernel measured once before, as the daemon's stored profile gives a client. */
        for (uint32_t k = 0; warm && k < spec[i].n_kernels; k++) {
            const struct fikit_sim_kernel *kk = &spec[i].kernels[k];
            struct fikit_kstat *ks = fikit_ktab_get(cl[i].slot, kk->id, NULL, NULL, NULL, 0, 0);
            if (ks && ks->dur_n == 0) {
                fikit_kstat_add_dur(ks, kk->dur_ns ? kk->dur_ns : 1);
                fikit_kstat_add_gap(ks, kk->gap_ns);
            }
        }
    }

    struct job q[Q_MAX];
    int nq = 0;
    uint64_t now = SIM_T0;
    uint32_t sm_free = 100;
    uint64_t hp_busy = 0, filled = 0, idle = 0;
    int rc = 0;

    for (uint64_t steps = 0;; steps++) {
        if (steps > 200000000ull) {
            rc = -3; /* a trace that never ends */
            break;
        }
        /* Done when every client above the lowest level is (or all are, if there is one level). */
        bool done = true;
        for (int i = 0; i < n; i++)
            if (!cl[i].finished && (!any_above_lowest || spec[i].prio != lowest))
                done = false;
        if (done)
            break;

        /* Start what can start, in launch order. */
        for (int k = 0; k < nq; k++) {
            if (q[k].running)
                continue;
            if (q[k].share > sm_free)
                break; /* head of line blocks those behind it */
            q[k].running = 1;
            q[k].start = now;
            q[k].end = now + q[k].dur;
            sm_free -= q[k].share;
        }

        /* The next event: a kernel end or a client's launch attempt. */
        uint64_t t_next = UINT64_MAX;
        for (int k = 0; k < nq; k++)
            if (q[k].running)
                t_next = minu(t_next, q[k].end);
        for (int i = 0; i < n; i++)
            if (!cl[i].finished && !cl[i].in_flight)
                t_next = minu(t_next, cl[i].next_try);
        if (t_next == UINT64_MAX) {
            rc = -4;
            break;
        }

        /* Account the GPU's time until then, for fill. */
        if (t_next > now) {
            bool hp_run = false, lp_run = false, hp_alive = false;
            for (int k = 0; k < nq; k++) {
                if (!q[k].running)
                    continue;
                if (spec[q[k].client].prio == lowest && any_above_lowest)
                    lp_run = true;
                else
                    hp_run = true;
            }
            for (int i = 0; i < n; i++)
                if (spec[i].prio != lowest && !cl[i].finished)
                    hp_alive = true;
            uint64_t dt = t_next - now;
            if (hp_alive) {
                if (hp_run)
                    hp_busy += dt;
                else if (lp_run)
                    filled += dt;
                else
                    idle += dt;
            }
        }
        now = t_next;

        /* Finish kernels ending now. */
        for (int k = 0; k < nq;) {
            if (!q[k].running || q[k].end != now) {
                k++;
                continue;
            }
            struct sim_client *c = &cl[q[k].client];
            const struct fikit_sim_kernel *kk = kernel_at(c, c->done);
            struct fikit_kstat *ks = fikit_ktab_get(c->slot, kk->id, NULL, NULL, NULL, 0, 0);
            if (ks)
                fikit_kstat_add_dur(ks, q[k].end - q[k].start);
            out[q[k].client].gpu_ns += q[k].end - q[k].start;
            sm_free += q[k].share;
            c->done++;
            out[q[k].client].kernels_done = c->done;
            c->in_flight = false;
            c->last_end = now;
            atomic_store_explicit(&c->slot->busy_until_ns, now, memory_order_relaxed);
            if (c->done >= c->total) {
                c->finished = true;
                out[q[k].client].jct_ns = now - SIM_T0;
            } else {
                c->next_try = now + kk->gap_ns;
            }
            memmove(&q[k], &q[k + 1], (size_t)(nq - k - 1) * sizeof q[0]);
            nq--;
        }

        /* Clients whose launch attempt is due: most urgent first. */
        for (int level = 0; level <= FIKIT_PRIO_MAX; level++) {
            for (int i = 0; i < n; i++) {
                struct sim_client *c = &cl[i];
                if (spec[i].prio != level || c->finished || c->in_flight || c->next_try > now)
                    continue;
                const struct fikit_sim_kernel *kk = kernel_at(c, c->done);
                struct fikit_kstat *ks = fikit_ktab_get(c->slot, kk->id, NULL, NULL, NULL, 0, 0);
                int verdict = FIKIT_GO_FREE;
                if (!c->top) {
                    struct fikit_peer peers[FIKIT_MAX_SLOTS];
                    int np = 0;
                    for (int j = 0; j < n; j++) {
                        if (spec[j].prio >= spec[i].prio || cl[j].finished)
                            continue;
                        struct fikit_slot *s = cl[j].slot;
                        peers[np].last_launch_ns = s->last_launch_ns;
                        peers[np].busy_until_ns = s->busy_until_ns;
                        peers[np].next_launch_ns = s->next_launch_ns;
                        /* A client with a kernel in flight waits for it, as a request loop does. */
                        peers[np].syncing = cl[j].in_flight;
                        peers[np]._pad = 0;
                        np++;
                    }
                    struct fikit_self self = {.busy_until_ns = c->slot->busy_until_ns,
                                              .held_since_ns = c->held_since};
                    uint64_t dur = ks ? fikit_kstat_dur_pred(ks) : 0;
                    uint64_t retry = 0;
                    verdict = fikit_policy_decide(p, peers, np, &self, now, dur, dur != 0, &retry);
                    if (verdict == FIKIT_WAIT) {
                        if (!c->held_since)
                            c->held_since = now;
                        /* Look again at retry, or at the next launch of a client above. */
                        c->next_try = retry > now ? retry : now + 1000;
                        continue;
                    }
                }
                if (nq >= Q_MAX) {
                    c->next_try = now + 1000;
                    continue;
                }
                if (c->held_since) {
                    out[i].held_ns += now - c->held_since;
                    c->held_since = 0;
                }
                switch (verdict) {
                case FIKIT_GO_GAP: out[i].released_gap++; break;
                case FIKIT_GO_IDLE: out[i].released_idle++; break;
                case FIKIT_GO_CORUN: out[i].released_corun++; break;
                case FIKIT_GO_GUARD: out[i].released_guard++; break;
                default: break;
                }
                /* The gap after the previous kernel, as the library measures it. */
                if (c->done > 0) {
                    const struct fikit_sim_kernel *prev = kernel_at(c, c->done - 1);
                    struct fikit_kstat *pk = fikit_ktab_get(c->slot, prev->id, NULL, NULL, NULL, 0, 0);
                    if (pk)
                        fikit_kstat_add_gap(pk, now - c->last_end);
                }
                uint32_t share = kk->sm_pct ? (kk->sm_pct > 100 ? 100 : kk->sm_pct) : 100;
                uint64_t dur = kk->dur_ns;
                if (verdict == FIKIT_GO_CORUN && p->corun_sm_pct > 0 && p->corun_sm_pct < share) {
                    dur = dur * share / p->corun_sm_pct;
                    share = p->corun_sm_pct;
                }
                q[nq++] = (struct job){.client = i, .dur = dur ? dur : 1, .share = share};
                c->in_flight = true;
                fikit_policy_note_launch(c->slot, now, ks ? fikit_kstat_dur_pred(ks) : 0,
                                         ks ? fikit_kstat_gap_pred(ks) : 0, p->unknown_ns);
                /* Held lower clients look again now that a client above launched. */
                for (int j = 0; j < n; j++)
                    if (spec[j].prio > spec[i].prio && cl[j].held_since && !cl[j].in_flight)
                        cl[j].next_try = now;
            }
        }
    }

    uint64_t denom = filled + idle;
    *fill_ppm = denom ? filled * 1000000ull / denom : 0;
    *end_ns = now - SIM_T0;
    (void)hp_busy;
    for (int i = 0; i < n; i++)
        free(cl[i].slot);
    return rc;
}
