/*
 * fsfault — an LD_PRELOAD shim that makes one directory full or read-only
 * on demand, for tests that cannot mount a small tmpfs (CI containers).
 *
 *   FSFAULT_DIR      the directory (absolute path, no trailing slash)
 *   FSFAULT_TRIGGER  a file: the fault is on while it exists, so a test
 *                    can switch it on and off under a running process
 *   FSFAULT_ERRNO    "ENOSPC" (default: the disk is full) or "EROFS" (the
 *                    file system is read-only)
 *
 * While on, for files under FSFAULT_DIR: write, pwrite, writev, pwritev,
 * ftruncate and fallocate fail with the errno; with EROFS, opening for
 * writing, creating, mkdir, unlink and rename fail too. (A full disk
 * still lets an empty file be made: it takes an inode, no block.) Reads
 * and everything outside the directory are untouched. Whether an fd is
 * under the directory is read from /proc/self/fd. Build:
 *
 *   cc -shared -fPIC -o fsfault.so fsfault.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

static int
fault_errno(void)
{
  const char *e = getenv("FSFAULT_ERRNO");
  return e != NULL && strcmp(e, "EROFS") == 0 ? EROFS : ENOSPC;
}

static int
fault_on(void)
{
  const char *trigger = getenv("FSFAULT_TRIGGER");
  struct stat sb;

  if (trigger == NULL || getenv("FSFAULT_DIR") == NULL)
    return 0;
  return stat(trigger, &sb) == 0;
}

static int
path_under(const char *path)
{
  const char *dir = getenv("FSFAULT_DIR");
  size_t n;

  if (dir == NULL || path == NULL)
    return 0;
  n = strlen(dir);
  return strncmp(path, dir, n) == 0 && (path[n] == '/' || path[n] == '\0');
}

static int
fd_under(int fd)
{
  char link[64], path[4096];
  ssize_t n;

  snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
  n = readlink(link, path, sizeof(path) - 1);
  if (n <= 0)
    return 0;
  path[n] = '\0';
  return path_under(path);
}

/* Relative paths are taken from the working directory. */
static int
name_under(int dirfd, const char *name)
{
  char cwd[4096], full[8192];

  if (name == NULL)
    return 0;
  if (name[0] == '/')
    return path_under(name);
  if (dirfd != AT_FDCWD) {
    char link[64];
    ssize_t n;
    snprintf(link, sizeof(link), "/proc/self/fd/%d", dirfd);
    n = readlink(link, cwd, sizeof(cwd) - 1);
    if (n <= 0)
      return 0;
    cwd[n] = '\0';
  } else if (getcwd(cwd, sizeof(cwd)) == NULL) {
    return 0;
  }
  snprintf(full, sizeof(full), "%s/%s", cwd, name);
  return path_under(full);
}

static int
fd_faulty(int fd)
{
  return fault_on() && fd_under(fd);
}

/* real_NAME: the next definition of NAME (libc's, or a sanitizer's). */
#define REAL(name)                                                            \
  static __typeof__(name) *real_##name;                                       \
  if (real_##name == NULL)                                                    \
  real_##name = (__typeof__(name) *)dlsym(RTLD_NEXT, #name)

ssize_t
write(int fd, const void *buf, size_t n)
{
  REAL(write);
  if (fd_faulty(fd)) {
    errno = fault_errno();
    return -1;
  }
  return real_write(fd, buf, n);
}

ssize_t
pwrite(int fd, const void *buf, size_t n, off_t off)
{
  REAL(pwrite);
  if (fd_faulty(fd)) {
    errno = fault_errno();
    return -1;
  }
  return real_pwrite(fd, buf, n, off);
}

ssize_t
pwrite64(int fd, const void *buf, size_t n, off64_t off)
{
  REAL(pwrite64);
  if (fd_faulty(fd)) {
    errno = fault_errno();
    return -1;
  }
  return real_pwrite64(fd, buf, n, off);
}

ssize_t
writev(int fd, const struct iovec *iov, int cnt)
{
  REAL(writev);
  if (fd_faulty(fd)) {
    errno = fault_errno();
    return -1;
  }
  return real_writev(fd, iov, cnt);
}

ssize_t
pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
  REAL(pwritev);
  if (fd_faulty(fd)) {
    errno = fault_errno();
    return -1;
  }
  return real_pwritev(fd, iov, cnt, off);
}

