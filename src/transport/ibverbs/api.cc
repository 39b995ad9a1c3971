#include "transport/ibverbs/api.h"

#include <dlfcn.h>
#include <fmt/format.h>

#include <cstring>
#include <string>

#include "transport/loaded_api.h"

#include "common/log.h"

namespace eccl::transport::ibverbs {
namespace {


// verbs.h implements these inline, through the provider's ops table.
int postSend(ibv_qp* qp, ibv_send_wr* wr, ibv_send_wr** bad) { return ibv_post_send(qp, wr, bad); }
int postRecv(ibv_qp* qp, ibv_recv_wr* wr, ibv_recv_wr** bad) { return ibv_post_recv(qp, wr, bad); }
int pollCq(ibv_cq* cq, int n, ibv_wc* wc) { return ibv_poll_cq(cq, n, wc); }
int reqNotifyCq(ibv_cq* cq, int solicitedOnly) { return ibv_req_notify_cq(cq, solicitedOnly); }

Result<const Api*> load() {
  constexpr const char* kLibrary = "libibverbs.so.1";
  void* lib = dlopen(kLibrary, RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    const char* why = dlerror();
    return error(ecclUnsupported,
                 fmt::format("transport \"ibverbs\": {} could not be loaded ({}); install "
                             "rdma-core (libibverbs1) and the driver for the RDMA device",
                             kLibrary, why != nullptr ? why : "not found"));
  }
  static Api real{};
  std::string missing;
  bindSymbol(lib, "ibv_get_device_list", &real.getDeviceList, &missing);
  bindSymbol(lib, "ibv_free_device_list", &real.freeDeviceList, &missing);
  bindSymbol(lib, "ibv_get_device_name", &real.getDeviceName, &missing);
  bindSymbol(lib, "ibv_open_device", &real.openDevice, &missing);
  bindSymbol(lib, "ibv_close_device", &real.closeDevice, &missing);
  bindSymbol(lib, "ibv_query_device", &real.queryDevice, &missing);
  bindSymbol(lib, "ibv_query_port", &real.queryPort, &missing);
  bindSymbol(lib, "ibv_query_gid", &real.queryGid, &missing);
  bindSymbol(lib, "ibv_alloc_pd", &real.allocPd, &missing);
  bindSymbol(lib, "ibv_dealloc_pd", &real.deallocPd, &missing);
  bindSymbol(lib, "ibv_reg_mr", &real.regMr, &missing);
  bindSymbol(lib, "ibv_dereg_mr", &real.deregMr, &missing);
  bindSymbol(lib, "ibv_create_comp_channel", &real.createCompChannel, &missing);
  bindSymbol(lib, "ibv_destroy_comp_channel", &real.destroyCompChannel, &missing);
  bindSymbol(lib, "ibv_create_cq", &real.createCq, &missing);
  bindSymbol(lib, "ibv_destroy_cq", &real.destroyCq, &missing);
  bindSymbol(lib, "ibv_get_cq_event", &real.getCqEvent, &missing);
  bindSymbol(lib, "ibv_ack_cq_events", &real.ackCqEvents, &missing);
  bindSymbol(lib, "ibv_create_qp", &real.createQp, &missing);
  bindSymbol(lib, "ibv_modify_qp", &real.modifyQp, &missing);
  bindSymbol(lib, "ibv_destroy_qp", &real.destroyQp, &missing);
  bindSymbol(lib, "ibv_fork_init", &real.forkInit, &missing);
  bindSymbol(lib, "ibv_wc_status_str", &real.wcStatusStr, &missing);
  bindSymbol(lib, "ibv_get_async_event", &real.getAsyncEvent, &missing);
  bindSymbol(lib, "ibv_ack_async_event", &real.ackAsyncEvent, &missing);
  bindSymbol(lib, "ibv_event_type_str", &real.eventTypeStr, &missing);
  if (!missing.empty()) {
    return error(ecclUnsupported, fmt::format("transport \"ibverbs\": {} lacks{}", kLibrary, missing));
  }
  real.postSend = postSend;
  real.postRecv = postRecv;
  real.pollCq = pollCq;
  real.reqNotifyCq = reqNotifyCq;
  // Before any memory is registered: a forked child (the fault tests fork,
  // so do data loaders) must not take the parent's registered pages copy-on-write.
  if (int rc = real.forkInit(); rc != 0) {
    ECCL_LOG(kWarn, kTransport, "ibv_fork_init failed ({}): do not fork while RDMA links are open",
             std::strerror(rc));
  }
  return &real;  // the library stays loaded
}

LoadedApi<Api> table(load);

}  // namespace

Result<const Api*> api() { return table.get(); }

void setApiForTesting(const Api* a) { table.setForTesting(a); }

}  // namespace eccl::transport::ibverbs
