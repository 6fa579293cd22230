#ifndef COHORT_CZEROMQ_SHIM_H
#define COHORT_CZEROMQ_SHIM_H
#include <zmq.h>
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <string.h>

/* errno is a macro on glibc; Swift cannot read it directly in every context. */
static inline int cohort_errno(void) { return errno; }

/* mallopt's parameters are macros; exposed as one function so Swift can call it.
   M_ARENA_MAX 1: glibc's per-thread arenas mmap every allocation of 64 MiB or more whatever
   M_MMAP_MAX says (their heaps are capped at 64 MiB), and libzmq allocates receive buffers on
   its I/O thread; one arena keeps them in the brk heap too (docs/architecture.md). */
static inline int cohort_malloc_no_mmap(long trimThreshold) {
    int a = mallopt(M_MMAP_MAX, 0);
    int b = mallopt(M_TRIM_THRESHOLD, (int)trimThreshold);
    int c = mallopt(M_ARENA_MAX, 1);
    return a == 1 && b == 1 && c == 1;
}

/* A sequence lock over one shard of a shared-memory segment (the data plane to workers on the
   coordinator's host, docs/architecture.md). The writer marks the shard odd, copies, then
   publishes the even version; a reader copies only a shard that holds the version it expects
   and was not rewritten while it copied. */
static inline void cohort_seqlock_write(uint64_t *seq, uint64_t version, void *dst, const void *src, size_t n) {
    __atomic_store_n(seq, version | 1u, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    memcpy(dst, src, n);
    __atomic_store_n(seq, version & ~(uint64_t)1, __ATOMIC_RELEASE);
}

static inline int cohort_seqlock_read(const uint64_t *seq, uint64_t version, void *dst, const void *src, size_t n) {
    if (__atomic_load_n(seq, __ATOMIC_ACQUIRE) != version) return 0;
    memcpy(dst, src, n);
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    return __atomic_load_n(seq, __ATOMIC_RELAXED) == version;
}
#endif
