#include "comm/control_client.h"

#include <fmt/format.h>

#include <algorithm>

#include "common/guarded.h"
#include "common/log.h"
#include "security/auth.h"
#include "security/tls.h"

namespace eccl::comm {
namespace {

constexpr auto kCloseFlushTimeout = std::chrono::seconds(1);

}  // namespace

Result<HostPort> parseHostPort(const std::string& text) {
  HostPort hp;
  std::string port;
  if (!text.empty() && text[0] == '[') {
    const size_t close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return error(ecclInvalidArgument, fmt::format("address '{}' is not [v6addr]:port", text));
    }
    hp.host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string::npos || colon == 0 || text.find(':') != colon) {
      return error(ecclInvalidArgument,
                   fmt::format("address '{}' is not host:port (write IPv6 as [addr]:port)", text));
    }
    hp.host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  char* end = nullptr;
  const unsigned long p = std::strtoul(port.c_str(), &end, 10);
  if (port.empty() || *end != '\0' || p == 0 || p > 65535) {
    return error(ecclInvalidArgument, fmt::format("address '{}' has no valid port", text));
  }
  hp.port = static_cast<uint16_t>(p);
  return hp;
}

Result<std::unique_ptr<ControlClient>> ControlClient::connect(const std::string& masterAddress,
                                                              transport::Deadline deadline,
                                                              const std::string& localAddress,
                                                              const security::TlsOptions& tls,
                                                              const std::string& token,
                                                              std::chrono::milliseconds heartbeat,
                                                              std::chrono::milliseconds failureTimeout,
                                                              OnVerdict onVerdict, OnLost onLost,
                                                              OnMemberLost onMemberLost) {
  Result<HostPort> hp = parseHostPort(masterAddress);
  if (!hp) return hp.status();
  std::unique_ptr<ControlClient> c(new ControlClient());
  c->heartbeat_ = heartbeat;
  c->failureTimeout_ = failureTimeout;
  c->onVerdict_ = std::move(onVerdict);
  c->onLost_ = std::move(onLost);
  c->onMemberLost_ = std::move(onMemberLost);

  // Connect, retrying a refused connection (the master may be starting up),
  // all bounded by the deadline.
  asio::ip::tcp::socket socket(c->io_);
  asio::ip::tcp::resolver resolver(c->io_);
  asio::error_code last = asio::error::timed_out;
  while (transport::Clock::now() < deadline) {
    asio::error_code ec;
    const auto endpoints = resolver.resolve(hp->host, std::to_string(hp->port), ec);
    if (ec) {
      last = ec;
      break;
    }
    bool done = false;
    if (localAddress.empty()) {
      asio::async_connect(socket, endpoints,
                          [&](const asio::error_code& e, const asio::ip::tcp::endpoint&) {
                            last = e;
                            done = true;
                          });
    } else {
      // Leave from the bind address, so that the master sees the address
      // this peer's data links use (it checks advertised addresses against it).
      const asio::ip::address local = asio::ip::make_address(localAddress, ec);
      if (ec) return error(ecclInvalidArgument, fmt::format("bind address '{}' is not an IP "
                                                            "address", localAddress));
      auto ep = std::find_if(endpoints.begin(), endpoints.end(), [&](const auto& e) {
        return e.endpoint().address().is_v4() == local.is_v4();
      });
      if (ep == endpoints.end()) {
        return error(ecclInvalidArgument, fmt::format("the master at {} has no address of the "
                                                      "bind address {}'s family",
                                                      masterAddress, localAddress));
      }
      socket.open(ep->endpoint().protocol(), ec);
      if (!ec) socket.bind({local, 0}, ec);
      if (ec) return error(ecclSystemError, fmt::format("bind to {}: {}", localAddress, ec.message()));
      socket.async_connect(ep->endpoint(), [&](const asio::error_code& e) {
        last = e;
        done = true;
      });
    }
    c->io_.restart();
    c->io_.run_for(std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - transport::Clock::now()));
    if (!done) {  // timed out: cancel, and let the handler run before `last` goes away
      socket.close(ec);
      c->io_.restart();
      c->io_.run();
      last = asio::error::timed_out;
      break;
    }
    if (last != asio::error::connection_refused) break;
    socket.close(ec);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (last || !socket.is_open()) {
    return error(ecclMasterUnreachable,
                 fmt::format("cannot reach the master at {}: {}", masterAddress, last.message()));
  }
  c->io_.restart();
  asio::error_code ec;
  c->local_ = socket.local_endpoint(ec).address().to_string();
  if (tls.mode != security::TlsMode::kOff) {
    c->tls_ = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_client);
    ECCL_RETURN_IF_ERROR(security::configureTls(c->tls_->native_handle(), tls, token, false));
  }
  c->channel_ = std::make_shared<wire::Channel>(std::move(socket), c->tls_.get(), false);
  ControlClient* raw = c.get();
  c->channel_->start(
      [raw](uint16_t, Result<wire::ControlMessage>&& msg) { raw->onMessage(std::move(msg)); },
      [raw](const Status& st) { raw->onClose(st); });
  c->lastHeard_ = c->lastTick_ = transport::Clock::now();
  c->heartbeatTimer_ = std::make_unique<asio::steady_timer>(c->io_);
  c->scheduleHeartbeat();
  const log::Context ctx = log::threadContext();
  c->thread_ = std::thread([raw, ctx] {
    log::threadContext() = ctx;
    runGuarded(log::Subsys::kComm, "control io loop", [raw] { raw->io_.run(); });
  });
  return c;
}

