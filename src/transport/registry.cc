#include <fmt/format.h>

#include "transport/tcp/transport.h"

namespace eccl::transport {

Result<std::unique_ptr<Transport>> createTransport(const std::string& name,
                                                   const TransportOptions& options) {
  if (name.empty() || name == "tcp") {
    Result<std::unique_ptr<tcp::TcpTransport>> t = tcp::TcpTransport::create(options);
    if (!t) return t.status();
    return std::unique_ptr<Transport>(std::move(*t));
  }
  if (name == "ibverbs" || name == "nccl") {
    return error(ecclUnsupported,
                 fmt::format("transport '{}' is not built into this ECCL yet; use \"tcp\"", name));
  }
  return error(ecclInvalidArgument,
               fmt::format("unknown transport '{}' (known: tcp, ibverbs, nccl)", name));
}

}  // namespace eccl::transport
