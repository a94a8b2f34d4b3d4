/*
 * fikit declares the CUDA driver types and signatures it uses itself
 * (interpose/include/fikit_cuda.h) so that it builds without a toolkit.  This
 * file holds those declarations against the real <cuda.h>: if a CUDA release
 * changes a signature, a constant or the launch configuration, the build of
 * this file fails and names what drifted, instead of a launch being corrupted
 * at run time.
 *
 * Two modes, driven by tests/test_cuda_abi.py:
 *
 *   default          includes <cuda.h>, statically checks every fikit_pfn_*
 *                    typedef, every FIKIT_CU_CONSTANTS entry and the
 *                    CUlaunchConfig field list; running it prints the sizes of
 *                    the real scalar types as -D flags for the second mode.
 *   FIKIT_ABI_OWN    without <cuda.h>: checks fikit's own stand-in types (the
 *                    ones libfikit.so is built with) against those sizes.
 *
 * FIKIT_ABI_CUPTI adds, in both modes, the same checks of
 * interpose/include/fikit_cupti.h against the real <cupti.h>: signatures,
 * constants, and the offset and type of every field fikit reads from a
 * kernel activity record, in each record version the header declares that
 * a CUDA 12 or 13 CUPTI may hand out.
 *
 * FIKIT_ABI_NEGATIVE adds a deliberately wrong signature, to show that the
 * checks bite.
 */
#include <stddef.h>
#include <stdio.h>

#ifndef FIKIT_ABI_OWN

#include <cuda.h>
#include <cudaTypedefs.h>

#define FIKIT_CUDA_ABI_CHECK 1
#include "fikit_cuda.h"
#ifdef FIKIT_ABI_CUPTI
#include <cupti.h>

#include "fikit_cupti.h"
#endif

#define SAME_TYPE(a, b) __builtin_types_compatible_p(a, b)

/*
 * Symbol X of <cuda.h> against fikit_pfn_X.  <cuda.h> renames some names by
 * macro (cuEventElapsedTime -> _v2, cuGetProcAddress -> _v2, ...), so every
 * check names the exported symbol itself.
 */
