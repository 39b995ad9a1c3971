#include "state/transfer.h"

#include <fmt/format.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>

#include "common/log.h"
#include "state/hash.h"

namespace eccl::state {
namespace {

using transport::Clock;
using transport::Deadline;

ChunkHook& chunkHook() {
  static ChunkHook hook;
  return hook;
}

wire::DataHeader frameHeader(const TransferContext& ctx, uint64_t step, uint64_t bytes) {
  wire::DataHeader h;
  h.kind = static_cast<uint8_t>(wire::OpKind::kSync);
  h.dtype = ecclUint8;
  h.group = ctx.group;
  h.tag = wire::kSyncTag;
  h.epoch = ctx.epoch;
  h.seq = 0;  // the channel names the op
  h.count = bytes;
  h.step = static_cast<uint32_t>(step);
  h.payloadBytes = static_cast<uint32_t>(bytes);
  return h;
}

Status checkFrame(const TransferContext& ctx, const transport::Frame& f, uint64_t peer,
                  uint64_t wantBytes) {
  const wire::DataHeader& h = f.header;
  if (h.kind != static_cast<uint8_t>(wire::OpKind::kSync) || h.epoch != ctx.epoch ||
      h.group != ctx.group || h.payloadBytes != wantBytes) {
    return error(ecclInvalidUsage,
                 fmt::format("peer {} sent a transfer frame of kind {} epoch {} group {} with {} "
                             "bytes; expected a sync frame of epoch {} group {} with {} bytes",
                             peer, h.kind, h.epoch, h.group, h.payloadBytes, ctx.epoch, ctx.group,
                             wantBytes));
  }
  return Status::ok();
}

// Waits for frame `step` on `link`; every stallReport without it, checks
// whether the master removed the peer and (with `report`) reports a stall.
Result<transport::Frame> recvFrame(const TransferContext& ctx, transport::Link& link,
                                   uint64_t peer, uint64_t step, bool report) {
  const auto start = Clock::now();
  const Deadline giveUp = start + ctx.progressTimeout;
  for (;;) {
    Result<transport::Frame> f =
        link.recv({wire::kSyncTag, 0, static_cast<uint32_t>(step), 0},
                  std::min(giveUp, Clock::now() + ctx.stallReport), *ctx.cancel);
    if (f || f.status().code() != ecclTimeout || Clock::now() >= giveUp) return f;
    if (ctx.isLost && ctx.isLost(peer)) {
      return error(ecclPeerLost, fmt::format("the master removed peer {}", peer));
    }
    if (report && ctx.onStall) {
      ctx.onStall(peer, false,
                  std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start));
    }
  }
}

struct Chunk {
  uint32_t target = 0;  // index into the targets
  uint64_t offset = 0;
  uint64_t length = 0;
};

class Fetcher {
 public:
  Fetcher(const TransferContext& ctx, std::span<const Target> targets, size_t sources)
      : ctx_(ctx), targets_(targets), remaining_(targets.size(), 0),
        refetches_(targets.size(), 0), live_(sources) {
    for (uint32_t t = 0; t < targets.size(); ++t) queueAll(t);
  }

  Status run(std::span<const SourceLinks> sources, FetchStats* stats) {
    // Stripe the first chunks round-robin (a window's worth per source), so
    // every source carries a share even when the others start first; the
    // rest go to whichever source asks next.
    own_.resize(sources.size());
    for (size_t k = 0; k < sources.size() * kWindow && !queue_.empty(); ++k) {
      own_[k % sources.size()].push_back(queue_.front());
      queue_.pop_front();
    }
    std::vector<std::thread> workers;
    for (size_t i = 0; i < sources.size(); ++i) {
      workers.emplace_back([this, i, s = sources[i]] { work(i, s); });
    }
    for (auto& w : workers) w.join();
    if (stats != nullptr) *stats = stats_;
    if (!failed_.isOk()) return failed_;
    if (verified_ == targets_.size()) return Status::ok();
    if (int c = ctx_.cancel->load(std::memory_order_acquire); c != 0) {
      return error(static_cast<ecclResult_t>(c), "the shared-state transfer was aborted");
    }
    return error(ecclPeerLost, fmt::format("every source of the shared state was lost with {} of "
                                           "{} tensors still to fetch ({})",
                                           targets_.size() - verified_, targets_.size(), lastLoss_));
  }

