#include "api/shim.h"
#include "common/env.h"
#include "master/master.h"

#include <cstddef>

struct ecclMaster {
  std::unique_ptr<eccl::master::Master> impl;
};

using eccl::Status;
using eccl::error;
using eccl::api::guard;

extern "C" {

ECCL_API ecclResult_t ecclMasterCreate(const ecclMasterConfig_t* config, ecclMaster_t* master) {
  return guard(nullptr, "ecclMasterCreate", [&]() -> Status {
    ECCL_RETURN_IF_ERROR(eccl::api::checkStruct(config, offsetof(ecclMasterConfig_t, voteTimeoutMs),
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
    o.authToken = config->authToken != nullptr ? config->authToken : eccl::env::authToken();
    o.heartbeatIntervalMs = config->heartbeatIntervalMs;
    o.failureTimeoutMs = config->failureTimeoutMs;
    if (ECCL_HAS_FIELD(config, trustAdvertisedAddresses)) {
      if (config->voteTimeoutMs == 0) {
        return error(ecclInvalidArgument, "voteTimeoutMs must be > 0");
      }
      o.voteTimeoutMs = config->voteTimeoutMs;
      o.allowUnauthenticated = config->allowUnauthenticated != 0;
      o.trustAdvertisedAddresses = config->trustAdvertisedAddresses != 0;
    }
    auto tls = eccl::api::tlsOptionsOf(config);
    if (!tls) return tls.status();
    o.tls = *tls;
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
