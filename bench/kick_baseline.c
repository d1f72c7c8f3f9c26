/*
 * C baseline of the kick relay latency, for `deno task bench`.
 *
 * A "frontend" thread writes a kick eventfd and timestamps; a "relay" thread
 * blocks in poll() on it, wakes, drains it and timestamps: that is the
 * one-hop latency a C backend calling notify from its relay thread would
 * see. The relay then writes a second eventfd that the frontend thread
 * blocks on: write -> that wake-up is the two-hop latency, which matches
 * the SDK's path (relay Worker -> message -> main thread's notify).
 * Between kicks the frontend spins for the gap, so the relay is asleep in
 * poll() when the next kick comes, as in the TypeScript measurement.
 *
 * Usage: kick_baseline SAMPLES WARMUP GAP_US
 * Prints: {"oneHopUs":[...],"twoHopUs":[...]} (microseconds, one per sample)
 */
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

static int kick_fd, back_fd;
static int total;
static double *wake_at;

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static void *relay(void *arg) {
  (void)arg;
  struct pollfd p = {.fd = kick_fd, .events = POLLIN};
  uint64_t v;
  for (int i = 0; i < total; i++) {
    if (poll(&p, 1, -1) != 1) exit(2);
    wake_at[i] = now_us();
    if (read(kick_fd, &v, 8) != 8) exit(2);
    v = 1;
    if (write(back_fd, &v, 8) != 8) exit(2);
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s SAMPLES WARMUP GAP_US\n", argv[0]);
    return 2;
  }
  int samples = atoi(argv[1]), warmup = atoi(argv[2]);
  double gap = atof(argv[3]);
  total = samples + warmup;
  kick_fd = eventfd(0, 0);
  back_fd = eventfd(0, 0);
  wake_at = calloc(total, sizeof(double));
  double *write_at = calloc(total, sizeof(double));
  double *back_at = calloc(total, sizeof(double));
  if (kick_fd < 0 || back_fd < 0 || !wake_at || !write_at || !back_at) return 2;
  pthread_t t;
  if (pthread_create(&t, NULL, relay, NULL) != 0) return 2;
  struct pollfd p = {.fd = back_fd, .events = POLLIN};
  uint64_t v;
  for (int i = 0; i < total; i++) {
    double until = now_us() + gap;
    while (now_us() < until) {
    }
    write_at[i] = now_us();
    v = 1;
    if (write(kick_fd, &v, 8) != 8) return 2;
    if (poll(&p, 1, -1) != 1) return 2;
    back_at[i] = now_us();
    if (read(back_fd, &v, 8) != 8) return 2;
  }
  pthread_join(t, NULL);
  printf("{\"oneHopUs\":[");
  for (int i = warmup; i < total; i++) {
    printf("%s%.3f", i > warmup ? "," : "", wake_at[i] - write_at[i]);
  }
  printf("],\"twoHopUs\":[");
  for (int i = warmup; i < total; i++) {
    printf("%s%.3f", i > warmup ? "," : "", back_at[i] - write_at[i]);
  }
  printf("]}\n");
  return 0;
}
