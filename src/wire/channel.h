// Channel: a framed control connection over asio TCP, used by the master (one
// per peer) and by the peer's control client.
//
// Threading: all callbacks run on the io_context's thread; send() and close()
// may be called from any thread. Messages queued while a write is in flight
// are written together in one gather write, which is how concurrent ops'
// completions get batched. A malformed frame is reported to onMessage as an
// error Result and then the channel closes; it never throws.
#pragma once

#include <asio.hpp>

#include <deque>
#include <functional>
#include <memory>
#include <vector>

#include "wire/control.h"

namespace eccl::wire {

class Channel : public std::enable_shared_from_this<Channel> {
 public:
  // version: the protocol version in the frame's header.
  using OnMessage = std::function<void(uint16_t version, Result<ControlMessage>&&)>;
  using OnClose = std::function<void(const Status&)>;

  explicit Channel(asio::ip::tcp::socket socket);
  ~Channel();

  void start(OnMessage onMessage, OnClose onClose);
  void send(const ControlMessage& msg);
  // Closes once what was sent before has been written.
  void close();
  // Closes now, dropping unwritten messages.
  void abort();
  std::string remoteAddress() const { return remote_; }
  asio::ip::tcp::endpoint localEndpoint() const;

 private:
  void readHeader();
  void readPayload(ControlHeader header);
  void writeQueued();
  void fail(const Status& st);

  asio::ip::tcp::socket socket_;
  std::string remote_;
  std::array<std::byte, kControlHeaderBytes> header_{};
  std::vector<std::byte> payload_;
  std::deque<std::vector<std::byte>> queue_;
  std::vector<std::vector<std::byte>> writing_;
  bool closed_ = false;
  bool closing_ = false;
  OnMessage onMessage_;
  OnClose onClose_;
};

}  // namespace eccl::wire
