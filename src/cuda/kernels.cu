#include "cuda/kernels.h"

#include <algorithm>
#include <type_traits>

#include "cuda/elementwise.h"

namespace eccl::cuda {
namespace {

constexpr unsigned kThreads = 256;
// Enough blocks to fill the largest GPUs (132 SMs x 8 blocks of 256 threads
// on an H100/H200) several times over; beyond that, grid-stride loops give
// each thread more elements instead of more blocks to schedule.
constexpr size_t kMaxBlocks = 4096;

unsigned blocksFor(size_t count) {
  return static_cast<unsigned>(std::min((count + kThreads - 1) / kThreads, kMaxBlocks));
}

// No __restrict__: dst may be a or b. Each thread reads both of its inputs
// before writing, so that aliasing is safe.
template <typename C, typename Op>
__global__ void reduceKernel(typename C::Storage* dst, const typename C::Storage* a,
                             const typename C::Storage* b, size_t count) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += stride) {
    dst[i] = combine<C, Op>(a[i], b[i]);
  }
}

template <typename C>
__global__ void divideKernel(typename C::Storage* data, size_t count, Divider<C> divider) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += stride) {
    data[i] = divider.apply(data[i]);
  }
}

// Signed sum and prod wrap exactly like unsigned ones of the same width (two's
// complement), so they share the unsigned kernels: 8 fewer instantiations.
// (C++17: CMake 3.25 cannot ask nvcc for C++20.)
template <typename C, typename Op, typename = void>
struct KernelCodec {
  using type = C;
};
template <typename T, typename Op>
struct KernelCodec<Native<T>, Op,
                   std::enable_if_t<std::is_signed_v<T> && std::is_integral_v<T> &&
                                    (std::is_same_v<Op, Sum> || std::is_same_v<Op, Prod>)>> {
  using type = Native<std::make_unsigned_t<T>>;
};

}  // namespace

cudaError_t launchReduce(ecclDataType_t dtype, ecclRedOp_t op, void* dst, const void* a,
                         const void* b, size_t count, cudaStream_t stream) {
  // Validate before touching the runtime: a bad argument must not launch.
  if (dtype < 0 || dtype >= ecclNumTypes || op < 0 || op >= ecclNumOps) {
    return cudaErrorInvalidValue;
  }
  if (count == 0) return cudaSuccess;
  withCodec(dtype, [&](auto codec) {
    withOp(op, [&](auto operation) {
      using C = typename KernelCodec<decltype(codec), decltype(operation)>::type;
      using S = typename C::Storage;
      reduceKernel<C, decltype(operation)><<<blocksFor(count), kThreads, 0, stream>>>(
          static_cast<S*>(dst), static_cast<const S*>(a), static_cast<const S*>(b), count);
    });
  });
  return cudaGetLastError();
}

cudaError_t launchDivide(ecclDataType_t dtype, void* data, size_t count, uint64_t divisor,
                         cudaStream_t stream) {
  if (dtype < 0 || dtype >= ecclNumTypes || divisor == 0) return cudaErrorInvalidValue;
  if (count == 0) return cudaSuccess;
  withCodec(dtype, [&](auto codec) {
    using C = decltype(codec);
    divideKernel<C><<<blocksFor(count), kThreads, 0, stream>>>(
        static_cast<typename C::Storage*>(data), count, Divider<C>(divisor));
  });
  return cudaGetLastError();
}

}  // namespace eccl::cuda
