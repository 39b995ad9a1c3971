// Reduction kernels on device memory: the GPU twins of reduce::reduce and
// reduce::divide, giving the same bits (see cuda/elementwise.h for how, and
// for the one case reduce.h leaves open: the payload of NaN + NaN).
//
// Buffers are device memory (or managed) of the current device, with the
// alignment of their element type; dst may be the same pointer as a, b or
// both, any other overlap is not allowed. count is in elements.
//
// Both functions enqueue on `stream` and return at once. They return
// cudaErrorInvalidValue without launching anything (and without calling the
// CUDA runtime) for a dtype or op out of range or a divisor of 0; count 0
// launches nothing and returns cudaSuccess. Otherwise the result is
// cudaGetLastError() after the launch: a launch error, or an earlier
// asynchronous error of this thread's context. Thread-safe.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "eccl/eccl.h"

namespace eccl::cuda {

// dst[i] = a[i] OP b[i] for i < count (ecclAvg sums; see launchDivide).
cudaError_t launchReduce(ecclDataType_t dtype, ecclRedOp_t op, void* dst, const void* a,
                         const void* b, size_t count, cudaStream_t stream);

// data[i] /= divisor in place, ecclAvg's final step: integers truncate toward
// zero, floats divide in their own precision (16-bit ones through float32).
cudaError_t launchDivide(ecclDataType_t dtype, void* data, size_t count, uint64_t divisor,
                         cudaStream_t stream);

}  // namespace eccl::cuda
