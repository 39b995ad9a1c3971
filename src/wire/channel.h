// Channel: a framed control connection over asio TCP, used by the master (one
// per peer) and by the peer's control client.
//
// Threading: all callbacks run on the io_context's thread; send() and close()
// may be called from any thread. Messages queued while a write is in flight
// are written together in one gather write, which is how concurrent ops'
// completions get batched. A malformed frame is reported to onMessage as an
// error Result and then the channel closes; it never throws.
//
// Bounds: a frame whose header announces more than maxPayload() is refused
// before anything is allocated for it, and a peer that stops reading while
// more than kMaxQueuedBytes of messages wait for it is disconnected.
#pragma once

#include <asio.hpp>
#include <asio/ssl.hpp>

#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <vector>

#include "wire/control.h"

namespace eccl::wire {

inline constexpr size_t kMaxQueuedBytes = 16u << 20;
// Unwritten bytes a master holds for all its connections together.
inline constexpr size_t kMaxMasterQueuedBytes = size_t{1} << 30;

// Shared by channels that draw on one budget of unwritten bytes.
struct QueueBudget {
  std::atomic<size_t> used{0};
  size_t limit = kMaxMasterQueuedBytes;
};

class Channel : public std::enable_shared_from_this<Channel> {
 public:
  // version: the protocol version in the frame's header.
  using OnMessage = std::function<void(uint16_t version, Result<ControlMessage>&&)>;
  using OnClose = std::function<void(const Status&)>;

  // With `tls` (a configured context, outliving the channel), start() first
  // runs the TLS handshake as `server` or client; a failed handshake closes
  // the channel with ecclAuthFailed. Messages sent meanwhile wait for it.
  explicit Channel(asio::ip::tcp::socket socket, asio::ssl::context* tls = nullptr,
                   bool server = false);
  ~Channel();

  void start(OnMessage onMessage, OnClose onClose);
  void send(const ControlMessage& msg);
  // Closes once what was sent before has been written.
  void close();
  // Closes now, dropping unwritten messages.
  void abort();
  // Draw this channel's unwritten bytes from `budget` too (set before start).
  void setBudget(std::shared_ptr<QueueBudget> budget) { budget_ = std::move(budget); }
  // The largest payload accepted from the other side (default kMaxControlPayload).
  void setMaxPayload(uint32_t bytes) { maxPayload_.store(bytes, std::memory_order_relaxed); }
  std::string remoteAddress() const { return remote_; }
  asio::ip::tcp::endpoint localEndpoint() const;

 private:
  using TlsStream = asio::ssl::stream<asio::ip::tcp::socket>;
  asio::ip::tcp::socket& socket() { return tls_ ? tls_->next_layer() : plain_; }
  // Runs f on the stream that carries the frames: TLS or the plain socket.
  template <typename F>
  void withStream(F&& f) {
    if (tls_) {
      f(*tls_);
    } else {
      f(plain_);
    }
  }
  void readHeader();
  void readPayload(ControlHeader header);
  void writeQueued();
  void fail(const Status& st);

  asio::ip::tcp::socket plain_;  // unused (closed) with TLS
  std::unique_ptr<TlsStream> tls_;
  bool server_ = false;
  bool ready_ = false;  // handshake done: writes may start
  std::string remote_;
  std::array<std::byte, kControlHeaderBytes> header_{};
  std::vector<std::byte> payload_;
  std::deque<std::vector<std::byte>> queue_;
  std::vector<std::vector<std::byte>> writing_;
  size_t queuedBytes_ = 0;  // in queue_ and writing_
  std::shared_ptr<QueueBudget> budget_;
  std::atomic<uint32_t> maxPayload_{kMaxControlPayload};
  bool closed_ = false;
  bool closing_ = false;
  OnMessage onMessage_;
  OnClose onClose_;
};

}  // namespace eccl::wire
