#include "transport/ibverbs/transport.h"

#include <fmt/format.h>

#include "common/log.h"

namespace eccl::transport::ibverbs {

class VerbsTransport::Maker : public tcp::LinkMaker {
 public:
  Maker(Resources resources, VerbsOptions verbs, uint32_t streams)
      : resources_(std::move(resources)), verbs_(verbs), streams_(streams) {}

  Result<std::unique_ptr<Link>> dialled(const Endpoint& to, uint64_t epoch, uint64_t channel,
                                        uint32_t streams, tcp::Socket stream, Deadline deadline,
                                        const CancelFlag& cancel) override {
    const uint32_t qps = streams != 0 ? streams : streams_ != 0 ? streams_ : verbs_.defaultQps;
    Result<std::unique_ptr<VerbsLink>> link =
        VerbsLink::dial(resources_, to.peerId, qps, std::move(stream), deadline, cancel);
    if (!link) return link.status();
    ECCL_LOG(kDebug, kTransport, "link to peer {} (epoch {}, channel {}): RDMA, {} queue pairs",
             to.peerId, epoch, channel, qps);
    return std::unique_ptr<Link>(std::move(*link));
  }

  Result<std::unique_ptr<Link>> accepted(uint64_t from, uint64_t epoch, uint64_t channel,
                                         tcp::Socket stream, Deadline deadline,
                                         const CancelFlag& cancel) override {
    Result<std::unique_ptr<VerbsLink>> link =
        VerbsLink::accept(resources_, from, verbs_.slots, std::move(stream), deadline, cancel);
    if (!link) return link.status();
    ECCL_LOG(kDebug, kTransport, "link from peer {} (epoch {}, channel {}): RDMA", from, epoch, channel);
    return std::unique_ptr<Link>(std::move(*link));
  }

 private:
  Resources resources_;
  VerbsOptions verbs_;
  uint32_t streams_;
};

Result<std::unique_ptr<VerbsTransport>> VerbsTransport::create(const TransportOptions& options,
                                                               const VerbsOptions& verbs) {
  if (options.tls.mode != security::TlsMode::kOff) {
    return error(ecclInvalidUsage,
                 "transport \"ibverbs\" with TLS: TLS would cover only the set-up stream, the "
                 "HCA sends RDMA data in the clear; use TLS with transport \"tcp\", or turn it "
                 "off on a trusted fabric (the auth token still authenticates every link)");
  }
  Result<const Api*> a = api();
  if (!a) return a.status();
  Result<std::shared_ptr<Device>> device = Device::open(**a, options.rdma);
  if (!device) return device.status();
  std::unique_ptr<VerbsTransport> t(new VerbsTransport());
  t->resources_.device = *device;
  t->resources_.registrations = std::make_shared<Registrations>(*device, verbs.registrations);
  TransportOptions tcpOptions = options;
  tcpOptions.sharedMemory = false;
  tcpOptions.streams = 1;
  auto maker = std::make_shared<Maker>(t->resources_, verbs, options.streams);
  Result<std::unique_ptr<tcp::TcpTransport>> tcp = tcp::TcpTransport::create(tcpOptions, maker);
  if (!tcp) return tcp.status();
  t->tcp_ = std::move(*tcp);
  return t;
}

}  // namespace eccl::transport::ibverbs
