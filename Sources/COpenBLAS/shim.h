#ifndef APUS_COPENBLAS_SHIM_H
#define APUS_COPENBLAS_SHIM_H
// OpenBLAS's CBLAS interface (Debian: libopenblas-dev; the include path comes from pkg-config openblas).
#include <cblas.h>
#endif
