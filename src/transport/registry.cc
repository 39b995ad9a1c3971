#include <fmt/format.h>

#include "transport/tcp/transport.h"
#ifdef ECCL_HAVE_NCCL
#include "transport/nccl/api.h"
#endif

namespace eccl::transport {

Status checkTransport(const std::string& name) {
  if (name.empty() || name == "tcp") return Status::ok();
  if (name == "nccl") {
#ifdef ECCL_HAVE_NCCL
    Result<const nccl::Api*> api = nccl::api();
    return api ? Status::ok() : api.status();
#else
    return error(ecclUnsupported, "transport \"nccl\": this ECCL was built without NCCL "
                                  "(configure with ECCL_WITH_NCCL=ON where NCCL is installed)");
#endif
  }
  if (name == "ibverbs") {
    return error(ecclUnsupported,
                 fmt::format("transport '{}' is not built into this ECCL yet; use \"tcp\"", name));
  }
  return error(ecclInvalidArgument,
               fmt::format("unknown transport '{}' (known: tcp, ibverbs, nccl)", name));
}

Result<std::unique_ptr<Transport>> createTransport(const std::string& name,
                                                   const TransportOptions& options) {
  ECCL_RETURN_IF_ERROR(checkTransport(name));
  // "nccl": device-buffer collectives run on NCCL (comm/communicator.cc); the
  // data links, for host buffers and NCCL's unique id, are TCP.
  Result<std::unique_ptr<tcp::TcpTransport>> t = tcp::TcpTransport::create(options);
  if (!t) return t.status();
  return std::unique_ptr<Transport>(std::move(*t));
}

}  // namespace eccl::transport