 private:
  // Every chunk of target t goes (back) in the queue. Under mu_ or before the workers start.
  void queueAll(uint32_t t) {
    const uint64_t bytes = targets_[t].bytes;
    const uint64_t n = std::max<uint64_t>(1, (bytes + ctx_.chunkBytes - 1) / ctx_.chunkBytes);
    for (uint64_t i = 0; i < n; ++i) {
      const uint64_t off = i * ctx_.chunkBytes;
      queue_.push_back({t, off, std::min<uint64_t>(ctx_.chunkBytes, bytes - off)});
    }
    remaining_[t] = n;
  }

  bool finished() const {  // under mu_
    return !failed_.isOk() || verified_ == targets_.size() || live_ == 0 ||
           ctx_.cancel->load(std::memory_order_acquire) != 0;
  }

  // The next chunk to request; nullopt when this worker should stop asking
  // for now (nothing queued: `wait` says whether to block until there is).
  std::optional<Chunk> take(size_t worker, bool wait) {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      if (finished()) return std::nullopt;
      if (!own_[worker].empty()) {
        Chunk c = own_[worker].front();
        own_[worker].pop_front();
        return c;
      }
      if (!queue_.empty()) {
        Chunk c = queue_.front();
        queue_.pop_front();
        return c;
      }
      if (!wait) return std::nullopt;
      cv_.wait_for(lock, std::chrono::milliseconds(20));  // the cancel flag cannot notify
    }
  }

  void giveBack(size_t worker, const std::deque<std::pair<uint64_t, Chunk>>& outstanding,
                uint64_t peer, const Status& why) {
    size_t left = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto it = own_[worker].rbegin(); it != own_[worker].rend(); ++it) queue_.push_front(*it);
      own_[worker].clear();
      for (auto it = outstanding.rbegin(); it != outstanding.rend(); ++it) {
        queue_.push_front(it->second);
      }
      left = --live_;
      ++stats_.sourcesLost;
      lastLoss_ = fmt::format("peer {}: {}", peer, why.message());
    }
    ECCL_LOG(kWarn, kComm, "shared-state source {} lost ({}); {} other sources finish its chunks",
             peer, why.message(), left);
    cv_.notify_all();
  }

  void landed(const Chunk& c, uint64_t peer) {
    bool complete = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      stats_.bytesReceived += c.length;
      stats_.bytesFrom[peer] += c.length;
      complete = --remaining_[c.target] == 0;
    }
    if (!complete) return;
    const Target& t = targets_[c.target];
    const uint64_t got = contentHash(t.data, t.bytes);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (got == t.hash) {
        ++verified_;
      } else if (refetches_[c.target]++ < kMaxRefetches) {
        ++stats_.refetches;
        ECCL_LOG(kWarn, kComm, "shared-state tensor #{} arrived with hash {:#018x}, not {:#018x}: "
                 "fetching it again", t.tensor, got, t.hash);
        queueAll(c.target);
      } else {
        failed_ = error(ecclStateMismatch,
                        fmt::format("tensor #{} of the shared state still has hash {:#018x} "
                                    "instead of {:#018x} after {} fetches", t.tensor, got, t.hash,
                                    kMaxRefetches + 1));
      }
    }
    cv_.notify_all();
  }

  void work(size_t worker, const SourceLinks& s) {
    uint64_t next = 0;  // request numbers on this source's links
    std::deque<std::pair<uint64_t, Chunk>> outstanding;
    transport::StallWatch watch;
    if (ctx_.onStall) {
      watch.every = ctx_.stallReport;
      watch.onStall = [&](std::chrono::milliseconds stuck) { ctx_.onStall(s.peer, true, stuck); };
    }
    auto send = [&](const wire::SyncRequest& q) {
      std::byte payload[wire::kSyncRequestBytes];
      wire::encodeSyncRequest(q, payload);
      return s.requests->send(frameHeader(ctx_, next++, sizeof(payload)), payload,
                              Clock::now() + ctx_.progressTimeout, *ctx_.cancel,
                              ctx_.onStall ? &watch : nullptr);
    };
    for (;;) {
      while (outstanding.size() < kWindow) {
        std::optional<Chunk> c = take(worker, /*wait=*/outstanding.empty());
        if (!c) break;
        const Target& t = targets_[c->target];
        outstanding.push_back({next, *c});
        if (Status st = send({t.tensor, false, c->offset, c->length}); !st.isOk()) {
          giveBack(worker, outstanding, s.peer, st);
          return;
        }
      }
      if (outstanding.empty()) break;  // everything verified, failed or cancelled
      const auto [step, c] = outstanding.front();
      Result<transport::Frame> f = recvFrame(ctx_, *s.data, s.peer, step, /*report=*/true);
      Status st = f ? checkFrame(ctx_, *f, s.peer, c.length) : f.status();
      if (!st.isOk()) {
        giveBack(worker, outstanding, s.peer, st);
        return;
      }
      if (c.length > 0) std::memcpy(targets_[c.target].data + c.offset, f->bytes().data(), c.length);
      outstanding.pop_front();
      landed(c, s.peer);
    }
    (void)send({0, true, 0, 0});  // best effort: the source stops waiting for requests
  }

  const TransferContext& ctx_;
  std::span<const Target> targets_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Chunk> queue_;               // chunks any source may take
  std::vector<std::deque<Chunk>> own_;    // by worker: its first stripe
  std::vector<size_t> remaining_;  // per target: chunks not landed since it was (re)queued
  std::vector<int> refetches_;
  size_t verified_ = 0;
  size_t live_;  // sources whose links still work
  Status failed_;
  std::string lastLoss_;
  FetchStats stats_;
};

}  // namespace