int
ftruncate(int fd, off_t len)
{
  REAL(ftruncate);
  if (fd_faulty(fd)) {
    errno = fault_errno();
    return -1;
  }
  return real_ftruncate(fd, len);
}

int
ftruncate64(int fd, off64_t len)
{
  REAL(ftruncate64);
  if (fd_faulty(fd)) {
    errno = fault_errno();
    return -1;
  }
  return real_ftruncate64(fd, len);
}

int
fallocate(int fd, int mode, off_t off, off_t len)
{
  REAL(fallocate);
  if (fd_faulty(fd)) {
    errno = fault_errno();
    return -1;
  }
  return real_fallocate(fd, mode, off, len);
}

int
posix_fallocate(int fd, off_t off, off_t len)
{
  REAL(posix_fallocate);
  if (fd_faulty(fd))
    return fault_errno();
  return real_posix_fallocate(fd, off, len);
}

/* open: EROFS refuses writing and creating. */
static int
open_refused(int dirfd, const char *name, int flags)
{
  if (fault_errno() != EROFS || !fault_on() || !name_under(dirfd, name))
    return 0;
  return (flags & (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC)) != 0;
}

int
open(const char *name, int flags, ...)
{
  mode_t mode = 0;
  REAL(open);
  if (flags & (O_CREAT | O_TMPFILE)) {
    va_list ap;
    va_start(ap, flags);
    mode = va_arg(ap, mode_t);
    va_end(ap);
  }
  if (open_refused(AT_FDCWD, name, flags)) {
    errno = fault_errno();
    return -1;
  }
  return real_open(name, flags, mode);
}

int
open64(const char *name, int flags, ...)
{
  mode_t mode = 0;
  REAL(open64);
  if (flags & (O_CREAT | O_TMPFILE)) {
    va_list ap;
    va_start(ap, flags);
    mode = va_arg(ap, mode_t);
    va_end(ap);
  }
  if (open_refused(AT_FDCWD, name, flags)) {
    errno = fault_errno();
    return -1;
  }
  return real_open64(name, flags, mode);
}

int
openat(int dirfd, const char *name, int flags, ...)
{
  mode_t mode = 0;
  REAL(openat);
  if (flags & (O_CREAT | O_TMPFILE)) {
    va_list ap;
    va_start(ap, flags);
    mode = va_arg(ap, mode_t);
    va_end(ap);
  }
  if (open_refused(dirfd, name, flags)) {
    errno = fault_errno();
    return -1;
  }
  return real_openat(dirfd, name, flags, mode);
}

static int
name_refused(const char *name)
{
  return fault_on() && fault_errno() == EROFS && name_under(AT_FDCWD, name);
}

int
mkdir(const char *name, mode_t mode)
{
  struct stat sb;
  REAL(mkdir);
  /* As the kernel: an existing name is EEXIST, read-only or not. */
  if (name_refused(name) && stat(name, &sb) != 0) {
    errno = EROFS;
    return -1;
  }
  return real_mkdir(name, mode);
}

int
unlink(const char *name)
{
  REAL(unlink);
  if (name_refused(name)) {
    errno = EROFS;
    return -1;
  }
  return real_unlink(name);
}

int
rename(const char *from, const char *to)
{
  REAL(rename);
  if (name_refused(from) || name_refused(to)) {
    errno = EROFS;
    return -1;
  }
  return real_rename(from, to);
}
