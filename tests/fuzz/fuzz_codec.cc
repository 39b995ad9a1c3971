// libFuzzer target: the decoders of encoded payloads (codec/codec.h). The
// first bytes choose what the receiving op expects (codec, source dtype,
// block size, element count); the rest is the frame's payload. A payload of
// the wrong size must be refused by checkEncoded; one of the right size must
// decode (and decode-add, in place too) to the same values every time,
// whatever its bytes, without reading or writing out of bounds.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "codec/codec.h"
#include "common/dtype.h"

using namespace eccl;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 6) return 0;
  const auto q = static_cast<ecclQuantization_t>(1 + data[0] % 4);
  constexpr ecclDataType_t kTypes[] = {ecclFloat32, ecclFloat64, ecclFloat16, ecclBfloat16};
  const ecclDataType_t dt = kTypes[data[1] % 4];
  uint32_t block = static_cast<uint32_t>(data[2]) * 8;  // 0 = the default; some are refused
  const size_t count = static_cast<size_t>(data[3]) | (static_cast<size_t>(data[4] & 0x0f) << 8);
  const int rounding = data[5] & 1;
  if (!codec::checkParams(q, rounding, dt, &block).isOk()) return 0;
  const codec::Codec* c = codec::find(q);
  if (c == nullptr) std::abort();
  const codec::Params p{dt, static_cast<ecclRounding_t>(rounding), block};
  // Exactly the payload's bytes, so a read past them is caught.
  std::vector<std::byte> payload(reinterpret_cast<const std::byte*>(data) + 6,
                                 reinterpret_cast<const std::byte*>(data) + size);
  if (!codec::checkEncoded(*c, p, count, payload.size()).isOk()) return 0;
  const size_t bytes = count * dtypeSize(dt);
  std::vector<std::byte> a(bytes), b(bytes), sum(bytes), addend(bytes, std::byte{0x11});
  c->decode(p, payload.data(), count, a.data());
  c->decode(p, payload.data(), count, b.data());
  if (a != b) std::abort();
  c->decodeAdd(p, payload.data(), count, addend.data(), sum.data());
  c->decodeAdd(p, payload.data(), count, addend.data(), addend.data());  // in place
  if (memcmp(sum.data(), addend.data(), bytes) != 0) std::abort();
  // Whatever decoded encodes again into a payload of the same size.
  std::vector<std::byte> again(payload.size());
  c->encode(p, a.data(), count, again.data(), 7);
  return 0;
}
