/* fikit's clock (fikit_clock_ns in fikit.h), exported for the benchmarks that time launches by it. */
#include "fikit.h"

FIKIT_API uint64_t fikit_now_ns(void) { return fikit_clock_ns(); }