ControlClient::~ControlClient() {
  close();
  if (thread_.joinable()) thread_.join();
}

void ControlClient::scheduleHeartbeat() {
  heartbeatTimer_->expires_after(heartbeat_);
  heartbeatTimer_->async_wait([this](const asio::error_code& ec) {
    // A completion queued before cancel() still arrives with success: the
    // flag, not the error code, says whether to go on.
    if (ec || closed_) return;
    const auto now = transport::Clock::now();
    // A tick far too late means this process was stopped or starved: what
    // the master sent meanwhile (a Kick, say) is still unread, so the
    // silence is ours, not the master's.
    if (now - lastTick_ > failureTimeout_) lastHeard_ = now;
    lastTick_ = now;
    const auto silent = now - lastHeard_;
    if (silent > failureTimeout_) {
      failure_ = error(ecclMasterUnreachable,
                       fmt::format("the master has been silent for {} ms (failure timeout {} ms)",
                                   std::chrono::duration_cast<std::chrono::milliseconds>(silent).count(),
                                   failureTimeout_.count()));
      channel_->abort();  // onClose hands failure_ to the waiters
      return;
    }
    scheduleHeartbeat();  // first: liveness checks must outlive a failed send
    try {
      channel_->send(wire::Heartbeat{});
    } catch (const std::exception& e) {  // out of memory: the master's silence check follows
      ECCL_LOG(kError, kComm, "heartbeat not sent: {}", e.what());
    }
  });
}

Status ControlClient::authenticate(const std::string& token, transport::Deadline deadline) {
  Result<security::Nonce> nonce = security::randomNonce();
  if (!nonce) return nonce.status();
  send(wire::AuthHello{*nonce});
  Result<wire::ControlMessage> reply = await(wire::MsgType::kAuthChallenge, deadline);
  if (!reply) {
    // A master that refuses us at once (another version) answers with a
    // RegisterReply instead: that result says more than the closed connection.
    if (auto rr = takeQueued(wire::MsgType::kRegisterReply)) {
      const auto& r = std::get<wire::RegisterReply>(*rr);
      return error(static_cast<ecclResult_t>(r.result), fmt::format("the master refused the "
                                                                    "connection: {}", r.message));
    }
    return reply.status();
  }
  const auto& c = std::get<wire::AuthChallenge>(*reply);
  using security::Purpose;
  using security::Role;
  if (!security::verifyProof(token, Role::kServer, Purpose::kControl, {}, *nonce, c.serverNonce,
                             c.serverProof)) {
    return error(ecclAuthFailed, "the master could not prove that it knows the auth token: "
                                 "wrong token on one side, or not the real master");
  }
  send(wire::AuthProof{security::makeProof(token, Role::kClient, Purpose::kControl, {}, *nonce,
                                           c.serverNonce)});
  return Status::ok();
}

