// Data-link wire formats: the hello that opens each stream, and the fixed
// header in front of every data frame.
//
// Every data frame names (epoch, group, tag, seq, step, segment) and the op
// descriptor (kind, dtype, op, count, root), so a receiver can drop frames of
// an old epoch and detect peers that disagree about an op. The decoders are
// the only way bytes from a data stream are interpreted; they check magic,
// version, enum ranges and sizes. Fuzzed by tests/fuzz/fuzz_data.cc.
#pragma once

#include <cstdint>
#include <span>

#include "common/status.h"
#include "wire/control.h"

namespace eccl::wire {

inline constexpr uint32_t kHelloMagic = 0x48434345;  // "ECCH"
inline constexpr uint32_t kDataMagic = 0x44434345;   // "ECCD"
inline constexpr uint16_t kDataVersion = 1;
inline constexpr size_t kHelloBytes = 40;
inline constexpr size_t kDataHeaderBytes = 64;
inline constexpr uint32_t kMaxStreams = 64;
inline constexpr uint32_t kMaxSegmentBytes = 64u << 20;

// First bytes on every data stream, from the dialling side.
struct LinkHello {
  uint64_t fromPeer = 0;
  uint64_t epoch = 0;
  uint32_t streamIndex = 0;
  uint32_t streamCount = 0;
  uint64_t authHash = 0;  // hash of the shared auth token (0 when none)
};

struct DataHeader {
  uint8_t kind = 0;  // OpKind
  uint8_t dtype = 0;
  uint8_t redop = 0;
  uint32_t group = 0;
  uint32_t tag = 0;
  uint64_t epoch = 0;
  uint64_t seq = 0;
  uint64_t count = 0;
  int32_t root = 0;
  uint32_t step = 0;
  uint32_t segment = 0;
  uint32_t payloadBytes = 0;

  OpDescriptor descriptor() const { return {kind, dtype, redop, count, root}; }
};

void encodeHello(const LinkHello& hello, std::byte* out /* kHelloBytes */);
Result<LinkHello> decodeHello(std::span<const std::byte> bytes);

void encodeDataHeader(const DataHeader& h, std::byte* out /* kDataHeaderBytes */);
Result<DataHeader> decodeDataHeader(std::span<const std::byte> bytes);

// FNV-1a of the token; 0 for none. Only a guard against mis-wired jobs, not
// cryptographic authentication.
uint64_t tokenHash(const std::string& token);

}  // namespace eccl::wire
