/*
 * FIKIT_STATS: one JSON object at exit, for tests, benchmarks and people.
 * Written to a temporary name and renamed, so a reader never sees half.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "fikit.h"

static void put_name(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20 || c >= 0x7f)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

/* pred: what the library predicts from them (a duration's: long; a gap's: short). */
static void put_dist(FILE *f, const char *key, uint64_t n, uint64_t sum, const uint32_t *ring, uint64_t pred)
{
    if (n == 0) {
        fprintf(f, "\"%s\": null", key);
        return;
    }
    fprintf(f, "\"%s\": {\"n\": %llu, \"mean\": %.3f, \"p50\": %.3f, \"p99\": %.3f, \"pred\": %.3f}", key,
            (unsigned long long)n, (double)sum / (double)n / 1000.0, fikit_ring_quantile(ring, n, 0.50) / 1000.0,
            fikit_ring_quantile(ring, n, 0.99) / 1000.0, (double)pred / 1000.0);
}

static void expand(const char *tmpl, char *out, size_t n)
{
    size_t j = 0;
    for (const char *p = tmpl; *p && j + 1 < n; p++) {
        if (p[0] == '%' && p[1] == 'p') {
            int w = snprintf(out + j, n - j, "%d", (int)getpid());
            if (w < 0 || (size_t)w >= n - j)
                break;
            j += (size_t)w;
            p++;
        } else {
            out[j++] = *p;
        }
    }
    out[j] = 0;
}

/* The counters of every device's slot, summed: the shape of a one-GPU process's stats. */
struct totals {
    uint64_t path[4], syncs, held_launches, held_ns, released_gap, released_idle, released_guard, released_corun,
        gpu_ns;
    unsigned profile_kernels;
};

static void add_slot(struct totals *t, const struct fikit_slot *s)
{
    for (int i = 0; i < 4; i++)
        t->path[i] += s->path_launches[i];
    t->syncs += s->syncs;
    t->held_launches += s->held_launches;
    t->held_ns += s->held_ns;
    t->released_gap += s->released_gap;
    t->released_idle += s->released_idle;
    t->released_guard += s->released_guard;
    t->released_corun += s->released_corun;
    t->gpu_ns += s->gpu_ns;
}

static void put_kernels(FILE *f, const struct fikit_slot *s, int kind, bool *first)
{
    for (int i = 0; i < FIKIT_KTAB_SIZE; i++) {
        const struct fikit_kstat *k = &s->ktab[i];
        uint64_t id = k->id;
        if (id == 0 || k->kind != (uint32_t)kind || k->count == 0)
            continue;
        fprintf(f, "%s{\"id\": \"%016llx\", \"name\": ", *first ? "" : ", ", (unsigned long long)id);
        put_name(f, k->name);
        fprintf(f, ", \"count\": %llu", (unsigned long long)k->count);
        if (kind == 0)
            fprintf(f, ", \"grid\": [%u, %u, %u], \"block\": [%u, %u, %u], \"smem\": %u", k->grid[0], k->grid[1],
                    k->grid[2], k->block[0], k->block[1], k->block[2], k->smem);
        fputs(", ", f);
        put_dist(f, "dur_us", k->dur_n, k->dur_sum_ns, k->dur_ring_ns, fikit_kstat_dur_pred(k));
        fputs(", ", f);
        put_dist(f, "gap_us", k->gap_n, k->gap_sum_ns, k->gap_ring_ns, fikit_kstat_gap_pred(k));
        fputc('}', f);
        *first = false;
    }
}

/*
 * One object per process whatever the number of GPUs: counters summed over
 * the devices it launched on, "slot" and "prio" those of the first device with
 * a domain slot, every device's kernels (a kernel launched on two GPUs is
 * listed once per GPU), and "domains": one entry per device.
 */
