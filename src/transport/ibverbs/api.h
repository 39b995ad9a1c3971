// The verbs calls ECCL's RDMA transport makes, as one table of function
// pointers: the real libibverbs, loaded with dlopen on first use (libeccl
// never links it, so it runs where rdma-core is absent), or a test stand-in
// installed with setApiForTesting (tests/support/fake_verbs.h: an in-process
// provider over memory with injectable faults). Nothing in ECCL calls an
// ibv_* function except through this table, the inline ones of verbs.h
// (ibv_post_send, ibv_poll_cq, ibv_req_notify_cq) included.
#pragma once

#include <infiniband/verbs.h>

#include "common/status.h"

namespace eccl::transport::ibverbs {

struct Api {
  ibv_device** (*getDeviceList)(int* count);
  void (*freeDeviceList)(ibv_device** list);
  const char* (*getDeviceName)(ibv_device* device);
  ibv_context* (*openDevice)(ibv_device* device);
  int (*closeDevice)(ibv_context* context);
  int (*queryDevice)(ibv_context* context, ibv_device_attr* attr);
  int (*queryPort)(ibv_context* context, uint8_t port, ibv_port_attr* attr);
  int (*queryGid)(ibv_context* context, uint8_t port, int index, ibv_gid* gid);
  ibv_pd* (*allocPd)(ibv_context* context);
  int (*deallocPd)(ibv_pd* pd);
  ibv_mr* (*regMr)(ibv_pd* pd, void* addr, size_t length, int access);
  int (*deregMr)(ibv_mr* mr);
  ibv_comp_channel* (*createCompChannel)(ibv_context* context);
  int (*destroyCompChannel)(ibv_comp_channel* channel);
  ibv_cq* (*createCq)(ibv_context* context, int cqe, void* cqContext, ibv_comp_channel* channel,
                      int compVector);
  int (*destroyCq)(ibv_cq* cq);
  int (*reqNotifyCq)(ibv_cq* cq, int solicitedOnly);
  int (*getCqEvent)(ibv_comp_channel* channel, ibv_cq** cq, void** cqContext);
  void (*ackCqEvents)(ibv_cq* cq, unsigned int count);
  int (*pollCq)(ibv_cq* cq, int entries, ibv_wc* wc);
  ibv_qp* (*createQp)(ibv_pd* pd, ibv_qp_init_attr* attr);
  int (*modifyQp)(ibv_qp* qp, ibv_qp_attr* attr, int mask);
  int (*destroyQp)(ibv_qp* qp);
  int (*postSend)(ibv_qp* qp, ibv_send_wr* wr, ibv_send_wr** bad);
  int (*postRecv)(ibv_qp* qp, ibv_recv_wr* wr, ibv_recv_wr** bad);
  int (*forkInit)();
  const char* (*wcStatusStr)(ibv_wc_status status);
  int (*getAsyncEvent)(ibv_context* context, ibv_async_event* event);
  void (*ackAsyncEvent)(ibv_async_event* event);
  const char* (*eventTypeStr)(ibv_event_type type);
};

// The stand-in when one is installed, else libibverbs.so.1, loaded once
// (ibv_fork_init runs then, before any verbs resource exists: the fault
// tests and users fork). ecclUnsupported with the reason when it cannot be
// loaded.
Result<const Api*> api();
// Installs a stand-in for this process (tests); nullptr uninstalls it.
void setApiForTesting(const Api* api);

}  // namespace eccl::transport::ibverbs
