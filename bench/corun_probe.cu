// Can a low-priority launch be moved onto a smaller SM partition, and does it
// then leave the rest of the GPU to someone else?  (Issue 11's first question.)
//
// Loads a spin kernel through the runtime (so the module lives in the primary
// context, as in PyTorch), then:
//   1. times it on an ordinary stream, with as many blocks as the GPU has SMs;
//   2. creates a green context holding `part` SMs (cuDevSmResourceSplitByCount),
//      a stream on it, and launches the same CUfunction there: does the driver
//      accept a function of the primary context, and does the time grow as the
//      partition shrinks (the proof that it is confined)?
//   3. with the LP kernel running on the green partition, times a short
//      "HP" kernel on an ordinary stream of the primary context: does it start
//      at once (the SMs outside the partition are free)?
// Prints one JSON object.  Build: nvcc -O2 -o corun_probe corun_probe.cu -lcuda
#include <cuda.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

__global__ void spin(long long cycles, int *sink)
{
    long long t0 = clock64();
    while (clock64() - t0 < cycles) {
    }
    if (threadIdx.x == 0 && sink)
        atomicAdd(sink, 1);
}

#define CK(x)                                                                                      \
    do {                                                                                           \
        CUresult r_ = (x);                                                                         \
        if (r_ != CUDA_SUCCESS) {                                                                  \
            const char *s_ = NULL;                                                                 \
            cuGetErrorString(r_, &s_);                                                             \
            printf("{\"error\": \"%s\", \"code\": %d, \"at\": \"%s\"}\n", s_ ? s_ : "?", (int)r_, #x); \
            return 1;                                                                              \
        }                                                                                          \
    } while (0)

static float time_launch(CUfunction f, int blocks, CUstream s, long long cycles, int *sink)
{
    CUevent a, b;
    cuEventCreate(&a, 0);
    cuEventCreate(&b, 0);
    void *args[] = {&cycles, &sink};
    cuEventRecord(a, s);
    CUresult r = cuLaunchKernel(f, blocks, 1, 1, 1024, 1, 1, 0, s, args, NULL);
    cuEventRecord(b, s);
    cuEventSynchronize(b);
    float ms = -1;
    if (r == CUDA_SUCCESS)
        cuEventElapsedTime(&ms, a, b);
    cuEventDestroy(a);
    cuEventDestroy(b);
    return r == CUDA_SUCCESS ? ms : -1.0f;
}

int main(int argc, char **argv)
{
    int part = argc > 1 ? atoi(argv[1]) : 32;
    cudaFree(0); // primary context current
    int *sink;
    cudaMalloc(&sink, sizeof(int));
    CUfunction f;
    if (cudaGetFuncBySymbol((cudaFunction_t *)&f, (const void *)spin) != cudaSuccess) {
        printf("{\"error\": \"cudaGetFuncBySymbol\"}\n");
        return 1;
    }
    CUdevice dev;
    CK(cuCtxGetDevice(&dev));
    int sms = 0, clock_khz = 0;
    cuDeviceGetAttribute(&sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev);
    cuDeviceGetAttribute(&clock_khz, CU_DEVICE_ATTRIBUTE_CLOCK_RATE, dev);
    long long cycles = (long long)clock_khz * 2; // about 2 ms a block at full clock
    CUstream plain;
    CK(cuStreamCreate(&plain, CU_STREAM_NON_BLOCKING));
    // 1024-thread blocks: two fill an SM, so 2 x SMs blocks fill the GPU in one wave,
    // and on a partition of fewer SMs they take proportionally more waves.
    time_launch(f, 2 * sms, plain, cycles / 10, sink); // warm up
    float full = time_launch(f, 2 * sms, plain, cycles, sink);

    CUdevResource all, split[1], rest;
    unsigned int nsplit = 1;
    CK(cuDeviceGetDevResource(dev, &all, CU_DEV_RESOURCE_TYPE_SM));
    CK(cuDevSmResourceSplitByCount(split, &nsplit, &all, &rest, 0, part));
    CUdevResourceDesc desc;
    CK(cuDevResourceGenerateDesc(&desc, split, 1));
    CUgreenCtx g;
    CK(cuGreenCtxCreate(&g, desc, dev, CU_GREEN_CTX_DEFAULT_STREAM));
    CUstream gs;
    CK(cuGreenCtxStreamCreate(&gs, g, CU_STREAM_NON_BLOCKING, 0));
    float confined = time_launch(f, 2 * sms, gs, cycles, sink);

    // LP on the partition, HP on the rest: HP's latency while LP runs.
    void *args[] = {&cycles, &sink};
    long long short_cycles = cycles / 100; // ~20 us
    void *hargs[] = {&short_cycles, &sink};
    CUevent a, b;
    cuEventCreate(&a, 0);
    cuEventCreate(&b, 0);
    CK(cuLaunchKernel(f, sms * 8, 1, 1, 1024, 1, 1, 0, gs, args, NULL)); // several waves on the partition
    cuEventRecord(a, plain);
    CK(cuLaunchKernel(f, 8, 1, 1, 128, 1, 1, 0, plain, hargs, NULL));
    cuEventRecord(b, plain);
    cuEventSynchronize(b);
    float hp_beside = -1;
    cuEventElapsedTime(&hp_beside, a, b);
    cuStreamSynchronize(gs);
    // The same with LP on the whole GPU: HP waits for SMs.
    CK(cuLaunchKernel(f, sms * 8, 1, 1, 1024, 1, 1, 0, plain, args, NULL));
    CUstream plain2;
    CK(cuStreamCreate(&plain2, CU_STREAM_NON_BLOCKING));
    cuEventRecord(a, plain2);
    CK(cuLaunchKernel(f, 8, 1, 1, 128, 1, 1, 0, plain2, hargs, NULL));
    cuEventRecord(b, plain2);
    cuEventSynchronize(b);
    float hp_shared = -1;
    cuEventElapsedTime(&hp_shared, a, b);
    cuCtxSynchronize();
    float hp_alone = -1;
    {
        CUevent c, e;
        cuEventCreate(&c, 0);
        cuEventCreate(&e, 0);
        cuEventRecord(c, plain);
        cuLaunchKernel(f, 8, 1, 1, 128, 1, 1, 0, plain, hargs, NULL);
        cuEventRecord(e, plain);
        cuEventSynchronize(e);
        cuEventElapsedTime(&hp_alone, c, e);
    }
    const char *mps = getenv("CUDA_MPS_PIPE_DIRECTORY");
    printf("{\"sms\": %d, \"part\": %d, \"split_sms\": %u, \"full_ms\": %.3f, \"confined_ms\": %.3f, "
           "\"hp_alone_ms\": %.4f, \"hp_beside_confined_lp_ms\": %.4f, \"hp_beside_full_lp_ms\": %.4f, "
           "\"mps\": %s}\n",
           sms, part, split[0].sm.smCount, full, confined, hp_alone, hp_beside, hp_shared, mps ? "true" : "false");
    return 0;
}
