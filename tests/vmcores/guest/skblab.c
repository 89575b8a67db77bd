/*
 * skblab: the lab guest's helper.  Statically linked, runs in the initramfs.
 *
 *   skblab tun NAME DIR [--queues N] [--mq] [--comm COMM]   create a tap device and hold its queues
 *   skblab tap DEVPATH DIR [--queues N] [--comm COMM]       open a macvtap/ipvtap char device and hold it
 *   skblab send IFNAME COUNT [--start SEQ] [--pace N] [--forever]
 *                                                           send COUNT test frames through AF_PACKET
 *
 * A holder writes DIR/pid when its queues are open and then serves one-line commands from the FIFO
 * DIR/ctl, answering each with one line on the FIFO DIR/reply:
 *   info FILE          write "queue I fd FD" lines (and "pid"/"comm") to FILE
 *   read I N           read up to N frames from queue I (non-blocking), log them to DIR/consumed
 *   disable I          TUNSETQUEUE IFF_DETACH_QUEUE on queue I
 *   consume I USEC     fork a child that keeps reading queue I, sleeping USEC between reads
 *   drain FILE         read every queue until empty; write "queue I fd FD frame LEN HEX" lines to FILE
 *   vhost-attach I     make a new vhost-net instance use queue I (RX vring without buffers: it takes a batch)
 *   vhost-detach       remove that backend (vhost puts its batch back into the ring)
 *   exit
 *
 * Frames are deterministic functions of their sequence number (see build_frame) so that tests can
 * recognise them; every frame carries the magic "SKBLAB" and its sequence number.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>

#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <linux/vhost.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <signal.h>
#include <stdarg.h>
#include <net/if.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define MAXQ 16
#define FRAME_MAX 2048

static int qfd[MAXQ];
static int nq;
static char dir[256];

static void die(const char *what)
{
	fprintf(stderr, "skblab: %s: %s\n", what, strerror(errno));
	exit(1);
}

/* ---- frames ----------------------------------------------------------------------------------- */

