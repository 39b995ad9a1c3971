// The codec::Params side of cuda/codec_kernels.h, compiled by the host
// compiler: checks the arguments as codec::checkParams does and hands plain
// values to the kernels' launchers (codec_kernels.cu, C++17).
#include "cuda/codec_kernels.h"

#include <optional>

#include "codec/codec.h"

namespace eccl::cuda {
namespace {

std::optional<detail::CodecShape> shapeOf(ecclQuantization_t q, const codec::Params& p) {
  detail::CodecShape s{p.dtype, 16, false, p.rounding == ecclRoundStochastic, p.blockElems};
  switch (q) {
    case ecclQuantFloat16: break;
    case ecclQuantBfloat16: s.bf16 = true; break;
    case ecclQuantUint8: s.bits = 8; break;
    case ecclQuantUint4: s.bits = 4; break;
    default: return std::nullopt;
  }
  switch (p.dtype) {
    case ecclFloat16:
    case ecclBfloat16:
    case ecclFloat32:
    case ecclFloat64: break;
    default: return std::nullopt;
  }
  if (p.rounding != ecclRoundNearest && p.rounding != ecclRoundStochastic) return std::nullopt;
  if (s.bits != 16 && (p.blockElems < codec::kMinBlockElems ||
                       p.blockElems > codec::kMaxBlockElems || p.blockElems % 8 != 0)) {
    return std::nullopt;
  }
  return s;
}

}  // namespace

cudaError_t launchEncode(ecclQuantization_t q, const codec::Params& p, const void* src,
                         size_t count, std::byte* out, uint64_t seed, cudaStream_t stream) {
  const auto shape = shapeOf(q, p);
  if (!shape || (count > 0 && (src == nullptr || out == nullptr))) return cudaErrorInvalidValue;
  if (count == 0) return cudaSuccess;
  return detail::encode(*shape, src, count, out, seed, stream);
}

cudaError_t launchDecode(ecclQuantization_t q, const codec::Params& p, const std::byte* in,
                         size_t count, void* out, cudaStream_t stream) {
  const auto shape = shapeOf(q, p);
  if (!shape || (count > 0 && (in == nullptr || out == nullptr))) return cudaErrorInvalidValue;
  if (count == 0) return cudaSuccess;
  return detail::decode(*shape, in, count, nullptr, out, stream);
}

cudaError_t launchDecodeAdd(ecclQuantization_t q, const codec::Params& p, const std::byte* in,
                            size_t count, const void* addend, void* out, cudaStream_t stream) {
  const auto shape = shapeOf(q, p);
  if (!shape || (count > 0 && (in == nullptr || addend == nullptr || out == nullptr))) {
    return cudaErrorInvalidValue;
  }
  if (count == 0) return cudaSuccess;
  return detail::decode(*shape, in, count, addend, out, stream);
}

}  // namespace eccl::cuda
