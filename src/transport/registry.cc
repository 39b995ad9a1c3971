#include <fmt/format.h>

#include "transport/tcp/transport.h"
#ifdef ECCL_HAVE_NCCL
#include "transport/nccl/api.h"
#endif
#ifdef ECCL_HAVE_IBVERBS
#include "transport/ibverbs/transport.h"
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
#ifdef ECCL_HAVE_IBVERBS
    // Loads libibverbs and lists devices; which one is usable is found when
    // the transport opens it (ecclUnsupported naming what was found).
    Result<const ibverbs::Api*> api = ibverbs::api();
    if (!api) return api.status();
    int count = 0;
    ibv_device** list = (*api)->getDeviceList(&count);
    if (list != nullptr) (*api)->freeDeviceList(list);
    if (count <= 0) {
      return error(ecclUnsupported, "transport \"ibverbs\": no RDMA device found "
                                    "(ibv_get_device_list lists none: is the driver loaded?)");
    }
    return Status::ok();
#else
    return error(ecclUnsupported, "transport \"ibverbs\": this ECCL was built without RDMA verbs "
                                  "(configure with ECCL_WITH_IBVERBS=ON where rdma-core's "
                                  "libibverbs-dev is installed)");
#endif
  }
  return error(ecclInvalidArgument,
               fmt::format("unknown transport '{}' (known: tcp, ibverbs, nccl)", name));
}

Result<std::unique_ptr<Transport>> createTransport(const std::string& name,
                                                   const TransportOptions& options) {
  ECCL_RETURN_IF_ERROR(checkTransport(name));
#ifdef ECCL_HAVE_IBVERBS
  if (name == "ibverbs") {
    ibverbs::VerbsOptions verbs;
    Result<std::unique_ptr<ibverbs::VerbsTransport>> t = ibverbs::VerbsTransport::create(options, verbs);
    if (!t) return t.status();
    return std::unique_ptr<Transport>(std::move(*t));
  }
#endif
  // "nccl": device-buffer collectives run on NCCL (comm/communicator.cc); the
  // data links, for host buffers and NCCL's unique id, are TCP.
  Result<std::unique_ptr<tcp::TcpTransport>> t = tcp::TcpTransport::create(options);
  if (!t) return t.status();
  return std::unique_ptr<Transport>(std::move(*t));
}

}  // namespace eccl::transport
