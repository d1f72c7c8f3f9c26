/* migcheck PEER SECONDS BURST INTERVAL_MS HOLD_MS SIZE: catch receive buffers
 * a device wrote during a live migration without marking them in the dirty
 * log.
 *
 * For SECONDS of guest time, every INTERVAL_MS: send a round of BURST ICMP
 * echo requests to PEER on a raw socket, each with SIZE payload bytes that are
 * a function of (request number, offset). A round's replies are left unread
 * in the socket's receive queue for HOLD_MS after it was sent, then read and
 * compared byte for byte with what was sent. With HOLD_MS longer than the
 * migration, every reply the device delivered while the migration ran is
 * read after the switch-over, on the destination.
 *
 * Why this sees unlogged writes: virtio_net (Linux) copies only the first 128
 * bytes of a large frame into the skb head and keeps the rest in the
 * receive-buffer page the device wrote. QEMU sends the destination a page
 * again only when it saw it dirty, and a vhost-user backend must mark every
 * page it writes in the log (QEMU docs/interop/vhost-user.rst, "Live
 * migration"). A page the device wrote without marking it keeps, on the
 * destination, whatever QEMU copied before: the payload read there compares
 * wrong. A device write after the guest's CPUs stopped that is not logged is
 * worse: the guest processes the buffer on the destination with a stale
 * header, and the reply is lost.
 *
 * A reply whose ICMP header no longer is one of this program's (the whole
 * frame sits in the device's page when the kernel builds the skb around the
 * receive buffer) is "garbled": corrupt, but not attributable to a round, so
 * its round counts it as missing; the summary's `corrupt` includes the
 * garbled replies and its `lost` excludes them.
 *
 * Prints one line per round (when its replies are read), the first wrong
 * byte of each corrupt reply, and a summary:
 *   migcheck: round=3 sent=16 verified=16 corrupt=0 lost=0 late=0 at 4.51 s
 *   migcheck: corrupt round=7 seq=113 len=1400 offset=120 got=0x00 want=0x5c bytes_wrong=1280
 *   migcheck: done rounds=40 sent=640 verified=640 corrupt=0 lost=0 late=0 bad_rounds=0 garbled=0
 * Exit status: 0 all verified, 1 corrupt or lost replies, 2 bad usage or a
 * socket error. Needs root (raw socket). */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/icmp.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_BURST 64
#define MAX_SIZE 1472
/* Rounds in flight (sent, replies not yet read). */
#define WINDOW 128
/* How long after its hold a round waits for replies still missing. */
#define REPLY_WAIT_S 2.0

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double uptime_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_BOOTTIME, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The payload of request number n: xorshift32 from a seed of n. */
static void fill(uint8_t *p, unsigned size, uint32_t n) {
  uint32_t x = n * 0x9E3779B1u ^ 0x2545F491u;
  if (x == 0) x = 1;
  for (unsigned i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    p[i] = (uint8_t)x;
  }
}

static uint16_t checksum(const uint8_t *p, unsigned len) {
  uint32_t sum = 0;
  for (unsigned i = 0; i + 1 < len; i += 2) sum += (uint32_t)p[i] << 8 | p[i + 1];
  if (len & 1) sum += (uint32_t)p[len - 1] << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return (uint16_t)~sum;
}

struct round {
  uint32_t first; /* request number of its first request */
  unsigned sent, verified, corrupt;
  double sent_at;
  uint8_t seen[MAX_BURST];
};

static struct round rounds[WINDOW];
static uint32_t next_round = 1, oldest = 1; /* rounds [oldest, next_round) are in flight */
static unsigned burst, size;
static unsigned long total_sent, total_ok, total_corrupt, total_lost, total_late, bad_rounds,
    garbled;
static uint16_t id;
static uint8_t want[MAX_SIZE];

static struct round *slot(uint32_t r) { return &rounds[r % WINDOW]; }

