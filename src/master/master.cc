#include "master/master.h"

#include <asio.hpp>
#include <asio/ssl.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <thread>

#include "common/log.h"
#include "master/membership.h"
#include "common/env.h"
#include "common/guarded.h"
#include "security/auth.h"
#include "wire/channel.h"

namespace eccl::master {

namespace {

constexpr auto kAcceptBackoff = std::chrono::milliseconds(100);

// The address peers are seen at, IPv4-mapped IPv6 written as IPv4, so that
// one host has one name whichever socket family saw it.
std::string observedAddress(const asio::ip::tcp::socket& socket) {
  asio::error_code ec;
  asio::ip::address a = socket.remote_endpoint(ec).address();
  if (ec) return "?";
  if (a.is_v6() && a.to_v6().is_v4_mapped()) {
    a = asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6());
  }
  return a.to_string();
}

}  // namespace

struct Master::Impl {
  explicit Impl(const MasterOptions& o)
      : options(o),
        acceptor(io),
        ticker(io),
        acceptPause(io),
        membership({std::chrono::milliseconds(o.heartbeatIntervalMs),
                    std::chrono::milliseconds(o.failureTimeoutMs),
                    std::chrono::milliseconds(o.voteTimeoutMs), std::chrono::milliseconds(1000),
                    o.trustAdvertisedAddresses, env::syncSources(),
                    std::chrono::milliseconds(o.probeMs ? o.probeMs : env::probeMs())}) {}

  // A connection's progress through the handshake; Membership knows it only
  // once it registered.
  enum class Stage { kAwaitHello, kAwaitProof, kAwaitRegister, kRegistered, kRefused };
  struct Conn {
    std::shared_ptr<wire::Channel> channel;
    std::string source;
    Stage stage = Stage::kAwaitHello;
    security::Nonce clientNonce{};
    security::Nonce serverNonce{};
    std::unique_ptr<asio::steady_timer> registerTimer;
  };

  // Failure detection runs on the server thread, so Membership needs no lock.
  void scheduleTick() {
    const auto period = std::clamp(std::chrono::milliseconds(options.failureTimeoutMs / 20),
                                   std::chrono::milliseconds(10), std::chrono::milliseconds(100));
    ticker.expires_after(period);
    ticker.async_wait([this](const asio::error_code& ec) {
      if (ec || stopping) return;
      scheduleTick();  // first: failure detection must outlive a failed tick
      guarded("tick", [&] { deliver(membership.tick(Membership::Clock::now())); });
    });
  }

  void acceptNext() {
    acceptor.async_accept([this](const asio::error_code& ec, asio::ip::tcp::socket socket) {
      if (ec) {
        if (ec == asio::error::operation_aborted || stopping) return;
        // Out of descriptors (or memory): the connection stays in the backlog
        // and would wake us again at once; wait instead of spinning.
        ECCL_LOG(kWarn, kMaster, "accept failed: {}; pausing accepts for {} ms", ec.message(),
                 kAcceptBackoff.count());
        acceptPause.expires_after(kAcceptBackoff);
        acceptPause.async_wait([this](const asio::error_code& e) {
          if (!e && !stopping) acceptNext();
        });
        return;
      }
      acceptNext();  // first: accepting must outlive a failed admission
      guarded("admit", [&] { admit(std::move(socket)); });
    });
  }

  // Runs one handler's work; an exception fails that work only (logged).
  template <typename F>
  void guarded(const char* what, F&& f) {
    try {
      f();
    } catch (const std::exception& e) {
      ECCL_LOG(kError, kMaster, "{} failed: {}", what, e.what());
    }
  }

