#ifndef COHORT_CBLAS_SHIM_H
#define COHORT_CBLAS_SHIM_H
#include <cblas.h>
/* OpenBLAS extensions (declared in its cblas.h): openblas_set_num_threads,
   openblas_get_corename, openblas_get_config. */
#endif
