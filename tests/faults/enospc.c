/*
 * enospc.so: a full disk for one directory, without mounts or root, for the fault suite.
 *
 *   LD_PRELOAD=enospc.so ENOSPC_DIR=/some/dir ENOSPC_FLAG=/some/flag  program
 *
 * While the file ENOSPC_FLAG exists, every write(2) family call on a file under ENOSPC_DIR fails
 * with ENOSPC, as on a full file system; without the flag, writes go through.  Creating and
 * removing the flag fills and frees the "disk" under a running process.  SQLite writes with
 * pwrite64 and turns ENOSPC into SQLITE_FULL ("database or disk is full"), which is what fikitd
 * sees on a real full disk (RLIMIT_FSIZE, the other simulation, gives EFBIG and SQLITE_IOERR).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

static int full(int fd)
{
    const char *dir = getenv("ENOSPC_DIR"), *flag = getenv("ENOSPC_FLAG");
    struct stat st;
    if (!dir || !flag || stat(flag, &st) != 0)
        return 0;
    char link[64], path[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0)
        return 0;
    path[n] = 0;
    size_t len = strlen(dir);
    return strncmp(path, dir, len) == 0 && (path[len] == '/' || path[len] == 0);
}

#define NEXT(name) ((__typeof__(&name))dlsym(RTLD_NEXT, #name))
#define REFUSE(fd)          \
    do {                    \
        if (full(fd)) {     \
            errno = ENOSPC; \
            return -1;      \
        }                   \
    } while (0)

ssize_t write(int fd, const void *buf, size_t n)
{
    REFUSE(fd);
    return NEXT(write)(fd, buf, n);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
    REFUSE(fd);
    return NEXT(pwrite)(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off64_t off)
{
    REFUSE(fd);
    return NEXT(pwrite64)(fd, buf, n, off);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    REFUSE(fd);
    return NEXT(writev)(fd, iov, cnt);
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
    REFUSE(fd);
    return NEXT(pwritev)(fd, iov, cnt, off);
}