void setChunkHookForTesting(ChunkHook hook) { chunkHook() = std::move(hook); }

Status fetch(const TransferContext& ctx, std::span<const Target> targets,
             std::span<const SourceLinks> sources, FetchStats* stats) {
  if (targets.empty()) {
    if (stats != nullptr) *stats = {};
    return Status::ok();
  }
  if (sources.empty()) return error(ecclInternalError, "tensors to fetch but no source");
  if (ctx.chunkBytes == 0) return error(ecclInternalError, "chunk size 0");
  Fetcher f(ctx, targets, sources.size());
  return f.run(sources, stats);
}

Result<uint64_t> serve(const TransferContext& ctx, uint64_t receiver,
                       std::span<const Served> tensors, transport::Link& requests,
                       transport::Link& data) {
  uint64_t sent = 0;
  transport::StallWatch watch;
  if (ctx.onStall) {
    watch.every = ctx.stallReport;
    watch.onStall = [&](std::chrono::milliseconds stuck) { ctx.onStall(receiver, true, stuck); };
  }
  std::vector<std::byte> copy;  // for the test hook only
  for (uint64_t step = 0;; ++step) {
    // The receiver may be busy with other sources for a while (idle, not a
    // stall); its removal, the op's progress timeout and the master's
    // verdict bound the wait.
    Result<transport::Frame> f = recvFrame(ctx, requests, receiver, step, /*report=*/false);
    if (!f) return f.status();
    ECCL_RETURN_IF_ERROR(checkFrame(ctx, *f, receiver, wire::kSyncRequestBytes));
    Result<wire::SyncRequest> q = wire::decodeSyncRequest(f->bytes());
    if (!q) return q.status();
    if (q->done) return sent;
    if (q->tensor >= tensors.size() || q->length > ctx.chunkBytes ||
        q->offset > tensors[q->tensor].bytes || q->length > tensors[q->tensor].bytes - q->offset) {
      return error(ecclInvalidUsage,
                   fmt::format("peer {} asked for {} bytes at {} of tensor #{}, which this peer "
                               "does not serve ({} tensors, chunks of at most {} bytes)",
                               receiver, q->length, q->offset, q->tensor, tensors.size(),
                               ctx.chunkBytes));
    }
    const std::byte* src = tensors[q->tensor].data + q->offset;
    if (const ChunkHook& hook = chunkHook(); hook && q->length > 0) {
      copy.assign(src, src + q->length);
      hook(q->tensor, q->offset, copy);
      src = copy.data();
    }
    ECCL_RETURN_IF_ERROR(data.send(frameHeader(ctx, step, q->length), src,
                                   Clock::now() + ctx.progressTimeout, *ctx.cancel,
                                   ctx.onStall ? &watch : nullptr));
    sent += q->length;
  }
}

}  // namespace eccl::state