static uint16_t csum(const void *data, size_t len)
{
	const uint8_t *p = data;
	uint32_t sum = 0;
	for (size_t i = 0; i + 1 < len; i += 2)
		sum += (uint32_t)p[i] << 8 | p[i + 1];
	if (len & 1)
		sum += (uint32_t)p[len - 1] << 8;
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

static size_t put_payload(uint8_t *p, uint32_t seq)
{
	size_t n = 18 + (seq * 37) % 160;
	memcpy(p, "SKBLAB", 6);
	p[6] = seq >> 24; p[7] = seq >> 16; p[8] = seq >> 8; p[9] = seq;
	for (size_t i = 10; i < n; i++)
		p[i] = (uint8_t)(seq + i);
	return n;
}

static size_t ipv4(uint8_t *p, uint32_t seq, uint8_t proto)
{
	uint8_t *l4 = p + 20;
	size_t l4len;
	if (proto == 17) {
		size_t pl = put_payload(l4 + 8, seq);
		l4len = 8 + pl;
		l4[0] = (1000 + seq % 4096) >> 8; l4[1] = (1000 + seq % 4096) & 0xff;
		l4[2] = 5000 >> 8; l4[3] = 5000 & 0xff;
		l4[4] = l4len >> 8; l4[5] = l4len & 0xff; l4[6] = 0; l4[7] = 0;
	} else if (proto == 6) {
		size_t pl = put_payload(l4 + 20, seq);
		l4len = 20 + pl;
		memset(l4, 0, 20);
		l4[0] = (2000 + seq % 4096) >> 8; l4[1] = (2000 + seq % 4096) & 0xff;
		l4[2] = 0; l4[3] = 80;
		l4[4] = seq >> 24; l4[5] = seq >> 16; l4[6] = seq >> 8; l4[7] = seq;
		l4[12] = 5 << 4; l4[13] = 0x02; /* SYN */
		l4[14] = 0xff; l4[15] = 0xff;
	} else { /* ICMP echo */
		size_t pl = put_payload(l4 + 8, seq);
		l4len = 8 + pl;
		l4[0] = 8; l4[1] = 0; l4[2] = 0; l4[3] = 0;
		l4[4] = 0x12; l4[5] = 0x34; l4[6] = seq >> 8; l4[7] = seq;
		uint16_t c = csum(l4, l4len);
		l4[2] = c >> 8; l4[3] = c & 0xff;
	}
	size_t tot = 20 + l4len;
	p[0] = 0x45; p[1] = 0; p[2] = tot >> 8; p[3] = tot & 0xff;
	p[4] = seq >> 8; p[5] = seq; p[6] = 0x40; p[7] = 0; p[8] = 64; p[9] = proto;
	p[10] = p[11] = 0;
	p[12] = 10; p[13] = 0; p[14] = (seq >> 8) & 0xff; p[15] = (seq & 0xff) | 1;
	p[16] = 10; p[17] = 1; p[18] = 0; p[19] = 1;
	uint16_t c = csum(p, 20);
	p[10] = c >> 8; p[11] = c & 0xff;
	return tot;
}

static size_t ipv6(uint8_t *p, uint32_t seq, uint8_t nh)
{
	uint8_t *l4 = p + 40;
	size_t pl = put_payload(l4 + 8, seq), l4len = 8 + pl;
	if (nh == 17) {
		l4[0] = (3000 + seq % 4096) >> 8; l4[1] = (3000 + seq % 4096) & 0xff;
		l4[2] = 6000 >> 8; l4[3] = 6000 & 0xff;
		l4[4] = l4len >> 8; l4[5] = l4len & 0xff; l4[6] = 0; l4[7] = 0;
	} else { /* ICMPv6 echo request; checksum left 0, nothing verifies it */
		l4[0] = 128; l4[1] = 0; l4[2] = 0; l4[3] = 0;
		l4[4] = 0x56; l4[5] = 0x78; l4[6] = seq >> 8; l4[7] = seq;
	}
	memset(p, 0, 40);
	p[0] = 0x60; p[1] = (seq & 0xf) << 4; p[2] = 0; p[3] = 0;
	p[4] = l4len >> 8; p[5] = l4len & 0xff; p[6] = nh; p[7] = 64;
	p[8] = 0xfd; p[9] = 0x00; p[22] = seq >> 8; p[23] = seq | 1;
	p[24] = 0xfd; p[25] = 0x01; p[39] = 1;
	return 40 + l4len;
}

/* Build frame number seq: broadcast destination, kind chosen by seq % 7. */
static size_t build_frame(uint8_t *f, uint32_t seq)
{
	size_t n;
	memset(f, 0xff, 6);
	f[6] = 0x02; f[7] = 0x5b; f[8] = 0x1a; f[9] = 0xb0; f[10] = seq >> 8; f[11] = seq;
	switch (seq % 7) {
	case 0: f[12] = 0x08; f[13] = 0x00; n = 14 + ipv4(f + 14, seq, 17); break;
	case 1: f[12] = 0x08; f[13] = 0x00; n = 14 + ipv4(f + 14, seq, 6); break;
	case 2: f[12] = 0x08; f[13] = 0x00; n = 14 + ipv4(f + 14, seq, 1); break;
	case 3: { /* ARP request who-has 10.1.0.1 */
		uint8_t *a = f + 14;
		f[12] = 0x08; f[13] = 0x06;
		a[0] = 0; a[1] = 1; a[2] = 8; a[3] = 0; a[4] = 6; a[5] = 4; a[6] = 0; a[7] = 1;
		memcpy(a + 8, f + 6, 6);
		a[14] = 10; a[15] = 0; a[16] = seq >> 8; a[17] = seq | 1;
		memset(a + 18, 0, 6);
		a[24] = 10; a[25] = 1; a[26] = 0; a[27] = 1;
		n = 14 + 28;
		break;
	}
	case 4: /* 802.1Q VLAN 100 + IPv4/UDP */
		f[12] = 0x81; f[13] = 0x00; f[14] = 0x00; f[15] = 100; f[16] = 0x08; f[17] = 0x00;
		n = 18 + ipv4(f + 18, seq, 17);
		break;
	case 5: f[12] = 0x86; f[13] = 0xdd; n = 14 + ipv6(f + 14, seq, 17); break;
	default: f[12] = 0x86; f[13] = 0xdd; n = 14 + ipv6(f + 14, seq, 58); break;
	}
	if (n < 60) { /* pad to the Ethernet minimum */
		memset(f + n, 0, 60 - n);
		n = 60;
	}
	return n;
}

static int cmd_send(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: skblab send IFNAME COUNT [--start SEQ] [--pace N] [--forever]\n");
		return 2;
	}
	const char *ifname = argv[2];
	long count = atol(argv[3]), start = 0, pace = 0;
	int forever = 0;
	for (int i = 4; i < argc; i++) {
		if (!strcmp(argv[i], "--start") && i + 1 < argc) start = atol(argv[++i]);
		else if (!strcmp(argv[i], "--pace") && i + 1 < argc) pace = atol(argv[++i]);
		else if (!strcmp(argv[i], "--forever")) forever = 1;
	}
	int s = socket(AF_PACKET, SOCK_RAW, 0);
	if (s < 0) die("socket");
	int one = 1;
	/* Straight to the driver's ndo_start_xmit: no qdisc in between, so every frame reaches the ring. */
	setsockopt(s, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one));
	struct sockaddr_ll sll = {.sll_family = AF_PACKET, .sll_ifindex = (int)if_nametoindex(ifname),
				  .sll_halen = 6};
	if (!sll.sll_ifindex) die(ifname);
	uint8_t f[FRAME_MAX];
	long sent = 0, refused = 0;
	for (long seq = start; forever || seq < start + count; seq++) {
		size_t n = build_frame(f, (uint32_t)seq);
		memcpy(sll.sll_addr, f, 6);
		if (sendto(s, f, n, 0, (struct sockaddr *)&sll, sizeof(sll)) < 0) {
			/* The driver refused the frame (tun_net_xmit returns NET_XMIT_DROP when the ring is full,
			 * veth when the peer's backlog is): it was dropped, count it and go on. */
			if (errno != ENOBUFS)
				die("sendto");
			refused++;
		} else {
			sent++;
		}
		if (pace && (sent + refused) % pace == 0)
			usleep(forever ? 20000 : 2000);
	}
	printf("%s sent %ld refused %ld\n", ifname, sent, refused);
	return 0;
}

