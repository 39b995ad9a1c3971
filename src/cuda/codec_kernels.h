// Payload codec kernels on device memory: the GPU twins of
// codec::find(q)->encode, decode and decodeAdd (codec/codec.h), giving the
// same bytes and the same bits for every input, with the same layout of the
// encoded bytes (cuda/codec_elementwise.h says how, and names the one case
// left open: the NaN payload of NaN + NaN in a decode-and-add).
//
// Buffers are device memory (or managed) of the current device. src, addend
// and out hold `count` elements of p.dtype with that type's alignment; the
// encoded bytes (codec::find(q)->encodedBytes(p, count) of them) may sit at
// any address. out may be the same pointer as addend; no other overlap.
//
// The functions enqueue on `stream` and return at once. They return
// cudaErrorInvalidValue without launching anything (and without calling the
// CUDA runtime) for what codec::checkParams refuses (a codec out of range or
// none, a dtype that is not float16, bfloat16, float32 or float64, a rounding
// out of range, an affine codec's block size not a multiple of 8 from 8 to
// 32768) and for a null pointer with count > 0; count 0 then launches nothing
// and returns cudaSuccess. Otherwise the result is cudaGetLastError() after
// the launch. Thread-safe.
//
// codec::Params is only declared here: nvcc compiles the kernels as C++17
// (CMake 3.25 cannot ask it for C++20), and codec.h belongs to the C++20
// core, so the overloads above live in codec_kernels.cc, built by the host
// compiler, and pass plain values to the launchers in `detail`. Callers
// include codec/codec.h for Params.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "eccl/eccl.h"

namespace eccl::codec {
struct Params;
}  // namespace eccl::codec

namespace eccl::cuda {

// out: the encoded bytes. seed: the stochastic stream, as for the host codec.
cudaError_t launchEncode(ecclQuantization_t q, const codec::Params& p, const void* src,
                         size_t count, std::byte* out, uint64_t seed, cudaStream_t stream);

cudaError_t launchDecode(ecclQuantization_t q, const codec::Params& p, const std::byte* in,
                         size_t count, void* out, cudaStream_t stream);

// out[i] = addend[i] + decode(in)[i], added as reduce::reduce adds.
cudaError_t launchDecodeAdd(ecclQuantization_t q, const codec::Params& p, const std::byte* in,
                            size_t count, const void* addend, void* out, cudaStream_t stream);

namespace detail {

// What the kernels need of (q, Params), checked by the callers above. bits:
// 16 for the cast codecs (bf16 says which), 8 or 4 for the affine ones.
struct CodecShape {
  ecclDataType_t dtype;
  int bits;
  bool bf16;
  bool stochastic;
  uint32_t blockElems;
};

// count > 0, pointers not null, shape valid.
cudaError_t encode(const CodecShape& shape, const void* src, size_t count, std::byte* out,
                   uint64_t seed, cudaStream_t stream);
// addend null: decode; else decode-and-add.
cudaError_t decode(const CodecShape& shape, const std::byte* in, size_t count,
                   const void* addend, void* out, cudaStream_t stream);

}  // namespace detail
}  // namespace eccl::cuda
