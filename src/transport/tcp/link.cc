#include "transport/tcp/link.h"

#include <fmt/format.h>

#include "common/log.h"

namespace eccl::transport::tcp {

TcpLink::TcpLink(uint64_t remotePeer, std::vector<Socket> streams, bool receives)
    : remotePeer_(remotePeer) {
  for (Socket& s : streams) {
    auto st = std::make_unique<Stream>();
    st->socket = std::move(s);
    st->socket.configureForData();
    streams_.push_back(std::move(st));
  }
  if (!receives) {
    mailbox_.fail(error(ecclInternalError, fmt::format("the link to peer {} only sends", remotePeer)));
    return;
  }
  const log::Context ctx = log::threadContext();
  for (auto& st : streams_) {
    Stream* raw = st.get();
    st->reader = std::thread([this, raw, ctx] {
      log::threadContext() = ctx;
      try {
        readLoop(*raw);
      } catch (const std::exception& e) {  // e.g. no memory for a frame: fail the link, not the process
        ECCL_LOG(kError, kTransport, "link from peer {} failed: {}", remotePeer_, e.what());
        mailbox_.fail(error(ecclSystemError, fmt::format("link with peer {} failed: {}",
                                                         remotePeer_, e.what())));
      }
    });
  }
}

TcpLink::~TcpLink() {
  stop_.store(true, std::memory_order_release);
  for (auto& st : streams_) st->socket.shutdown();
  for (auto& st : streams_) {
    if (st->reader.joinable()) st->reader.join();
  }
}

Status TcpLink::send(const wire::DataHeader& header, const void* payload, Deadline deadline,
                     const CancelFlag& cancel, const StallWatch* watch) {
  std::byte head[wire::kDataHeaderBytes];
  wire::encodeDataHeader(header, head);
  iovec iov[2] = {{head, sizeof(head)}, {const_cast<void*>(payload), header.payloadBytes}};
  Stream& s = *streams_[next_.fetch_add(1, std::memory_order_relaxed) % streams_.size()];
  std::lock_guard<std::mutex> lock(s.sendMu);
  Status st = s.socket.writeAll(iov, header.payloadBytes > 0 ? 2 : 1, deadline, cancel, watch);
  if (!st.isOk() && st.code() == ecclPeerLost) {
    return error(ecclPeerLost, fmt::format("link to peer {}: {}", remotePeer_, st.message()));
  }
  return st;
}

Result<Frame> TcpLink::recv(const FrameKey& key, Deadline deadline, const CancelFlag& cancel) {
  return mailbox_.take(key, deadline, cancel, remotePeer_);
}

void TcpLink::readLoop(Stream& s) {
  const Deadline never = Clock::time_point::max();
  for (;;) {
    std::byte head[wire::kDataHeaderBytes];
    Status st = s.socket.readAll(head, sizeof(head), stop_, never);
    Result<Frame> frame = error(ecclInternalError, "");
    if (st.isOk()) {
      Result<wire::DataHeader> h = wire::decodeDataHeader(head);
      if (h && h->payloadBytes > maxFrame_.load(std::memory_order_relaxed)) {
        h = error(ecclInvalidArgument, fmt::format("frame of {} bytes exceeds the group's segment "
                                                   "size of {}", h->payloadBytes,
                                                   maxFrame_.load(std::memory_order_relaxed)));
      }
      if (!h) {
        st = error(h.status().code(), fmt::format("bad frame from peer {} ({}): {}", remotePeer_,
                                                  s.socket.peerName(), h.status().message()));
      } else {
        Frame f{*h, pool_->get(h->payloadBytes)};
        st = s.socket.readAll(f.payload.data(), h->payloadBytes, stop_, never);
        if (st.isOk()) st = mailbox_.put(std::move(f));
        if (st.isOk()) continue;
      }
    }
    if (stop_.load(std::memory_order_acquire)) return;
    ECCL_LOG(kInfo, kTransport, "link from peer {} broke: {}", remotePeer_, st.message());
    mailbox_.fail(error(ecclPeerLost, fmt::format("link with peer {} broke: {}", remotePeer_,
                                                  st.message())));
    return;
  }
}

}  // namespace eccl::transport::tcp
