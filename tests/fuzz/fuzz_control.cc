// libFuzzer target: control frames as the master and peers read them.
// Any input must decode to a message or a clean error; a message must
// re-encode and decode to the same bytes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "wire/control.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace eccl::wire;
  std::span<const std::byte> in(reinterpret_cast<const std::byte*>(data), size);
  if (in.size() < kControlHeaderBytes) {
    (void)decodeControlHeader(in);
    return 0;
  }
  eccl::Result<ControlHeader> h = decodeControlHeader(in.first(kControlHeaderBytes));
  if (!h) return 0;
  eccl::Result<ControlMessage> m = decodeControl(h->type, in.subspan(kControlHeaderBytes));
  if (!m) return 0;
  std::vector<std::byte> again = encodeControl(*m);
  eccl::Result<ControlMessage> m2 =
      decodeControl(h->type, std::span<const std::byte>(again).subspan(kControlHeaderBytes));
  if (!m2 || encodeControl(*m2) != again) std::abort();  // encode/decode must agree
  return 0;
}
