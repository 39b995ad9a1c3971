// Payload codecs: what a collective puts on the wire instead of the raw
// elements (ecclOpOptions_t.quantization). docs/codecs.md has the formats,
// the error bounds and what happens to NaN, infinities and constant blocks.
//
// One interface, one registry: find() returns the stateless codec for an
// ecclQuantization_t; the Params of the op (source dtype, rounding, block
// size) go with every call. A codec encodes `count` elements of the source
// dtype into exactly encodedBytes(count) bytes, and decodes such bytes back
// into the source dtype, or adds them to another buffer (the reduce-scatter
// hop: out = addend + decode(in), in the precision of the reduction kernels).
//
// Determinism: encode and decode depend only on their arguments (and the
// seed, for stochastic rounding), never on the CPU or the code path (AVX2
// clone or baseline; this file is compiled without floating-point
// contraction), so every ring member decoding the same bytes gets the same
// bits.
//
// Decoding never fails and never misbehaves on any bytes of the right size:
// a hostile frame decodes to some values (possibly NaN), nothing else. The
// size is checked first (checkEncoded), since it comes from the network.
//
// Thread safety: pure functions; any number of threads may call them at once
// on disjoint output buffers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "common/status.h"
#include "eccl/eccl.h"

namespace eccl::codec {

inline constexpr uint32_t kDefaultBlockElems = 256;
inline constexpr uint32_t kMinBlockElems = 8;
inline constexpr uint32_t kMaxBlockElems = 32768;

struct Params {
  ecclDataType_t dtype = ecclFloat32;  // of the user's buffer
  ecclRounding_t rounding = ecclRoundNearest;
  uint32_t blockElems = 0;  // affine codecs only (0 for the others)
};

class Codec {
 public:
  virtual ~Codec() = default;
  virtual ecclQuantization_t id() const = 0;
  virtual const char* name() const = 0;
  // Whether the codec has per-block metadata (and so a block size).
  virtual bool blocked() const = 0;
  virtual size_t encodedBytes(const Params& p, size_t count) const = 0;
  // out: encodedBytes(count) bytes. seed: the stream stochastic rounding
  // draws from (segmentSeed); ignored when rounding to nearest.
  virtual void encode(const Params& p, const void* src, size_t count, std::byte* out,
                      uint64_t seed) const = 0;
  // in: encodedBytes(count) bytes (checkEncoded). out: count elements.
  virtual void decode(const Params& p, const std::byte* in, size_t count, void* out) const = 0;
  // out[i] = addend[i] + decode(in)[i], added as reduce::reduce adds (16-bit
  // types widened to float32 and rounded back). out may equal addend.
  virtual void decodeAdd(const Params& p, const std::byte* in, size_t count, const void* addend,
                         void* out) const = 0;
};

// The codec for `q`; nullptr for ecclQuantNone or a value out of range.
const Codec* find(ecclQuantization_t q);
// Checks what a caller asked for; ecclInvalidArgument with a message naming
// the problem (an integer dtype, a block size out of range, ...). Fills in
// the default block size. `quant` and `rounding` are ints as a C caller may
// pass anything.
Status checkParams(int quant, int rounding, ecclDataType_t dtype, uint32_t* blockElems);

// A received payload must be exactly the size its op's codec gives.
Status checkEncoded(const Codec& c, const Params& p, size_t count, size_t payloadBytes);

// The random stream of one encoded segment: the same on every peer that
// encodes the same (epoch, tag, op, ring step, first element).
uint64_t segmentSeed(uint64_t epoch, uint32_t tag, uint64_t seq, uint32_t step,
                     uint64_t firstElement);

}  // namespace eccl::codec
