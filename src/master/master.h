// Master: serves the Membership state machine over asio TCP on one thread.
// Holds no tensor data. Used by ecclMasterCreate and the eccl-master tool.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "common/status.h"

namespace eccl::master {

struct MasterOptions {
  std::string listenAddress = "0.0.0.0";
  uint16_t port = 0;
  std::string authToken;
  uint32_t heartbeatIntervalMs = 500;
  uint32_t failureTimeoutMs = 2000;
};

class Master {
 public:
  static Result<std::unique_ptr<Master>> start(const MasterOptions& options);
  ~Master();  // stops serving and joins the thread

  uint16_t port() const;

  Master(const Master&) = delete;
  Master& operator=(const Master&) = delete;

 private:
  struct Impl;
  explicit Master(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace eccl::master
