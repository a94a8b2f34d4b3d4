/*
 * The shared-memory layout, described for readers in other languages.
 * fikitd/shm.py builds its view from these tables, so fikit_shm.h stays the
 * only statement of the layout: offsets come from the compiler, not a copy.
 */
#include <string.h>

#include "fikit.h"

/* The cache-line grouping fikit_shm.h promises, checked where the layout is described. */
_Static_assert(sizeof(struct fikit_kstat) % 64 == 0, "kernel-table entries fill whole cache lines");
_Static_assert(offsetof(struct fikit_kstat, dur_pred_ns) + sizeof(uint32_t) <= 64,
               "a launch's reads and writes of its entry stay in the entry's first line");
_Static_assert(offsetof(struct fikit_slot, path_launches) % 64 == 0, "the per-launch counters start a line");
_Static_assert(offsetof(struct fikit_slot, last_launch_ns) == offsetof(struct fikit_slot, path_launches) + 64,
               "the counters fill one line, the predictions start the next");
_Static_assert(offsetof(struct fikit_slot, syncing) < offsetof(struct fikit_slot, last_launch_ns) + 64,
               "what the clients below read is one line");
_Static_assert(offsetof(struct fikit_slot, ktab) % 64 == 0, "the kernel table starts a line");

#define DESC_F(T, type, name) {#name, #type, (uint32_t)offsetof(T, name), (uint32_t)sizeof(type), 1u, 0u},
#define DESC_A(T, type, name, n) {#name, #type, (uint32_t)offsetof(T, name), (uint32_t)sizeof(type), (uint32_t)(n), 0u},
#define DESC_S(T, sname, name, n)                                                                     \
    {#name, "struct " #sname, (uint32_t)offsetof(T, name), (uint32_t)sizeof(struct fikit_##sname), \
     (uint32_t)(n), 0u},

#define GRANT_F(type, name) DESC_F(struct fikit_grant, type, name)
#define GRANT_A(type, name, n) DESC_A(struct fikit_grant, type, name, n)
#define GRANT_S(s, name, n) DESC_S(struct fikit_grant, s, name, n)
static const struct fikit_field_desc grant_fields[] = {FIKIT_GRANT_FIELDS(GRANT_F, GRANT_A, GRANT_S)};

#define KSTAT_F(type, name) DESC_F(struct fikit_kstat, type, name)
#define KSTAT_A(type, name, n) DESC_A(struct fikit_kstat, type, name, n)
#define KSTAT_S(s, name, n) DESC_S(struct fikit_kstat, s, name, n)
static const struct fikit_field_desc kstat_fields[] = {FIKIT_KSTAT_FIELDS(KSTAT_F, KSTAT_A, KSTAT_S)};

#define DOMAIN_F(type, name) DESC_F(struct fikit_domain, type, name)
#define DOMAIN_A(type, name, n) DESC_A(struct fikit_domain, type, name, n)
#define DOMAIN_S(s, name, n) DESC_S(struct fikit_domain, s, name, n)
static const struct fikit_field_desc domain_fields[] = {FIKIT_DOMAIN_FIELDS(DOMAIN_F, DOMAIN_A, DOMAIN_S)};

#define SLOT_F(type, name) DESC_F(struct fikit_slot, type, name)
#define SLOT_A(type, name, n) DESC_A(struct fikit_slot, type, name, n)
#define SLOT_S(s, name, n) DESC_S(struct fikit_slot, s, name, n)
static const struct fikit_field_desc slot_fields[] = {FIKIT_SLOT_FIELDS(SLOT_F, SLOT_A, SLOT_S)};

static const struct {
    const char *name;
    const struct fikit_field_desc *fields;
    uint32_t n;
    uint32_t size;
} tables[] = {
    {"grant", grant_fields, sizeof grant_fields / sizeof grant_fields[0], sizeof(struct fikit_grant)},
    {"kstat", kstat_fields, sizeof kstat_fields / sizeof kstat_fields[0], sizeof(struct fikit_kstat)},
    {"domain", domain_fields, sizeof domain_fields / sizeof domain_fields[0], sizeof(struct fikit_domain)},
    {"slot", slot_fields, sizeof slot_fields / sizeof slot_fields[0], sizeof(struct fikit_slot)},
};

FIKIT_API const struct fikit_field_desc *fikit_layout_fields(const char *which, uint32_t *n)
{
    for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++) {
        if (which && strcmp(which, tables[i].name) == 0) {
            if (n)
                *n = tables[i].n;
            return tables[i].fields;
        }
    }
    if (n)
        *n = 0;
    return NULL;
}

FIKIT_API uint32_t fikit_layout_size(const char *which)
{
    for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++)
        if (which && strcmp(which, tables[i].name) == 0)
            return tables[i].size;
    return 0;
}

FIKIT_API uint32_t fikit_layout_version(void) { return FIKIT_SHM_VERSION; }

/* Holds range from a few microseconds (a gap) to whole requests of the
 * more urgent client: roughly x3 steps from 10 us to 1 s. */
static const uint32_t held_bounds_us[FIKIT_HELD_BUCKETS] = {10,     30,     100,     300,     1000,    3000,
                                                            10000,  30000,  100000,  300000,  1000000, UINT32_MAX};

FIKIT_API const uint32_t *fikit_held_bucket_bounds_us(uint32_t *n)
{
    if (n)
        *n = FIKIT_HELD_BUCKETS;
    return held_bounds_us;
}

unsigned fikit_held_bucket(uint64_t held_ns)
{
    uint64_t us = held_ns / 1000;
    unsigned i = 0;
    while (i + 1 < FIKIT_HELD_BUCKETS && us > held_bounds_us[i])
        i++;
    return i;
}
