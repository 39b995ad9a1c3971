// ControlClient: the peer's connection to the master, on its own io thread.
//
// Requests with a reply (Register, Vote, PendingQuery) are answered in order,
// so await() takes the next message of the expected type. Verdicts arrive
// unasked and go to the onVerdict callback (on the io thread), MemberLost
// notices to onMemberLost. Heartbeats are
// sent every heartbeatInterval and echoed by the master; a master silent for
// failureTimeout is treated as gone. When the connection drops, every await()
// fails with ecclMasterUnreachable (ecclKicked when the master removed us)
// and onLost runs once.
#pragma once

#include <asio.hpp>
#include <asio/ssl.hpp>

#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "transport/transport.h"
#include "wire/channel.h"

namespace eccl::comm {

struct HostPort {
  std::string host;
  uint16_t port = 0;
};
// "host:port" or "[v6addr]:port".
Result<HostPort> parseHostPort(const std::string& text);

class ControlClient {
 public:
  using OnVerdict = std::function<void(const wire::OpVerdict&)>;
  using OnLost = std::function<void(const Status&)>;
  using OnMemberLost = std::function<void(const wire::MemberLost&)>;

  // localAddress: bound before connecting when non-empty. With TLS the
  // channel's handshake (keyed by `token` in psk mode) precedes everything.
  static Result<std::unique_ptr<ControlClient>> connect(const std::string& masterAddress,
                                                        transport::Deadline deadline,
                                                        const std::string& localAddress,
                                                        const security::TlsOptions& tls,
                                                        const std::string& token,
                                                        std::chrono::milliseconds heartbeat,
                                                        std::chrono::milliseconds failureTimeout,
                                                        OnVerdict onVerdict, OnLost onLost,
                                                        OnMemberLost onMemberLost);
  ~ControlClient();

  // The handshake that opens the connection (security/auth.h): proves this
  // peer knows `token` and checks that the master does too (ecclAuthFailed
  // when it does not). A wrong token on our side shows in the RegisterReply.
  Status authenticate(const std::string& token, transport::Deadline deadline);
  void send(const wire::ControlMessage& msg);
  Result<wire::ControlMessage> await(wire::MsgType type, transport::Deadline deadline);
  // The next message of any of `types` (the oldest queued of the first type that has one).
  Result<wire::ControlMessage> awaitAny(std::initializer_list<wire::MsgType> types,
                                        transport::Deadline deadline);
  // The oldest queued message of `type`, without waiting (a late reply).
  std::optional<wire::ControlMessage> takeQueued(wire::MsgType type);
  // The local address of the connection to the master: reachable by peers
  // that reach the master the same way, so the default advertised address.
  std::string localAddress() const;
  // Sends what is queued (e.g. a Leave) and closes.
  void close();

 private:
  ControlClient() = default;
  void onMessage(Result<wire::ControlMessage>&& msg);
  void onClose(const Status& st);
  void scheduleHeartbeat();

  asio::io_context io_;
  std::unique_ptr<asio::ssl::context> tls_;  // outlives channel_
  std::unique_ptr<asio::steady_timer> heartbeatTimer_;
  std::unique_ptr<asio::steady_timer> closeTimer_;
  bool closed_ = false;  // io thread only
  std::chrono::milliseconds heartbeat_{500};
  std::chrono::milliseconds failureTimeout_{2000};
  transport::Deadline lastHeard_{};  // io thread only
  transport::Deadline lastTick_{};   // io thread only
  std::shared_ptr<wire::Channel> channel_;
  std::thread thread_;
  OnVerdict onVerdict_;
  OnLost onLost_;
  OnMemberLost onMemberLost_;
  std::string local_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::map<wire::MsgType, std::deque<wire::ControlMessage>> inbox_;
  Status lost_;
  Status failure_;  // io thread only: why we closed the connection ourselves
};

}  // namespace eccl::comm
