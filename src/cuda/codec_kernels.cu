// The codec kernels behind cuda/codec_kernels.h. The arithmetic is
// cuda/codec_elementwise.h's; this file only maps it onto threads.
//
// Instantiations: one kernel per (kind, source element type), 4 x 4. The
// codec (fp16 or bf16, uint8 or uint4), the rounding and decode versus
// decode-and-add are arguments, the same for every thread, so their branches
// never diverge; compile time on small build machines is what they save.
#include <algorithm>
#include <cstdint>

#include "cuda/codec_elementwise.h"
#include "cuda/codec_kernels.h"

namespace eccl::cuda::detail {
namespace {

constexpr unsigned kThreads = 256;
constexpr size_t kMaxBlocks = 4096;  // as kernels.cu: grid-stride beyond that

unsigned gridFor(size_t work, size_t perBlock) {
  return static_cast<unsigned>(std::min((work + perBlock - 1) / perBlock, kMaxBlocks));
}

// 16-bit words of the encoded buffer, which may sit at any address.
__device__ inline void store16(std::byte* p, uint16_t w, bool aligned) {
  if (aligned) {
    *reinterpret_cast<uint16_t*>(p) = w;
  } else {
    p[0] = static_cast<std::byte>(w & 0xffu);
    p[1] = static_cast<std::byte>(w >> 8);
  }
}
__device__ inline uint16_t load16(const std::byte* p, bool aligned) {
  if (aligned) return *reinterpret_cast<const uint16_t*>(p);
  return static_cast<uint16_t>(static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8);
}

__device__ inline size_t globalThread() {
  return static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ inline size_t gridThreads() { return static_cast<size_t>(gridDim.x) * blockDim.x; }

// ---- fp16 / bf16 ----------------------------------------------------------------

template <typename E>
__global__ void castEncodeKernel(const typename E::Storage* __restrict__ x, size_t n,
                                 std::byte* __restrict__ out, bool bf16, bool stochastic,
                                 uint64_t seed) {
  const bool aligned = (reinterpret_cast<uintptr_t>(out) & 1u) == 0;
  for (size_t i = globalThread(); i < n; i += gridThreads()) {
    store16(out + 2 * i, castEncodeOne<E>(x[i], bf16, stochastic, seed, i), aligned);
  }
}

// No __restrict__ on addend and out: they may be one buffer.
template <typename E>
__global__ void castDecodeKernel(const std::byte* __restrict__ in, size_t n,
                                 const typename E::Storage* addend, typename E::Storage* out,
                                 bool bf16) {
  const bool aligned = (reinterpret_cast<uintptr_t>(in) & 1u) == 0;
  for (size_t i = globalThread(); i < n; i += gridThreads()) {
    const uint16_t w = load16(in + 2 * i, aligned);
    out[i] = addend != nullptr ? castDecodeAddOne<E>(w, addend[i], bf16)
                               : castDecodeOne<E>(w, bf16);
  }
}

// ---- uint8 / uint4 ----------------------------------------------------------------
//
// A group of lanesPerBlock(b) lanes of one warp per block, grid-stride over
// blocks. The loop runs while the warp's first group has a block, so every
// lane of a warp takes part in each shuffle; a group past the last block
// scans nothing and writes nothing.

__device__ inline Scan<float> shuffleXor(const Scan<float>& s, unsigned offset) {
  Scan<float> o;
  o.kmin = __shfl_xor_sync(0xffffffffu, s.kmin, offset);
  o.kmax = __shfl_xor_sync(0xffffffffu, s.kmax, offset);
  o.bad = __shfl_xor_sync(0xffffffffu, s.bad, offset);
  return o;
}
__device__ inline Scan<double> shuffleXor(const Scan<double>& s, unsigned offset) {
  Scan<double> o;
  o.mn = __shfl_xor_sync(0xffffffffu, s.mn, offset);
  o.mx = __shfl_xor_sync(0xffffffffu, s.mx, offset);
  o.imn = __shfl_xor_sync(0xffffffffu, s.imn, offset);
  o.imx = __shfl_xor_sync(0xffffffffu, s.imx, offset);
  o.bad = __shfl_xor_sync(0xffffffffu, s.bad, offset);
  return o;
}

// The blocks this thread's group works on, and its lane in the group.
struct GroupWalk {
  size_t first;   // the warp's first group, then every stride
  size_t stride;  // groups in the grid
  unsigned groupInWarp;
  unsigned lane;
};

__device__ inline GroupWalk groupWalk(unsigned lanes) {
  const unsigned warpLane = threadIdx.x % 32;
  return {(globalThread() - warpLane) / lanes, gridThreads() / lanes, warpLane / lanes,
          threadIdx.x % lanes};
}

template <typename E>
__global__ void affineEncodeKernel(const typename E::Storage* __restrict__ x, size_t n, size_t b,
                                   std::byte* __restrict__ out, int bits, bool stochastic,
                                   uint64_t seed, unsigned lanes) {
  using C = typename E::Compute;
  const size_t blocks = affineBlocks(n, b);
  auto* codes = reinterpret_cast<uint8_t*>(out + affineMetaBytes<C>(n, b));
  const GroupWalk walk = groupWalk(lanes);
  for (size_t first = walk.first; first < blocks; first += walk.stride) {
    const size_t k = first + walk.groupInWarp;
    const bool active = k < blocks;
    const size_t begin = active ? k * b : 0;
    const size_t len = active ? (n - begin < b ? n - begin : b) : 0;  // std::min is host-only
    Scan<C> scan = scanLane<E>(x + begin, len, walk.lane, lanes);
    for (unsigned offset = 1; offset < lanes; offset <<= 1) scan.merge(shuffleXor(scan, offset));
    if (!active) continue;  // no shuffle follows in this iteration
    const AffineBlock<C> blk = affineBlock(scan, (1 << bits) - 1);
    if (walk.lane == 0) writeBounds(out, k, blk.lo, blk.hi);
    encodeLane<E>(x + begin, len, blk, bits, stochastic, blockStream(seed, k),
                  codes + codeOffset(bits, begin), walk.lane, lanes);
  }
}

template <typename E>
__global__ void affineDecodeKernel(const std::byte* __restrict__ in, size_t n, size_t b,
                                   const typename E::Storage* addend, typename E::Storage* out,
                                   int bits, unsigned lanes) {
  using C = typename E::Compute;
  const size_t blocks = affineBlocks(n, b);
  const auto* codes = reinterpret_cast<const uint8_t*>(in + affineMetaBytes<C>(n, b));
  const GroupWalk walk = groupWalk(lanes);
  for (size_t first = walk.first; first < blocks; first += walk.stride) {
    const size_t k = first + walk.groupInWarp;
    if (k >= blocks) continue;
    const size_t begin = k * b;
    C lo, hi;
    readBounds(in, k, &lo, &hi);
    decodeLane<E>(codes + codeOffset(bits, begin), n - begin < b ? n - begin : b, lo, hi, bits,
                  addend != nullptr ? addend + begin : nullptr, out + begin, walk.lane, lanes);
  }
}

}  // namespace

cudaError_t encode(const CodecShape& shape, const void* src, size_t count, std::byte* out,
                   uint64_t seed, cudaStream_t stream) {
  withFloatCodec(shape.dtype, [&](auto e) {
    using E = decltype(e);
    const auto* x = static_cast<const typename E::Storage*>(src);
    if (shape.bits == 16) {
      castEncodeKernel<E><<<gridFor(count, kThreads), kThreads, 0, stream>>>(
          x, count, out, shape.bf16, shape.stochastic, seed);
      return;
    }
    const unsigned lanes = lanesPerBlock(shape.blockElems);
    affineEncodeKernel<E><<<gridFor(affineBlocks(count, shape.blockElems), kThreads / lanes),
                            kThreads, 0, stream>>>(x, count, shape.blockElems, out, shape.bits,
                                                   shape.stochastic, seed, lanes);
  });
  return cudaGetLastError();
}

cudaError_t decode(const CodecShape& shape, const std::byte* in, size_t count,
                   const void* addend, void* out, cudaStream_t stream) {
  withFloatCodec(shape.dtype, [&](auto e) {
    using E = decltype(e);
    using S = typename E::Storage;
    const auto* a = static_cast<const S*>(addend);
    auto* o = static_cast<S*>(out);
    if (shape.bits == 16) {
      castDecodeKernel<E><<<gridFor(count, kThreads), kThreads, 0, stream>>>(in, count, a, o,
                                                                             shape.bf16);
      return;
    }
    const unsigned lanes = lanesPerBlock(shape.blockElems);
    affineDecodeKernel<E><<<gridFor(affineBlocks(count, shape.blockElems), kThreads / lanes),
                            kThreads, 0, stream>>>(in, count, shape.blockElems, a, o, shape.bits,
                                                   lanes);
  });
  return cudaGetLastError();
}

}  // namespace eccl::cuda::detail
