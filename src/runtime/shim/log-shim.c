/*
 * log-shim: starts a detaching runc command (`run -d`, `restore -d`) with the
 * container's stdout and stderr on a pipe(2), and stays behind as the reader of that
 * pipe, appending what it reads to the container's log.
 *
 *   MSC_SHIM_LOG=LOG [MSC_SHIM_MAX=BYTES] log-shim COMMAND [ARG...]
 *
 * COMMAND (runc) runs with stdin /dev/null and stdout and stderr both the write end of
 * one pipe, so the container it leaves behind writes into that pipe too. CRIU can dump
 * and restore a container only when its stdio are anonymous pipes (not sockets, not host
 * files); runc records them at a checkpoint and, at `restore -d`, puts the pipe it was
 * given in their place. As soon as COMMAND returns, its exit status (128+N when killed
 * by signal N) is written as one decimal line to fd 3 when fd 3 is open, and fd 3 is
 * closed; nothing else ever holds it (close-on-exec). When the shim cannot start
 * COMMAND, fd 3 gets `error: MESSAGE` instead and the shim exits 2.
 *
 * The shim then reads on until every writer closed the pipe (the container is gone),
 * and exits 0. It appends to LOG (O_APPEND, created 0600, never through a symlink: the
 * shim runs as root and a link planted at LOG must not make it append to the file the
 * link names) and, when the next chunk would take LOG past BYTES (default 8 MiB),
 * renames LOG to LOG.1 and starts a new LOG, so a chatty container costs at most about
 * twice BYTES on disk. A write error (a full disk) drops that output; the shim and the
 * container carry on. It ignores SIGHUP and SIGPIPE and starts its own session, so it
 * outlives the msc node that started it, the node's terminal, and a restart of the
 * node's service (the container would die of SIGPIPE at its next line without a reader).
 *
 * One small static process per container instead of a shell plus a Node.js process.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define STATUS_FD 3
#define DEFAULT_MAX_BYTES (8ULL * 1024 * 1024)

static const char *log_path;
static char rotated_path[4096];
static unsigned long long max_bytes = DEFAULT_MAX_BYTES;
static int log_fd = -1;
static unsigned long long log_size;
static int status_fd = -1;

/* A failure before COMMAND runs: to stderr, and to the status channel for the node. */
static void fail(const char *fmt, ...)
{
  char msg[4096 + 256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  dprintf(STDERR_FILENO, "log-shim: %s\n", msg);
  if (status_fd >= 0) dprintf(status_fd, "error: %s\n", msg);
  exit(2);
}

/* -1 when LOG cannot be opened (or is not a regular file): output is then dropped. */
static int open_log(void)
{
  /* O_NONBLOCK: a FIFO planted at LOG must not block the open; cleared below. */
  int fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, 0600);
  struct stat st;
  if (fd < 0) return -1;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    errno = EINVAL;
    return -1;
  }
  fcntl(fd, F_SETFL, O_WRONLY | O_APPEND);
  log_size = (unsigned long long)st.st_size;
  return fd;
}

static void rotate(void)
{
  close(log_fd);
  /* Should the rename fail, LOG is emptied instead: the bound on disk use holds. */
  rename(log_path, rotated_path);
  log_fd = open_log();
  if (log_fd >= 0 && log_size > 0 && ftruncate(log_fd, 0) == 0) log_size = 0;
}

static void append(const char *buf, size_t n)
{
  if (log_fd >= 0 && log_size > 0 && log_size + n > max_bytes) rotate();
  /* After a failed reopen, try again with each chunk: LOG may be writable again. */
  if (log_fd < 0 && (log_fd = open_log()) < 0) return;
  while (n > 0) {
    ssize_t w = write(log_fd, buf, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return; /* full disk, I/O error: drop this output, keep the container going */
    }
    log_size += (unsigned long long)w;
    buf += w;
    n -= (size_t)w;
  }
}

static void report_exit(int wait_status)
{
  int code = WIFEXITED(wait_status) ? WEXITSTATUS(wait_status) : 128 + WTERMSIG(wait_status);
  if (status_fd < 0) return;
  dprintf(status_fd, "%d\n", code);
  close(status_fd);
  status_fd = -1;
}

