#include "collectives/ring.h"

#include <fmt/format.h>

#include <cstring>

#include "collectives/schedule.h"
#include "common/dtype.h"
#include "reduce/reduce.h"

namespace eccl::collectives {
namespace {

// Frames and buffers of one op, with the bookkeeping every step shares.
class RingIo {
 public:
  RingIo(RingContext& ctx, size_t elemSize) : ctx_(ctx), elem_(elemSize) {
    if (ctx_.onStall) {
      watch_.every = ctx_.stallReport;
      watch_.onStall = [this](std::chrono::milliseconds stuck) {
        ctx_.onStall(ctx_.right->remotePeer(), true, stuck);
      };
    }
  }

  Status send(uint32_t step, uint32_t segment, const void* data, size_t elems) {
    wire::DataHeader h = ctx_.base;
    h.step = step;
    h.segment = segment;
    h.payloadBytes = static_cast<uint32_t>(elems * elem_);
    ctx_.bytesSent += h.payloadBytes;
    return ctx_.right->send(h, data, deadline(), *ctx_.cancel, ctx_.onStall ? &watch_ : nullptr);
  }

  Result<transport::Frame> recv(uint32_t step, uint32_t segment, size_t elems) {
    const wire::DataHeader& b = ctx_.base;
    const transport::Deadline giveUp = lastFrame_ + ctx_.progressTimeout;
    Result<transport::Frame> f = error(ecclTimeout, "");
    for (;;) {
      const auto now = transport::Clock::now();
      f = ctx_.left->recv({b.tag, b.seq, step, segment}, std::min(giveUp, now + ctx_.stallReport),
                          *ctx_.cancel);
      if (f || f.status().code() != ecclTimeout || transport::Clock::now() >= giveUp) break;
      if (ctx_.onStall) {
        ctx_.onStall(ctx_.left->remotePeer(), false,
                     std::chrono::duration_cast<std::chrono::milliseconds>(
                         transport::Clock::now() - lastFrame_));
      }
    }
    if (!f) return f;
    lastFrame_ = transport::Clock::now();
    const wire::DataHeader& h = f->header;
    if (!(h.descriptor() == b.descriptor()) || h.epoch != b.epoch || h.group != b.group ||
        h.payloadBytes != elems * elem_) {
      return error(ecclInvalidUsage,
                   fmt::format("peer {} runs a different op on tag {} op #{}: it sent "
                               "kind {} count {} dtype {} op {} root {} ({} bytes), we expect "
                               "kind {} count {} dtype {} op {} root {} ({} bytes)",
                               ctx_.left->remotePeer(), b.tag, b.seq, h.kind, h.count, h.dtype,
                               h.redop, h.root, h.payloadBytes, b.kind, b.count, b.dtype,
                               b.redop, b.root, elems * elem_));
    }
    ctx_.bytesReceived += h.payloadBytes;
    return f;
  }

  size_t segElems() const { return std::max<size_t>(1, ctx_.segmentBytes / elem_); }

 private:
  transport::Deadline deadline() const { return transport::Clock::now() + ctx_.progressTimeout; }
  RingContext& ctx_;
  size_t elem_;
  transport::Deadline lastFrame_ = transport::Clock::now();  // op start, then each arrival
  transport::StallWatch watch_;
};

}  // namespace

Status ringAllReduce(RingContext& ctx, const void* sendbuf, void* recvbuf, size_t count,
                     ecclDataType_t dtype, ecclRedOp_t op) {
  const size_t esz = dtypeSize(dtype);
  const auto* in = static_cast<const std::byte*>(sendbuf);
  auto* out = static_cast<std::byte*>(recvbuf);
  const int n = ctx.world, r = ctx.rank;
  if (n == 1 || count == 0) {
    if (in != out && count > 0) std::memmove(out, in, count * esz);
    return Status::ok();
  }
  RingIo io(ctx, esz);
  const size_t seg = io.segElems();
  const uint32_t agBase = static_cast<uint32_t>(n - 1);  // all-gather step numbers follow

  // Reduce-scatter step 0: our own contribution to chunk r.
  const Range first = chunkRange(count, n, r);
  for (uint32_t j = 0; j < segmentCount(first.count, seg); ++j) {
    const Range s = segmentRange(first, seg, j);
    ECCL_RETURN_IF_ERROR(io.send(0, j, in + s.begin * esz, s.count));
  }
  // Steps 0..n-2: reduce what arrives into `out`, pass it on.
  for (int step = 0; step < n - 1; ++step) {
    const Range chunk = chunkRange(count, n, mod(r - step - 1, n));
    const bool owner = step == n - 2;  // this chunk is now complete here
    for (uint32_t j = 0; j < segmentCount(chunk.count, seg); ++j) {
      const Range s = segmentRange(chunk, seg, j);
      Result<transport::Frame> f = io.recv(static_cast<uint32_t>(step), j, s.count);
      if (!f) return f.status();
      std::byte* dst = out + s.begin * esz;
      if (!reduce::reduce(dtype, op, dst, in + s.begin * esz, f->bytes().data(), s.count) ||
          (owner && op == ecclAvg &&
           !reduce::divide(dtype, dst, s.count, static_cast<uint64_t>(n)))) {
        return error(ecclInvalidArgument, "no reduction kernel for this dtype and op");
      }
      ECCL_RETURN_IF_ERROR(io.send(owner ? agBase : static_cast<uint32_t>(step + 1), j, dst, s.count));
    }
  }
  // All-gather: copy each finished chunk and forward it unchanged.
  for (int step = 0; step < n - 1; ++step) {
    const Range chunk = chunkRange(count, n, mod(r - step, n));
    const uint32_t wireStep = agBase + static_cast<uint32_t>(step);
    for (uint32_t j = 0; j < segmentCount(chunk.count, seg); ++j) {
      const Range s = segmentRange(chunk, seg, j);
      Result<transport::Frame> f = io.recv(wireStep, j, s.count);
      if (!f) return f.status();
      std::byte* dst = out + s.begin * esz;
      if (s.count > 0) std::memcpy(dst, f->bytes().data(), s.count * esz);
      if (step < n - 2) ECCL_RETURN_IF_ERROR(io.send(wireStep + 1, j, dst, s.count));
    }
  }
  return Status::ok();
}

Status ringBroadcast(RingContext& ctx, void* buf, size_t count, ecclDataType_t dtype, int root) {
  const int n = ctx.world;
  if (n == 1 || count == 0) return Status::ok();
  const size_t esz = dtypeSize(dtype);
  auto* data = static_cast<std::byte*>(buf);
  RingIo io(ctx, esz);
  const size_t seg = io.segElems();
  const Range all{0, count};
  const int pos = mod(ctx.rank - root, n);  // distance from the root along the ring
  for (uint32_t j = 0; j < segmentCount(count, seg); ++j) {
    const Range s = segmentRange(all, seg, j);
    std::byte* p = data + s.begin * esz;
    if (pos != 0) {
      Result<transport::Frame> f = io.recv(0, j, s.count);
      if (!f) return f.status();
      std::memcpy(p, f->bytes().data(), s.count * esz);
    }
    if (pos != n - 1) ECCL_RETURN_IF_ERROR(io.send(0, j, p, s.count));
  }
  return Status::ok();
}

}  // namespace eccl::collectives
