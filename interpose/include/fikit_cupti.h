/*
 * The few CUPTI types, constants and signatures fikit's profiling mode
 * (FIKIT_PROFILE=1, interpose/src/cupti.c) uses, declared here so that
 * building libfikit.so needs no CUDA toolkit: libcupti is dlopen'ed at run
 * time, never linked.  interpose/tests/cuda_abi_check.c, compiled with
 * -DFIKIT_ABI_CUPTI by tests/test_cuda_abi.py against every installed
 * <cupti.h>, asserts that every declaration here matches the real one.
 *
 * The fake CUPTI of the tests (tests/fakecuda/fakecupti.c) is written
 * against this header too.
 */
#ifndef FIKIT_CUPTI_H
#define FIKIT_CUPTI_H

#include <stddef.h>
#include <stdint.h>

#include "fikit_cuda.h"

/* Constants fikit relies on: an enum here, a static assertion in the ABI check. */
#define FIKIT_CUPTI_CONSTANTS(X)                           \
    X(CUPTI_SUCCESS, 0)                                    \
    X(CUPTI_ERROR_INVALID_PARAMETER, 1)                    \
    X(CUPTI_ERROR_MAX_LIMIT_REACHED, 12)                   \
    X(CUPTI_ERROR_NOT_INITIALIZED, 15)                     \
    X(CUPTI_ERROR_NOT_SUPPORTED, 27)                       \
    X(CUPTI_ERROR_MULTIPLE_SUBSCRIBERS_NOT_SUPPORTED, 39)  \
    X(CUPTI_ERROR_UNKNOWN, 999)                            \
    X(CUPTI_ACTIVITY_KIND_KERNEL, 3)                       \
    X(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL, 10)           \
    X(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED, 1)

#ifndef FIKIT_CUDA_ABI_CHECK /* the ABI check takes the types from <cupti.h> */
typedef int CUptiResult;
typedef int CUpti_ActivityKind;
typedef int CUpti_CallbackDomain;
typedef uint32_t CUpti_CallbackId;
typedef struct CUpti_Subscriber_st *CUpti_SubscriberHandle;

/* Every activity record starts with its kind; records are 8-byte aligned. */
typedef struct {
    _Alignas(8) CUpti_ActivityKind kind;
} CUpti_Activity;

typedef void (*CUpti_CallbackFunc)(void *userdata, CUpti_CallbackDomain domain, CUpti_CallbackId cbid,
                                   const void *cbdata);
typedef void (*CUpti_BuffersCallbackRequestFunc)(uint8_t **buffer, size_t *size, size_t *maxNumRecords);
typedef void (*CUpti_BuffersCallbackCompleteFunc)(CUcontext context, uint32_t streamId, uint8_t *buffer,
                                                  size_t size, size_t validSize);

#define FIKIT_CUPTI_ENUM_DECL(name, value) name = value,
enum { FIKIT_CUPTI_CONSTANTS(FIKIT_CUPTI_ENUM_DECL) };
#undef FIKIT_CUPTI_ENUM_DECL
#endif /* FIKIT_CUDA_ABI_CHECK */

/* The oldest CUPTI whose kernel records have every field below at these
 * offsets: API version 19 (CUDA 12.0), which emits CUpti_ActivityKernel9. */
#define FIKIT_CUPTI_MIN_API_VERSION 19u

/*
 * The fields fikit reads from a kernel activity record, at their offsets.
 * CUPTI appends fields in each new record version and keeps these in place:
 * CUDA 12 emits CUpti_ActivityKernel9, CUDA 13 CUpti_ActivityKernel10 for
 * CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL, and the ABI check asserts offset and
 * size of each named field against both (and the versions between 6 and 9
 * that the header still declares).  Records are read in place; fikit never
 * relies on their size (cuptiActivityGetNextRecord steps over them).
 *
 * X(type, field, offset)
 */
#define FIKIT_CUPTI_KERNEL_FIELDS(X)      \
    X(CUpti_ActivityKind, kind, 0)        \
    X(uint64_t, start, 16)                \
    X(uint64_t, end, 24)                  \
    X(uint32_t, deviceId, 40)             \
    X(uint32_t, streamId, 48)             \
    X(int32_t, gridX, 52)                 \
    X(int32_t, gridY, 56)                 \
    X(int32_t, gridZ, 60)                 \
    X(int32_t, blockX, 64)                \
    X(int32_t, blockY, 68)                \
    X(int32_t, blockZ, 72)                \
    X(int32_t, dynamicSharedMemory, 80)   \
    X(uint32_t, correlationId, 92)        \
    X(const char *, name, 104)            \
    X(uint32_t, graphId, 156)

