#include "collectives/ring.h"

#include <fmt/format.h>

#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "collectives/schedule.h"
#include "common/dtype.h"
#include "common/large_pages.h"
#include "common/stream_copy.h"
#include "reduce/reduce.h"

namespace eccl::collectives {
namespace {

// Frames and buffers of one op, with the bookkeeping every step shares.
class RingIo {
 public:
  RingIo(RingContext& ctx, ecclDataType_t dtype)
      : ctx_(ctx), dtype_(dtype), elem_(dtypeSize(dtype)), codec_(ctx.codec) {
    if (ctx_.onStall) {
      watch_.every = ctx_.stallReport;
      watch_.onStall = [this](std::chrono::milliseconds stuck) {
        ctx_.onStall(ctx_.right->remotePeer(), true, stuck);
      };
    }
    segElems_ = std::max<size_t>(1, ctx_.segmentBytes / elem_);
    if (codec_ != nullptr) {
      // Encoded segments must fit the group's frame limit too (block metadata).
      const size_t step = std::max<size_t>(1, ctx_.codecParams.blockElems);
      while (segElems_ > step && payloadFor(segElems_) > ctx_.segmentBytes) segElems_ -= step;
    }
  }

  size_t segElems() const { return segElems_; }

  // Sends the elements of segment `s` at `data`: encoded when the op has a codec.
  Status sendElems(uint32_t step, uint32_t segment, Range s, const std::byte* data) {
    if (codec_ == nullptr) return sendBytes(step, segment, s, data, s.count * elem_);
    Result<std::span<const std::byte>> enc = encode(step, s, data);
    if (!enc) return enc.status();
    return sendBytes(step, segment, s, enc->data(), enc->size());
  }

  // Sends a payload as it is: encoded bytes being forwarded, or raw elements.
  Status sendBytes(uint32_t step, uint32_t segment, Range s, const void* payload, size_t bytes) {
    wire::DataHeader h = ctx_.base;
    h.step = step;
    h.segment = segment;
    h.payloadBytes = static_cast<uint32_t>(bytes);
    ctx_.bytesSent += bytes;
    ctx_.logicalBytesSent += s.count * elem_;
    return ctx_.right->send(h, payload, deadline(), *ctx_.cancel, ctx_.onStall ? &watch_ : nullptr);
  }

  // The owner's final value of a segment: encoded once, and `data` replaced
  // by what every other member will decode from those bytes.
  Result<std::span<const std::byte>> finalize(uint32_t step, Range s, std::byte* data) {
    Result<std::span<const std::byte>> enc = encode(step, s, data);
    if (!enc) return enc;
    if (ctx_.elements != nullptr) {
      ECCL_RETURN_IF_ERROR(ctx_.elements->decode(*enc, s.count, data));
    } else {
      codec_->decode(ctx_.codecParams, enc->data(), s.count, data);
    }
    return enc;
  }

  // The step's segments of `chunk` that have not arrived yet.
  std::vector<uint8_t> pendingOf(Range chunk) const {
    return std::vector<uint8_t>(segmentCount(chunk.count, segElems_), 1);
  }

  // Whichever pending segment of `chunk` arrives next: its frame, and its
  // index and range in *j and *s.
  Result<transport::Frame> recvNext(uint32_t step, Range chunk, std::vector<uint8_t>& pending,
                                    uint32_t* j, Range* s) {
    const wire::DataHeader& b = ctx_.base;
    Result<transport::Frame> f = awaitFrame(ctx_, ctx_.left, step, pending, lastFrame_);
    if (!f) return f;
    lastFrame_ = transport::Clock::now();
    const wire::DataHeader& h = f->header;
    *j = h.segment;  // one of `pending`: recvAny takes no other
    pending[*j] = 0;
    *s = segmentRange(chunk, segElems_, *j);
    const size_t elems = s->count;
    if (!(h.descriptor() == b.descriptor()) || h.epoch != b.epoch || h.group != b.group ||
        h.payloadBytes != payloadFor(elems)) {
      return error(ecclInvalidUsage,
                   fmt::format("peer {} runs a different op on tag {} op #{}: it sent "
                               "{} ({} bytes), we expect {} ({} bytes)",
                               ctx_.left->remotePeer(), b.tag, b.seq,
                               wire::describe(h.descriptor()), h.payloadBytes,
                               wire::describe(b.descriptor()), payloadFor(elems)));
    }
    ctx_.bytesReceived += h.payloadBytes;
    ctx_.logicalBytesReceived += elems * elem_;
    return f;
  }

  // dst = local OP (the frame's elements).
  Status combine(ecclRedOp_t op, std::byte* dst, const std::byte* local,
                 const transport::Frame& f, size_t elems) {
    if (ctx_.elements != nullptr) return ctx_.elements->combine(op, f.bytes(), elems, local, dst);
    const std::byte* theirs = f.bytes().data();
    if (codec_ != nullptr && (op == ecclSum || op == ecclAvg)) {
      codec_->decodeAdd(ctx_.codecParams, theirs, elems, local, dst);
      return Status::ok();
    }
    if (codec_ != nullptr) {
      if (scratch_.size() < elems * elem_) scratch_.resize(elems * elem_);
      codec_->decode(ctx_.codecParams, theirs, elems, scratch_.data());
      theirs = scratch_.data();
    }
    if (!reduce::reduce(dtype_, op, dst, local, theirs, elems)) {
      return error(ecclInvalidArgument, "no reduction kernel for this dtype and op");
    }
    return Status::ok();
  }

