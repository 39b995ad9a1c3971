// libFuzzer target: data-link hellos and data frame headers.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>

#include "wire/data.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace eccl::wire;
  std::span<const std::byte> in(reinterpret_cast<const std::byte*>(data), size);
  (void)decodeHello(in);
  (void)decodeDataHeader(in);
  if (in.size() >= kHelloBytes) {
    eccl::Result<LinkHello> h = decodeHello(in.first(kHelloBytes));
    if (h) {
      std::byte out[kHelloBytes];
      encodeHello(*h, out);
      eccl::Result<LinkHello> h2 = decodeHello(out);
      if (!h2 || h2->fromPeer != h->fromPeer || h2->streamIndex != h->streamIndex) std::abort();
    }
  }
  if (in.size() >= kDataHeaderBytes) {
    eccl::Result<DataHeader> d = decodeDataHeader(in.first(kDataHeaderBytes));
    if (d) {
      std::byte out[kDataHeaderBytes];
      encodeDataHeader(*d, out);
      eccl::Result<DataHeader> d2 = decodeDataHeader(out);
      if (!d2 || !(d2->descriptor() == d->descriptor()) || d2->payloadBytes != d->payloadBytes) {
        std::abort();
      }
    }
  }
  return 0;
}
