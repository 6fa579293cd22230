// nfq_delay: a fixed one-way delay for a network namespace without netem.
//
// An iptables rule sends the packets a namespace receives to an NFQUEUE
// (`iptables -t raw -A PREROUTING -i IFACE -j NFQUEUE --queue-num N --queue-bypass`);
// this program binds that queue, notes each packet's id with the time it is due
// (arrival + delay) in a ring, and accepts the packets when their time comes, many at once:
// packets leave the queue in arrival order and the delay is constant, so the due packets are
// always a prefix of the ring and one nfq_set_verdict_batch (accept every id <= the last due
// one) releases them all. It copies no packet data (NFQNL_COPY_META), asks for GSO packets
// whole (NFQA_CFG_F_GSO) and sets fail-open (NFQA_CFG_F_FAIL_OPEN: when the kernel's queue is
// full it accepts instead of dropping). A batch verdict also covers ids whose messages were
// lost to a full socket buffer (ENOBUFS), so no packet is ever stranded in the kernel.
//
// Build: gcc -O2 -o nfq_delay nfq_delay.c -lnetfilter_queue -lnfnetlink
// Run (inside the namespace): nfq_delay --queue 0 --delay-ms 25 [--batch-us 200]
//                                        [--maxlen 16384] [--pidfile FILE] [--rt PRIO]
// SIGUSR1 prints counters to stderr; SIGTERM/SIGINT accept whatever is held and exit 0.

#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <arpa/inet.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <linux/netfilter.h>
#include <libnetfilter_queue/libnetfilter_queue.h>

#ifndef NFQA_CFG_F_FAIL_OPEN
#define NFQA_CFG_F_FAIL_OPEN (1 << 0)
#endif
#ifndef NFQA_CFG_F_GSO
#define NFQA_CFG_F_GSO (1 << 2)
#endif

#define RING_SIZE (1u << 17) // 131072 held packets: 100 Mbit/s x 25 ms is ~210 full-size frames

struct held { uint32_t id; uint64_t due; };

static struct held ring[RING_SIZE];
static uint32_t head, tail; // head: oldest held; tail: next free (both free-running)
static struct nfq_q_handle *qh;
static uint64_t now_ns, delay_ns;
static volatile sig_atomic_t stop, dump;

static struct {
    uint64_t packets, batches, overflow_releases, enobufs, verdict_errors, max_held;
    uint64_t late_ns_max, late_ns_sum;
} st;

static uint64_t monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
    fprintf(stderr, "nfq_delay: %s: %s\n", what, errno ? strerror(errno) : "failed");
    exit(1);
}

// Accepts every held packet up to and including ring index `last` (free-running).
static void release_through(uint32_t last) {
    const struct held *h = &ring[last & (RING_SIZE - 1)];
    if (nfq_set_verdict_batch(qh, h->id, NF_ACCEPT) < 0) st.verdict_errors++;
    st.batches++;
    head = last + 1;
}

static int on_packet(struct nfq_q_handle *q, struct nfgenmsg *msg, struct nfq_data *nfa, void *data) {
    (void)q; (void)msg; (void)data;
    struct nfqnl_msg_packet_hdr *ph = nfq_get_msg_packet_hdr(nfa);
    if (!ph) return 0;
    if (tail - head == RING_SIZE) { release_through(head); st.overflow_releases++; }
    ring[tail & (RING_SIZE - 1)] = (struct held){ ntohl(ph->packet_id), now_ns + delay_ns };
    tail++;
    st.packets++;
    if (tail - head > st.max_held) st.max_held = tail - head;
    return 0;
}

static void print_stats(void) {
    fprintf(stderr,
            "nfq_delay: packets %" PRIu64 ", verdict batches %" PRIu64 " (%.1f packets each), most held %" PRIu64
            ", released early for room %" PRIu64 ", ENOBUFS %" PRIu64 ", verdict errors %" PRIu64
            ", lateness mean %.3f ms max %.3f ms\n",
            st.packets, st.batches, st.batches ? (double)st.packets / st.batches : 0.0, st.max_held,
            st.overflow_releases, st.enobufs, st.verdict_errors,
            st.batches ? st.late_ns_sum / 1e6 / st.batches : 0.0, st.late_ns_max / 1e6);
}

static void on_signal(int sig) {
    if (sig == SIGUSR1) dump = 1; else stop = 1;
}

static double number(const char *s, const char *flag) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || v < 0) {
        fprintf(stderr, "nfq_delay: %s needs a non-negative number, got '%s'\n", flag, s);
        exit(2);
    }
    return v;
}

static void usage(FILE *out) {
    fprintf(out,
            "usage: nfq_delay [--queue N] [--delay-ms MS] [--batch-us US] [--maxlen N] [--pidfile FILE] [--rt PRIO]\n"
            "  holds the packets of NFQUEUE N for MS milliseconds (default 25), then accepts them,\n"
            "  releasing together those due within US microseconds (default 200) of each other.\n");
}

