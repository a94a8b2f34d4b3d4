/*
 * The few CUDA driver types and signatures fikit uses, declared here so that
 * building libfikit.so needs no CUDA toolkit.  tests/test_build.py compiles
 * interpose/tests/cuda_abi_check.c, which includes this header next to the
 * real <cuda.h> and asserts that every declaration matches; a signature drift
 * in a new CUDA release then fails CI instead of corrupting a launch.
 *
 * The fake driver (tests/fakecuda) is written against this header too, so
 * the ABI the tests exercise is the ABI the library was built for.
 */
#ifndef FIKIT_CUDA_H
#define FIKIT_CUDA_H

#include <stddef.h>
#include <stdint.h>

/* Constants fikit relies on: an enum here, a static assertion in the ABI check. */
#define FIKIT_CU_CONSTANTS(X)                    \
    X(CUDA_SUCCESS, 0)                           \
    X(CUDA_ERROR_INVALID_VALUE, 1)               \
    X(CUDA_ERROR_NOT_INITIALIZED, 3)             \
    X(CUDA_ERROR_INVALID_CONTEXT, 201)           \
    X(CUDA_ERROR_INVALID_HANDLE, 400)            \
    X(CUDA_ERROR_NOT_FOUND, 500)                 \
    X(CUDA_ERROR_NOT_READY, 600)                 \
    X(CUDA_ERROR_NOT_SUPPORTED, 801)             \
    X(CU_GET_PROC_ADDRESS_DEFAULT, 0)            \
    X(CU_GET_PROC_ADDRESS_SUCCESS, 0)            \
    X(CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND, 1)   \
    X(CU_GET_PROC_ADDRESS_LEGACY_STREAM, 1)      \
    X(CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM, 2) \
    X(CU_STREAM_CAPTURE_STATUS_NONE, 0)          \
    X(CU_STREAM_WAIT_VALUE_GEQ, 0)               \
    X(CU_DEV_RESOURCE_TYPE_SM, 1)                \
    X(CU_GREEN_CTX_DEFAULT_STREAM, 1)            \
    X(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, 16) \
    X(CU_EVENT_DEFAULT, 0)                       \
    X(CU_EVENT_BLOCKING_SYNC, 1)                 \
    X(CU_EVENT_DISABLE_TIMING, 2)                \
    X(CU_STREAM_NON_BLOCKING, 1)
/* Host-allocation flags are #defines in <cuda.h>; compared in the ABI check too. */
#define FIKIT_CU_MEMHOSTALLOC_PORTABLE 0x01
#define FIKIT_CU_MEMHOSTALLOC_DEVICEMAP 0x02

/* The launch configuration of cuLaunchKernelEx, field by field. */
#define FIKIT_CULAUNCHCONFIG_FIELDS(X) \
    X(unsigned int, gridDimX)          \
    X(unsigned int, gridDimY)          \
    X(unsigned int, gridDimZ)          \
    X(unsigned int, blockDimX)         \
    X(unsigned int, blockDimY)         \
    X(unsigned int, blockDimZ)         \
    X(unsigned int, sharedMemBytes)    \
    X(CUstream, hStream)               \
    X(CUlaunchAttribute *, attrs)      \
    X(unsigned int, numAttrs)

#define FIKIT_FIELD_DECL(type, name) type name;

#ifndef FIKIT_CUDA_ABI_CHECK /* the ABI check takes the types from <cuda.h> */
typedef int CUresult;
typedef int CUdevice;
typedef uint64_t cuuint64_t;
typedef struct CUctx_st *CUcontext;
typedef struct CUmod_st *CUmodule;
typedef struct CUfunc_st *CUfunction;
typedef struct CUkern_st *CUkernel;
typedef struct CUlib_st *CUlibrary;
typedef struct CUstream_st *CUstream;
typedef struct CUevent_st *CUevent;
typedef struct CUgraph_st *CUgraph;
typedef struct CUgraphExec_st *CUgraphExec;
typedef unsigned long long CUdeviceptr;
typedef int CUdriverProcAddressQueryResult;
typedef int CUstreamCaptureStatus;
typedef int CUdevResourceType;
typedef int CUdevice_attribute;
typedef struct CUgreenCtx_st *CUgreenCtx;
typedef struct CUdevResourceDesc_st *CUdevResourceDesc;

/* A device's uuid: the 16 bytes NVML prints as GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx. */
typedef struct CUuuid_st {
    char bytes[16];
} CUuuid;

typedef struct CUdevSmResource_st {
    unsigned int smCount;
    unsigned int minSmPartitionSize;
    unsigned int smCoscheduledAlignment;
} CUdevSmResource;

/* A tagged union the driver fills; fikit reads only sm.smCount. */
typedef struct CUdevResource_st {
    CUdevResourceType type;
    unsigned char _internal_padding[92];
    union {
        CUdevSmResource sm;
        unsigned char _oversize[48];
    };
} CUdevResource;

/* 8 bytes of id and padding, then a 64-byte value union (opaque to fikit). */
typedef struct CUlaunchAttribute_st {
    int id;
    char pad[8 - sizeof(int)];
    union {
        char pad[64];
        uint64_t align; /* the real union holds 64-bit members: 8-byte aligned */
    } value;
} CUlaunchAttribute;

