// TCP Link: N sockets to one neighbour, one reader thread per socket feeding
// a Mailbox. Frames are striped across sockets round-robin.
//
// A link is used in one direction: the dialled one sends, the accepted one
// receives. With `receives` false no reader threads run (TLS links: an SSL
// object must not be read and written from two threads at once).
#pragma once

#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "transport/mailbox.h"
#include "transport/tcp/socket.h"

namespace eccl::transport::tcp {

class TcpLink : public Link {
 public:
  TcpLink(uint64_t remotePeer, std::vector<Socket> streams, bool receives = true);
  ~TcpLink() override;

  Status send(const wire::DataHeader& header, const void* payload, Deadline deadline,
              const CancelFlag& cancel, const StallWatch* watch) override;
  Result<Frame> recv(const FrameKey& key, Deadline deadline, const CancelFlag& cancel) override;
  void retire(uint32_t tag, uint64_t seq) override { mailbox_.retire(tag, seq); }
  void interrupt() override { mailbox_.interrupt(); }
  void setMaxFrameBytes(uint32_t bytes) override { maxFrame_.store(bytes, std::memory_order_relaxed); }
  uint64_t remotePeer() const override { return remotePeer_; }
  uint32_t streamCount() const override { return static_cast<uint32_t>(streams_.size()); }

 private:
  struct Stream {
    Socket socket;
    std::mutex sendMu;  // one frame at a time per socket
    std::thread reader;
  };
  void readLoop(Stream& s);

  uint64_t remotePeer_;
  std::vector<std::unique_ptr<Stream>> streams_;
  std::atomic<uint32_t> next_{0};
  std::atomic<bool> stop_{false};
  std::atomic<uint32_t> maxFrame_{wire::kMaxSegmentBytes};
  std::shared_ptr<BufferPool> pool_ = BufferPool::create();
  Mailbox mailbox_;
};

}  // namespace eccl::transport::tcp
