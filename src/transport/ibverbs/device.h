// Device: the RDMA device, port and protection domain one transport uses
// (gloo's ibverbs/device.h). Opened once per transport; every link's queue
// pairs, completion queues and registrations hang off its PD.
//
// Selection (RdmaOptions): `device` picks it (ECCL_IB_DEVICE, "mlx5_0" or
// "mlx5_0:2" for port 2); empty takes the first device with an active port.
// InfiniBand ports are addressed by LID; RoCE ports (link layer Ethernet)
// need a GID: gidIndex (ECCL_IB_GID_INDEX), or when not set the first RoCE v2
// GID with an IPv4 address that sysfs lists for the port (routable across
// subnets, unlike RoCE v1 or link-local ones), else index 0. An all-zero GID
// is refused.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "transport/ibverbs/api.h"
#include "transport/transport.h"
#include "wire/data.h"

namespace eccl::transport::ibverbs {

class Device {
 public:
  // ecclUnsupported with the reason when no device (or not the one asked
  // for, or none with an active port) is there.
  static Result<std::shared_ptr<Device>> open(const Api& api, const RdmaOptions& options);
  ~Device();
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;

  const Api& api() const { return api_; }
  ibv_context* context() const { return context_; }
  ibv_pd* pd() const { return pd_; }
  uint8_t port() const { return port_; }
  const std::string& name() const { return name_; }
  // What a peer needs to address this port (VerbsOffer's lid, mtu, gid).
  uint16_t lid() const { return lid_; }
  ibv_mtu mtu() const { return mtu_; }
  bool global() const { return gidIndex_ >= 0; }
  int gidIndex() const { return gidIndex_; }
  const ibv_gid& gid() const { return gid_; }
  // The largest completion queue it makes.
  int maxCqe() const { return attr_.max_cqe; }
  // The path settings every queue pair gets (timeout, traffic class, SL).
  const RdmaOptions& path() const { return path_; }

  // Asynchronous events (ibv_get_async_event) are read by one thread per
  // device: a queue pair's fatal error ends the link that owns it, and a
  // port error (this port), device fatal error or CQ error every link on
  // the device, at once rather than at the next completion or the
  // completion deadline. watch() registers a link's queue pairs; `onFatal`
  // runs on that thread with the reason. unwatch() returns once no call of
  // it runs any more.
  using OnFatal = std::function<void(const std::string& why)>;
  uint64_t watch(std::vector<uint32_t> qpns, OnFatal onFatal);
  void unwatch(uint64_t id);

 private:
  explicit Device(const Api& api) : api_(api) {}
  void asyncLoop();
  // Calls the watchers of `qpn`, or every watcher when qpn is 0.
  void notify(uint32_t qpn, const std::string& why);

  const Api& api_;
  ibv_context* context_ = nullptr;
  ibv_pd* pd_ = nullptr;
  ibv_device_attr attr_{};
  uint8_t port_ = 1;
  std::string name_;
  uint16_t lid_ = 0;
  ibv_mtu mtu_ = IBV_MTU_1024;
  int gidIndex_ = -1;
  ibv_gid gid_{};
  RdmaOptions path_;
  struct Watcher {
    std::vector<uint32_t> qpns;
    OnFatal onFatal;
  };
  std::mutex watchMu_;  // held while a watcher runs
  std::map<uint64_t, Watcher> watchers_;
  uint64_t nextWatch_ = 1;
  std::atomic<bool> stop_{false};
  std::thread async_;
};

}  // namespace eccl::transport::ibverbs
