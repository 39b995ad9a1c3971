#include "api/shim.h"
#include "master/master.h"

struct ecclMaster {
  std::unique_ptr<eccl::master::Master> impl;
};

using eccl::Status;
using eccl::error;
using eccl::api::guard;

extern "C" {

ECCL_API ecclResult_t ecclMasterCreate(const ecclMasterConfig_t* config, ecclMaster_t* master) {
  return guard(nullptr, "ecclMasterCreate", [&]() -> Status {
    ECCL_RETURN_IF_ERROR(eccl::api::checkStruct(config, sizeof(ecclMasterConfig_t),
                                                "ecclMasterConfig_t", "ECCL_MASTER_CONFIG_INIT"));
    if (master == nullptr) return error(ecclInvalidArgument, "master is NULL");
    if (config->heartbeatIntervalMs == 0 || config->failureTimeoutMs == 0 ||
        config->failureTimeoutMs < config->heartbeatIntervalMs) {
      return error(ecclInvalidArgument,
                   "heartbeatIntervalMs and failureTimeoutMs must be > 0, and the failure "
                   "timeout at least one heartbeat interval");
    }
    eccl::master::MasterOptions o;
    if (config->listenAddress != nullptr) o.listenAddress = config->listenAddress;
    o.port = config->port;
    if (config->authToken != nullptr) o.authToken = config->authToken;
    o.heartbeatIntervalMs = config->heartbeatIntervalMs;
    o.failureTimeoutMs = config->failureTimeoutMs;
    auto m = eccl::master::Master::start(o);
    if (!m) return m.status();
    *master = new ecclMaster{std::move(*m)};
    return Status::ok();
  });
}

ECCL_API ecclResult_t ecclMasterGetPort(ecclMaster_t master, uint16_t* port) {
  return guard(nullptr, "ecclMasterGetPort", [&]() -> Status {
    if (master == nullptr || port == nullptr) {
      return error(ecclInvalidArgument, "master and port must not be NULL");
    }
    *port = master->impl->port();
    return Status::ok();
  });
}

ECCL_API ecclResult_t ecclMasterDestroy(ecclMaster_t master) {
  return guard(nullptr, "ecclMasterDestroy", [&]() -> Status {
    delete master;
    return Status::ok();
  });
}

}  // extern "C"
