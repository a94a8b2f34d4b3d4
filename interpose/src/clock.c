/* The one clock every fikit timestamp uses, shared across processes. */
#include <time.h>

#include "fikit.h"

FIKIT_HOT uint64_t fikit_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* vDSO: no system call */
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
