// Ring collectives, written against transport::Link only.
//
// All-reduce = reduce-scatter then all-gather, pipelined per segment: as soon
// as a segment arrives it is reduced and sent on, so sending, receiving and
// reducing overlap. Each element's reduction order is fixed by ring position,
// the final value of a chunk is produced once by its owner and forwarded
// verbatim, so every member ends with identical bits. AVG divides once at the
// owner. Broadcast is a pipelined chain from the root along the ring.
//
// With a codec (codec/codec.h) every hop sends encoded segments: a
// reduce-scatter hop encodes its partial sum and the receiver adds the decoded
// values to its own input, in the source precision. The owner of a finished
// chunk encodes it once and replaces its own copy with the decoded value; the
// others decode it and forward the same bytes, so every member still ends
// with identical bits. Broadcast: the root encodes once and keeps the decoded
// value too (its buffer changes). The codec works per segment, inside the
// pipeline.
//
// Every received frame is checked against the op's descriptor (codec and
// block size included) and its payload size; a frame of another op shape
// means the peers disagree (ecclInvalidUsage).
//
// Waiting: a receive that gets nothing, or a send whose bytes the neighbour
// does not take, for `stallReport` calls onStall (the communicator tells the
// master) and goes on waiting, again every `stallReport`; no progress for
// `progressTimeout` is ecclTimeout. The master's verdict, through the cancel
// flag, is what normally ends a stuck op.
#pragma once

#include <chrono>
#include <functional>
#include <span>
#include <vector>

#include "codec/codec.h"
#include "eccl/eccl.h"
#include "transport/transport.h"

namespace eccl::collectives {

// Where a codec op's elements live when the ring cannot touch them itself
// (CUDA buffers, comm/device_ring.h): every operation on elements happens
// there, and only encoded bytes cross between it and the wire. Pointers into
// the op's buffers are the store's own (device) addresses; encoded bytes are
// host memory. Each call completes before it returns.
class ElementStore {
 public:
  virtual ~ElementStore() = default;
  // The encoded bytes of `count` elements at `src`; valid until the next call.
  virtual Result<std::span<const std::byte>> encode(const void* src, size_t count,
                                                    uint64_t seed) = 0;
  // dst = decode(encoded).
  virtual Status decode(std::span<const std::byte> encoded, size_t count, void* dst) = 0;
  // dst = local OP decode(encoded), as RingIo::combine does on the host.
  virtual Status combine(ecclRedOp_t op, std::span<const std::byte> encoded, size_t count,
                         const void* local, void* dst) = 0;
  // data /= divisor (ecclAvg's one division).
  virtual Status divide(void* data, size_t count, uint64_t divisor) = 0;
};

struct RingContext {
  int rank = 0;
  int world = 1;
  transport::Link* right = nullptr;  // we send to it
  transport::Link* left = nullptr;   // we receive from it
  // [k]: to and from the members 2^k places on and back (k = 0: right, left),
  // for 2^k < world; the small-message collectives' links.
  std::vector<transport::Link*> hopOut, hopIn;
  wire::DataHeader base;             // epoch, group, tag, seq and the op descriptor
  std::chrono::milliseconds progressTimeout{60000};  // per frame waited for
  std::chrono::milliseconds stallReport{1000};
  std::function<void(uint64_t neighbour, bool sending, std::chrono::milliseconds stuck)> onStall;
  const transport::CancelFlag* cancel = nullptr;
  size_t segmentBytes = 1 << 20;
  // Called, when set, before the op first overwrites bytes [offset, offset +
  // len) of recvbuf (once per byte), so that the caller can keep them and
  // restore its input if the op fails. The all-reduce calls it where it
  // first reads them (they are in cache then).
  std::function<void(size_t offset, size_t len)> beforeOverwrite;
  // Called, when set, before the op first reads bytes [offset, offset + len)
  // of its input: they may still be arriving (device buffers staged in
  // segments, comm/staging.h). A failure fails the op.
  std::function<Status(size_t offset, size_t len)> awaitInput;
  const codec::Codec* codec = nullptr;  // none: raw elements
  codec::Params codecParams;
  // With a codec only: the op's elements live there, not in host memory.
  ElementStore* elements = nullptr;
  uint64_t bytesSent = 0;  // on the wire (encoded)
  uint64_t bytesReceived = 0;
  uint64_t logicalBytesSent = 0;  // the same without a codec
  uint64_t logicalBytesReceived = 0;
};

// Whichever pending segment of step `step` arrives next from `link`, with
// the context's waiting rules: a stall report every ctx.stallReport without
// one, ecclTimeout once ctx.progressTimeout passed since `lastFrame`.
Result<transport::Frame> awaitFrame(RingContext& ctx, transport::Link* link, uint32_t step,
                                    std::span<const uint8_t> pending,
                                    transport::Deadline lastFrame);

// ctx.awaitInput(offset, len) when set.
inline Status awaitInput(RingContext& ctx, size_t offset, size_t len) {
  return ctx.awaitInput && len > 0 ? ctx.awaitInput(offset, len) : Status::ok();
}

Status ringAllReduce(RingContext& ctx, const void* sendbuf, void* recvbuf, size_t count,
                     ecclDataType_t dtype, ecclRedOp_t op);

Status ringBroadcast(RingContext& ctx, void* buf, size_t count, ecclDataType_t dtype, int root);

}  // namespace eccl::collectives