  void admit(asio::ip::tcp::socket socket) {
    const std::string source = observedAddress(socket);
    const size_t fromSource = static_cast<size_t>(std::count_if(
        conns.begin(), conns.end(), [&](const auto& kv) { return kv.second.source == source; }));
    // Full: make room by dropping the oldest connection that has not
    // registered yet (many sources trickling handshakes must not lock
    // peers out); when every one is registered, refuse.
    auto unproven = std::find_if(conns.begin(), conns.end(), [](const auto& kv) {
      return kv.second.stage != Stage::kRegistered && kv.second.stage != Stage::kRefused;
    });
    const bool full = conns.size() >= maxConnections;
    if (fromSource >= maxPerSource || (full && unproven == conns.end())) {
      ECCL_LOG(kInfo, kMaster, "connection from {} refused: {} connections ({} from it), limits "
               "{} and {} per source", source, conns.size(), fromSource, maxConnections,
               maxPerSource);
      asio::error_code ignored;
      socket.close(ignored);
      return;
    }
    if (full) {
      ECCL_LOG(kInfo, kMaster, "{} connections: dropping connection {} from {}, which has not "
               "registered, to serve a new one", conns.size(), unproven->first,
               unproven->second.source);
      unproven->second.stage = Stage::kRefused;
      unproven->second.channel->abort();
    }
    const uint64_t id = nextId++;
    Conn& c = conns[id];
    c.source = source;
    c.channel = std::make_shared<wire::Channel>(std::move(socket), tls.get(), /*server=*/true);
    c.channel->setMaxPayload(wire::kMaxPreAuthPayload);
    c.channel->setBudget(queueBudget);
    c.registerTimer = std::make_unique<asio::steady_timer>(io, registerTimeout);
    c.registerTimer->async_wait([this, id](const asio::error_code& ec) {
      if (ec) return;
      auto it = conns.find(id);
      if (it == conns.end() || it->second.stage == Stage::kRegistered) return;
      ECCL_LOG(kInfo, kMaster, "connection {} from {} did not register within {} ms; closed", id,
               it->second.source, registerTimeout.count());
      it->second.channel->abort();
    });
    c.channel->start(
        [this, id](uint16_t, Result<wire::ControlMessage>&& msg) {
          onMessage(id, std::move(msg));
        },
        [this, id](const Status& st) { onClose(id, st); });
  }

  using ControlMessage = wire::ControlMessage;

  void onMessage(uint64_t id, Result<ControlMessage>&& msg) {
    auto it = conns.find(id);
    if (it == conns.end()) return;
    Conn& c = it->second;
    if (!msg) {
      if (msg.status().code() == ecclVersionMismatch) {
        // Answer in our framing; an older or newer peer still reads the result code.
        ECCL_LOG(kWarn, kMaster, "connection {} from {}: {}", id, c.source, msg.status().message());
        deliver({{id, wire::RegisterReply{ecclVersionMismatch, 0,
                                          fmt::format("the master got {}; run the same ECCL "
                                                      "release on the master and every peer",
                                                      msg.status().message())},
                  true}});
      } else {
        ECCL_LOG(kWarn, kMaster, "connection {} from {} sent a bad frame: {}", id, c.source,
                 msg.status().message());
      }
      return;
    }
    switch (c.stage) {
      case Stage::kAwaitHello: return onHello(id, c, *msg);
      case Stage::kAwaitProof: return onProof(id, c, *msg);
      case Stage::kAwaitRegister:
        if (const auto* reg = std::get_if<wire::Register>(&*msg)) {
          c.stage = Stage::kRegistered;
          c.registerTimer->cancel();
          deliver(membership.onRegister(id, *reg, c.source));
        } else {
          refuse(id, c, ecclInvalidUsage, fmt::format("sent {} before registering",
                                                      wire::typeName(wire::typeOf(*msg))));
        }
        return;
      case Stage::kRegistered:
        deliver(membership.onMessage(id, *msg));
        return;
      case Stage::kRefused:
        return;  // the channel closes once the refusal is written
    }
  }

  void onHello(uint64_t id, Conn& c, const ControlMessage& msg) {
    const auto* hello = std::get_if<wire::AuthHello>(&msg);
    if (hello == nullptr) {
      refuse(id, c, ecclAuthFailed, fmt::format("sent {} instead of the authentication handshake "
                                                "(an ECCL peer of protocol {} starts with it)",
                                                wire::typeName(wire::typeOf(msg)),
                                                wire::kProtocolVersion));
      return;
    }
    Result<security::Nonce> nonce = security::randomNonce();
    if (!nonce) {
      refuse(id, c, ecclSystemError, nonce.status().message());
      return;
    }
    c.clientNonce = hello->clientNonce;
    c.serverNonce = *nonce;
    c.stage = Stage::kAwaitProof;
    deliver({{id, wire::AuthChallenge{c.serverNonce,
                                      security::makeProof(options.authToken,
                                                          security::Role::kServer,
                                                          security::Purpose::kControl, {},
                                                          c.clientNonce, c.serverNonce)}}});
  }