  // dst = the frame's elements.
  Status unpack(const transport::Frame& f, size_t elems, std::byte* dst) {
    if (ctx_.elements != nullptr) return ctx_.elements->decode(f.bytes(), elems, dst);
    if (codec_ != nullptr) {
      codec_->decode(ctx_.codecParams, f.bytes().data(), elems, dst);
    } else if (elems > 0) {
      // Into the op's buffer, which the op does not read again.
      streamCopy(dst, f.bytes().data(), elems * elem_);
    }
    return Status::ok();
  }

  // data /= divisor, where the elements are.
  Status divide(std::byte* data, size_t elems, uint64_t divisor) {
    if (ctx_.elements != nullptr) return ctx_.elements->divide(data, elems, divisor);
    if (!reduce::divide(dtype_, data, elems, divisor)) {
      return error(ecclInvalidArgument, "no division kernel for this dtype");
    }
    return Status::ok();
  }

 private:
  size_t payloadFor(size_t elems) const {
    return codec_ != nullptr ? codec_->encodedBytes(ctx_.codecParams, elems) : elems * elem_;
  }
  Result<std::span<const std::byte>> encode(uint32_t step, Range s, const std::byte* data) {
    const wire::DataHeader& b = ctx_.base;
    const uint64_t seed = codec::segmentSeed(b.epoch, b.tag, b.seq, step, s.begin);
    if (ctx_.elements != nullptr) return ctx_.elements->encode(data, s.count, seed);
    if (encoded_.size() < payloadFor(s.count)) encoded_.resize(payloadFor(s.count));
    codec_->encode(ctx_.codecParams, data, s.count, encoded_.data(), seed);
    return std::span<const std::byte>(encoded_.data(), payloadFor(s.count));
  }
  transport::Deadline deadline() const { return transport::Clock::now() + ctx_.progressTimeout; }

  RingContext& ctx_;
  ecclDataType_t dtype_;
  size_t elem_;
  const codec::Codec* codec_;
  size_t segElems_ = 1;
  std::vector<std::byte> encoded_;  // one segment, encoded
  std::vector<std::byte> scratch_;  // one segment, decoded (ops other than sum/avg)
  transport::Deadline lastFrame_ = transport::Clock::now();  // op start, then each arrival
  transport::StallWatch watch_;
};

}  // namespace

Result<transport::Frame> awaitFrame(RingContext& ctx, transport::Link* link, uint32_t step,
                                    std::span<const uint8_t> pending,
                                    transport::Deadline lastFrame) {
  const wire::DataHeader& b = ctx.base;
  const transport::Deadline giveUp = lastFrame + ctx.progressTimeout;
  for (;;) {
    Result<transport::Frame> f =
        link->recvAny({b.tag, b.seq, step, 0}, pending,
                      std::min(giveUp, transport::Clock::now() + ctx.stallReport), *ctx.cancel);
    if (f || f.status().code() != ecclTimeout || transport::Clock::now() >= giveUp) return f;
    if (ctx.onStall) {
      ctx.onStall(link->remotePeer(), false,
                  std::chrono::duration_cast<std::chrono::milliseconds>(transport::Clock::now() -
                                                                        lastFrame));
    }
  }
}

namespace {

void keep(RingContext& ctx, Range s, size_t esz) {
  if (ctx.beforeOverwrite && s.count > 0) ctx.beforeOverwrite(s.begin * esz, s.count * esz);
}

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
  RingIo io(ctx, dtype);
  const size_t seg = io.segElems();
  const uint32_t agBase = static_cast<uint32_t>(n - 1);  // all-gather step numbers follow
  // Partial sums (every reduce-scatter step but the owner's; none at two
  // members) go to one segment of scratch, not to `out`: they are sent on and
  // never needed again (a send returns once the link is done reading them,
  // or broke the link), so the segment stays in cache and `out` is written
  // only by the owner's sum and the all-gather. Elements in a store (device
  // buffers) stay where the store keeps them.
  const bool partialsAside = ctx.elements == nullptr && n > 2;
  thread_local LargePageBytes scratch{LargePageAllocator<std::byte>(true)};
  if (partialsAside && scratch.size() < std::min(seg, count) * esz) {
    scratch.resize(std::min(seg, count) * esz);
  }
  // The reduce-scatter reads every input byte once (our own chunk to send
  // it, the others to add to them): the backup of an in-place input
  // (ctx.beforeOverwrite) is taken right there, where the bytes are read
  // anyway, rather than when the all-gather overwrites them.