/* The same fields as a struct, the gaps filled with padding. */
struct fikit_cupti_kernel {
    CUpti_ActivityKind kind;     /* 0 */
    uint8_t _pad0[12];           /* cacheConfig ... partitionedGlobalCacheExecuted */
    uint64_t start;              /* 16 */
    uint64_t end;                /* 24 */
    uint8_t _pad1[8];            /* completed */
    uint32_t deviceId;           /* 40: the CUdevice, as the process numbers them */
    uint8_t _pad1b[4];           /* contextId */
    uint32_t streamId;           /* 48 */
    int32_t gridX, gridY, gridZ; /* 52 */
    int32_t blockX, blockY, blockZ; /* 64 */
    uint8_t _pad2[4];            /* staticSharedMemory */
    int32_t dynamicSharedMemory; /* 80 */
    uint8_t _pad3[8];            /* localMemoryPerThread, localMemoryTotal */
    uint32_t correlationId;      /* 92 */
    uint8_t _pad4[8];            /* gridId */
    const char *name;            /* 104 */
    uint8_t _pad5[44];           /* reserved0 ... shmemLimitConfig */
    uint32_t graphId;            /* 156: nonzero for a kernel replayed from a graph */
};

#define FIKIT_CUPTI_OFFSET_CHECK(type, field, off)                                \
    _Static_assert(offsetof(struct fikit_cupti_kernel, field) == (off), #field " offset"); \
    _Static_assert(sizeof(((struct fikit_cupti_kernel *)0)->field) == sizeof(type), #field " size");
FIKIT_CUPTI_KERNEL_FIELDS(FIKIT_CUPTI_OFFSET_CHECK)
#undef FIKIT_CUPTI_OFFSET_CHECK

/*
 * Signatures, one typedef per CUPTI entry point fikit calls.
 */
typedef CUptiResult (*fikit_pfn_cuptiGetVersion)(uint32_t *);
typedef CUptiResult (*fikit_pfn_cuptiGetResultString)(CUptiResult, const char **);
typedef CUptiResult (*fikit_pfn_cuptiSubscribe)(CUpti_SubscriberHandle *, CUpti_CallbackFunc, void *);
typedef CUptiResult (*fikit_pfn_cuptiUnsubscribe)(CUpti_SubscriberHandle);
typedef CUptiResult (*fikit_pfn_cuptiActivityRegisterCallbacks)(CUpti_BuffersCallbackRequestFunc,
                                                                CUpti_BuffersCallbackCompleteFunc);
typedef CUptiResult (*fikit_pfn_cuptiActivityEnable)(CUpti_ActivityKind);
typedef CUptiResult (*fikit_pfn_cuptiActivityDisable)(CUpti_ActivityKind);
typedef CUptiResult (*fikit_pfn_cuptiActivityFlushAll)(uint32_t);
typedef CUptiResult (*fikit_pfn_cuptiActivityGetNextRecord)(uint8_t *, size_t, CUpti_Activity **);
typedef CUptiResult (*fikit_pfn_cuptiActivityGetNumDroppedRecords)(CUcontext, uint32_t, size_t *);
typedef CUptiResult (*fikit_pfn_cuptiGetStreamIdEx)(CUcontext, CUstream, uint8_t, uint32_t *);

/* The entry points as one list: name, required (0: used when present). */
#define FIKIT_CUPTI_FUNCS(X)                 \
    X(cuptiGetVersion, 1)                    \
    X(cuptiGetResultString, 0)               \
    X(cuptiSubscribe, 1)                     \
    X(cuptiUnsubscribe, 1)                   \
    X(cuptiActivityRegisterCallbacks, 1)     \
    X(cuptiActivityEnable, 1)                \
    X(cuptiActivityDisable, 1)               \
    X(cuptiActivityFlushAll, 1)              \
    X(cuptiActivityGetNextRecord, 1)         \
    X(cuptiActivityGetNumDroppedRecords, 0)  \
    X(cuptiGetStreamIdEx, 0)

#endif /* FIKIT_CUPTI_H */
