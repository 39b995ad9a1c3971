#include "transport/shm/link.h"

#include <fmt/format.h>
#include <poll.h>

#include <algorithm>
#include <optional>

#include "common/log.h"
#include "transport/link_rules.h"

namespace eccl::transport::shm {
namespace {

std::chrono::milliseconds until(Deadline d, std::chrono::milliseconds cap) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(d - Clock::now());
  return std::clamp(left, std::chrono::milliseconds(1), cap);
}

}  // namespace

ShmLink::ShmLink(uint64_t remotePeer, Role role, Ring ring, tcp::Socket watch)
    : remotePeer_(remotePeer), role_(role), ring_(std::move(ring)), watch_(std::move(watch)) {
  if (role_ == Role::kReceiver) {
    const log::Context ctx = log::threadContext();
    reader_ = std::thread([this, ctx] {
      log::threadContext() = ctx;
      try {
        readLoop();
      } catch (const std::exception& e) {  // e.g. no memory for a frame: fail the link, not the process
        ECCL_LOG(kError, kTransport, "shared-memory link from peer {} failed: {}", remotePeer_, e.what());
        mailbox_.fail(error(ecclSystemError, fmt::format("link with peer {} failed: {}",
                                                         remotePeer_, e.what())));
      }
    });
  }
}

ShmLink::~ShmLink() {
  stop_.store(true, std::memory_order_release);
  if (reader_.joinable()) {
    ring_.wakeReader();
    reader_.join();
  }
}

bool ShmLink::peerGone() const {
  pollfd p{watch_.fd(), POLLIN | POLLRDHUP, 0};
  return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLIN | POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

Status ShmLink::breakLink(std::string why) {
  broken_ = error(ecclPeerLost, fmt::format("link to peer {}: {}", remotePeer_, why));
  watch_.shutdown();
  ECCL_LOG(kInfo, kTransport, "{}", broken_.message());
  return broken_;
}

Status ShmLink::send(const wire::DataHeader& header, const void* payload, Deadline deadline,
                     const CancelFlag& cancel, const StallWatch* watch) {
  if (role_ != Role::kSender) return error(ecclInternalError, "send on the receiving end of a link");
  std::byte head[wire::kDataHeaderBytes];
  wire::encodeDataHeader(header, head);
  struct Piece {
    const std::byte* p;
    size_t n;
  } pieces[2] = {{head, sizeof(head)}, {static_cast<const std::byte*>(payload), header.payloadBytes}};

  std::lock_guard<std::mutex> lock(sendMu_);
  if (!broken_.isOk()) return broken_;
  Clock::time_point lastProgress = Clock::now();
  Clock::time_point nextReport = lastProgress + (watch != nullptr ? watch->every : std::chrono::hours(1));
  bool started = false;             // bytes of the frame are in: stopping now would cut it
  std::optional<Status> abandoned;  // why the op gave up while the frame was unfinished
  Deadline finishBy{};
  for (Piece& piece : pieces) {
    while (piece.n > 0) {
      Result<size_t> k = ring_.write(piece.p, std::min(piece.n, kChunkBytes));
      if (!k) return breakLink(k.status().message());
      if (*k > 0) {
        piece.p += *k;
        piece.n -= *k;
        started = true;
        lastProgress = Clock::now();
        if (watch != nullptr) nextReport = lastProgress + watch->every;
        continue;
      }
      // Full: the receiver has not taken the bytes yet.
      const Clock::time_point now = Clock::now();
      if (peerGone()) return breakLink("the peer closed the link (its process ended?)");
      if (abandoned) {
        if (now >= finishBy) {
          return breakLink(fmt::format("{}; the link was closed mid-frame", abandoned->message()));
        }
        ring_.waitForSpace(until(finishBy, kPoll));
        continue;
      }
      if (std::optional<Status> stop = sendAbort(cancel, deadline, now)) {
        if (!started) return *stop;
        // The receiver reads frames whole: finish this one unless the links
        // are replaced anyway.
        finishBy = linksAreReplaced(stop->code()) ? now : now + tcp::Socket::kFinishFrameWithin;
        abandoned = std::move(stop);
        continue;
      }
      if (watch != nullptr && watch->onStall && now >= nextReport) {
        watch->onStall(std::chrono::duration_cast<std::chrono::milliseconds>(now - lastProgress));
        nextReport = now + watch->every;
      }
      ring_.waitForSpace(until(deadline, kPoll));
    }
  }
  frames_.fetch_add(1, std::memory_order_relaxed);
  return abandoned ? *abandoned : Status::ok();
}

Status ShmLink::readExact(std::byte* out, size_t n, bool* closedFirst) {
  size_t got = 0;
  while (got < n) {
    Result<size_t> k = ring_.read(out + got, n - got);
    if (!k) return k.status();
    if (*k > 0) {
      got += *k;
      continue;
    }
    if (stop_.load(std::memory_order_acquire)) return error(ecclPeerLost, "link closed");
    if (peerGone()) {
      // What it wrote before closing is read first.
      k = ring_.read(out + got, n - got);
      if (!k) return k.status();
      if (*k > 0) {
        got += *k;
        continue;
      }
      if (got == 0 && closedFirst != nullptr) *closedFirst = true;
      return error(ecclPeerLost, got == 0 ? "closed" : "closed mid-frame");
    }
    ring_.waitForData(kPoll);
  }
  return Status::ok();
}

void ShmLink::readLoop() {
  for (;;) {
    std::byte head[wire::kDataHeaderBytes];
    bool closedFirst = false;
    Status st = readExact(head, sizeof(head), &closedFirst);
    if (st.isOk()) {
      Result<wire::DataHeader> h = decodeFrameHeader(head, maxFrame_.load(std::memory_order_relaxed));
      if (!h) {
        st = error(h.status().code(), fmt::format("bad frame from peer {} (shared memory): {}",
                                                  remotePeer_, h.status().message()));
      } else {
        Frame f{*h, pool_->get(h->payloadBytes)};
        st = readExact(f.payload.data(), h->payloadBytes, nullptr);
        if (st.isOk()) st = mailbox_.put(std::move(f));
        if (st.isOk()) continue;
      }
    }
    if (stop_.load(std::memory_order_acquire)) return;
    ECCL_LOG(kInfo, kTransport, "shared-memory link from peer {} broke: {}", remotePeer_, st.message());
    mailbox_.fail(error(ecclPeerLost, fmt::format("link with peer {} broke: {}", remotePeer_,
                                                  st.message())));
    watch_.shutdown();
    return;
  }
}

Result<Frame> ShmLink::recv(const FrameKey& key, Deadline deadline, const CancelFlag& cancel) {
  return mailbox_.take(key, deadline, cancel, remotePeer_);
}

Result<Frame> ShmLink::recvAny(const FrameKey& first, std::span<const uint8_t> pending,
                               Deadline deadline, const CancelFlag& cancel) {
  return mailbox_.takeAny(first, pending, deadline, cancel, remotePeer_);
}

}  // namespace eccl::transport::shm
