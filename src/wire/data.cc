#include "wire/data.h"

#include <fmt/format.h>

#include <algorithm>

#include "wire/codec.h"

namespace eccl::wire {
namespace {

void copyOut(Writer& w, std::byte* out, size_t n) {
  std::vector<std::byte>& b = w.bytes();
  b.resize(n);  // zero padding up to the fixed size
  std::copy(b.begin(), b.end(), out);
}

}  // namespace

void encodeHello(const LinkHello& hello, std::byte* out) {
  Writer w;
  w.u32(kHelloMagic);
  w.u16(kDataVersion);
  w.u16(0);
  w.u64(hello.fromPeer);
  w.u64(hello.epoch);
  w.u32(hello.streamIndex);
  w.u32(hello.streamCount);
  w.u64(hello.authHash);
  copyOut(w, out, kHelloBytes);
}

Result<LinkHello> decodeHello(std::span<const std::byte> bytes) {
  if (bytes.size() != kHelloBytes) return error(ecclInvalidArgument, "short link hello");
  Reader r(bytes);
  uint32_t magic = 0;
  uint16_t version = 0, reserved = 0;
  LinkHello h;
  r.u32(&magic);
  r.u16(&version);
  r.u16(&reserved);
  r.u64(&h.fromPeer);
  r.u64(&h.epoch);
  r.u32(&h.streamIndex);
  r.u32(&h.streamCount);
  r.u64(&h.authHash);
  if (magic != kHelloMagic) {
    return error(ecclInvalidArgument, fmt::format("bad link hello magic {:#010x}", magic));
  }
  if (version != kDataVersion) {
    return error(ecclVersionMismatch,
                 fmt::format("data link version {} (this build speaks {})", version, kDataVersion));
  }
  if (h.streamCount == 0 || h.streamCount > kMaxStreams || h.streamIndex >= h.streamCount) {
    return error(ecclInvalidArgument, fmt::format("link hello with stream {} of {}",
                                                  h.streamIndex, h.streamCount));
  }
  return h;
}

void encodeDataHeader(const DataHeader& h, std::byte* out) {
  Writer w;
  w.u32(kDataMagic);
  w.u16(kDataVersion);
  w.u8(h.kind);
  w.u8(h.dtype);
  w.u8(h.redop);
  w.u8(0);
  w.u16(0);
  w.u32(h.group);
  w.u32(h.tag);
  w.u64(h.epoch);
  w.u64(h.seq);
  w.u64(h.count);
  w.i32(h.root);
  w.u32(h.step);
  w.u32(h.segment);
  w.u32(h.payloadBytes);
  copyOut(w, out, kDataHeaderBytes);
}

Result<DataHeader> decodeDataHeader(std::span<const std::byte> bytes) {
  if (bytes.size() != kDataHeaderBytes) return error(ecclInvalidArgument, "short data header");
  Reader r(bytes);
  uint32_t magic = 0;
  uint16_t version = 0, pad16 = 0;
  uint8_t pad8 = 0;
  DataHeader h;
  r.u32(&magic);
  r.u16(&version);
  r.u8(&h.kind);
  r.u8(&h.dtype);
  r.u8(&h.redop);
  r.u8(&pad8);
  r.u16(&pad16);
  r.u32(&h.group);
  r.u32(&h.tag);
  r.u64(&h.epoch);
  r.u64(&h.seq);
  r.u64(&h.count);
  r.i32(&h.root);
  r.u32(&h.step);
  r.u32(&h.segment);
  r.u32(&h.payloadBytes);
  if (magic != kDataMagic) {
    return error(ecclInvalidArgument, fmt::format("bad data frame magic {:#010x}", magic));
  }
  if (version != kDataVersion) {
    return error(ecclVersionMismatch, fmt::format("data frame version {}", version));
  }
  if ((h.kind != static_cast<uint8_t>(OpKind::kAllReduce) &&
       h.kind != static_cast<uint8_t>(OpKind::kBroadcast)) ||
      h.dtype >= ecclNumTypes || h.redop >= ecclNumOps) {
    return error(ecclInvalidArgument, fmt::format("data frame with kind {} dtype {} op {}",
                                                  h.kind, h.dtype, h.redop));
  }
  if (h.payloadBytes > kMaxSegmentBytes) {
    return error(ecclInvalidArgument,
                 fmt::format("data frame payload of {} bytes exceeds {}", h.payloadBytes,
                             kMaxSegmentBytes));
  }
  return h;
}

uint64_t tokenHash(const std::string& token) {
  if (token.empty()) return 0;
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : token) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h == 0 ? 1 : h;
}

}  // namespace eccl::wire
