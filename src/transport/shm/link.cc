#include "transport/shm/link.h"

#include <fmt/format.h>
#include <poll.h>

#include <algorithm>
#include <cstring>
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
  // A record: the payload's address when the receiver copies it straight
  // from this process (0: the payload follows in the ring), then the header.
  const bool remote = header.payloadBytes >= kRemoteMinBytes && ring_.remoteReads();
  std::byte record[kRecordBytes];
  const uint64_t address = remote ? reinterpret_cast<uintptr_t>(payload) : 0;
  std::memcpy(record, &address, sizeof(address));
  wire::encodeDataHeader(header, record + sizeof(address));
  struct Piece {
    const std::byte* p;
    size_t n;
  } pieces[2] = {{record, sizeof(record)},
                 {static_cast<const std::byte*>(payload), remote ? 0 : header.payloadBytes}};

  std::lock_guard<std::mutex> lock(sendMu_);
  if (!broken_.isOk()) return broken_;
  Clock::time_point lastProgress = Clock::now();
  Clock::time_point nextReport = lastProgress + (watch != nullptr ? watch->every : std::chrono::hours(1));
  bool started = false;             // part of the frame is out: stopping now would cut it
  std::optional<Status> abandoned;  // why the op gave up while the frame was unfinished
  Deadline finishBy{};
  // The receiver has not taken what we wait for: sleep in `wait` unless the
  // peer is gone or the op gives up (then what to return).
  auto blocked = [&](const auto& wait) -> std::optional<Status> {
    const Clock::time_point now = Clock::now();
    if (peerGone()) return breakLink("the peer closed the link (its process ended?)");
    if (abandoned) {
      if (now >= finishBy) {
        return breakLink(fmt::format("{}; the link was closed mid-frame", abandoned->message()));
      }
      wait(until(finishBy, kPoll));
      return std::nullopt;
    }
    if (std::optional<Status> stop = sendAbort(cancel, deadline, now)) {
      if (!started) return stop;
      // The receiver reads frames whole: finish this one unless the links
      // are replaced anyway.
      finishBy = linksAreReplaced(stop->code()) ? now : now + tcp::Socket::kFinishFrameWithin;
      abandoned = std::move(stop);
      return std::nullopt;
    }
    if (watch != nullptr && watch->onStall && now >= nextReport) {
      watch->onStall(std::chrono::duration_cast<std::chrono::milliseconds>(now - lastProgress));
      nextReport = now + watch->every;
    }
    wait(until(deadline, kPoll));
    return std::nullopt;
  };
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
      if (std::optional<Status> r = blocked([&](auto t) { ring_.waitForSpace(t); })) return *r;
    }
  }
  if (remote) {
    // The payload must stay as it is until the receiver copied it.
    const uint64_t want = ++remoteSent_;
    while (ring_.acked() < want) {
      if (std::optional<Status> r = blocked([&](auto t) { ring_.waitForAck(want, t); })) return *r;
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
    std::byte record[kRecordBytes];
    bool closedFirst = false;
    Status st = readExact(record, sizeof(record), &closedFirst);
    if (st.isOk()) {
      uint64_t address = 0;
      std::memcpy(&address, record, sizeof(address));
      Result<wire::DataHeader> h = decodeFrameHeader(std::span(record).subspan(sizeof(address)),
                                                     maxFrame_.load(std::memory_order_relaxed));
      if (h && address != 0 && (h->payloadBytes < kRemoteMinBytes || !ring_.remoteReads())) {
        h = error(ecclInvalidArgument, "a payload left in the sender's memory where none may be");
      }
      if (!h) {
        st = error(h.status().code(), fmt::format("bad frame from peer {} (shared memory): {}",
                                                  remotePeer_, h.status().message()));
      } else {
        Frame f{*h, pool_->get(h->payloadBytes)};
        if (address == 0) {
          st = readExact(f.payload.data(), h->payloadBytes, nullptr);
        } else {
          st = ring_.readRemote(address, f.payload.data(), h->payloadBytes);
          if (st.isOk()) ring_.ack();
        }
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
