#include "master/master.h"

#include <asio.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <thread>

#include "common/log.h"
#include "master/membership.h"
#include "wire/channel.h"

namespace eccl::master {

struct Master::Impl {
  explicit Impl(const MasterOptions& o)
      : options(o),
        acceptor(io),
        ticker(io),
        membership({o.authToken, std::chrono::milliseconds(o.heartbeatIntervalMs),
                    std::chrono::milliseconds(o.failureTimeoutMs)}) {}

  // Failure detection runs on the server thread, so Membership needs no lock.
  void scheduleTick() {
    const auto period = std::clamp(std::chrono::milliseconds(options.failureTimeoutMs / 20),
                                   std::chrono::milliseconds(10), std::chrono::milliseconds(100));
    ticker.expires_after(period);
    ticker.async_wait([this](const asio::error_code& ec) {
      if (ec || stopping) return;
      deliver(membership.tick(Membership::Clock::now()));
      scheduleTick();
    });
  }

  void acceptNext() {
    acceptor.async_accept([this](const asio::error_code& ec, asio::ip::tcp::socket socket) {
      if (ec) {
        if (ec != asio::error::operation_aborted) {
          ECCL_LOG(kWarn, kMaster, "accept failed: {}", ec.message());
          acceptNext();
        }
        return;
      }
      const uint64_t id = nextId++;
      asio::error_code ignored;
      const std::string observed = socket.remote_endpoint(ignored).address().to_string();
      auto ch = std::make_shared<wire::Channel>(std::move(socket));
      channels[id] = ch;
      ch->start(
          [this, id, observed](uint16_t version, Result<ControlMessage>&& msg) {
            onMessage(id, observed, version, std::move(msg));
          },
          [this, id](const Status& st) { onClose(id, st); });
      acceptNext();
    });
  }

  using ControlMessage = wire::ControlMessage;

  void onMessage(uint64_t id, const std::string& observed, uint16_t version,
                 Result<ControlMessage>&& msg) {
    if (!msg) {
      if (msg.status().code() == ecclVersionMismatch) {
        // Answer in our framing; an older or newer peer still reads the result code.
        deliver({{id, wire::RegisterReply{ecclVersionMismatch, 0, msg.status().message()}, true}});
      } else {
        ECCL_LOG(kWarn, kMaster, "connection {} sent a bad frame: {}", id, msg.status().message());
      }
      return;
    }
    if (!membership.isRegistered(id)) {
      if (const auto* reg = std::get_if<wire::Register>(&*msg)) {
        deliver(membership.onRegister(id, version, *reg, observed));
      } else {
        ECCL_LOG(kWarn, kMaster, "connection {} spoke before registering; closing", id);
        closeChannel(id);
      }
      return;
    }
    deliver(membership.onMessage(id, *msg));
  }

  void onClose(uint64_t id, const Status&) {
    channels.erase(id);
    deliver(membership.onDisconnect(id));
  }

  void closeChannel(uint64_t id) {
    auto it = channels.find(id);
    if (it != channels.end()) it->second->close();
  }

  void deliver(const std::vector<Outgoing>& out) {
    for (const Outgoing& o : out) {
      auto it = channels.find(o.peerId);
      if (it == channels.end()) continue;
      it->second->send(o.msg);
      if (o.closeAfter) it->second->close();
    }
  }

  MasterOptions options;
  asio::io_context io;
  asio::ip::tcp::acceptor acceptor;
  asio::steady_timer ticker;
  bool stopping = false;  // server thread only
  Membership membership;
  std::map<uint64_t, std::shared_ptr<wire::Channel>> channels;
  uint64_t nextId = 1;
  std::thread thread;
  uint16_t port = 0;
};

Master::Master(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<Master>> Master::start(const MasterOptions& options) {
  auto impl = std::make_unique<Impl>(options);
  asio::error_code ec;
  const auto addr = asio::ip::make_address(options.listenAddress, ec);
  if (ec) {
    return error(ecclInvalidArgument,
                 fmt::format("master listen address '{}' is not an IP address: {}",
                             options.listenAddress, ec.message()));
  }
  const asio::ip::tcp::endpoint ep(addr, options.port);
  impl->acceptor.open(ep.protocol(), ec);
  if (!ec) impl->acceptor.set_option(asio::ip::tcp::acceptor::reuse_address(true), ec);
  if (!ec) impl->acceptor.bind(ep, ec);
  if (!ec) impl->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return error(ecclSystemError, fmt::format("master cannot listen on {}:{}: {}",
                                              options.listenAddress, options.port, ec.message()));
  }
  impl->port = impl->acceptor.local_endpoint().port();
  impl->acceptNext();
  impl->scheduleTick();
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] { raw->io.run(); });
  ECCL_LOG(kInfo, kMaster, "master listening on {}:{}", options.listenAddress, impl->port);
  return std::unique_ptr<Master>(new Master(std::move(impl)));
}

Master::~Master() {
  Impl* impl = impl_.get();
  asio::post(impl->io, [impl] {
    asio::error_code ec;
    impl->stopping = true;
    impl->ticker.cancel();
    impl->acceptor.close(ec);
    auto channels = impl->channels;  // abort() re-enters through onClose
    for (auto& [id, ch] : channels) ch->abort();
  });
  // With the acceptor and every socket closed the loop runs out of work.
  if (impl->thread.joinable()) impl->thread.join();
}

uint16_t Master::port() const { return impl_->port; }

}  // namespace eccl::master
