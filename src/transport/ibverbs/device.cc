#include "transport/ibverbs/device.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <fcntl.h>
#include <poll.h>

#include "common/log.h"

namespace eccl::transport::ibverbs {
namespace {

std::string_view linkLayerName(uint8_t l) {
  return l == IBV_LINK_LAYER_ETHERNET ? "RoCE" : "InfiniBand";
}

// "name" or "name:port".
bool parseSelection(const std::string& s, std::string* name, int* port) {
  const size_t colon = s.rfind(':');
  *name = s.substr(0, colon);
  *port = 0;
  if (colon == std::string::npos) return true;
  const char* b = s.data() + colon + 1;
  const char* e = s.data() + s.size();
  auto [p, ec] = std::from_chars(b, e, *port);
  return ec == std::errc() && p == e && *port >= 1 && *port <= 255;
}

// On RoCE: the first GID that sysfs types "RoCE v2" and that holds an IPv4
// address (::ffff:a.b.c.d); -1 when sysfs says nothing (no such file, or none).
int roceV2Gid(const Api& api, ibv_context* ctx, const std::string& device, uint8_t port, int tableLen) {
  for (int i = 0; i < tableLen; ++i) {
    std::ifstream f(fmt::format("/sys/class/infiniband/{}/ports/{}/gid_attrs/types/{}", device, port, i));
    std::string type;
    if (!std::getline(f, type) || type.find("v2") == std::string::npos) continue;
    ibv_gid gid{};
    if (api.queryGid(ctx, port, i, &gid) != 0) continue;
    const uint8_t* r = gid.raw;
    if (std::all_of(r, r + 10, [](uint8_t b) { return b == 0; }) && r[10] == 0xff && r[11] == 0xff) return i;
  }
  return -1;
}

bool zero(const ibv_gid& gid) {
  return std::all_of(gid.raw, gid.raw + 16, [](uint8_t b) { return b == 0; });
}

}  // namespace

Result<std::shared_ptr<Device>> Device::open(const Api& api, const RdmaOptions& options) {
  std::string wantName;
  int wantPort = 0;
  if (!parseSelection(options.device, &wantName, &wantPort)) {
    return error(ecclInvalidArgument, fmt::format("RDMA device '{}': expected a device name, or "
                                                  "name:port with a port from 1", options.device));
  }
  int count = 0;
  ibv_device** list = api.getDeviceList(&count);
  if (list == nullptr || count == 0) {
    if (list != nullptr) api.freeDeviceList(list);
    return error(ecclUnsupported, "transport \"ibverbs\": no RDMA device found (ibv_get_device_list "
                                  "lists none: is the driver loaded, e.g. mlx5_ib?)");
  }
  std::shared_ptr<Device> d(new Device(api));
  d->path_ = options;
  std::string seen;
  for (int i = 0; i < count && d->context_ == nullptr; ++i) {
    const std::string name = api.getDeviceName(list[i]);
    seen += fmt::format("{}{}", seen.empty() ? "" : ", ", name);
    if (!wantName.empty() && name != wantName) continue;
    ibv_context* ctx = api.openDevice(list[i]);
    if (ctx == nullptr) {
      seen += fmt::format(" (cannot open: {})", std::strerror(errno));
      continue;
    }
    ibv_device_attr attr{};
    bool found = false;
    if (api.queryDevice(ctx, &attr) == 0) {
      for (int port = 1; port <= attr.phys_port_cnt && !found; ++port) {
        if (wantPort != 0 && port != wantPort) continue;
        ibv_port_attr pa{};
        if (api.queryPort(ctx, static_cast<uint8_t>(port), &pa) != 0) continue;
        if (pa.state != IBV_PORT_ACTIVE) {
          seen += fmt::format(" (port {} not active)", port);
          continue;
        }
        found = true;
        d->context_ = ctx;
        d->attr_ = attr;
        d->port_ = static_cast<uint8_t>(port);
        d->name_ = name;
        d->lid_ = pa.lid;
        d->mtu_ = pa.active_mtu;
        const bool roce = pa.link_layer == IBV_LINK_LAYER_ETHERNET;
        d->gidIndex_ = options.gidIndex;
        if (d->gidIndex_ < 0 && roce) {
          d->gidIndex_ = roceV2Gid(api, ctx, name, static_cast<uint8_t>(port), pa.gid_tbl_len);
          if (d->gidIndex_ < 0) {
            d->gidIndex_ = 0;
            ECCL_LOG(kWarn, kTransport, "RDMA device {} port {}: no RoCE v2 GID with an IPv4 "
                     "address found in sysfs; using GID index 0 (set ECCL_IB_GID_INDEX if peers "
                     "are on other subnets)", name, port);
          }
        }
        ECCL_LOG(kInfo, kTransport, "RDMA device {} port {} ({}, lid {}, mtu {}, gid index {})",
                 name, port, linkLayerName(pa.link_layer), pa.lid, 128 << pa.active_mtu, d->gidIndex_);
      }
    }
    if (!found) api.closeDevice(ctx);
  }
  api.freeDeviceList(list);
  if (d->context_ == nullptr) {
    return error(ecclUnsupported,
                 wantName.empty()
                     ? fmt::format("transport \"ibverbs\": no RDMA device has an active port "
                                   "(devices: {})", seen)
                     : fmt::format("transport \"ibverbs\": RDMA device '{}' (ECCL_IB_DEVICE) not "
                                   "found or no active port{} (devices: {})",
                                   wantName, wantPort != 0 ? fmt::format(" {}", wantPort) : "", seen));
  }
  if (d->gidIndex_ >= 0 &&
      (api.queryGid(d->context_, d->port_, d->gidIndex_, &d->gid_) != 0 || zero(d->gid_))) {
    return error(ecclUnsupported, fmt::format("transport \"ibverbs\": {} port {} has no GID at index "
                                              "{} (ECCL_IB_GID_INDEX; show_gids lists them)",
                                              d->name_, d->port_, d->gidIndex_));
  }
  d->pd_ = api.allocPd(d->context_);
  if (d->pd_ == nullptr) {
    return error(ecclSystemError, fmt::format("transport \"ibverbs\": cannot allocate a protection "
                                              "domain on {}: {}", d->name_, std::strerror(errno)));
  }
  if (d->context_->async_fd >= 0) {
    // Non-blocking: an event announced by poll() may be gone by the time it
    // is read (its queue pair destroyed meanwhile), and a blocked read would
    // hold the device's destruction.
    ::fcntl(d->context_->async_fd, F_SETFL, ::fcntl(d->context_->async_fd, F_GETFL) | O_NONBLOCK);
    Device* self = d.get();
    const log::Context ctx = log::threadContext();
    d->async_ = std::thread([self, ctx] {
      log::threadContext() = ctx;
      self->asyncLoop();
    });
  }
  return d;
}

uint64_t Device::watch(std::vector<uint32_t> qpns, OnFatal onFatal) {
  std::lock_guard<std::mutex> lock(watchMu_);
  const uint64_t id = nextWatch_++;
  watchers_.emplace(id, Watcher{std::move(qpns), std::move(onFatal)});
  return id;
}

void Device::unwatch(uint64_t id) {
  std::lock_guard<std::mutex> lock(watchMu_);
  watchers_.erase(id);
}

void Device::notify(uint32_t qpn, const std::string& why) {
  std::lock_guard<std::mutex> lock(watchMu_);
  for (auto& [id, w] : watchers_) {
    if (qpn == 0 || std::find(w.qpns.begin(), w.qpns.end(), qpn) != w.qpns.end()) w.onFatal(why);
  }
}

void Device::asyncLoop() {
  while (!stop_.load(std::memory_order_acquire)) {
    pollfd p{context_->async_fd, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0 || (p.revents & POLLIN) == 0) continue;
    ibv_async_event ev{};
    if (api_.getAsyncEvent(context_, &ev) != 0) continue;
    const std::string what = api_.eventTypeStr(ev.event_type);
    switch (ev.event_type) {
      case IBV_EVENT_QP_FATAL:
      case IBV_EVENT_QP_REQ_ERR:
      case IBV_EVENT_QP_ACCESS_ERR:
      case IBV_EVENT_PATH_MIG_ERR:
        notify(ev.element.qp->qp_num,
               fmt::format("queue pair {}: {} (asynchronous event)", ev.element.qp->qp_num, what));
        break;
      case IBV_EVENT_CQ_ERR:
        notify(0, fmt::format("{}: {} (asynchronous event)", name_, what));
        break;
      case IBV_EVENT_PORT_ERR:
        if (ev.element.port_num == port_) {
          notify(0, fmt::format("{} port {}: {} (asynchronous event)", name_, port_, what));
        }
        break;
      case IBV_EVENT_DEVICE_FATAL:
        notify(0, fmt::format("{}: {} (asynchronous event)", name_, what));
        break;
      default:
        ECCL_LOG(kInfo, kTransport, "RDMA device {}: {}", name_, what);
        break;
    }
    // After the watchers: a queue pair is destroyed only once its events are acknowledged.
    api_.ackAsyncEvent(&ev);
  }
}

Device::~Device() {
  stop_.store(true, std::memory_order_release);
  if (async_.joinable()) async_.join();
  if (pd_ != nullptr) api_.deallocPd(pd_);
  if (context_ != nullptr) api_.closeDevice(context_);
}

}  // namespace eccl::transport::ibverbs