int main(int argc, char **argv) {
    unsigned queue = 0, maxlen = 16384;
    double delay_ms = 25, batch_us = 200;
    const char *pidfile = NULL;
    int rt = 0;
    static const struct option opts[] = {
        {"queue", required_argument, 0, 'q'}, {"delay-ms", required_argument, 0, 'd'},
        {"batch-us", required_argument, 0, 'b'}, {"maxlen", required_argument, 0, 'm'},
        {"pidfile", required_argument, 0, 'p'}, {"rt", required_argument, 0, 'r'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    for (int c; (c = getopt_long(argc, argv, "q:d:b:m:p:r:h", opts, NULL)) != -1;) {
        switch (c) {
        case 'q': queue = (unsigned)number(optarg, "--queue"); break;
        case 'd': delay_ms = number(optarg, "--delay-ms"); break;
        case 'b': batch_us = number(optarg, "--batch-us"); break;
        case 'm': maxlen = (unsigned)number(optarg, "--maxlen"); break;
        case 'p': pidfile = optarg; break;
        case 'r': rt = (int)number(optarg, "--rt"); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc || maxlen == 0) { usage(stderr); return 2; }
    delay_ns = (uint64_t)(delay_ms * 1e6);
    const uint64_t batch_ns = (uint64_t)(batch_us * 1e3);

    struct nfq_handle *h = nfq_open();
    if (!h) die("nfq_open (are you root, with nfnetlink_queue in the kernel?)");
    qh = nfq_create_queue(h, queue, on_packet, NULL);
    if (!qh) die("nfq_create_queue (is another program bound to this queue?)");
    if (nfq_set_mode(qh, NFQNL_COPY_META, 0) < 0) die("nfq_set_mode");
    if (nfq_set_queue_maxlen(qh, maxlen) < 0) die("nfq_set_queue_maxlen");
    if (nfq_set_queue_flags(qh, NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_GSO, NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_GSO) < 0)
        fprintf(stderr, "nfq_delay: warning: the kernel refused fail-open/GSO queue flags: %s\n", strerror(errno));

    int fd = nfq_fd(h);
    int rcvbuf = 16 << 20;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) < 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);

    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0); // wake when asked, not up to 50 us later
    if (rt > 0) {
        struct sched_param sp = {.sched_priority = rt};
        if (sched_setscheduler(0, SCHED_FIFO, &sp) < 0)
            fprintf(stderr, "nfq_delay: warning: SCHED_FIFO %d refused (%s); running at normal priority\n", rt, strerror(errno));
    }

    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (pidfile) {
        FILE *f = fopen(pidfile, "w");
        if (!f) die(pidfile);
        fprintf(f, "%d\n", (int)getpid());
        fclose(f);
    }
    fprintf(stderr, "nfq_delay: queue %u, delay %.3f ms, batch %.0f us, kernel queue %u packets, pid %d\n", queue, delay_ms,
            batch_us, maxlen, (int)getpid());

    static char buf[1 << 16] __attribute__((aligned(8)));
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    while (!stop) {
        if (dump) { dump = 0; print_stats(); }
        struct timespec ts, *tsp = NULL;
        if (head != tail) {
            uint64_t due = ring[head & (RING_SIZE - 1)].due, t = monotonic_ns();
            uint64_t wait = due > t ? due - t : 0;
            ts.tv_sec = (time_t)(wait / 1000000000ull);
            ts.tv_nsec = (long)(wait % 1000000000ull);
            tsp = &ts;
        }
        int n = ppoll(&pfd, 1, tsp, NULL);
        if (n < 0 && errno != EINTR) die("ppoll");
        if (n > 0 && (pfd.revents & POLLIN)) {
            for (;;) { // drain the socket: one netlink message per queued packet
                ssize_t r = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
                if (r < 0) {
                    if (errno == ENOBUFS) { st.enobufs++; continue; } // lost messages; later batch verdicts cover them
                    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) break;
                    die("recv");
                }
                now_ns = monotonic_ns();
                nfq_handle_packet(h, buf, (int)r);
            }
        }
        if (head != tail) {
            uint64_t t = monotonic_ns(), limit = t + batch_ns;
            uint32_t last = head;
            if (ring[head & (RING_SIZE - 1)].due <= limit) {
                uint64_t first_due = ring[head & (RING_SIZE - 1)].due;
                while (last + 1 != tail && ring[(last + 1) & (RING_SIZE - 1)].due <= limit) last++;
                if (t > first_due) {
                    uint64_t late = t - first_due;
                    st.late_ns_sum += late;
                    if (late > st.late_ns_max) st.late_ns_max = late;
                }
                release_through(last);
            }
        }
    }
    if (head != tail) release_through(tail - 1); // let everything held go now
    print_stats();
    nfq_destroy_queue(qh);
    nfq_close(h);
    if (pidfile) unlink(pidfile);
    return 0;
}
