#include "collectives/small.h"

#include <fmt/format.h>

#include <cstring>
#include <vector>

#include "collectives/schedule.h"
#include "common/dtype.h"
#include "reduce/reduce.h"

namespace eccl::collectives {
namespace {

// Sends and receives runs of elements on the hop links, in segments.
class HopIo {
 public:
  HopIo(RingContext& ctx, ecclDataType_t dtype)
      : ctx_(ctx), elem_(dtypeSize(dtype)), segElems_(std::max<size_t>(1, ctx.segmentBytes / elem_)) {}

  // Elements [0, total) at `data` to the member 2^k places on.
  Status send(size_t k, const std::byte* data, size_t total) {
    transport::Link* link = ctx_.hopOut[k];
    transport::StallWatch watch;
    if (ctx_.onStall) {
      watch.every = ctx_.stallReport;
      watch.onStall = [&](std::chrono::milliseconds stuck) { ctx_.onStall(link->remotePeer(), true, stuck); };
    }
    const Range all{0, total};
    for (uint32_t j = 0; j < segmentCount(total, segElems_); ++j) {
      const Range s = segmentRange(all, segElems_, j);
      wire::DataHeader h = ctx_.base;
      h.step = kSmallStepBase + static_cast<uint32_t>(k);
      h.segment = j;
      h.payloadBytes = static_cast<uint32_t>(s.count * elem_);
      ctx_.bytesSent += h.payloadBytes;
      ctx_.logicalBytesSent += h.payloadBytes;
      ECCL_RETURN_IF_ERROR(link->send(h, data + s.begin * elem_,
                                      transport::Clock::now() + ctx_.progressTimeout, *ctx_.cancel,
                                      ctx_.onStall ? &watch : nullptr));
    }
    return Status::ok();
  }

  // Elements [0, total) into `out` from the member 2^k places back.
  Status recv(size_t k, std::byte* out, size_t total) {
    transport::Link* link = ctx_.hopIn[k];
    const wire::DataHeader& b = ctx_.base;
    const uint32_t step = kSmallStepBase + static_cast<uint32_t>(k);
    const Range all{0, total};
    std::vector<uint8_t> pending(segmentCount(total, segElems_), 1);
    transport::Deadline lastFrame = transport::Clock::now();
    for (size_t left = pending.size(); left > 0; --left) {
      Result<transport::Frame> f = awaitFrame(ctx_, link, step, pending, lastFrame);
      if (!f) return f.status();
      lastFrame = transport::Clock::now();
      const wire::DataHeader& h = f->header;
      pending[h.segment] = 0;  // one of `pending`: recvAny takes no other
      const Range s = segmentRange(all, segElems_, h.segment);
      if (!(h.descriptor() == b.descriptor()) || h.epoch != b.epoch || h.group != b.group ||
          h.payloadBytes != s.count * elem_) {
        return error(ecclInvalidUsage,
                     fmt::format("peer {} runs a different op on tag {} op #{}: it sent {} ({} "
                                 "bytes), we expect {} ({} bytes)",
                                 link->remotePeer(), b.tag, b.seq, wire::describe(h.descriptor()),
                                 h.payloadBytes, wire::describe(b.descriptor()), s.count * elem_));
      }
      ctx_.bytesReceived += h.payloadBytes;
      ctx_.logicalBytesReceived += h.payloadBytes;
      if (s.count > 0) std::memcpy(out + s.begin * elem_, f->bytes().data(), s.count * elem_);
    }
    return Status::ok();
  }

 private:
  RingContext& ctx_;
  size_t elem_;
  size_t segElems_;
};

}  // namespace

bool takesSmallPath(const RingContext& ctx, size_t bytes) {
  return smallPath(bytes, static_cast<size_t>(ctx.world), ctx.codec != nullptr) &&
         ctx.hopOut.size() == ctx.hopIn.size() && !ctx.hopOut.empty() &&
         (size_t{1} << (ctx.hopOut.size() - 1)) * 2 >= static_cast<size_t>(ctx.world);
}

Status gatherAllReduce(RingContext& ctx, const void* sendbuf, void* recvbuf, size_t count,
                       ecclDataType_t dtype, ecclRedOp_t op) {
  const size_t n = static_cast<size_t>(ctx.world), r = static_cast<size_t>(ctx.rank);
  const size_t esz = dtypeSize(dtype), bytes = count * esz;
  HopIo io(ctx, dtype);
  // blocks[i]: the input of the member i places back along the ring.
  std::vector<std::byte> blocks(n * bytes);
  ECCL_RETURN_IF_ERROR(awaitInput(ctx, 0, bytes));
  std::memcpy(blocks.data(), sendbuf, bytes);
  for (size_t k = 0, d = 1; d < n; ++k, d *= 2) {
    const size_t blocksNow = std::min(d, n - d);
    // Receivers' links take frames whatever they wait for: send, then receive.
    ECCL_RETURN_IF_ERROR(io.send(k, blocks.data(), blocksNow * count));
    ECCL_RETURN_IF_ERROR(io.recv(k, blocks.data() + d * bytes, blocksNow * count));
  }
  // Rank q's input is block (r - q) mod n. Rank order, the same everywhere.
  auto block = [&](size_t q) { return blocks.data() + ((r + n - q) % n) * bytes; };
  if (ctx.beforeOverwrite) ctx.beforeOverwrite(0, bytes);
  auto* out = static_cast<std::byte*>(recvbuf);
  std::memcpy(out, block(0), bytes);
  for (size_t q = 1; q < n; ++q) {
    if (!reduce::reduce(dtype, op, out, out, block(q), count)) {
      return error(ecclInvalidArgument, "no reduction kernel for this dtype and op");
    }
  }
  if (op == ecclAvg && !reduce::divide(dtype, out, count, n)) {
    return error(ecclInvalidArgument, "no division kernel for this dtype");
  }
  return Status::ok();
}

Status treeBroadcast(RingContext& ctx, void* buf, size_t count, ecclDataType_t dtype, int root) {
  const size_t n = static_cast<size_t>(ctx.world);
  const size_t v = static_cast<size_t>(mod(ctx.rank - root, ctx.world));  // places past the root
  HopIo io(ctx, dtype);
  auto* data = static_cast<std::byte*>(buf);
  if (v == 0) ECCL_RETURN_IF_ERROR(awaitInput(ctx, 0, count * dtypeSize(dtype)));
  for (size_t k = 0, d = 1; d < n; ++k, d *= 2) {
    if (v < d) {
      if (v + d < n) ECCL_RETURN_IF_ERROR(io.send(k, data, count));
    } else if (v < 2 * d) {
      if (ctx.beforeOverwrite) ctx.beforeOverwrite(0, count * dtypeSize(dtype));
      ECCL_RETURN_IF_ERROR(io.recv(k, data, count));
    }
  }
  return Status::ok();
}

}  // namespace eccl::collectives
