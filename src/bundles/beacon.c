/*
 * beacon: a workload whose migration can be watched from outside.
 *
 *   beacon send --to IP:PORT [--mib N] [--interval-ms MS] [--seed S] [--dirty-pages P]
 *   beacon listen --port PORT
 *
 * send: maps N MiB, fills it with a pseudo-random pattern derived from the seed (every
 * page touched), then every MS milliseconds sends one UDP datagram
 *
 *   SEQ CHECKSUM PASS INCARNATION\n
 *
 * to IP:PORT. SEQ counts datagrams from 1 and lives in the process's memory, so a
 * restored process continues it; a second copy repeats it; a restart begins again at 1.
 * CHECKSUM is a hash of the whole memory area as of the last complete verification
 * pass (PASS of them so far; pass 0 is the hash taken right after the fill): each tick
 * hashes the next VERIFY_SLICE bytes, so a lost or corrupted page changes the checksum
 * one pass later without any tick costing more than a slice. INCARNATION is fixed at
 * start (clock and pid), so a fresh start differs from a restore. Every 100th datagram
 * SEQ is also printed on stdout, alone on its line. --dirty-pages P rewrites P pages per
 * tick with their own content: pages the kernel sees dirtied, a checksum that stays.
 *
 * The socket is never bound nor connected: the kernel binds it to 0.0.0.0 at the first
 * send, which a restore on another host can bind again (a socket bound to the source
 * host's address could not be restored there).
 *
 * listen: prints one line per datagram received on 0.0.0.0:PORT,
 *
 *   RECV_REALTIME_NS SENDER_IP PAYLOAD
 *
 * with the kernel's receive timestamp (SO_TIMESTAMPNS), so the gaps it shows do not
 * include the listener's own scheduling delays.
 *
 * Built static (gcc -static): it runs in a rootfs without libraries.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MIB (1024UL * 1024UL)
#define PAGE 4096UL
/* Bytes hashed per tick: ~0.2 ms of work here, a full pass of 256 MiB every 256 ticks. */
#define VERIFY_SLICE MIB
#define PRINT_EVERY 100

static void die (const char *what)
{
  fprintf(stderr, "beacon: %s: %s\n", what, strerror(errno));
  exit(1);
}

_Noreturn static void usage (void)
{
  fprintf(stderr,
    "usage: beacon send --to IP:PORT [--mib N] [--interval-ms MS] [--seed S] [--dirty-pages P]\n"
    "       beacon listen --port PORT\n");
  exit(2);
}

static unsigned long number (const char *s, const char *what)
{
  char *end;
  errno = 0;
  unsigned long v = strtoul(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0') {
    fprintf(stderr, "beacon: %s must be a number, got '%s'\n", what, s);
    exit(2);
  }
  return v;
}

/* As PID 1 of its container the process ignores SIGTERM unless it handles it. */
static void on_term (int sig)
{
  (void)sig;
  _exit(0);
}

/* Hash state of a verification pass: order-dependent, computed slice by slice. */
static uint64_t hash_words (uint64_t h, const uint64_t *w, size_t n)
{
  for (size_t i = 0; i < n; i++) h = (h ^ w[i]) * 0x100000001b3ULL + (h >> 29);
  return h;
}

#define HASH_START 0xcbf29ce484222325ULL