/* In the forked child: COMMAND with stdin /dev/null and stdout+stderr the pipe. */
static void exec_command(char **argv, int pipe_w)
{
  int null_fd = open("/dev/null", O_RDONLY);
  signal(SIGHUP, SIG_DFL); /* ignored dispositions survive exec: give COMMAND the defaults */
  signal(SIGPIPE, SIG_DFL);
  if (null_fd < 0 || dup2(null_fd, STDIN_FILENO) < 0 || dup2(pipe_w, STDOUT_FILENO) < 0 || dup2(pipe_w, STDERR_FILENO) < 0) {
    _exit(127);
  }
  unsetenv("MSC_SHIM_LOG"); /* the environment names shims, not what they start */
  unsetenv("MSC_SHIM_MAX");
  execvp(argv[0], argv);
  dprintf(STDERR_FILENO, "log-shim: cannot run %s: %s\n", argv[0], strerror(errno));
  _exit(127);
}

int main(int argc, char **argv)
{
  static char buf[65536];
  const char *max_env = getenv("MSC_SHIM_MAX");
  int pipe_fds[2];
  int pidfd;
  int wait_status;
  int running = 1;
  pid_t pid;

  signal(SIGHUP, SIG_IGN);
  signal(SIGPIPE, SIG_IGN);
  signal(SIGCHLD, SIG_DFL); /* an inherited SIG_IGN would reap runc before we read its status */
  setsid(); /* fails (harmlessly) when the launcher made us a session leader already */
  if (fcntl(STATUS_FD, F_SETFD, FD_CLOEXEC) == 0) status_fd = STATUS_FD;

  if (argc < 2) fail("usage: MSC_SHIM_LOG=LOG [MSC_SHIM_MAX=BYTES] log-shim COMMAND [ARG...]");
  log_path = getenv("MSC_SHIM_LOG");
  if (log_path == NULL || log_path[0] == '\0') fail("MSC_SHIM_LOG is not set");
  if (snprintf(rotated_path, sizeof rotated_path, "%s.1", log_path) >= (int)sizeof rotated_path) fail("MSC_SHIM_LOG is too long");
  if (max_env != NULL && max_env[0] != '\0') {
    char *end;
    errno = 0;
    max_bytes = strtoull(max_env, &end, 10);
    if (errno != 0 || *end != '\0' || max_bytes == 0) fail("MSC_SHIM_MAX must be a positive number of bytes, got '%s'", max_env);
  }
  log_fd = open_log();
  if (log_fd < 0) {
    if (errno == ELOOP) fail("%s is a symlink: refusing to write through it", log_path);
    if (errno == EINVAL) fail("%s is not a regular file", log_path);
    fail("cannot open %s: %s", log_path, strerror(errno));
  }
  if (pipe2(pipe_fds, O_CLOEXEC) != 0) fail("pipe: %s", strerror(errno));

  pid = fork();
  if (pid < 0) fail("fork: %s", strerror(errno));
  if (pid == 0) exec_command(argv + 1, pipe_fds[1]);
  close(pipe_fds[1]);

  /* A pidfd tells poll when COMMAND returns; without one (kernel < 5.3), poll in steps. */
  pidfd = pidfd_open(pid, 0);
  for (;;) {
    struct pollfd fds[2] = { { pipe_fds[0], POLLIN, 0 }, { pidfd, POLLIN, 0 } };
    int n = poll(fds, running && pidfd >= 0 ? 2 : 1, running && pidfd < 0 ? 100 : -1);
    if (n < 0 && errno != EINTR) break;
    if (running && waitpid(pid, &wait_status, WNOHANG) == pid) {
      running = 0;
      report_exit(wait_status);
      if (pidfd >= 0) close(pidfd);
      if (chdir("/") != 0) { /* keep no directory of the node's busy; harmless if refused */ }
    }
    if (n > 0 && fds[0].revents != 0) {
      ssize_t r = read(pipe_fds[0], buf, sizeof buf);
      if (r > 0) append(buf, (size_t)r);
      else if (r == 0 || (errno != EINTR && errno != EAGAIN)) break; /* every writer is gone */
    }
  }
  if (running && waitpid(pid, &wait_status, 0) == pid) report_exit(wait_status);
  return 0;
}