void ControlClient::send(const wire::ControlMessage& msg) { channel_->send(msg); }

void ControlClient::close() {
  asio::post(io_, [this] {
    if (closed_) return;
    closed_ = true;
    heartbeatTimer_->cancel();
    channel_->close();  // after what is queued (a Leave) is written ...
    closeTimer_ = std::make_unique<asio::steady_timer>(io_, kCloseFlushTimeout);
    closeTimer_->async_wait([this](const asio::error_code& ec) {
      if (!ec) channel_->abort();  // ... or a master that stopped reading is dropped
    });
  });
}

std::string ControlClient::localAddress() const { return local_; }

void ControlClient::onMessage(Result<wire::ControlMessage>&& msg) {
  if (!msg) {
    ECCL_LOG(kError, kComm, "bad message from the master: {}", msg.status().message());
    failure_ = msg.status();
    channel_->abort();  // onClose follows and hands failure_ to the waiters
    return;
  }
  lastHeard_ = transport::Clock::now();
  if (std::holds_alternative<wire::Heartbeat>(*msg)) return;
  if (const auto* k = std::get_if<wire::Kick>(&*msg)) {
    // The master closes after this; the close reports it.
    failure_ = error(ecclKicked, fmt::format("the master removed this peer: {}; connect again "
                                             "to rejoin as a newcomer", k->message));
    return;  // logged once, by the communicator
  }
  if (const auto* lost = std::get_if<wire::MemberLost>(&*msg)) {
    if (onMemberLost_) onMemberLost_(*lost);
    return;
  }
  if (const auto* v = std::get_if<wire::OpVerdict>(&*msg)) {
    onVerdict_(*v);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    inbox_[wire::typeOf(*msg)].push_back(std::move(*msg));
  }
  cv_.notify_all();
}

void ControlClient::onClose(const Status& st) {
  closed_ = true;
  heartbeatTimer_->cancel();
  if (closeTimer_) closeTimer_->cancel();
  Status lost = !failure_.isOk() && failure_.code() != ecclInvalidArgument
                    ? failure_
                    : st.code() == ecclAuthFailed ? st  // the TLS handshake failed
                    : error(ecclMasterUnreachable,
                            fmt::format("connection to the master closed{}{}",
                                        st.message().empty() ? "" : ": ", st.message()));
  {
    std::lock_guard<std::mutex> lock(mu_);
    lost_ = lost;
  }
  cv_.notify_all();
  if (onLost_) onLost_(lost);
}

std::optional<wire::ControlMessage> ControlClient::takeQueued(wire::MsgType type) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& q = inbox_[type];
  if (q.empty()) return std::nullopt;
  wire::ControlMessage m = std::move(q.front());
  q.pop_front();
  return m;
}

Result<wire::ControlMessage> ControlClient::await(wire::MsgType type, transport::Deadline deadline) {
  return awaitAny({type}, deadline);
}

Result<wire::ControlMessage> ControlClient::awaitAny(std::initializer_list<wire::MsgType> types,
                                                     transport::Deadline deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    for (wire::MsgType type : types) {
      auto& q = inbox_[type];
      if (!q.empty()) {
        wire::ControlMessage m = std::move(q.front());
        q.pop_front();
        return m;
      }
    }
    if (!lost_.isOk()) return lost_;
    if (cv_.wait_until(lock, deadline) == std::cv_status::timeout &&
        transport::Clock::now() >= deadline) {
      return error(ecclTimeout, fmt::format("no {} from the master in time",
                                            wire::typeName(*types.begin())));
    }
  }
}

}  // namespace eccl::comm
