/*
 * stderr diagnostics.  The library runs inside other people's programs, so it
 * says each problem once, prefixed "fikit:", and never more than it must.
 */
#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

#include "fikit.h"

int fikit_debug;

static void vlog(const char *fmt, va_list ap)
{
    char buf[512];
    int n = snprintf(buf, sizeof buf, "fikit[%d]: ", (int)getpid());
    if (n < 0 || n >= (int)sizeof buf)
        return;
    int m = vsnprintf(buf + n, sizeof buf - (size_t)n - 1, fmt, ap);
    if (m < 0)
        return;
    size_t len = (size_t)n + (size_t)m;
    if (len > sizeof buf - 2)
        len = sizeof buf - 2;
    buf[len++] = '\n';
    /* One write: lines from several threads or processes do not interleave. */
    ssize_t w = write(2, buf, len);
    (void)w;
}

void fikit_log(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(fmt, ap);
    va_end(ap);
}

void fikit_log_once(_Atomic int *flag, const char *fmt, ...)
{
    if (atomic_exchange(flag, 1))
        return;
    va_list ap;
    va_start(ap, fmt);
    vlog(fmt, ap);
    va_end(ap);
}