void fikit_stats_write(const char *tmpl)
{
    int n = fikit_dev_count();
    struct totals t = {0};
    const struct fikit_dev *first = NULL;
    for (int i = 0; i < n; i++) {
        const struct fikit_dev *d = fikit_dev_at(i);
        add_slot(&t, d->me);
        t.profile_kernels += d->profile_kernels;
        if (!first || (first->slot_index < 0 && d->slot_index >= 0))
            first = d;
    }
    char path[600], tmp[640];
    expand(tmpl, path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s.tmp%d", path, (int)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) {
        fikit_log("cannot write FIKIT_STATS file %s", tmp);
        return;
    }
    char prog[FIKIT_PROG_LEN] = "";
    if (first)
        snprintf(prog, sizeof prog, "%s", first->me->prog);
    else
        fikit_program_name(prog, sizeof prog);
    fprintf(f, "{\"pid\": %d, \"prog\": ", (int)getpid());
    put_name(f, prog);
    fprintf(f,
            ", \"launches\": {\"cuLaunchKernel\": %llu, \"cuLaunchKernelEx\": %llu, "
            "\"cuLaunchCooperativeKernel\": %llu, \"cuGraphLaunch\": %llu}",
            (unsigned long long)t.path[FIKIT_PATH_KERNEL], (unsigned long long)t.path[FIKIT_PATH_EX],
            (unsigned long long)t.path[FIKIT_PATH_COOP], (unsigned long long)t.path[FIKIT_PATH_GRAPH]);
    fprintf(f,
            ", \"syncs\": %llu, \"held_launches\": %llu, \"held_us\": %.3f, \"released_gap\": %llu, "
            "\"released_idle\": %llu, \"released_guard\": %llu, \"released_corun\": %llu, \"gpu_us\": %.3f, "
            "\"slot\": %d, \"prio\": %d, \"passthrough\": %s, \"profile_kernels\": %u",
            (unsigned long long)t.syncs, (unsigned long long)t.held_launches, (double)t.held_ns / 1000.0,
            (unsigned long long)t.released_gap, (unsigned long long)t.released_idle,
            (unsigned long long)t.released_guard, (unsigned long long)t.released_corun, (double)t.gpu_ns / 1000.0,
            first ? first->slot_index : -1, fikit_effective_prio(first),
            fikit_cfg_has(FIKIT_CFG_PASSTHROUGH) ? "true" : "false", t.profile_kernels);
    fputs(", \"domains\": [", f);
    for (int i = 0; i < n; i++) {
        const struct fikit_dev *d = fikit_dev_at(i);
        const struct fikit_slot *s = d->me;
        uint64_t launches = fikit_slot_launches(s);
        fprintf(f, "%s{\"device\": %d, \"uuid\": ", i ? ", " : "", d->ordinal);
        put_name(f, d->uuid);
        if (d->dom)
            fprintf(f, ", \"gpu\": %u", d->dom->gpu_index);
        else
            fputs(", \"gpu\": null", f);
        /* one launching thread: its counts took no lock (launch.c) */
        uintptr_t who = atomic_load(&d->launcher);
        const char *threads = who == FIKIT_LAUNCHERS_NONE ? "none" : who & 1 ? "several" : "one";
        struct fikit_quiet_counts q;
        fikit_quiet_counts(d, &q);
        fprintf(f, ", \"slot\": %d, \"prio\": %d, \"launches\": %llu, \"held_launches\": %llu, "
                   "\"launching_threads\": \"%s\", \"quiet\": {\"stride\": %u, \"quiet_bursts\": %llu, "
                   "\"full_bursts\": %llu, \"quiet_launches\": %llu, \"wide_gaps\": %llu}}",
                d->slot_index, fikit_effective_prio(d), (unsigned long long)launches,
                (unsigned long long)s->held_launches, threads, q.stride, (unsigned long long)q.quiet_bursts,
                (unsigned long long)q.full_bursts, (unsigned long long)q.quiet_launches,
                (unsigned long long)q.wide_gaps);
    }
    fputc(']', f);
    /* How kernel launches were timed: CUPTI's records (profiling mode) or events. */
    struct fikit_cupti_counts c;
    if (fikit_cupti_counts(&c))
        fprintf(f,
                ", \"timing\": \"cupti\", \"cupti\": {\"records\": %llu, \"timed\": %llu, \"graph\": %llu, "
                "\"ignored\": %llu, \"unmatched\": %llu, \"incomplete\": %llu, \"dropped\": %llu}",
                (unsigned long long)c.records, (unsigned long long)c.timed, (unsigned long long)c.graph,
                (unsigned long long)c.ignored, (unsigned long long)c.unmatched, (unsigned long long)c.incomplete,
                (unsigned long long)c.dropped);
    else
        fprintf(f, ", \"timing\": \"%s\", \"cupti\": null", fikit_cfg_has(FIKIT_CFG_PASSTHROUGH) ? "none" : "events");
    struct fikit_gate_counts g;
    fikit_gate_counts(&g);
    fprintf(f, ", \"gates\": {\"preempted_waits\": %llu, \"turned_off\": %s}", (unsigned long long)g.preempted_waits,
            g.turned_off ? "true" : "false");
    for (int kind = 0; kind < 2; kind++) {
        fprintf(f, kind == 0 ? ", \"kernels\": [" : "], \"graphs\": [");
        bool first_k = true;
        for (int i = 0; i < n; i++)
            put_kernels(f, fikit_dev_at(i)->me, kind, &first_k);
    }
    fputs("]}\n", f);
    if (fclose(f) != 0 || rename(tmp, path) != 0) {
        fikit_log("cannot write FIKIT_STATS file %s", path);
        unlink(tmp);
    }
}