typedef struct CUlaunchConfig_st {
    FIKIT_CULAUNCHCONFIG_FIELDS(FIKIT_FIELD_DECL)
} CUlaunchConfig;

#define FIKIT_ENUM_DECL(name, value) name = value,
enum { FIKIT_CU_CONSTANTS(FIKIT_ENUM_DECL) };
#undef FIKIT_ENUM_DECL
#endif /* FIKIT_CUDA_ABI_CHECK */

/* The "legacy" and "per-thread" default streams, as the driver defines them. */
#define FIKIT_CU_STREAM_LEGACY ((CUstream)0x1)
#define FIKIT_CU_STREAM_PER_THREAD ((CUstream)0x2)

/*
 * Signatures, one typedef per driver entry point fikit calls or wraps.
 * Names follow the driver's exported symbols (_v2 where the symbol has it).
 */
typedef CUresult (*fikit_pfn_cuInit)(unsigned int);
typedef CUresult (*fikit_pfn_cuGetProcAddress)(const char *, void **, int, cuuint64_t);
typedef CUresult (*fikit_pfn_cuGetProcAddress_v2)(const char *, void **, int, cuuint64_t,
                                                  CUdriverProcAddressQueryResult *);
typedef CUresult (*fikit_pfn_cuLaunchKernel)(CUfunction, unsigned int, unsigned int, unsigned int,
                                             unsigned int, unsigned int, unsigned int, unsigned int,
                                             CUstream, void **, void **);
typedef CUresult (*fikit_pfn_cuLaunchKernelEx)(const CUlaunchConfig *, CUfunction, void **, void **);
typedef CUresult (*fikit_pfn_cuLaunchCooperativeKernel)(CUfunction, unsigned int, unsigned int,
                                                        unsigned int, unsigned int, unsigned int,
                                                        unsigned int, unsigned int, CUstream, void **);
typedef CUresult (*fikit_pfn_cuGraphLaunch)(CUgraphExec, CUstream);
typedef CUresult (*fikit_pfn_cuStreamSynchronize)(CUstream);
typedef CUresult (*fikit_pfn_cuCtxSynchronize)(void);
typedef CUresult (*fikit_pfn_cuCtxSynchronize_v2)(CUcontext);
typedef CUresult (*fikit_pfn_cuEventSynchronize)(CUevent);
typedef CUresult (*fikit_pfn_cuFuncGetName)(const char **, CUfunction);
typedef CUresult (*fikit_pfn_cuKernelGetName)(const char **, CUkernel);
typedef CUresult (*fikit_pfn_cuEventCreate)(CUevent *, unsigned int);
typedef CUresult (*fikit_pfn_cuEventDestroy_v2)(CUevent);
typedef CUresult (*fikit_pfn_cuEventRecord)(CUevent, CUstream);
typedef CUresult (*fikit_pfn_cuEventQuery)(CUevent);
typedef CUresult (*fikit_pfn_cuEventElapsedTime_v2)(float *, CUevent, CUevent);
typedef CUresult (*fikit_pfn_cuCtxGetCurrent)(CUcontext *);
typedef CUresult (*fikit_pfn_cuCtxSetCurrent)(CUcontext);
typedef CUresult (*fikit_pfn_cuCtxGetDevice)(CUdevice *);
typedef CUresult (*fikit_pfn_cuDeviceGetCount)(int *);
typedef CUresult (*fikit_pfn_cuStreamGetCtx)(CUstream, CUcontext *);
typedef CUresult (*fikit_pfn_cuDeviceGetUuid_v2)(CUuuid *, CUdevice);
typedef CUresult (*fikit_pfn_cuStreamIsCapturing)(CUstream, CUstreamCaptureStatus *);
typedef CUresult (*fikit_pfn_cuStreamQuery)(CUstream);
typedef CUresult (*fikit_pfn_cuMemHostAlloc)(void **, size_t, unsigned int);
typedef CUresult (*fikit_pfn_cuMemHostGetDevicePointer_v2)(CUdeviceptr *, void *, unsigned int);
typedef CUresult (*fikit_pfn_cuStreamWaitValue32_v2)(CUstream, CUdeviceptr, uint32_t, unsigned int);
typedef CUresult (*fikit_pfn_cuStreamWaitEvent)(CUstream, CUevent, unsigned int);
typedef CUresult (*fikit_pfn_cuDeviceGetDevResource)(CUdevice, CUdevResource *, CUdevResourceType);
typedef CUresult (*fikit_pfn_cuDevSmResourceSplitByCount)(CUdevResource *, unsigned int *, const CUdevResource *,
                                                          CUdevResource *, unsigned int, unsigned int);
typedef CUresult (*fikit_pfn_cuDevResourceGenerateDesc)(CUdevResourceDesc *, CUdevResource *, unsigned int);
typedef CUresult (*fikit_pfn_cuGreenCtxCreate)(CUgreenCtx *, CUdevResourceDesc, CUdevice, unsigned int);
typedef CUresult (*fikit_pfn_cuGreenCtxStreamCreate)(CUstream *, CUgreenCtx, unsigned int, int);

#endif /* FIKIT_CUDA_H */