/* Check one reply against what was sent; replies of rounds already done are late. */
static void verify(const uint8_t *icmp, unsigned len) {
  const struct icmphdr *h = (const struct icmphdr *)icmp;
  if (h->type != ICMP_ECHOREPLY || ntohs(h->un.echo.id) != id) {
    /* The socket only takes echo replies (ICMP_FILTER) and only this program
     * sends echo requests, so the kernel saw one of ours here when it queued
     * it: its header changed since, in the page the device wrote. */
    if (garbled++ < 5) {
      printf("migcheck: garbled len=%u type=%u code=%u id=%u seq=%u\n", len, h->type, h->code,
             ntohs(h->un.echo.id), ntohs(h->un.echo.sequence));
    }
    return;
  }
  uint16_t seq = ntohs(h->un.echo.sequence);
  /* The request number: the one in flight whose low 16 bits are seq. */
  uint32_t base = slot(oldest)->first;
  uint32_t n = base + (uint16_t)(seq - (uint16_t)base);
  uint32_t r = oldest + (n - base) / burst;
  if (oldest == next_round || r >= next_round) {
    total_late++;
    printf("migcheck: late seq=%u\n", seq);
    return;
  }
  struct round *rd = slot(r);
  unsigned i = n - rd->first;
  if (rd->seen[i]) return; /* a duplicate */
  rd->seen[i] = 1;
  const uint8_t *got = icmp + 8;
  unsigned plen = len - 8;
  fill(want, size, n);
  unsigned wrong = plen == size ? 0 : size, first = plen < size ? plen : 0;
  for (unsigned b = 0; b < size && b < plen; b++) {
    if (got[b] != want[b]) {
      if (wrong == 0) first = b;
      wrong++;
    }
  }
  if (wrong == 0) {
    rd->verified++;
    return;
  }
  rd->corrupt++;
  printf("migcheck: corrupt round=%u seq=%u len=%u offset=%u got=0x%02x want=0x%02x "
         "bytes_wrong=%u\n",
         r, seq, plen, first, first < plen ? got[first] : 0, want[first], wrong);
}

/* Print the oldest round's line and retire it. */
static void retire(void) {
  struct round *rd = slot(oldest);
  unsigned lost = rd->sent - rd->verified - rd->corrupt;
  printf("migcheck: round=%u sent=%u verified=%u corrupt=%u lost=%u late=%lu at %.2f s\n",
         oldest, rd->sent, rd->verified, rd->corrupt, lost, total_late, uptime_s());
  total_ok += rd->verified;
  total_corrupt += rd->corrupt;
  total_lost += lost;
  if (rd->corrupt || lost || rd->sent != burst) bad_rounds++;
  oldest++;
}

