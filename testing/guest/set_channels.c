/* set_channels IFNAME N [xps0]: set IFNAME's combined channel count to N
 * through the ethtool ioctl (ETHTOOL_GCHANNELS / ETHTOOL_SCHANNELS), as
 * `ethtool -L IFNAME combined N` does, and print the count read back.
 * With "xps0", every online CPU then transmits on queue 0 only (tx-0's
 * xps_cpus gets all CPUs, the other queues none).
 * Exit status: 0 done, 1 the ioctl or the read-back failed, 2 bad usage. */
#include <errno.h>
#include <linux/ethtool.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

static int channels(int fd, const char *ifname, unsigned cmd, struct ethtool_channels *ch) {
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  strncpy(ifr.ifr_name, ifname, IFNAMSIZ - 1);
  ch->cmd = cmd;
  ifr.ifr_data = (void *)ch;
  return ioctl(fd, SIOCETHTOOL, &ifr);
}

static int write_xps(const char *ifname, unsigned queue, unsigned long mask) {
  char path[128];
  snprintf(path, sizeof path, "/sys/class/net/%s/queues/tx-%u/xps_cpus", ifname, queue);
  FILE *f = fopen(path, "w");
  if (!f) return -1;
  int ok = fprintf(f, "%lx\n", mask) > 0;
  return (fclose(f) == 0 && ok) ? 0 : -1;
}

int main(int argc, char **argv) {
  int xps0 = argc == 4 && strcmp(argv[3], "xps0") == 0;
  char *end;
  unsigned long n = argc >= 3 ? strtoul(argv[2], &end, 10) : 0;
  if (argc < 3 || argc > 4 || (argc == 4 && !xps0) || *end != '\0' || n < 1) {
    fprintf(stderr, "usage: set_channels IFNAME N [xps0]\n");
    return 2;
  }
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  struct ethtool_channels ch = {0};
  if (fd < 0 || channels(fd, argv[1], ETHTOOL_GCHANNELS, &ch) < 0) {
    printf("set_channels: %s: ETHTOOL_GCHANNELS failed: %s\n", argv[1], strerror(errno));
    return 1;
  }
  unsigned before = ch.combined_count;
  ch.combined_count = (unsigned)n;
  if (channels(fd, argv[1], ETHTOOL_SCHANNELS, &ch) < 0) {
    printf("set_channels: %s: combined %u -> %lu failed: %s (max %u)\n", argv[1], before, n,
           strerror(errno), ch.max_combined);
    return 1;
  }
  memset(&ch, 0, sizeof ch);
  if (channels(fd, argv[1], ETHTOOL_GCHANNELS, &ch) < 0 || ch.combined_count != n) {
    printf("set_channels: %s: combined reads back as %u, not %lu\n", argv[1], ch.combined_count, n);
    return 1;
  }
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  for (unsigned q = 0; xps0 && q < n; q++) {
    if (write_xps(argv[1], q, q == 0 ? (cpus < 64 ? (1UL << cpus) - 1 : ~0UL) : 0) < 0) {
      printf("set_channels: %s: writing tx-%u/xps_cpus failed: %s\n", argv[1], q, strerror(errno));
      return 1;
    }
  }
  printf("set_channels: %s combined %u -> %u (max %u)%s\n", argv[1], before, ch.combined_count,
         ch.max_combined, xps0 ? ", transmit on queue 0" : "");
  return 0;
}
