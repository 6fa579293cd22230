/* The raw limit for Cohort's transport benchmark: the same one-way pattern written directly
 * against libzmq. A DEALER sends COUNT messages of SIZE bytes zero-copy from one buffer, all in
 * flight (high-water marks unlimited), to a ROUTER on tcp loopback that receives and releases
 * each; sender and receiver each have their own context and I/O thread, as in the Swift run.
 *
 *   raw-zmq-bench SIZE COUNT MALLOC CURVE      MALLOC: plain | tuned   CURVE: 0 | 1
 * prints: bytes/second (one line)
 *
 * "tuned" is what Cohort's daemons do: mallopt(M_MMAP_MAX, 0), M_TRIM_THRESHOLD 1 GiB and
 * M_ARENA_MAX 1, so glibc does not mmap/munmap each large receive buffer (libzmq allocates them
 * on its I/O thread, whose arena would mmap anything of 64 MiB or more regardless). */
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

static size_t size, count;
static int curve;
static char endpoint[256];
static char server_public[41], server_secret[41];
static pthread_mutex_t bound_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t bound_cond = PTHREAD_COND_INITIALIZER;
static int bound;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void check(int rc, const char *what) {
    if (rc < 0) { fprintf(stderr, "%s: %s\n", what, zmq_strerror(zmq_errno())); exit(1); }
}

static void no_free(void *data, void *hint) { (void)data; (void)hint; }

static void *receiver(void *arg) {
    double *elapsed_end = arg;
    void *ctx = zmq_ctx_new();
    void *s = zmq_socket(ctx, ZMQ_ROUTER);
    int zero = 0;
    zmq_setsockopt(s, ZMQ_RCVHWM, &zero, sizeof zero);
    zmq_setsockopt(s, ZMQ_SNDHWM, &zero, sizeof zero);
    if (curve) {
        int one = 1;
        zmq_setsockopt(s, ZMQ_CURVE_SERVER, &one, sizeof one);
        zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, server_secret, 40);
    }
    check(zmq_bind(s, "tcp://127.0.0.1:0"), "bind");
    size_t len = sizeof endpoint;
    zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, endpoint, &len);
    pthread_mutex_lock(&bound_lock);
    bound = 1;
    pthread_cond_signal(&bound_cond);
    pthread_mutex_unlock(&bound_lock);

    zmq_msg_t msg;
    /* warm-up message: identity + 1 byte */
    for (int i = 0; i < 2; i++) { zmq_msg_init(&msg); check(zmq_msg_recv(&msg, s, 0), "recv"); zmq_msg_close(&msg); }
    for (size_t i = 0; i < count; i++) {
        zmq_msg_init(&msg); check(zmq_msg_recv(&msg, s, 0), "recv identity"); zmq_msg_close(&msg);
        zmq_msg_init(&msg); check(zmq_msg_recv(&msg, s, 0), "recv payload");
        if (zmq_msg_size(&msg) != size) { fprintf(stderr, "bad size\n"); exit(1); }
        zmq_msg_close(&msg);
    }
    *elapsed_end = now();
    zmq_close(s);
    zmq_ctx_term(ctx);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 5) { fprintf(stderr, "usage: raw-zmq-bench SIZE COUNT plain|tuned 0|1\n"); return 2; }
    size = strtoull(argv[1], NULL, 10);
    count = strtoull(argv[2], NULL, 10);
    if (strcmp(argv[3], "tuned") == 0) { mallopt(M_MMAP_MAX, 0); mallopt(M_TRIM_THRESHOLD, 1 << 30); mallopt(M_ARENA_MAX, 1); }
    curve = atoi(argv[4]);
    char client_public[41], client_secret[41];
    if (curve) { zmq_curve_keypair(server_public, server_secret); zmq_curve_keypair(client_public, client_secret); }

    double end = 0;
    pthread_t t;
    pthread_create(&t, NULL, receiver, &end);
    pthread_mutex_lock(&bound_lock);
    while (!bound) pthread_cond_wait(&bound_cond, &bound_lock);
    pthread_mutex_unlock(&bound_lock);

    void *ctx = zmq_ctx_new();
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(s, ZMQ_SNDHWM, &zero, sizeof zero);
    zmq_setsockopt(s, ZMQ_RCVHWM, &zero, sizeof zero);
    if (curve) {
        zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, server_public, 40);
        zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, client_public, 40);
        zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, client_secret, 40);
    }
    check(zmq_connect(s, endpoint), "connect");
    char *buffer = malloc(size);
    for (size_t i = 0; i < size; i++) buffer[i] = (char)(i * 31);
    check(zmq_send(s, "w", 1, 0), "warm-up");
    /* let the warm-up land so the timed part excludes connection set-up */
    struct timespec pause = {0, 100 * 1000 * 1000};
    nanosleep(&pause, NULL);

    double start = now();
    for (size_t i = 0; i < count; i++) {
        zmq_msg_t msg;
        zmq_msg_init_data(&msg, buffer, size, no_free, NULL);
        check(zmq_msg_send(&msg, s, 0), "send");
    }
    pthread_join(t, NULL);
    printf("%.0f\n", (double)size * count / (end - start));
    zmq_close(s);
    zmq_ctx_term(ctx);
    free(buffer);
    return 0;
}