#define CHECK_PFN(sym) \
    _Static_assert(SAME_TYPE(fikit_pfn_##sym, __typeof__(&sym)), "fikit_pfn_" #sym " differs from <cuda.h>");

#define CHECKED_PFNS(X)        \
    X(cuInit)                  \
    X(cuGetProcAddress_v2)     \
    X(cuLaunchKernel)          \
    X(cuLaunchKernelEx)        \
    X(cuLaunchCooperativeKernel) \
    X(cuGraphLaunch)           \
    X(cuStreamSynchronize)     \
    X(cuCtxSynchronize)        \
    X(cuCtxSynchronize_v2)     \
    X(cuEventSynchronize)      \
    X(cuFuncGetName)           \
    X(cuKernelGetName)         \
    X(cuEventCreate)           \
    X(cuEventDestroy_v2)       \
    X(cuEventRecord)           \
    X(cuEventQuery)            \
    X(cuEventElapsedTime_v2)   \
    X(cuCtxGetCurrent)         \
    X(cuCtxSetCurrent)         \
    X(cuCtxGetDevice)          \
    X(cuDeviceGetCount)        \
    X(cuStreamGetCtx)          \
    X(cuDeviceGetUuid_v2)      \
    X(cuStreamIsCapturing)     \
    X(cuStreamQuery)           \
    X(cuMemHostAlloc)          \
    X(cuMemHostGetDevicePointer_v2) \
    X(cuStreamWaitValue32_v2)  \
    X(cuStreamWaitEvent)       \
    X(cuDeviceGetDevResource)  \
    X(cuDevSmResourceSplitByCount) \
    X(cuDevResourceGenerateDesc) \
    X(cuGreenCtxCreate)        \
    X(cuGreenCtxStreamCreate)

CHECKED_PFNS(CHECK_PFN)

/* The 4-argument cuGetProcAddress is hidden behind the _v2 macro; cudaTypedefs.h keeps its type. */
_Static_assert(SAME_TYPE(fikit_pfn_cuGetProcAddress, PFN_cuGetProcAddress_v11030),
               "fikit_pfn_cuGetProcAddress differs from <cuda.h>");

/* The per-thread-stream variants must share the signatures of their base names. */
_Static_assert(SAME_TYPE(fikit_pfn_cuLaunchKernel, PFN_cuLaunchKernel_v7000_ptsz),
               "cuLaunchKernel_ptsz differs from cuLaunchKernel");
_Static_assert(SAME_TYPE(fikit_pfn_cuLaunchKernelEx, PFN_cuLaunchKernelEx_v11060_ptsz),
               "cuLaunchKernelEx_ptsz differs from cuLaunchKernelEx");
_Static_assert(SAME_TYPE(fikit_pfn_cuLaunchCooperativeKernel, PFN_cuLaunchCooperativeKernel_v9000_ptsz),
               "cuLaunchCooperativeKernel_ptsz differs from cuLaunchCooperativeKernel");
_Static_assert(SAME_TYPE(fikit_pfn_cuGraphLaunch, PFN_cuGraphLaunch_v10000_ptsz),
               "cuGraphLaunch_ptsz differs from cuGraphLaunch");
_Static_assert(SAME_TYPE(fikit_pfn_cuStreamSynchronize, PFN_cuStreamSynchronize_v7000_ptsz),
               "cuStreamSynchronize_ptsz differs from cuStreamSynchronize");

/* Constants. */
#define CHECK_CONSTANT(name, value) _Static_assert((name) == (value), #name " is not " #value " in <cuda.h>");
FIKIT_CU_CONSTANTS(CHECK_CONSTANT)

/* CUdevResource: fikit allocates them and reads sm.smCount. */
_Static_assert(sizeof(CUdevResource) == 144, "CUdevResource size differs from fikit_cuda.h's 144 bytes");
_Static_assert(offsetof(CUdevResource, sm.smCount) == 96, "CUdevResource.sm.smCount offset differs");

/* CUuuid: fikit formats its 16 bytes as the GPU's uuid. */
_Static_assert(sizeof(CUuuid) == 16 && offsetof(CUuuid, bytes) == 0, "CUuuid differs from 16 bytes");

/* Host-allocation flags (#defines in <cuda.h>). */
_Static_assert(FIKIT_CU_MEMHOSTALLOC_PORTABLE == CU_MEMHOSTALLOC_PORTABLE, "CU_MEMHOSTALLOC_PORTABLE differs");
_Static_assert(FIKIT_CU_MEMHOSTALLOC_DEVICEMAP == CU_MEMHOSTALLOC_DEVICEMAP, "CU_MEMHOSTALLOC_DEVICEMAP differs");

/* The default-stream handles. */
_Static_assert(FIKIT_CU_STREAM_LEGACY == CU_STREAM_LEGACY, "FIKIT_CU_STREAM_LEGACY differs");
_Static_assert(FIKIT_CU_STREAM_PER_THREAD == CU_STREAM_PER_THREAD, "FIKIT_CU_STREAM_PER_THREAD differs");

/* CUlaunchConfig, rebuilt from fikit's field list, must match field by field. */
struct fikit_launch_config_mirror {
    FIKIT_CULAUNCHCONFIG_FIELDS(FIKIT_FIELD_DECL)
};
_Static_assert(sizeof(struct fikit_launch_config_mirror) == sizeof(CUlaunchConfig),
               "CUlaunchConfig size differs");
_Static_assert(_Alignof(struct fikit_launch_config_mirror) == _Alignof(CUlaunchConfig),
               "CUlaunchConfig alignment differs");
#define CHECK_FIELD(type, name)                                                                  \
    _Static_assert(offsetof(struct fikit_launch_config_mirror, name) == offsetof(CUlaunchConfig, name), \
                   "CUlaunchConfig." #name " offset differs");                                   \
    _Static_assert(SAME_TYPE(type, __typeof__(((CUlaunchConfig *)0)->name)),                     \
                   "CUlaunchConfig." #name " type differs");
FIKIT_CULAUNCHCONFIG_FIELDS(CHECK_FIELD)

#ifdef FIKIT_ABI_CUPTI
/* CUPTI (profiling mode, interpose/src/cupti.c). */
#define CHECKED_CUPTI_PFNS(X)              \
    X(cuptiGetVersion)                     \
    X(cuptiGetResultString)                \
    X(cuptiSubscribe)                      \
    X(cuptiUnsubscribe)                    \
    X(cuptiActivityRegisterCallbacks)      \
    X(cuptiActivityEnable)                 \
    X(cuptiActivityDisable)                \
    X(cuptiActivityFlushAll)               \
    X(cuptiActivityGetNextRecord)          \
    X(cuptiActivityGetNumDroppedRecords)   \
    X(cuptiGetStreamIdEx)
CHECKED_CUPTI_PFNS(CHECK_PFN)
FIKIT_CUPTI_CONSTANTS(CHECK_CONSTANT)

/* Every field fikit reads, at the offset and with the type it reads, in the
 * kernel record of CUDA 13 (CUpti_ActivityKernel10), of CUDA 12
 * (CUpti_ActivityKernel9) and the older versions the header still declares. */
#define CHECK_RECORD_FIELD(rec, type, field, off)                                              \
    _Static_assert(offsetof(rec, field) == (off), #rec "." #field " is not at offset " #off);   \
    _Static_assert(offsetof(struct fikit_cupti_kernel, field) == offsetof(rec, field),          \
                   "fikit_cupti_kernel." #field " offset differs from " #rec);                  \
    _Static_assert(SAME_TYPE(type, __typeof__(((rec *)0)->field)), #rec "." #field " type differs"); \
    _Static_assert(SAME_TYPE(type, __typeof__(((struct fikit_cupti_kernel *)0)->field)),       \
                   "fikit_cupti_kernel." #field " type differs");
#define CHECK_K6(type, field, off) CHECK_RECORD_FIELD(CUpti_ActivityKernel6, type, field, off)
#define CHECK_K7(type, field, off) CHECK_RECORD_FIELD(CUpti_ActivityKernel7, type, field, off)
#define CHECK_K8(type, field, off) CHECK_RECORD_FIELD(CUpti_ActivityKernel8, type, field, off)
#define CHECK_K9(type, field, off) CHECK_RECORD_FIELD(CUpti_ActivityKernel9, type, field, off)
FIKIT_CUPTI_KERNEL_FIELDS(CHECK_K6)
FIKIT_CUPTI_KERNEL_FIELDS(CHECK_K7)
FIKIT_CUPTI_KERNEL_FIELDS(CHECK_K8)
FIKIT_CUPTI_KERNEL_FIELDS(CHECK_K9)
#if CUPTI_API_VERSION >= 130000
#define CHECK_K10(type, field, off) CHECK_RECORD_FIELD(CUpti_ActivityKernel10, type, field, off)
FIKIT_CUPTI_KERNEL_FIELDS(CHECK_K10)
#endif
_Static_assert(sizeof(struct fikit_cupti_kernel) <= sizeof(CUpti_ActivityKernel6),
               "fikit reads past the end of the oldest record checked");
_Static_assert(sizeof(CUpti_Activity) == 8 && _Alignof(CUpti_Activity) == 8, "CUpti_Activity differs");
#endif /* FIKIT_ABI_CUPTI */

#ifdef FIKIT_ABI_NEGATIVE
/* A signature with one parameter missing: this must not compile. */
typedef CUresult (*wrong_launch)(const CUlaunchConfig *, CUfunction, void **);
_Static_assert(SAME_TYPE(wrong_launch, __typeof__(&cuLaunchKernelEx)), "negative control: wrong_launch");
#endif

/* Sizes of the real types, for the FIKIT_ABI_OWN mode. */
int main(void)
{
    printf("-DREAL_CURESULT=%zu -DREAL_CUDEVICE=%zu -DREAL_CUDEVICEPTR=%zu -DREAL_CUUINT64=%zu "
           "-DREAL_QUERYRESULT=%zu -DREAL_CAPTURESTATUS=%zu -DREAL_ATTR=%zu -DREAL_ATTR_VALUE_OFF=%zu "
           "-DREAL_ATTR_ALIGN=%zu -DREAL_CONFIG=%zu\n",
           sizeof(CUresult), sizeof(CUdevice), sizeof(CUdeviceptr), sizeof(cuuint64_t),
           sizeof(CUdriverProcAddressQueryResult), sizeof(CUstreamCaptureStatus), sizeof(CUlaunchAttribute),
           offsetof(CUlaunchAttribute, value), _Alignof(CUlaunchAttribute), sizeof(CUlaunchConfig));
#ifdef FIKIT_ABI_CUPTI
    printf("-DREAL_CUPTIRESULT=%zu -DREAL_ACTIVITYKIND=%zu -DREAL_CALLBACKDOMAIN=%zu -DREAL_CALLBACKID=%zu "
           "-DREAL_ACTIVITY=%zu -DREAL_ACTIVITY_ALIGN=%zu\n",
           sizeof(CUptiResult), sizeof(CUpti_ActivityKind), sizeof(CUpti_CallbackDomain), sizeof(CUpti_CallbackId),
           sizeof(CUpti_Activity), _Alignof(CUpti_Activity));
#endif
    return 0;
}

#else /* FIKIT_ABI_OWN: the stand-ins libfikit.so is actually built with */

#include "fikit_cuda.h"
#ifdef FIKIT_ABI_CUPTI
#include "fikit_cupti.h"
#endif

#define CHECK_SIZE(expr, real) _Static_assert((expr) == (real), #expr " differs from <cuda.h>");
CHECK_SIZE(sizeof(CUresult), REAL_CURESULT)
CHECK_SIZE(sizeof(CUdevice), REAL_CUDEVICE)
CHECK_SIZE(sizeof(CUdeviceptr), REAL_CUDEVICEPTR)
CHECK_SIZE(sizeof(cuuint64_t), REAL_CUUINT64)
CHECK_SIZE(sizeof(CUdriverProcAddressQueryResult), REAL_QUERYRESULT)
CHECK_SIZE(sizeof(CUstreamCaptureStatus), REAL_CAPTURESTATUS)
CHECK_SIZE(sizeof(CUlaunchAttribute), REAL_ATTR)
CHECK_SIZE(offsetof(CUlaunchAttribute, value), REAL_ATTR_VALUE_OFF)
CHECK_SIZE(_Alignof(CUlaunchAttribute), REAL_ATTR_ALIGN)
CHECK_SIZE(sizeof(CUlaunchConfig), REAL_CONFIG)
#ifdef FIKIT_ABI_CUPTI
CHECK_SIZE(sizeof(CUptiResult), REAL_CUPTIRESULT)
CHECK_SIZE(sizeof(CUpti_ActivityKind), REAL_ACTIVITYKIND)
CHECK_SIZE(sizeof(CUpti_CallbackDomain), REAL_CALLBACKDOMAIN)
CHECK_SIZE(sizeof(CUpti_CallbackId), REAL_CALLBACKID)
CHECK_SIZE(sizeof(CUpti_Activity), REAL_ACTIVITY)
CHECK_SIZE(_Alignof(CUpti_Activity), REAL_ACTIVITY_ALIGN)
#endif
CHECK_SIZE(sizeof(CUuuid), 16)

int main(void)
{
    return 0;
}

#endif
