// TCP Transport: a listening socket with an acceptor thread that reads each
// incoming stream's hello and parks it until accept() claims the link.
#pragma once

#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>

#include "transport/tcp/socket.h"

namespace eccl::transport::tcp {

class TcpTransport : public Transport {
 public:
  static Result<std::unique_ptr<TcpTransport>> create(const TransportOptions& options);
  ~TcpTransport() override;

  uint16_t port() const override { return port_; }
  Result<std::unique_ptr<Link>> connect(const Endpoint& to, uint64_t selfId, uint64_t epoch,
                                        Deadline deadline, const CancelFlag& cancel) override;
  Result<std::unique_ptr<Link>> accept(uint64_t from, uint64_t epoch, Deadline deadline,
                                       const CancelFlag& cancel) override;

 private:
  explicit TcpTransport(const TransportOptions& options) : options_(options) {}
  void acceptLoop();
  void admit(Socket s);

  struct Parked {
    std::vector<Socket> streams;  // by stream index
    uint32_t arrived = 0;
  };

  TransportOptions options_;
  uint64_t authHash_ = 0;
  Socket listener_;
  uint16_t port_ = 0;
  std::thread acceptor_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::pair<uint64_t, uint64_t>, Parked> parked_;  // (from peer, epoch)
};

}  // namespace eccl::transport::tcp
