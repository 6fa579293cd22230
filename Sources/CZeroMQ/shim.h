#ifndef COHORT_CZEROMQ_SHIM_H
#define COHORT_CZEROMQ_SHIM_H
#include <zmq.h>
#include <errno.h>
#include <malloc.h>

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
#endif