static uint64_t now_ns (clockid_t clock)
{
  struct timespec ts;
  clock_gettime(clock, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/*
 * Everything a restore must carry lives in these globals (the process's memory); the
 * tick loop reads nothing else.
 */
static uint64_t seq;
static uint64_t checksum;
static uint64_t passes;
static uint64_t pass_hash;
static size_t pass_at;
static size_t dirty_at;
static uint64_t incarnation;

_Noreturn static void run_send (int argc, char **argv)
{
  const char *to = NULL;
  unsigned long mib = 64, interval_ms = 5, seed = 1, dirty_pages = 0;
  for (int i = 0; i < argc; i++) {
    if (i + 1 >= argc) usage();
    if (strcmp(argv[i], "--to") == 0) to = argv[++i];
    else if (strcmp(argv[i], "--mib") == 0) mib = number(argv[++i], "--mib");
    else if (strcmp(argv[i], "--interval-ms") == 0) interval_ms = number(argv[++i], "--interval-ms");
    else if (strcmp(argv[i], "--seed") == 0) seed = number(argv[++i], "--seed");
    else if (strcmp(argv[i], "--dirty-pages") == 0) dirty_pages = number(argv[++i], "--dirty-pages");
    else usage();
  }
  if (to == NULL || mib == 0 || interval_ms == 0) usage();

  struct sockaddr_in dst = { .sin_family = AF_INET };
  char host[64];
  const char *colon = strrchr(to, ':');
  if (colon == NULL || (size_t)(colon - to) >= sizeof host) usage();
  memcpy(host, to, (size_t)(colon - to));
  host[colon - to] = '\0';
  unsigned long port = number(colon + 1, "port");
  if (port == 0 || port > 65535 || inet_pton(AF_INET, host, &dst.sin_addr) != 1) {
    fprintf(stderr, "beacon: --to must be IPV4:PORT, got '%s'\n", to);
    exit(2);
  }
  dst.sin_port = htons((uint16_t)port);

  signal(SIGTERM, on_term);
  signal(SIGINT, on_term);
  setvbuf(stdout, NULL, _IOLBF, 0);

  size_t bytes = mib * MIB;
  uint64_t *mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) die("mmap");
  /* xorshift64*: a pattern that does not compress nor repeat, so every page is real. */
  uint64_t x = seed * 0x9e3779b97f4a7c15ULL + 1;
  for (size_t i = 0; i < bytes / 8; i++) {
    x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
    mem[i] = x * 0x2545f4914f6cdd1dULL;
  }
  checksum = hash_words(HASH_START, mem, bytes / 8);
  pass_hash = HASH_START;
  incarnation = now_ns(CLOCK_REALTIME) ^ ((uint64_t)getpid() << 48);
  printf("beacon: %lu MiB, checksum %016" PRIx64 ", sending to %s every %lu ms\n", mib, checksum, to, interval_ms);

  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  if (fd < 0) die("socket");

  uint64_t interval_ns = interval_ms * 1000000ULL;
  uint64_t next = now_ns(CLOCK_MONOTONIC);
  for (;;) {
    seq++;
    char msg[128];
    int len = snprintf(msg, sizeof msg, "%" PRIu64 " %016" PRIx64 " %" PRIu64 " %016" PRIx64 "\n", seq, checksum, passes, incarnation);
    /* A send that fails (no route yet on a restored host) is a lost datagram, not an end. */
    (void)sendto(fd, msg, (size_t)len, MSG_DONTWAIT, (struct sockaddr *)&dst, sizeof dst);
    if (seq % PRINT_EVERY == 0) printf("%" PRIu64 "\n", seq);

    size_t n = bytes - pass_at < VERIFY_SLICE ? bytes - pass_at : VERIFY_SLICE;
    pass_hash = hash_words(pass_hash, mem + pass_at / 8, n / 8);
    pass_at += n;
    if (pass_at == bytes) {
      checksum = pass_hash;
      passes++;
      pass_hash = HASH_START;
      pass_at = 0;
    }
    for (unsigned long p = 0; p < dirty_pages; p++) {
      volatile uint64_t *w = mem + dirty_at / 8;
      *w = *w;
      dirty_at = (dirty_at + PAGE) % bytes;
    }

    /*
     * Absolute deadlines keep the period free of drift; after a stall (a freeze, a
     * restore) the schedule starts over from now instead of sending the missed ticks
     * in a burst.
     */
    next += interval_ns;
    uint64_t now = now_ns(CLOCK_MONOTONIC);
    if (next < now) next = now + interval_ns;
    struct timespec ts = { .tv_sec = (time_t)(next / 1000000000ULL), .tv_nsec = (long)(next % 1000000000ULL) };
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {}
  }
}

_Noreturn static void run_listen (int argc, char **argv)
{
  unsigned long port = 0;
  for (int i = 0; i < argc; i++) {
    if (i + 1 >= argc) usage();
    if (strcmp(argv[i], "--port") == 0) port = number(argv[++i], "--port");
    else usage();
  }
  if (port == 0 || port > 65535) usage();
  signal(SIGTERM, on_term);
  signal(SIGINT, on_term);

  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  if (fd < 0) die("socket");
  int on = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on) != 0) die("SO_TIMESTAMPNS");
  int rcvbuf = 4 * 1024 * 1024;
  (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_ANY) };
  if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0) die("bind");
  /* The line tells whoever started it that the socket is bound. */
  printf("listening %lu\n", port);
  fflush(stdout);

  for (;;) {
    char buf[256];
    char ctrl[CMSG_SPACE(sizeof(struct timespec))];
    struct iovec iov = { .iov_base = buf, .iov_len = sizeof buf - 1 };
    struct sockaddr_in from = { 0 };
    struct msghdr mh = {
      .msg_name = &from, .msg_namelen = sizeof from,
      .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctrl, .msg_controllen = sizeof ctrl
    };
    ssize_t n = recvmsg(fd, &mh, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("recvmsg");
    }
    uint64_t t = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c != NULL; c = CMSG_NXTHDR(&mh, c)) {
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
        struct timespec ts;
        memcpy(&ts, CMSG_DATA(c), sizeof ts);
        t = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
      }
    }
    if (t == 0) t = now_ns(CLOCK_REALTIME);
    /* One line per datagram, whatever it holds: newlines inside become spaces. */
    while (n > 0 && buf[n - 1] == '\n') n--;
    for (ssize_t i = 0; i < n; i++) if (buf[i] == '\n' || buf[i] == '\r') buf[i] = ' ';
    buf[n] = '\0';
    char sender[INET_ADDRSTRLEN] = "?";
    inet_ntop(AF_INET, &from.sin_addr, sender, sizeof sender);
    printf("%" PRIu64 " %s %s\n", t, sender, buf);
    fflush(stdout);
  }
}

int main (int argc, char **argv)
{
  if (argc < 2) usage();
  if (strcmp(argv[1], "send") == 0) run_send(argc - 2, argv + 2);
  if (strcmp(argv[1], "listen") == 0) run_listen(argc - 2, argv + 2);
  usage();
}