/* ---- holders ---------------------------------------------------------------------------------- */

static void path(char *buf, size_t len, const char *name)
{
	snprintf(buf, len, "%s/%s", dir, name);
}

static void reply(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void reply(const char *fmt, ...)
{
	char p[300];
	path(p, sizeof(p), "reply");
	FILE *f = fopen(p, "w");
	if (!f) die("open reply");
	va_list ap;
	va_start(ap, fmt);
	vfprintf(f, fmt, ap);
	va_end(ap);
	fputc('\n', f);
	fclose(f);
}

static void hex(FILE *out, const uint8_t *b, ssize_t n)
{
	for (ssize_t i = 0; i < n; i++)
		fprintf(out, "%02x", b[i]);
}

/* Read up to max frames from queue i without blocking; log each to out. Returns the count. */
static long read_queue(int i, long max, FILE *out)
{
	uint8_t buf[65536];
	long n = 0;
	int fl = fcntl(qfd[i], F_GETFL);
	fcntl(qfd[i], F_SETFL, fl | O_NONBLOCK);
	while (max < 0 || n < max) {
		ssize_t r = read(qfd[i], buf, sizeof(buf));
		if (r < 0) {
			if (errno != EAGAIN && out)
				fprintf(out, "queue %d fd %d error %d\n", i, qfd[i], errno);
			break;
		}
		if (out) {
			fprintf(out, "queue %d fd %d frame %zd ", i, qfd[i], r);
			hex(out, buf, r);
			fputc('\n', out);
		}
		n++;
	}
	fcntl(qfd[i], F_SETFL, fl);
	return n;
}

/* ---- vhost-net -------------------------------------------------------------------------------- */

static int vhost_fd = -1;
static int vhost_queue = -1;

/* Make a vhost-net instance use queue i as its RX backend, with an RX vring that has no buffers posted:
 * vhost's handle_rx then takes a batch of up to 64 entries from the ring into its rxq and stops, as
 * when a guest does not post receive buffers.  "vhost-detach" gives them back (ptr_ring_unconsume). */
static int vhost_attach(int i)
{
	const unsigned num = 256;
	size_t size = 1 << 20;
	void *mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (mem == MAP_FAILED)
		return -errno;
	memset(mem, 0, size);
	int fd = open("/dev/vhost-net", O_RDWR);
	if (fd < 0)
		return -errno;
	if (ioctl(fd, VHOST_SET_OWNER) < 0)
		return -errno;
	uint64_t features = 0;
	if (ioctl(fd, VHOST_SET_FEATURES, &features) < 0)
		return -errno;
	struct vhost_memory *vm = calloc(1, sizeof(*vm) + sizeof(struct vhost_memory_region));
	vm->nregions = 1;
	vm->regions[0].guest_phys_addr = (uintptr_t)mem;
	vm->regions[0].memory_size = size;
	vm->regions[0].userspace_addr = (uintptr_t)mem;
	if (ioctl(fd, VHOST_SET_MEM_TABLE, vm) < 0)
		return -errno;
	for (unsigned idx = 0; idx < 2; idx++) {
		char *base = (char *)mem + idx * (size / 2);
		struct vhost_vring_state st = {.index = idx, .num = num};
		if (ioctl(fd, VHOST_SET_VRING_NUM, &st) < 0)
			return -errno;
		st.num = 0;
		if (ioctl(fd, VHOST_SET_VRING_BASE, &st) < 0)
			return -errno;
		struct vhost_vring_addr addr = {
			.index = idx,
			.desc_user_addr = (uintptr_t)base,
			.avail_user_addr = (uintptr_t)(base + 16 * num),
			.used_user_addr = (uintptr_t)(base + 65536),
		};
		if (ioctl(fd, VHOST_SET_VRING_ADDR, &addr) < 0)
			return -errno;
		struct vhost_vring_file kick = {.index = idx, .fd = eventfd(0, 0)};
		if (ioctl(fd, VHOST_SET_VRING_KICK, &kick) < 0)
			return -errno;
		struct vhost_vring_file call = {.index = idx, .fd = eventfd(0, 0)};
		if (ioctl(fd, VHOST_SET_VRING_CALL, &call) < 0)
			return -errno;
	}
	struct vhost_vring_file be = {.index = 0, .fd = qfd[i]};
	if (ioctl(fd, VHOST_NET_SET_BACKEND, &be) < 0)
		return -errno;
	vhost_fd = fd;
	vhost_queue = i;
	return fd;
}

static int vhost_detach(void)
{
	struct vhost_vring_file be = {.index = 0, .fd = -1};
	if (vhost_fd < 0)
		return -EINVAL;
	if (ioctl(vhost_fd, VHOST_NET_SET_BACKEND, &be) < 0)
		return -errno;
	return 0;
}

static void serve(const char *comm)
{
	char p[300], line[512];
	path(p, sizeof(p), "ctl");
	mkfifo(p, 0600);
	int ctl = open(p, O_RDWR);
	if (ctl < 0) die("open ctl");
	path(p, sizeof(p), "reply");
	mkfifo(p, 0600);
	FILE *in = fdopen(ctl, "r");
	path(p, sizeof(p), "pid");
	FILE *pf = fopen(p, "w");
	fprintf(pf, "%d\n", getpid());
	fclose(pf);
	signal(SIGCHLD, SIG_IGN);
	while (fgets(line, sizeof(line), in)) {
		char arg[300] = "";
		int i = 0;
		long n = 0;
		if (sscanf(line, "info %299s", arg) == 1) {
			FILE *o = fopen(arg, "w");
			fprintf(o, "pid %d\ncomm %s\n", getpid(), comm);
			for (int q = 0; q < nq; q++)
				fprintf(o, "queue %d fd %d\n", q, qfd[q]);
			if (vhost_fd >= 0)
				fprintf(o, "vhost %d fd %d\n", vhost_queue, vhost_fd);
			fclose(o);
			reply("ok");
		} else if (sscanf(line, "read %d %ld", &i, &n) == 2 && i < nq) {
			path(p, sizeof(p), "consumed");
			FILE *o = fopen(p, "a");
			long got = read_queue(i, n, o);
			fclose(o);
			reply("ok %ld", got);
		} else if (sscanf(line, "disable %d", &i) == 1 && i < nq) {
			struct ifreq ifr = {.ifr_flags = IFF_DETACH_QUEUE};
			if (ioctl(qfd[i], TUNSETQUEUE, &ifr) < 0)
				reply("error %d", errno);
			else
				reply("ok");
		} else if (sscanf(line, "consume %d %ld", &i, &n) == 2 && i < nq) {
			pid_t c = fork();
			if (c == 0) {
				prctl(PR_SET_NAME, "skblab-reader");
				for (;;) {
					read_queue(i, 4, NULL);
					usleep(n);
				}
			}
			reply("ok %d", c);
		} else if (sscanf(line, "drain %299s", arg) == 1) {
			FILE *o = fopen(arg, "w");
			long total = 0;
			for (int q = 0; q < nq; q++)
				total += read_queue(q, -1, o);
			fclose(o);
			reply("ok %ld", total);
		} else if (sscanf(line, "vhost-attach %d", &i) == 1 && i < nq) {
			int r = vhost_attach(i);
			if (r < 0)
				reply("error %d", -r);
			else
				reply("ok %d", r);
		} else if (!strncmp(line, "vhost-detach", 12)) {
			int r = vhost_detach();
			if (r < 0)
				reply("error %d", -r);
			else
				reply("ok");
		} else if (!strncmp(line, "exit", 4)) {
			reply("ok");
			exit(0);
		} else {
			reply("error bad command");
		}
	}
}

static int holder(int argc, char **argv, int is_tun)
{
	if (argc < 4) {
		fprintf(stderr, "usage: skblab %s NAME DIR [--queues N] [--mq] [--comm COMM]\n", argv[1]);
		return 2;
	}
	const char *name = argv[2], *comm = is_tun ? "tun-holder" : "tap-holder";
	int queues = 1, mq = 0;
	snprintf(dir, sizeof(dir), "%s", argv[3]);
	for (int i = 4; i < argc; i++) {
		if (!strcmp(argv[i], "--queues") && i + 1 < argc) queues = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--mq")) mq = 1;
		else if (!strcmp(argv[i], "--comm") && i + 1 < argc) comm = argv[++i];
	}
	if (queues < 1 || queues > MAXQ) {
		fprintf(stderr, "skblab: bad queue count\n");
		return 2;
	}
	prctl(PR_SET_NAME, comm);
	mkdir(dir, 0700);
	for (nq = 0; nq < queues; nq++) {
		int fd = open(is_tun ? "/dev/net/tun" : name, O_RDWR);
		if (fd < 0) die(is_tun ? "/dev/net/tun" : name);
		if (is_tun) {
			struct ifreq ifr = {0};
			ifr.ifr_flags = IFF_TAP | IFF_NO_PI | (mq ? IFF_MULTI_QUEUE : 0);
			snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
			if (ioctl(fd, TUNSETIFF, &ifr) < 0) die("TUNSETIFF");
		}
		qfd[nq] = fd;
	}
	serve(comm);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 2 && !strcmp(argv[1], "send"))
		return cmd_send(argc, argv);
	if (argc >= 2 && !strcmp(argv[1], "tun"))
		return holder(argc, argv, 1);
	if (argc >= 2 && !strcmp(argv[1], "tap"))
		return holder(argc, argv, 0);
	fprintf(stderr, "usage: skblab send|tun|tap ...\n");
	return 2;
}
