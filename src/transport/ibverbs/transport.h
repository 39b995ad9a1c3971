// RDMA Transport: links over reliable-connected queue pairs (ibverbs/link.h)
// for transport "ibverbs", a sibling of tcp/transport.h.
//
// Set-up rides on the TCP transport: its acceptor, authenticated handshake
// (security/auth.h), neighbour rule and limits are used unchanged, with one
// TCP stream per link (tcp::LinkMaker), on which the two sides exchange their
// queue pairs (wire::VerbsOffer). That stream then stays open only to watch
// that the peer lives. TLS is refused: it would cover the set-up stream and
// not the RDMA writes, which the HCA sends in the clear.
#pragma once

#include "transport/ibverbs/link.h"
#include "transport/tcp/transport.h"

namespace eccl::transport::ibverbs {

struct VerbsOptions {
  SlotConfig slots;   // what this peer's receiving links offer
  // Queue pairs per link when TransportOptions::streams is 0 (adaptive on TCP).
  uint32_t defaultQps = 2;
  Registrations::Limits registrations;
};

class VerbsTransport : public Transport {
 public:
  // ecclUnsupported with the reason when libibverbs or a usable device is
  // missing; ecclInvalidUsage with TLS on.
  static Result<std::unique_ptr<VerbsTransport>> create(const TransportOptions& options,
                                                        const VerbsOptions& verbs);

  uint16_t port() const override { return tcp_->port(); }
  Result<std::unique_ptr<Link>> connect(const Endpoint& to, uint64_t selfId, uint64_t epoch,
                                        Deadline deadline, const CancelFlag& cancel) override {
    return tcp_->connect(to, selfId, epoch, deadline, cancel);
  }
  Result<std::unique_ptr<Link>> accept(uint64_t selfId, uint64_t from, uint64_t epoch,
                                       Deadline deadline, const CancelFlag& cancel) override {
    return tcp_->accept(selfId, from, epoch, deadline, cancel);
  }
  Result<std::unique_ptr<Link>> connectChannel(const Endpoint& to, uint64_t selfId, uint64_t epoch,
                                               uint64_t channel, Deadline deadline,
                                               const CancelFlag& cancel, uint32_t streams) override {
    return tcp_->connectChannel(to, selfId, epoch, channel, deadline, cancel, streams);
  }
  Result<std::unique_ptr<Link>> acceptChannel(uint64_t selfId, uint64_t from, uint64_t epoch,
                                              uint64_t channel, Deadline deadline,
                                              const CancelFlag& cancel) override {
    return tcp_->acceptChannel(selfId, from, epoch, channel, deadline, cancel);
  }

  const Resources& resources() const { return resources_; }

 private:
  class Maker;
  VerbsTransport() = default;

  Resources resources_;
  std::unique_ptr<tcp::TcpTransport> tcp_;
};

}  // namespace eccl::transport::ibverbs