  // Reduce-scatter step 0: our own contribution to chunk r.
  const Range first = chunkRange(count, n, r);
  for (uint32_t j = 0; j < segmentCount(first.count, seg); ++j) {
    const Range s = segmentRange(first, seg, j);
    ECCL_RETURN_IF_ERROR(awaitInput(ctx, s.begin * esz, s.count * esz));
    keep(ctx, s, esz);
    ECCL_RETURN_IF_ERROR(io.sendElems(0, j, s, in + s.begin * esz));
  }
  // Steps 0..n-2: add what arrives to our input (a partial sum, into scratch;
  // the owner's final sum, into `out`) and pass it on.
  for (int step = 0; step < n - 1; ++step) {
    const Range chunk = chunkRange(count, n, mod(r - step - 1, n));
    const bool owner = step == n - 2;  // this chunk is now complete here
    const uint32_t next = owner ? agBase : static_cast<uint32_t>(step + 1);
    std::vector<uint8_t> pending = io.pendingOf(chunk);
    for (size_t left = pending.size(); left > 0; --left) {
      uint32_t j = 0;
      Range s;
      Result<transport::Frame> f = io.recvNext(static_cast<uint32_t>(step), chunk, pending, &j, &s);
      if (!f) return f.status();
      std::byte* dst = owner || !partialsAside ? out + s.begin * esz : scratch.data();
      ECCL_RETURN_IF_ERROR(awaitInput(ctx, s.begin * esz, s.count * esz));
      keep(ctx, s, esz);
      ECCL_RETURN_IF_ERROR(io.combine(op, dst, in + s.begin * esz, *f, s.count));
      if (owner && op == ecclAvg) {
        ECCL_RETURN_IF_ERROR(io.divide(dst, s.count, static_cast<uint64_t>(n)));
      }
      if (owner && ctx.codec != nullptr) {
        Result<std::span<const std::byte>> enc = io.finalize(next, s, dst);
        if (!enc) return enc.status();
        ECCL_RETURN_IF_ERROR(io.sendBytes(next, j, s, enc->data(), enc->size()));
      } else {
        ECCL_RETURN_IF_ERROR(io.sendElems(next, j, s, dst));
      }
    }
  }
  // All-gather: take each finished chunk and forward the same bytes.
  for (int step = 0; step < n - 1; ++step) {
    const Range chunk = chunkRange(count, n, mod(r - step, n));
    const uint32_t wireStep = agBase + static_cast<uint32_t>(step);
    std::vector<uint8_t> pending = io.pendingOf(chunk);
    for (size_t left = pending.size(); left > 0; --left) {
      uint32_t j = 0;
      Range s;
      Result<transport::Frame> f = io.recvNext(wireStep, chunk, pending, &j, &s);
      if (!f) return f.status();
      ECCL_RETURN_IF_ERROR(io.unpack(*f, s.count, out + s.begin * esz));
      if (step < n - 2) {
        ECCL_RETURN_IF_ERROR(
            io.sendBytes(wireStep + 1, j, s, f->bytes().data(), f->bytes().size()));
      }
    }
  }
  return Status::ok();
}

Status ringBroadcast(RingContext& ctx, void* buf, size_t count, ecclDataType_t dtype, int root) {
  const int n = ctx.world;
  if (n == 1 || count == 0) return Status::ok();
  const size_t esz = dtypeSize(dtype);
  auto* data = static_cast<std::byte*>(buf);
  RingIo io(ctx, dtype);
  const size_t seg = io.segElems();
  const Range all{0, count};
  const int pos = mod(ctx.rank - root, n);  // distance from the root along the ring
  if (pos == 0) {
    for (uint32_t j = 0; j < segmentCount(count, seg); ++j) {
      const Range s = segmentRange(all, seg, j);
      std::byte* p = data + s.begin * esz;
      ECCL_RETURN_IF_ERROR(awaitInput(ctx, s.begin * esz, s.count * esz));
      if (ctx.codec == nullptr) {
        ECCL_RETURN_IF_ERROR(io.sendElems(0, j, s, p));
      } else {
        keep(ctx, s, esz);
        Result<std::span<const std::byte>> enc = io.finalize(0, s, p);
        if (!enc) return enc.status();
        ECCL_RETURN_IF_ERROR(io.sendBytes(0, j, s, enc->data(), enc->size()));
      }
    }
    return Status::ok();
  }
  std::vector<uint8_t> pending = io.pendingOf(all);
  for (size_t left = pending.size(); left > 0; --left) {
    uint32_t j = 0;
    Range s;
    Result<transport::Frame> f = io.recvNext(0, all, pending, &j, &s);
    if (!f) return f.status();
    std::byte* p = data + s.begin * esz;
    keep(ctx, s, esz);
    ECCL_RETURN_IF_ERROR(io.unpack(*f, s.count, p));
    if (pos != n - 1) {
      ECCL_RETURN_IF_ERROR(io.sendBytes(0, j, s, f->bytes().data(), f->bytes().size()));
    }
  }
  return Status::ok();
}

}  // namespace eccl::collectives