  void onProof(uint64_t id, Conn& c, const ControlMessage& msg) {
    const auto* proof = std::get_if<wire::AuthProof>(&msg);
    if (proof == nullptr ||
        !security::verifyProof(options.authToken, security::Role::kClient,
                               security::Purpose::kControl, {}, c.clientNonce, c.serverNonce,
                               proof->clientProof)) {
      refuse(id, c, ecclAuthFailed, "auth token does not match the master's");
      return;
    }
    c.stage = Stage::kAwaitRegister;
    c.channel->setMaxPayload(wire::kMaxPeerPayload);
  }

  void refuse(uint64_t id, Conn& c, ecclResult_t result, const std::string& why) {
    ECCL_LOG(kWarn, kMaster, "connection {} from {} refused: {}", id, c.source, why);
    c.stage = Stage::kRefused;
    deliver({{id, wire::RegisterReply{static_cast<uint32_t>(result), 0, why}, true}});
  }

  void onClose(uint64_t id, const Status&) {
    auto it = conns.find(id);
    if (it == conns.end()) return;
    const bool registered = it->second.stage == Stage::kRegistered;
    conns.erase(it);
    if (registered) deliver(membership.onDisconnect(id));
  }

  void deliver(const std::vector<Outgoing>& out) {
    for (const Outgoing& o : out) {
      auto it = conns.find(o.peerId);
      if (it == conns.end()) continue;
      it->second.channel->send(o.msg);
      if (o.closeAfter) it->second.channel->close();
    }
  }

  MasterOptions options;
  asio::io_context io;
  std::unique_ptr<asio::ssl::context> tls;  // null without TLS; outlives the channels
  std::shared_ptr<wire::QueueBudget> queueBudget = std::make_shared<wire::QueueBudget>();
  asio::ip::tcp::acceptor acceptor;
  asio::steady_timer ticker;
  asio::steady_timer acceptPause;
  bool stopping = false;  // server thread only
  Membership membership;
  std::map<uint64_t, Conn> conns;
  uint64_t nextId = 1;
  std::thread thread;
  uint16_t port = 0;
  size_t maxConnections = 0;
  size_t maxPerSource = 0;
  std::chrono::milliseconds registerTimeout{0};
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
  if (options.authToken.empty() && !addr.is_loopback() && !options.allowUnauthenticated) {
    return error(ecclInvalidUsage,
                 fmt::format("refusing to serve {} without an auth token: anyone who reaches it "
                             "could join and disturb the group. Set a token (authToken, "
                             "eccl-master --auth-token or ECCL_AUTH_TOKEN, the same on every "
                             "peer), listen on 127.0.0.1, or say that an open master is meant "
                             "(allowUnauthenticated, eccl-master --insecure-no-auth)",
                             options.listenAddress));
  }
  if (options.tls.mode != security::TlsMode::kOff) {
    impl->tls = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_server);
    ECCL_RETURN_IF_ERROR(
        security::configureTls(impl->tls->native_handle(), options.tls, options.authToken, true));
  }
  impl->maxConnections = options.maxConnections ? options.maxConnections : env::masterMaxConnections();
  impl->maxPerSource = options.maxConnectionsPerSource ? options.maxConnectionsPerSource
                                                       : env::masterMaxConnectionsPerSource();
  impl->registerTimeout = std::chrono::milliseconds(
      options.registerTimeoutMs ? options.registerTimeoutMs : env::masterRegisterTimeoutMs());
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
  impl->thread = std::thread([raw] {
    runGuarded(log::Subsys::kMaster, "master io loop", [raw] { raw->io.run(); });
  });
  ECCL_LOG(kInfo, kMaster, "master listening on {}:{} ({}, TLS {})", options.listenAddress,
           impl->port, options.authToken.empty() ? "open: no auth token" : "authenticated",
           security::tlsModeName(options.tls.mode));
  return std::unique_ptr<Master>(new Master(std::move(impl)));
}

Master::~Master() {
  Impl* impl = impl_.get();
  asio::post(impl->io, [impl] {
    asio::error_code ec;
    impl->stopping = true;
    impl->ticker.cancel();
    impl->acceptPause.cancel();
    impl->acceptor.close(ec);
    std::vector<std::shared_ptr<wire::Channel>> channels;  // abort() re-enters through onClose
    for (auto& [id, c] : impl->conns) {
      channels.push_back(c.channel);
      c.registerTimer->cancel();
    }
    for (auto& ch : channels) ch->abort();
  });
  // With the acceptor and every socket closed the loop runs out of work.
  if (impl->thread.joinable()) impl->thread.join();
}

uint16_t Master::port() const { return impl_->port; }

}  // namespace eccl::master