int main(int argc, char **argv) {
  if (argc != 7) {
    fprintf(stderr, "usage: migcheck PEER SECONDS BURST INTERVAL_MS HOLD_MS SIZE\n");
    return 2;
  }
  struct sockaddr_in peer = {.sin_family = AF_INET};
  if (inet_pton(AF_INET, argv[1], &peer.sin_addr) != 1) {
    fprintf(stderr, "migcheck: %s is not an IPv4 address\n", argv[1]);
    return 2;
  }
  double seconds = atof(argv[2]);
  burst = (unsigned)atoi(argv[3]);
  double interval = atoi(argv[4]) / 1000.0, hold = atoi(argv[5]) / 1000.0;
  size = (unsigned)atoi(argv[6]);
  if (seconds <= 0 || burst < 1 || burst > MAX_BURST || interval <= 0 || hold < 0 ||
      hold / interval > WINDOW - 2 || size < 16 || size > MAX_SIZE) {
    fprintf(stderr, "migcheck: SECONDS > 0, BURST 1..%d, HOLD_MS/INTERVAL_MS < %d, SIZE 16..%d\n",
            MAX_BURST, WINDOW - 2, MAX_SIZE);
    return 2;
  }
  int fd = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
  if (fd < 0) {
    perror("migcheck: socket(AF_INET, SOCK_RAW, IPPROTO_ICMP) (run as root)");
    return 2;
  }
  /* Only echo replies reach this socket. */
  struct icmp_filter filter = {.data = ~(1u << ICMP_ECHOREPLY)};
  if (setsockopt(fd, SOL_RAW, ICMP_FILTER, &filter, sizeof filter) != 0) {
    perror("migcheck: ICMP_FILTER");
    return 2;
  }
  /* Room for every reply held unread (each one's truesize is a few KiB). */
  int rcvbuf = 32 << 20;
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) != 0 &&
      setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf) != 0) {
    perror("migcheck: SO_RCVBUF");
    return 2;
  }
  id = (uint16_t)getpid();
  static uint8_t packet[8 + MAX_SIZE], reply[65536];
  uint32_t number = 0;
  double start = now_s(), next_send = start;
  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("migcheck: start peer=%s burst=%u interval_ms=%s hold_ms=%s size=%u seconds=%.1f "
         "at %.2f s\n",
         argv[1], burst, argv[4], argv[5], size, seconds, uptime_s());
  while (1) {
    double now = now_s();
    int sending = now - start < seconds;
    if (!sending && oldest == next_round) break;
    if (sending && now >= next_send) {
      struct round *rd = slot(next_round);
      memset(rd, 0, sizeof *rd);
      rd->first = number;
      rd->sent_at = now;
      for (unsigned i = 0; i < burst; i++, number++) {
        struct icmphdr *h = (struct icmphdr *)packet;
        memset(h, 0, sizeof *h);
        h->type = ICMP_ECHO;
        h->un.echo.id = htons(id);
        h->un.echo.sequence = htons((uint16_t)number);
        fill(packet + 8, size, number);
        h->checksum = htons(checksum(packet, 8 + size));
        if (sendto(fd, packet, 8 + size, 0, (struct sockaddr *)&peer, sizeof peer) ==
            (ssize_t)(8 + size)) {
          rd->sent++;
        } else {
          printf("migcheck: send round=%u seq=%u failed: %s\n", next_round, (uint16_t)number,
                 strerror(errno));
        }
      }
      total_sent += rd->sent;
      next_round++;
      next_send += interval;
      continue;
    }
    /* The oldest round's hold is over: read until it is complete or its wait ends. */
    if (oldest != next_round && now >= slot(oldest)->sent_at + hold) {
      struct round *rd = slot(oldest);
      if (rd->verified + rd->corrupt >= rd->sent ||
          now >= rd->sent_at + hold + REPLY_WAIT_S) {
        retire();
        continue;
      }
      struct pollfd pfd = {.fd = fd, .events = POLLIN};
      double until = rd->sent_at + hold + REPLY_WAIT_S;
      if (sending && next_send < until) until = next_send;
      int ms = (int)((until - now) * 1000) + 1;
      if (poll(&pfd, 1, ms) > 0) {
        ssize_t n = recv(fd, reply, sizeof reply, MSG_DONTWAIT);
        if (n > 0) {
          unsigned ihl = (reply[0] & 0x0f) * 4;
          if ((size_t)n >= ihl + 8) verify(reply + ihl, (unsigned)n - ihl);
        }
      }
      continue;
    }
    /* Nothing due: sleep until the next send or the oldest round's hold ends. */
    double until = oldest != next_round ? slot(oldest)->sent_at + hold : next_send;
    if (sending && next_send < until) until = next_send;
    if (until > now) {
      double d = until - now;
      struct timespec ts = {(time_t)d, (long)((d - (time_t)d) * 1e9)};
      nanosleep(&ts, NULL);
    }
  }
  /* A garbled reply left its round one reply short: it was not lost. */
  unsigned long lost = total_lost > garbled ? total_lost - garbled : 0;
  printf("migcheck: done rounds=%u sent=%lu verified=%lu corrupt=%lu lost=%lu late=%lu "
         "bad_rounds=%lu garbled=%lu\n",
         next_round - 1, total_sent, total_ok, total_corrupt + garbled, lost, total_late,
         bad_rounds, garbled);
  return total_corrupt || garbled || lost ? 1 : 0;
}
