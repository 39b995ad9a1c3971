#include <fmt/format.h>

#include <cstring>

#include "api/shim.h"
#include "common/env.h"

using eccl::Result;
using eccl::Status;
using eccl::error;
using eccl::api::guard;

namespace {

Status requireComm(ecclComm_t comm) {
  if (comm == nullptr || !comm->impl) return error(ecclInvalidArgument, "comm is NULL");
  return Status::ok();
}

template <typename T>
Status requireOut(const T* p, const char* name) {
  if (p == nullptr) return error(ecclInvalidArgument, fmt::format("{} is NULL", name));
  return Status::ok();
}

}  // namespace

extern "C" {

ECCL_API ecclResult_t ecclCommCreate(const ecclCommConfig_t* config, ecclComm_t* comm) {
  return guard(nullptr, "ecclCommCreate", [&]() -> Status {
    ECCL_RETURN_IF_ERROR(eccl::api::checkStruct(config, offsetof(ecclCommConfig_t, tls),
                                                "ecclCommConfig_t", "ECCL_COMM_CONFIG_INIT"));
    ECCL_RETURN_IF_ERROR(requireOut(comm, "comm"));
    if (config->masterAddress == nullptr || *config->masterAddress == '\0') {
      return error(ecclInvalidArgument, "masterAddress is required (\"host:port\")");
    }
    if (config->streamsPerPeer > eccl::wire::kMaxStreams) {
      return error(ecclInvalidArgument, fmt::format("streamsPerPeer {} exceeds {}",
                                                    config->streamsPerPeer,
                                                    eccl::wire::kMaxStreams));
    }
    if (config->connectTimeoutMs == 0 || config->opTimeoutMs == 0 ||
        config->heartbeatIntervalMs == 0 || config->failureTimeoutMs == 0) {
      return error(ecclInvalidArgument, "connectTimeoutMs, opTimeoutMs, heartbeatIntervalMs and "
                                        "failureTimeoutMs must be > 0");
    }
    if (config->failureTimeoutMs <= config->heartbeatIntervalMs) {
      return error(ecclInvalidArgument,
                   fmt::format("failureTimeoutMs ({}) must exceed heartbeatIntervalMs ({}): the "
                               "master answers each heartbeat, and its silence for "
                               "failureTimeoutMs means it is gone", config->failureTimeoutMs,
                               config->heartbeatIntervalMs));
    }
    if (config->advertisedAddress != nullptr &&
        std::strlen(config->advertisedAddress) > eccl::wire::kMaxHostBytes) {
      return error(ecclInvalidArgument, fmt::format("advertisedAddress is longer than {} bytes",
                                                    eccl::wire::kMaxHostBytes));
    }
    Result<eccl::comm::HostPort> hp = eccl::comm::parseHostPort(config->masterAddress);
    if (!hp) return hp.status();
    eccl::comm::CommOptions o;
    o.masterAddress = config->masterAddress;
    o.peerGroup = config->peerGroup;
    if (config->transport != nullptr) o.transport = config->transport;
    o.streams = config->streamsPerPeer != 0 ? config->streamsPerPeer : eccl::env::defaultStreams();
    o.authToken = config->authToken != nullptr ? config->authToken : eccl::env::authToken();
    o.connectTimeout = std::chrono::milliseconds(config->connectTimeoutMs);
    o.opTimeout = std::chrono::milliseconds(config->opTimeoutMs);
    if (config->advertisedAddress != nullptr) o.advertisedAddress = config->advertisedAddress;
    if (config->bindAddress != nullptr) o.bindAddress = config->bindAddress;
    o.heartbeatInterval = std::chrono::milliseconds(config->heartbeatIntervalMs);
    o.failureTimeout = std::chrono::milliseconds(config->failureTimeoutMs);
    auto tls = eccl::api::tlsOptionsOf(config);
    if (!tls) return tls.status();
    if (tls->mode == eccl::security::TlsMode::kPsk && o.authToken.empty()) {
      return error(ecclInvalidArgument, "tls \"psk\" derives its key from the auth token; set "
                                        "authToken (or ECCL_AUTH_TOKEN)");
    }
    o.tls = *tls;
    // Fail here rather than at connect: the backend is not in this build.
    ECCL_RETURN_IF_ERROR(eccl::transport::checkTransport(o.transport));
    *comm = new ecclComm{std::make_unique<eccl::comm::Communicator>(std::move(o))};
    return Status::ok();
  });
}

ECCL_API ecclResult_t ecclCommConnect(ecclComm_t comm) {
  return guard(comm, "ecclCommConnect", [&]() -> Status {
    ECCL_RETURN_IF_ERROR(requireComm(comm));
    return comm->impl->connect();
  });
}

ECCL_API ecclResult_t ecclCommUpdateTopology(ecclComm_t comm) {
  return guard(comm, "ecclCommUpdateTopology", [&]() -> Status {
    ECCL_RETURN_IF_ERROR(requireComm(comm));
    return comm->impl->updateTopology();
  });
}

ECCL_API ecclResult_t ecclCommOptimizeTopology(ecclComm_t comm) {
  return guard(comm, "ecclCommOptimizeTopology", [&]() -> Status {
    ECCL_RETURN_IF_ERROR(requireComm(comm));
    return comm->impl->updateTopology(/*optimize=*/true);
  });
}

ECCL_API ecclResult_t ecclCommArePeersPending(ecclComm_t comm, int* pending) {
  return guard(comm, "ecclCommArePeersPending", [&]() -> Status {
    ECCL_RETURN_IF_ERROR(requireComm(comm));
    ECCL_RETURN_IF_ERROR(requireOut(pending, "pending"));
    Result<bool> r = comm->impl->arePeersPending();
    if (!r) return r.status();
    *pending = *r ? 1 : 0;
    return Status::ok();
  });
}

ECCL_API ecclResult_t ecclCommGetWorldSize(ecclComm_t comm, int* worldSize) {
  return guard(comm, "ecclCommGetWorldSize", [&]() -> Status {
    ECCL_RETURN_IF_ERROR(requireComm(comm));
    ECCL_RETURN_IF_ERROR(requireOut(worldSize, "worldSize"));
    *worldSize = comm->impl->worldSize();
    return Status::ok();
  });
}

ECCL_API ecclResult_t ecclCommGetRank(ecclComm_t comm, int* rank) {
  return guard(comm, "ecclCommGetRank", [&]() -> Status {
    ECCL_RETURN_IF_ERROR(requireComm(comm));
    ECCL_RETURN_IF_ERROR(requireOut(rank, "rank"));
    *rank = comm->impl->rank();
    return Status::ok();
  });
}

ECCL_API ecclResult_t ecclCommGetEpoch(ecclComm_t comm, uint64_t* epoch) {
  return guard(comm, "ecclCommGetEpoch", [&]() -> Status {
    ECCL_RETURN_IF_ERROR(requireComm(comm));
    ECCL_RETURN_IF_ERROR(requireOut(epoch, "epoch"));
    *epoch = comm->impl->epoch();
    return Status::ok();
  });
}

ECCL_API ecclResult_t ecclCommGetPeerGroup(ecclComm_t comm, uint32_t* peerGroup) {
  return guard(comm, "ecclCommGetPeerGroup", [&]() -> Status {
    ECCL_RETURN_IF_ERROR(requireComm(comm));
    ECCL_RETURN_IF_ERROR(requireOut(peerGroup, "peerGroup"));
    *peerGroup = comm->impl->peerGroup();
    return Status::ok();
  });
}

ECCL_API ecclResult_t ecclCommDestroy(ecclComm_t comm) {
  return guard(nullptr, "ecclCommDestroy", [&]() -> Status {
    if (comm != nullptr && !comm->impl->claimForDestroy()) {
      return error(ecclInvalidUsage, "ecclCommDestroy while ecclCommConnect or "
                                     "ecclCommUpdateTopology runs in another thread; destroy "
                                     "once it returned");
    }
    delete comm;
    return Status::ok();
  });
}

}  // extern "C"
