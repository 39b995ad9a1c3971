#include "wire/channel.h"

#include <fmt/format.h>

namespace eccl::wire {

Channel::Channel(asio::ip::tcp::socket socket, asio::ssl::context* tls, bool server)
    : plain_(socket.get_executor()), server_(server) {
  asio::error_code ec;
  auto ep = socket.remote_endpoint(ec);
  remote_ = ec ? std::string("?") : fmt::format("{}:{}", ep.address().to_string(), ep.port());
  socket.set_option(asio::ip::tcp::no_delay(true), ec);
  if (tls != nullptr) {
    tls_ = std::make_unique<TlsStream>(std::move(socket), *tls);
  } else {
    plain_ = std::move(socket);
  }
}

Channel::~Channel() = default;

asio::ip::tcp::endpoint Channel::localEndpoint() const {
  asio::error_code ec;
  return (tls_ ? tls_->next_layer() : plain_).local_endpoint(ec);
}

void Channel::start(OnMessage onMessage, OnClose onClose) {
  onMessage_ = std::move(onMessage);
  onClose_ = std::move(onClose);
  asio::post(socket().get_executor(), [self = shared_from_this()] {
    if (!self->tls_) {
      self->ready_ = true;
      self->readHeader();
      return;
    }
    self->tls_->async_handshake(
        self->server_ ? asio::ssl::stream_base::server : asio::ssl::stream_base::client,
        [self](const asio::error_code& ec) {
          if (ec) {
            self->fail(error(ecclAuthFailed,
                             fmt::format("TLS handshake with {} failed: {} (do both sides use the "
                                         "same TLS mode and key material?)", self->remote_,
                                         ec.message())));
            return;
          }
          self->ready_ = true;
          if (!self->queue_.empty() && self->writing_.empty()) self->writeQueued();
          self->readHeader();
        });
  });
}

void Channel::readHeader() {
  withStream([&](auto& stream) {
  asio::async_read(stream, asio::buffer(header_),
                   [self = shared_from_this()](const asio::error_code& ec, size_t) {
                     if (ec) {
                       self->fail(error(ecclSystemError, ec.message()));
                       return;
                     }
                     Result<ControlHeader> h = decodeControlHeader(self->header_);
                     const uint32_t limit = self->maxPayload_.load(std::memory_order_relaxed);
                     if (h && h->payloadBytes > limit) {
                       h = error(ecclInvalidArgument,
                                 fmt::format("{} frame of {} bytes exceeds this connection's "
                                             "limit of {}", typeName(h->type), h->payloadBytes,
                                             limit));
                     }
                     if (!h) {
                       self->onMessage_(0, h.status());
                       // Another version: the owner answers in a way that
                       // version can read, then closes. Anything else: close.
                       if (h.status().code() != ecclVersionMismatch) self->fail(h.status());
                       return;
                     }
                     self->readPayload(*h);
                   });
  });
}

void Channel::readPayload(ControlHeader header) {
  payload_.resize(header.payloadBytes);
  withStream([&](auto& stream) {
  asio::async_read(stream, asio::buffer(payload_),
                   [self = shared_from_this(), header](const asio::error_code& ec, size_t) {
                     if (ec) {
                       self->fail(error(ecclSystemError, ec.message()));
                       return;
                     }
                     Result<ControlMessage> msg = decodeControl(header.type, self->payload_);
                     const bool ok = msg.hasValue();
                     Status st = ok ? Status::ok() : msg.status();
                     self->onMessage_(header.version, std::move(msg));
                     if (!ok) {
                       self->fail(st);
                       return;
                     }
                     if (!self->closed_) self->readHeader();
                   });
  });
}

void Channel::send(const ControlMessage& msg) {
  std::vector<std::byte> bytes = encodeControl(msg);
  asio::post(socket().get_executor(), [self = shared_from_this(), b = std::move(bytes)]() mutable {
    if (self->closed_) return;
    self->queuedBytes_ += b.size();
    const size_t all = self->budget_ ? self->budget_->used.fetch_add(b.size()) + b.size() : 0;
    if (self->queuedBytes_ > kMaxQueuedBytes || (self->budget_ && all > self->budget_->limit)) {
      self->fail(error(ecclSystemError,
                       fmt::format("{} has not read {} bytes of messages ({} for all connections); "
                                   "dropped", self->remote_, self->queuedBytes_, all)));
      return;
    }
    self->queue_.push_back(std::move(b));
    if (self->writing_.empty() && self->ready_) self->writeQueued();
  });
}

void Channel::writeQueued() {
  writing_.assign(std::make_move_iterator(queue_.begin()), std::make_move_iterator(queue_.end()));
  queue_.clear();
  std::vector<asio::const_buffer> bufs;
  bufs.reserve(writing_.size());
  for (const auto& b : writing_) bufs.emplace_back(asio::buffer(b));
  withStream([&](auto& stream) {
  asio::async_write(stream, bufs, [self = shared_from_this()](const asio::error_code& ec, size_t n) {
    if (!self->closed_) {  // fail() already gave back everything
      self->queuedBytes_ -= n;
      if (self->budget_) self->budget_->used.fetch_sub(n);
    }
    self->writing_.clear();
    if (ec) {
      self->fail(error(ecclSystemError, ec.message()));
      return;
    }
    if (!self->queue_.empty() && !self->closed_) {
      self->writeQueued();
    } else if (self->closing_) {
      self->fail(error(ecclSuccess, "closed locally"));
    }
  });
  });
}

void Channel::close() {
  asio::post(socket().get_executor(), [self = shared_from_this()] {
    self->closing_ = true;
    if (self->writing_.empty()) self->fail(error(ecclSuccess, "closed locally"));
  });
}

void Channel::abort() {
  asio::post(socket().get_executor(), [self = shared_from_this()] {
    self->fail(error(ecclSuccess, "aborted locally"));
  });
}

void Channel::fail(const Status& st) {
  if (closed_) return;
  closed_ = true;
  // Whatever is still queued or being written is dropped: give it back.
  if (budget_) budget_->used.fetch_sub(queuedBytes_);
  queuedBytes_ = 0;
  asio::error_code ec;
  socket().shutdown(asio::ip::tcp::socket::shutdown_both, ec);
  socket().close(ec);
  if (onClose_) {
    OnClose cb = std::move(onClose_);
    onClose_ = nullptr;
    cb(st);
  }
  onMessage_ = [](uint16_t, Result<ControlMessage>&&) {};
}

}  // namespace eccl::wire
