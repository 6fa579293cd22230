#ifndef COHORT_CZEROMQ_SHIM_H
#define COHORT_CZEROMQ_SHIM_H
#include <zmq.h>
#include <errno.h>
#include <malloc.h>

/* errno is a macro on glibc; Swift cannot read it directly in every context. */
static inline int cohort_errno(void) { return errno; }

/* M_MMAP_MAX / M_TRIM_THRESHOLD are macros; exposed as functions so Swift can call mallopt. */
static inline int cohort_malloc_no_mmap(long trimThreshold) {
    int a = mallopt(M_MMAP_MAX, 0);
    int b = mallopt(M_TRIM_THRESHOLD, (int)trimThreshold);
    return a == 1 && b == 1;
}
#endif
