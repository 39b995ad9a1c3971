#include "fake_verbs.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <iterator>
#include <mutex>
#include <optional>
#include <queue>
#include <thread>
#include <unordered_map>

namespace eccl::test {
namespace {

using Clock = std::chrono::steady_clock;
using Fault = FakeVerbs::Fault;

// What queryDevice reports, and what createQp and createCq enforce.
constexpr int kMaxQpWr = 16384;
constexpr int kMaxSge = 30;
constexpr int kMaxCqe = 1 << 22;
constexpr int kMaxQps = 1 << 16;
constexpr int kMaxRdAtomic = 16;
constexpr uint32_t kMaxInline = 256;
constexpr uint64_t kMaxMrSize = 1ULL << 40;
constexpr uint32_t kPsnMask = 0xffffff;

// A blocking get*Event with nothing queued: -1 with EAGAIN when the caller
// made the event fd non-blocking, else waits until it is readable (an event
// was queued; another thread may take it first) and returns 0 to look again.
int awaitEvent(int fd) {
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0 && (flags & O_NONBLOCK)) {
    errno = EAGAIN;
    return -1;
  }
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, -1) < 0 && errno != EINTR) return -1;
  return 0;
}

[[noreturn]] void die(const char* format, ...) {
  va_list args;
  va_start(args, format);
  std::fputs("fake_verbs: ", stderr);
  std::vfprintf(stderr, format, args);
  std::fputc('\n', stderr);
  va_end(args);
  std::abort();
}

// An eventfd readable exactly while a queue is not empty: setReadable when
// the queue gets its first entry, clearReadable when it loses its last.
void setReadable(int fd) {
  const uint64_t one = 1;
  if (::write(fd, &one, sizeof one) != sizeof one) die("eventfd write: %s", std::strerror(errno));
}

void clearReadable(int fd) {
  uint64_t value;
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, 0) == 1 && ::read(fd, &value, sizeof value) < 0)
    die("eventfd read: %s", std::strerror(errno));
}

// ibv_event_type_str's text (rdma-core's libibverbs/enum_strs.c).
const char* eventTypeStr(ibv_event_type type) {
  // clang-format off
  static const char* const kNames[] = {
      "CQ error", "local work queue catastrophic error",
      "invalid request local work queue error", "local access violation work queue error",
      "communication established", "send queue drained", "path migrated",
      "path migration request error", "local catastrophic error", "port active", "port error",
      "LID change", "P_Key change", "SM change", "SRQ catastrophic error", "SRQ limit reached",
      "last WQE reached", "client reregistration", "GID table change", "WQ fatal"};
  // clang-format on
  const auto i = static_cast<size_t>(type);
  return i < std::size(kNames) ? kNames[i] : "unknown";
}

// What an asynchronous event's element names.
enum class Affiliation { kQp, kCq, kSrq, kWq, kNone /* port_num */ };

Affiliation affiliation(ibv_event_type type) {
  switch (type) {
    case IBV_EVENT_QP_FATAL:
    case IBV_EVENT_QP_REQ_ERR:
    case IBV_EVENT_QP_ACCESS_ERR:
    case IBV_EVENT_COMM_EST:
    case IBV_EVENT_SQ_DRAINED:
    case IBV_EVENT_PATH_MIG:
    case IBV_EVENT_PATH_MIG_ERR:
    case IBV_EVENT_QP_LAST_WQE_REACHED:
      return Affiliation::kQp;
    case IBV_EVENT_CQ_ERR:
      return Affiliation::kCq;
    case IBV_EVENT_SRQ_ERR:
    case IBV_EVENT_SRQ_LIMIT_REACHED:
      return Affiliation::kSrq;
    case IBV_EVENT_WQ_FATAL:
      return Affiliation::kWq;
    default:
      return Affiliation::kNone;
  }
}

// The QP events a real HCA raises after moving the QP to ERR.
bool qpError(ibv_event_type type) {
  return type == IBV_EVENT_QP_FATAL || type == IBV_EVENT_QP_REQ_ERR ||
         type == IBV_EVENT_QP_ACCESS_ERR;
}

// Every ibv_* struct is value-initialized (zeroed) and comes first, so the
// handle given out is also the address of our object.
struct Device {
  ibv_device dev{};
  int index = 0;
  FakeVerbs::DeviceSpec spec;
  std::vector<uint16_t> lids;  // per port (index port - 1); 0 on RoCE
};

struct Context {
  ibv_context ctx{};  // async_fd: an eventfd, readable while `events` is not empty
  Device* device = nullptr;
  int children = 0;                     // PDs, CQs and channels open on it
  std::deque<ibv_async_event> events;  // raised, not yet taken by getAsyncEvent
};

struct Pd {
  ibv_pd pd{};
  Context* ctx = nullptr;
  int mrs = 0, qps = 0;
};

struct Mr {
  ibv_mr mr{};
  Pd* pd = nullptr;
  int access = 0;
};

struct Cq;

struct Channel {
  ibv_comp_channel ch{};
  Context* ctx = nullptr;
  int cqs = 0;
  std::deque<Cq*> events;  // raised, not yet taken by getCqEvent
};

// A completion and the send/receive slot it frees once polled.
struct Cqe {
  ibv_wc wc;
  bool send;
  uint64_t seq;
};

enum class Arm { kNone, kAny, kSolicited };

struct Cq {
  ibv_cq cq{};
  Context* ctx = nullptr;
  Channel* channel = nullptr;
  std::deque<Cqe> entries;
  Arm arm = Arm::kNone;
  bool overrun = false;  // in error: later completions are lost
  uint64_t eventsRead = 0, eventsAcked = 0;
  uint64_t asyncRead = 0, asyncAcked = 0;  // its CQ_ERR events
  int qps = 0;
};

struct SendWork {
  uint64_t seq = 0;
  ibv_send_wr wr{};  // next and sg_list cleared; the list is in sges
  std::vector<ibv_sge> sges;
  std::vector<std::byte> inlineData;
  bool isInline = false;
  bool signaled = false;
  Clock::time_point notBefore{};                // an injected delay
  std::optional<Clock::time_point> retryUntil;  // peer unreachable: retried until then
  std::optional<Fault::Kind> fault;
  ibv_wc_status faultStatus = IBV_WC_SUCCESS;
};

struct RecvWork {
  uint64_t seq = 0;
  uint64_t wrId = 0;
  std::vector<ibv_sge> sges;
};

struct Qp {
  ibv_qp qp{};
  Context* ctx = nullptr;
  Pd* pd = nullptr;
  Cq* sendCq = nullptr;
  Cq* recvCq = nullptr;
  ibv_qp_cap cap{};
  bool sigAll = false;
  // INIT
  uint8_t port = 0;
  int access = 0;
  // RTR
  ibv_ah_attr ah{};
  ibv_mtu mtu = IBV_MTU_256;
  uint32_t destQpn = 0, rqPsn = 0;
  // RTS
  uint32_t sqPsn = 0;
  uint8_t rnrRetry = 0, retryCnt = 0, timeout = 0;

  std::deque<SendWork> sq;  // posted, not completed, in post order
  std::deque<RecvWork> rq;  // posted, not consumed
  // Slots: posted minus retired (a polled completion of it or a later WR).
  uint64_t sendSeq = 0, sendRetired = 0, recvSeq = 0, recvRetired = 0;
  uint64_t asyncRead = 0, asyncAcked = 0;  // its asynchronous events

  uint32_t num() const { return qp.qp_num; }
  ibv_qp_state state() const { return qp.state; }
};

ibv_gid gidOf(int deviceIndex, uint8_t port, int index) {
  ibv_gid gid{};
  gid.raw[0] = 0xfe;
  gid.raw[1] = 0x80;
  gid.raw[13] = static_cast<uint8_t>(index);
  gid.raw[14] = port;
  gid.raw[15] = static_cast<uint8_t>(deviceIndex + 1);
  return gid;
}

bool isWrite(ibv_wr_opcode op) {
  return op == IBV_WR_RDMA_WRITE || op == IBV_WR_RDMA_WRITE_WITH_IMM;
}
bool hasImm(ibv_wr_opcode op) {
  return op == IBV_WR_RDMA_WRITE_WITH_IMM || op == IBV_WR_SEND_WITH_IMM;
}
bool supported(ibv_wr_opcode op) {
  return isWrite(op) || op == IBV_WR_SEND || op == IBV_WR_SEND_WITH_IMM;
}
// Errors the responder reports (a NAK): its QP goes to ERR too.
bool remoteError(ibv_wc_status s) {
  return s == IBV_WC_REM_ACCESS_ERR || s == IBV_WC_REM_INV_REQ_ERR || s == IBV_WC_REM_OP_ERR;
}

uint64_t totalLength(const std::vector<ibv_sge>& sges) {
  uint64_t n = 0;
  for (const ibv_sge& s : sges) n += s.length;
  return n;
}

bool inside(const ibv_mr& mr, uint64_t addr, uint64_t len) {
  const uint64_t base = reinterpret_cast<uintptr_t>(mr.addr);
  return addr >= base && len <= mr.length && addr - base <= mr.length - len;
}

template <typename T, typename H>
T& lookup(std::unordered_map<H*, std::unique_ptr<T>>& map, H* handle, const char* call) {
  auto it = map.find(handle);
  if (it == map.end()) die("%s: unknown or destroyed handle %p", call, static_cast<void*>(handle));
  return *it->second;
}

template <typename T, typename H>
T& adopt(std::unordered_map<H*, std::unique_ptr<T>>& map, std::unique_ptr<T> obj, H* handle) {
  T& ref = *obj;
  map.emplace(handle, std::move(obj));
  return ref;
}

std::atomic<FakeVerbs::Fabric*> gFabric{nullptr};

}  // namespace

// The whole in-process fabric: devices, every object, the timer thread.
// Methods named after Api members take the lock; the rest expect it held.
class FakeVerbs::Fabric {
 public:
  explicit Fabric(Options options);
  ~Fabric();

  ibv_device** getDeviceList(int* count);
  const char* getDeviceName(ibv_device* device);
  ibv_context* openDevice(ibv_device* device);
  int closeDevice(ibv_context* context);
  int queryDevice(ibv_context* context, ibv_device_attr* attr);
  int queryPort(ibv_context* context, uint8_t port, ibv_port_attr* attr);
  int queryGid(ibv_context* context, uint8_t port, int index, ibv_gid* gid);
  ibv_pd* allocPd(ibv_context* context);
  int deallocPd(ibv_pd* pd);
  ibv_mr* regMr(ibv_pd* pd, void* addr, size_t length, int access);
  int deregMr(ibv_mr* mr);
  ibv_comp_channel* createCompChannel(ibv_context* context);
  int destroyCompChannel(ibv_comp_channel* channel);
  ibv_cq* createCq(ibv_context* context, int cqe, void* cqContext, ibv_comp_channel* channel,
                   int compVector);
  int destroyCq(ibv_cq* cq);
  int reqNotifyCq(ibv_cq* cq, int solicitedOnly);
  int getCqEvent(ibv_comp_channel* channel, ibv_cq** cq, void** cqContext);
  void ackCqEvents(ibv_cq* cq, unsigned int count);
  int pollCq(ibv_cq* cq, int entries, ibv_wc* wc);
  ibv_qp* createQp(ibv_pd* pd, ibv_qp_init_attr* attr);
  int modifyQp(ibv_qp* qp, ibv_qp_attr* attr, int mask);
  int destroyQp(ibv_qp* qp);
  int postSend(ibv_qp* qp, ibv_send_wr* wr, ibv_send_wr** bad);
  int postRecv(ibv_qp* qp, ibv_recv_wr* wr, ibv_recv_wr** bad);
  int forkInit();
  int getAsyncEvent(ibv_context* context, ibv_async_event* event);
  void ackAsyncEvent(ibv_async_event* event);

  void inject(const Fault& fault);
  void clearFaults();
  uint64_t fired(Fault::Kind kind) const;
  void injectAsyncEvent(ibv_event_type type, uint32_t qpNum, uint8_t port);
  Counts counts() const;

 private:
  struct Armed {
    Fault fault;
    uint64_t seen = 0;  // matching WRs before the one it fires on
  };
  struct Timer {
    Clock::time_point when;
    uint32_t qpn;  // by number: a destroyed QP's timers find nothing
    bool operator>(const Timer& o) const { return when > o.when; }
  };

  Device& device(ibv_device* handle);
  bool validPort(const Device& dev, uint8_t port) const {
    return port >= 1 && port <= dev.spec.ports;
  }
  Qp* qpByNum(uint32_t qpn);

  // Completions and events.
  void pushCqe(Cq& cq, const ibv_wc& wc, bool send, uint64_t seq, bool solicited);
  void pushSendCqe(Qp& qp, const SendWork& w, ibv_wc_status status);
  void pushRecvCqe(Qp& qp, const RecvWork& r, ibv_wc_status status);
  void dropEvents(Channel& ch, Cq* cq);
  void syncEventFd(Channel& ch);
  void removeCqes(Cq& cq, uint32_t qpn);
  void overrunCq(Cq& cq);
  void queueAsync(Context& ctx, const ibv_async_event& event);
  void dropAsync(Context& ctx, const void* element);
  // Waits (mu_ released meanwhile) until the QP or Cq that `get` looks up
  // again after each wake has every event read acked; aborts after
  // Options::asyncAckTimeout.
  template <typename Get>
  void awaitAsyncAcks(std::unique_lock<std::mutex>& lock, Get get, const char* call);

  // State changes.
  int checkModify(const Qp& qp, const ibv_qp_attr& attr, int mask, ibv_qp_state next) const;
  void toError(Qp& qp);
  void toReset(Qp& qp);

  // Delivery.
  int acceptSend(Qp& qp, const ibv_send_wr& wr);
  void matchFaults(const Qp& qp, SendWork& w);
  void pump(Qp& qp);
  bool step(Qp& qp);
  bool deliver(Qp& qp, Qp& dst);
  void failSend(Qp& qp, ibv_wc_status status, Qp* peer);
  bool failRecv(Qp& sender, Qp& receiver, RecvWork& r, ibv_wc_status recvStatus,
                ibv_wc_status sendStatus);
  Qp* reachable(const Qp& qp);
  bool addressed(const ibv_ah_attr& ah, const Qp& target) const;
  bool localOk(const Qp& qp, const std::vector<ibv_sge>& sges, int access) const;
  void settle();
  void schedule(Clock::time_point when, uint32_t qpn);
  void timerLoop();

  const Options options_;
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<Device>> devices_;
  std::unordered_map<ibv_context*, std::unique_ptr<Context>> contexts_;
  std::unordered_map<ibv_pd*, std::unique_ptr<Pd>> pds_;
  std::unordered_map<ibv_mr*, std::unique_ptr<Mr>> mrs_;
  std::unordered_map<uint32_t, Mr*> lkeys_, rkeys_;
  std::unordered_map<ibv_comp_channel*, std::unique_ptr<Channel>> channels_;
  std::unordered_map<ibv_cq*, std::unique_ptr<Cq>> cqs_;
  std::unordered_map<ibv_qp*, std::unique_ptr<Qp>> qps_;
  std::unordered_map<uint32_t, Qp*> qpNums_;
  uint32_t nextQpn_ = 0x100, nextKey_ = 1, nextHandle_ = 1;
  size_t registeredBytes_ = 0;
  Counts counts_;
  std::vector<Armed> faults_;
  std::array<uint64_t, 4> fired_{};
  // Work deferred to settle(), so no state change runs inside another.
  std::vector<uint32_t> kicks_;       // QPs whose state or receive queue changed
  std::vector<uint32_t> overrunQps_;  // QPs of an overrun CQ, to move to ERR
  std::priority_queue<Timer, std::vector<Timer>, std::greater<>> timers_;
  std::condition_variable timerCv_;
  std::condition_variable asyncAckCv_;  // ackAsyncEvent was called
  bool stop_ = false;
  std::thread timer_;
};

FakeVerbs::Fabric::Fabric(Options options) : options_(std::move(options)) {
  Fabric* none = nullptr;
  if (!gFabric.compare_exchange_strong(none, this))
    die("a second FakeVerbs while one is alive (the verbs table is process-wide)");
  uint16_t nextLid = 1;
  for (size_t i = 0; i < options_.devices.size(); ++i) {
    auto d = std::make_unique<Device>();
    d->index = static_cast<int>(i);
    d->spec = options_.devices[i];
    d->dev.node_type = IBV_NODE_CA;
    d->dev.transport_type = IBV_TRANSPORT_IB;
    std::snprintf(d->dev.name, sizeof d->dev.name, "%s", d->spec.name.c_str());
    std::snprintf(d->dev.dev_name, sizeof d->dev.dev_name, "uverbs%zu", i);
    for (int p = 1; p <= d->spec.ports; ++p)
      d->lids.push_back(d->spec.linkLayer == IBV_LINK_LAYER_INFINIBAND ? nextLid++ : 0);
    devices_.push_back(std::move(d));
  }
  timer_ = std::thread([this] { timerLoop(); });
}

FakeVerbs::Fabric::~Fabric() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  timerCv_.notify_all();
  timer_.join();
  for (auto& [handle, ch] : channels_) ::close(ch->ch.fd);
  for (auto& [handle, ctx] : contexts_) ::close(ctx->ctx.async_fd);
  gFabric.store(nullptr);
}

Device& FakeVerbs::Fabric::device(ibv_device* handle) {
  for (auto& d : devices_)
    if (&d->dev == handle) return *d;
  die("unknown ibv_device %p", static_cast<void*>(handle));
}

Qp* FakeVerbs::Fabric::qpByNum(uint32_t qpn) {
  auto it = qpNums_.find(qpn);
  return it == qpNums_.end() ? nullptr : it->second;
}

// ---- devices, ports, protection domains, memory -----------------------------

ibv_device** FakeVerbs::Fabric::getDeviceList(int* count) {
  std::lock_guard<std::mutex> lock(mu_);
  auto** list = new ibv_device*[devices_.size() + 1];
  for (size_t i = 0; i < devices_.size(); ++i) list[i] = &devices_[i]->dev;
  list[devices_.size()] = nullptr;
  if (count) *count = static_cast<int>(devices_.size());
  return list;
}

const char* FakeVerbs::Fabric::getDeviceName(ibv_device* handle) {
  std::lock_guard<std::mutex> lock(mu_);
  return device(handle).dev.name;
}

ibv_context* FakeVerbs::Fabric::openDevice(ibv_device* handle) {
  std::lock_guard<std::mutex> lock(mu_);
  Device& dev = device(handle);
  // Blocking like the real async fd; the caller may set O_NONBLOCK on it.
  const int fd = ::eventfd(0, EFD_CLOEXEC);
  if (fd < 0) return nullptr;
  auto c = std::make_unique<Context>();
  c->device = &dev;
  c->ctx.device = handle;
  c->ctx.num_comp_vectors = 1;
  c->ctx.cmd_fd = -1;
  c->ctx.async_fd = fd;
  ibv_context* h = &c->ctx;
  adopt(contexts_, std::move(c), h);
  return h;
}

int FakeVerbs::Fabric::closeDevice(ibv_context* handle) {
  std::lock_guard<std::mutex> lock(mu_);
  Context& ctx = lookup(contexts_, handle, "closeDevice");
  if (ctx.children > 0) return EBUSY;
  ::close(ctx.ctx.async_fd);  // its unread events go with it
  contexts_.erase(handle);
  return 0;
}

int FakeVerbs::Fabric::queryDevice(ibv_context* handle, ibv_device_attr* attr) {
  std::lock_guard<std::mutex> lock(mu_);
  const Device& dev = *lookup(contexts_, handle, "queryDevice").device;
  *attr = ibv_device_attr{};
  std::snprintf(attr->fw_ver, sizeof attr->fw_ver, "fake-1.0");
  attr->node_guid = attr->sys_image_guid = static_cast<uint64_t>(dev.index + 1) << 56;
  attr->max_mr_size = kMaxMrSize;
  attr->page_size_cap = 4096;
  attr->max_qp = kMaxQps;
  attr->max_qp_wr = kMaxQpWr;
  attr->max_sge = attr->max_sge_rd = kMaxSge;
  attr->max_cq = 1 << 16;
  attr->max_cqe = kMaxCqe;
  attr->max_mr = 1 << 20;
  attr->max_pd = 1 << 16;
  attr->max_qp_rd_atom = attr->max_qp_init_rd_atom = attr->max_res_rd_atom = kMaxRdAtomic;
  attr->atomic_cap = IBV_ATOMIC_NONE;
  attr->max_pkeys = 1;
  attr->phys_port_cnt = dev.spec.ports;
  return 0;
}

int FakeVerbs::Fabric::queryPort(ibv_context* handle, uint8_t port, ibv_port_attr* attr) {
  std::lock_guard<std::mutex> lock(mu_);
  const Device& dev = *lookup(contexts_, handle, "queryPort").device;
  if (!validPort(dev, port)) return EINVAL;
  *attr = ibv_port_attr{};
  attr->state = dev.spec.state;
  attr->max_mtu = attr->active_mtu = dev.spec.mtu;
  attr->gid_tbl_len = dev.spec.gidTableLen;
  attr->max_msg_sz = 1U << 31;
  attr->pkey_tbl_len = 1;
  attr->lid = dev.lids[port - 1];
  attr->sm_lid = dev.spec.linkLayer == IBV_LINK_LAYER_INFINIBAND ? 1 : 0;
  attr->max_vl_num = 1;
  attr->active_width = 2;                                        // 4x
  attr->active_speed = 32;                                       // EDR
  attr->phys_state = dev.spec.state == IBV_PORT_ACTIVE ? 5 : 3;  // LinkUp : Disabled
  attr->link_layer = dev.spec.linkLayer;
  return 0;
}

int FakeVerbs::Fabric::queryGid(ibv_context* handle, uint8_t port, int index, ibv_gid* gid) {
  std::lock_guard<std::mutex> lock(mu_);
  const Device& dev = *lookup(contexts_, handle, "queryGid").device;
  if (!validPort(dev, port) || index < 0 || index >= dev.spec.gidTableLen) return EINVAL;
  *gid = gidOf(dev.index, port, index);
  return 0;
}

ibv_pd* FakeVerbs::Fabric::allocPd(ibv_context* handle) {
  std::lock_guard<std::mutex> lock(mu_);
  Context& ctx = lookup(contexts_, handle, "allocPd");
  auto pd = std::make_unique<Pd>();
  pd->ctx = &ctx;
  pd->pd.context = handle;
  pd->pd.handle = nextHandle_++;
  ++ctx.children;
  ibv_pd* h = &pd->pd;
  adopt(pds_, std::move(pd), h);
  return h;
}

int FakeVerbs::Fabric::deallocPd(ibv_pd* handle) {
  std::lock_guard<std::mutex> lock(mu_);
  Pd& pd = lookup(pds_, handle, "deallocPd");
  if (pd.mrs > 0 || pd.qps > 0) return EBUSY;
  --pd.ctx->children;
  pds_.erase(handle);
  return 0;
}

ibv_mr* FakeVerbs::Fabric::regMr(ibv_pd* handle, void* addr, size_t length, int access) {
  std::lock_guard<std::mutex> lock(mu_);
  Pd& pd = lookup(pds_, handle, "regMr");
  // Remote write needs local write, as the real verbs require.
  const bool remoteWrite = access & (IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_ATOMIC);
  if (!addr || length == 0 || length > kMaxMrSize ||
      (remoteWrite && !(access & IBV_ACCESS_LOCAL_WRITE))) {
    errno = EINVAL;
    return nullptr;
  }
  if (length > options_.maxRegisteredBytes - registeredBytes_) {
    errno = ENOMEM;
    return nullptr;
  }
  auto mr = std::make_unique<Mr>();
  mr->pd = &pd;
  mr->access = access;
  mr->mr.context = pd.pd.context;
  mr->mr.pd = handle;
  mr->mr.addr = addr;
  mr->mr.length = length;
  mr->mr.handle = nextHandle_++;
  // Distinct, so an lkey passed as an rkey (or the reverse) matches nothing.
  const uint32_t key = nextKey_++;
  mr->mr.lkey = key << 8 | 0x11;
  mr->mr.rkey = key << 8 | 0x22;
  lkeys_[mr->mr.lkey] = rkeys_[mr->mr.rkey] = mr.get();
  registeredBytes_ += length;
  ++pd.mrs;
  ++counts_.regMrs;
  ibv_mr* h = &mr->mr;
  adopt(mrs_, std::move(mr), h);
  return h;
}

int FakeVerbs::Fabric::deregMr(ibv_mr* handle) {
  std::lock_guard<std::mutex> lock(mu_);
  Mr& mr = lookup(mrs_, handle, "deregMr");
  lkeys_.erase(mr.mr.lkey);
  rkeys_.erase(mr.mr.rkey);
  registeredBytes_ -= mr.mr.length;
  --mr.pd->mrs;
  ++counts_.deregMrs;
  mrs_.erase(handle);
  return 0;
}

// ---- completion queues and channels ------------------------------------------

ibv_comp_channel* FakeVerbs::Fabric::createCompChannel(ibv_context* handle) {
  std::lock_guard<std::mutex> lock(mu_);
  Context& ctx = lookup(contexts_, handle, "createCompChannel");
  // Blocking like the real channel fd; the caller may set O_NONBLOCK on it.
  const int fd = ::eventfd(0, EFD_CLOEXEC);
  if (fd < 0) return nullptr;
  auto ch = std::make_unique<Channel>();
  ch->ctx = &ctx;
  ch->ch.context = handle;
  ch->ch.fd = fd;
  ++ctx.children;
  ibv_comp_channel* h = &ch->ch;
  adopt(channels_, std::move(ch), h);
  return h;
}

int FakeVerbs::Fabric::destroyCompChannel(ibv_comp_channel* handle) {
  std::lock_guard<std::mutex> lock(mu_);
  Channel& ch = lookup(channels_, handle, "destroyCompChannel");
  if (ch.cqs > 0) return EBUSY;
  ::close(ch.ch.fd);
  --ch.ctx->children;
  channels_.erase(handle);
  return 0;
}

ibv_cq* FakeVerbs::Fabric::createCq(ibv_context* handle, int cqe, void* cqContext,
                                    ibv_comp_channel* channel, int compVector) {
  std::lock_guard<std::mutex> lock(mu_);
  Context& ctx = lookup(contexts_, handle, "createCq");
  Channel* ch = channel ? &lookup(channels_, channel, "createCq") : nullptr;
  if (cqe < 1 || cqe > kMaxCqe || compVector < 0 || compVector >= ctx.ctx.num_comp_vectors) {
    errno = EINVAL;
    return nullptr;
  }
  auto cq = std::make_unique<Cq>();
  cq->ctx = &ctx;
  cq->channel = ch;
  cq->cq.context = handle;
  cq->cq.channel = channel;
  cq->cq.cq_context = cqContext;
  cq->cq.cqe = cqe;  // exactly: one completion more overruns it
  cq->cq.handle = nextHandle_++;
  if (ch) ++ch->cqs;
  ++ctx.children;
  ibv_cq* h = &cq->cq;
  adopt(cqs_, std::move(cq), h);
  return h;
}

int FakeVerbs::Fabric::destroyCq(ibv_cq* handle) {
  std::unique_lock<std::mutex> lock(mu_);
  if (lookup(cqs_, handle, "destroyCq").qps > 0) return EBUSY;
  // libibverbs blocks until every event read is acked. Completion events: we
  // refuse instead. A CQ_ERR event: we wait (another thread reads and acks them).
  awaitAsyncAcks(lock, [&]() -> Cq& { return lookup(cqs_, handle, "destroyCq"); }, "destroyCq");
  Cq& cq = lookup(cqs_, handle, "destroyCq");
  if (cq.qps > 0 || cq.eventsRead > cq.eventsAcked) return EBUSY;
  if (cq.channel) {
    dropEvents(*cq.channel, &cq);  // raised but never read: discarded, as the kernel does
    --cq.channel->cqs;
  }
  dropAsync(*cq.ctx, &cq.cq);
  --cq.ctx->children;
  cqs_.erase(handle);
  return 0;
}

int FakeVerbs::Fabric::reqNotifyCq(ibv_cq* handle, int solicitedOnly) {
  std::lock_guard<std::mutex> lock(mu_);
  // Only completions added from now on raise the event: the caller polls
  // after arming to catch the ones already queued.
  lookup(cqs_, handle, "reqNotifyCq").arm = solicitedOnly ? Arm::kSolicited : Arm::kAny;
  return 0;
}

int FakeVerbs::Fabric::getCqEvent(ibv_comp_channel* handle, ibv_cq** cq, void** cqContext) {
  for (;;) {
    int fd;
    {
      std::lock_guard<std::mutex> lock(mu_);
      Channel& ch = lookup(channels_, handle, "getCqEvent");
      if (!ch.events.empty()) {
        Cq* raised = ch.events.front();
        ch.events.pop_front();
        syncEventFd(ch);
        ++raised->eventsRead;
        *cq = &raised->cq;
        *cqContext = raised->cq.cq_context;
        return 0;
      }
      fd = ch.ch.fd;
    }
    if (awaitEvent(fd) != 0) return -1;
  }
}

void FakeVerbs::Fabric::ackCqEvents(ibv_cq* handle, unsigned int count) {
  std::lock_guard<std::mutex> lock(mu_);
  lookup(cqs_, handle, "ackCqEvents").eventsAcked += count;
}

int FakeVerbs::Fabric::pollCq(ibv_cq* handle, int entries, ibv_wc* wc) {
  std::lock_guard<std::mutex> lock(mu_);
  Cq& cq = lookup(cqs_, handle, "pollCq");
  if (entries < 0) return -EINVAL;
  int n = 0;
  for (; n < entries && !cq.entries.empty(); ++n) {
    const Cqe& e = cq.entries.front();
    wc[n] = e.wc;
    // Polling a completion frees the slots of its WR and the unsignaled ones before it.
    if (Qp* qp = qpByNum(e.wc.qp_num)) {
      uint64_t& retired = e.send ? qp->sendRetired : qp->recvRetired;
      retired = std::max(retired, e.seq + 1);
    }
    cq.entries.pop_front();
  }
  return n;
}

// The channel's fd is readable exactly while its event queue is not empty.
void FakeVerbs::Fabric::pushCqe(Cq& cq, const ibv_wc& wc, bool send, uint64_t seq, bool solicited) {
  if (cq.overrun) return;
  if (cq.entries.size() >= static_cast<size_t>(cq.cq.cqe)) {
    overrunCq(cq);
    return;
  }
  cq.entries.push_back({wc, send, seq});
  if (!cq.channel || cq.arm == Arm::kNone || (cq.arm == Arm::kSolicited && !solicited)) return;
  cq.arm = Arm::kNone;
  Channel& ch = *cq.channel;
  if (ch.events.empty()) setReadable(ch.ch.fd);
  ch.events.push_back(&cq);
}

// The HCA's IBV_EVENT_CQ_ERR: the CQ stops (later completions are lost),
// its QPs go to ERR (in settle()), and the event is raised on its context.
void FakeVerbs::Fabric::overrunCq(Cq& cq) {
  if (!cq.overrun) {
    cq.overrun = true;
    ++counts_.cqOverruns;
    for (auto& [num, qp] : qpNums_)
      if (qp->sendCq == &cq || qp->recvCq == &cq) overrunQps_.push_back(num);
  }
  ibv_async_event event{};
  event.element.cq = &cq.cq;
  event.event_type = IBV_EVENT_CQ_ERR;
  queueAsync(*cq.ctx, event);
}

void FakeVerbs::Fabric::dropEvents(Channel& ch, Cq* cq) {
  std::erase(ch.events, cq);
  syncEventFd(ch);
}

// Drains the fd once the queue is empty (pushCqe writes it when it fills).
void FakeVerbs::Fabric::syncEventFd(Channel& ch) {
  if (ch.events.empty()) clearReadable(ch.ch.fd);
}

void FakeVerbs::Fabric::removeCqes(Cq& cq, uint32_t qpn) {
  std::erase_if(cq.entries, [&](const Cqe& e) { return e.wc.qp_num == qpn; });
}

void FakeVerbs::Fabric::pushSendCqe(Qp& qp, const SendWork& w, ibv_wc_status status) {
  ibv_wc wc{};
  wc.wr_id = w.wr.wr_id;
  wc.status = status;
  wc.opcode = isWrite(w.wr.opcode) ? IBV_WC_RDMA_WRITE : IBV_WC_SEND;
  wc.byte_len = static_cast<uint32_t>(w.isInline ? w.inlineData.size() : totalLength(w.sges));
  wc.qp_num = qp.num();
  pushCqe(*qp.sendCq, wc, true, w.seq, status != IBV_WC_SUCCESS);
}

void FakeVerbs::Fabric::pushRecvCqe(Qp& qp, const RecvWork& r, ibv_wc_status status) {
  ibv_wc wc{};
  wc.wr_id = r.wrId;
  wc.status = status;
  wc.opcode = IBV_WC_RECV;
  wc.qp_num = qp.num();
  pushCqe(*qp.recvCq, wc, false, r.seq, true);
}

// ---- queue pairs ----------------------------------------------------------------

ibv_qp* FakeVerbs::Fabric::createQp(ibv_pd* handle, ibv_qp_init_attr* attr) {
  std::lock_guard<std::mutex> lock(mu_);
  Pd& pd = lookup(pds_, handle, "createQp");
  if (attr->qp_type != IBV_QPT_RC || attr->srq) {
    errno = EOPNOTSUPP;
    return nullptr;
  }
  const ibv_qp_cap& cap = attr->cap;
  if (!attr->send_cq || !attr->recv_cq || cap.max_send_wr > kMaxQpWr ||
      cap.max_recv_wr > kMaxQpWr || cap.max_send_sge > kMaxSge || cap.max_recv_sge > kMaxSge ||
      cap.max_inline_data > kMaxInline) {
    errno = EINVAL;
    return nullptr;
  }
  if (qps_.size() >= static_cast<size_t>(kMaxQps)) {
    errno = ENOMEM;
    return nullptr;
  }
  auto qp = std::make_unique<Qp>();
  qp->ctx = pd.ctx;
  qp->pd = &pd;
  qp->sendCq = &lookup(cqs_, attr->send_cq, "createQp");
  qp->recvCq = &lookup(cqs_, attr->recv_cq, "createQp");
  qp->cap = cap;  // granted exactly: reported back unchanged
  qp->sigAll = attr->sq_sig_all != 0;
  qp->qp.context = pd.pd.context;
  qp->qp.qp_context = attr->qp_context;
  qp->qp.pd = handle;
  qp->qp.send_cq = attr->send_cq;
  qp->qp.recv_cq = attr->recv_cq;
  qp->qp.handle = nextHandle_++;
  qp->qp.qp_num = nextQpn_++ & kPsnMask;  // numbers are never reused
  qp->qp.state = IBV_QPS_RESET;
  qp->qp.qp_type = IBV_QPT_RC;
  ++pd.qps;
  ++qp->sendCq->qps;
  ++qp->recvCq->qps;
  qpNums_[qp->num()] = qp.get();
  ibv_qp* h = &qp->qp;
  adopt(qps_, std::move(qp), h);
  return h;
}

namespace {

// The RC transitions of the IB spec (and the kernel's qp_state_table):
// attributes each one requires and may take. Any state may go to RESET or
// ERR with no attribute.
struct Transition {
  ibv_qp_state from, to;
  int required, optional;
};
constexpr Transition kTransitions[] = {
    {IBV_QPS_RESET, IBV_QPS_INIT, IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS, 0},
    {IBV_QPS_INIT, IBV_QPS_INIT, 0, IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS},
    {IBV_QPS_INIT, IBV_QPS_RTR,
     IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC |
         IBV_QP_MIN_RNR_TIMER,
     IBV_QP_ALT_PATH | IBV_QP_ACCESS_FLAGS | IBV_QP_PKEY_INDEX},
    {IBV_QPS_RTR, IBV_QPS_RTS,
     IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY | IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC,
     IBV_QP_CUR_STATE | IBV_QP_ALT_PATH | IBV_QP_ACCESS_FLAGS | IBV_QP_MIN_RNR_TIMER |
         IBV_QP_PATH_MIG_STATE},
    {IBV_QPS_RTS, IBV_QPS_RTS, 0,
     IBV_QP_CUR_STATE | IBV_QP_ACCESS_FLAGS | IBV_QP_ALT_PATH | IBV_QP_PATH_MIG_STATE |
         IBV_QP_MIN_RNR_TIMER},
};

}  // namespace

// EINVAL unless `mask` is a legal transition to `next` with sane values.
int FakeVerbs::Fabric::checkModify(const Qp& qp, const ibv_qp_attr& attr, int mask,
                                   ibv_qp_state next) const {
  const int attrs = mask & ~IBV_QP_STATE;
  if (next == IBV_QPS_RESET || next == IBV_QPS_ERR) return attrs == 0 ? 0 : EINVAL;
  const Transition* t = nullptr;
  for (const Transition& c : kTransitions)
    if (c.from == qp.state() && c.to == next) t = &c;
  if (!t || (attrs & t->required) != t->required || (attrs & ~(t->required | t->optional)))
    return EINVAL;
  const Device& dev = *qp.ctx->device;
  const uint8_t port = (mask & IBV_QP_PORT) ? attr.port_num : qp.port;
  if ((mask & IBV_QP_PORT) && !validPort(dev, port)) return EINVAL;
  if ((mask & IBV_QP_PKEY_INDEX) && attr.pkey_index != 0) return EINVAL;  // a table of one
  if (mask & IBV_QP_AV) {
    const bool roce = dev.spec.linkLayer == IBV_LINK_LAYER_ETHERNET;
    if (roce && !attr.ah_attr.is_global) return EINVAL;  // RoCE addresses by GID only
    if (attr.ah_attr.is_global && attr.ah_attr.grh.sgid_index >= dev.spec.gidTableLen)
      return EINVAL;
  }
  if ((mask & IBV_QP_PATH_MTU) && (attr.path_mtu < IBV_MTU_256 || attr.path_mtu > dev.spec.mtu))
    return EINVAL;
  if ((mask & IBV_QP_MAX_DEST_RD_ATOMIC) && attr.max_dest_rd_atomic > kMaxRdAtomic) return EINVAL;
  if ((mask & IBV_QP_MAX_QP_RD_ATOMIC) && attr.max_rd_atomic > kMaxRdAtomic) return EINVAL;
  if ((mask & IBV_QP_MIN_RNR_TIMER) && attr.min_rnr_timer > 31) return EINVAL;
  if ((mask & IBV_QP_TIMEOUT) && attr.timeout > 31) return EINVAL;
  if ((mask & IBV_QP_RETRY_CNT) && attr.retry_cnt > 7) return EINVAL;
  if ((mask & IBV_QP_RNR_RETRY) && attr.rnr_retry > 7) return EINVAL;
  return 0;
}

int FakeVerbs::Fabric::modifyQp(ibv_qp* handle, ibv_qp_attr* attr, int mask) {
  std::lock_guard<std::mutex> lock(mu_);
  Qp& qp = lookup(qps_, handle, "modifyQp");
  const ibv_qp_state next = (mask & IBV_QP_STATE) ? attr->qp_state : qp.state();
  if (int rc = checkModify(qp, *attr, mask, next)) return rc;
  if (mask & IBV_QP_PORT) qp.port = attr->port_num;
  if (mask & IBV_QP_ACCESS_FLAGS) qp.access = static_cast<int>(attr->qp_access_flags);
  if (mask & IBV_QP_AV) qp.ah = attr->ah_attr;
  if (mask & IBV_QP_PATH_MTU) qp.mtu = attr->path_mtu;
  if (mask & IBV_QP_DEST_QPN) qp.destQpn = attr->dest_qp_num & kPsnMask;
  if (mask & IBV_QP_RQ_PSN) qp.rqPsn = attr->rq_psn & kPsnMask;
  if (mask & IBV_QP_SQ_PSN) qp.sqPsn = attr->sq_psn & kPsnMask;
  if (mask & IBV_QP_RNR_RETRY) qp.rnrRetry = attr->rnr_retry;
  if (mask & IBV_QP_RETRY_CNT) qp.retryCnt = attr->retry_cnt;
  if (mask & IBV_QP_TIMEOUT) qp.timeout = attr->timeout;
  if (next == IBV_QPS_ERR) {
    toError(qp);
  } else if (next == IBV_QPS_RESET) {
    toReset(qp);
  } else if (next != qp.state()) {
    qp.qp.state = next;
    kicks_.push_back(qp.num());  // a peer waiting for this QP's RTR may go on
  }
  settle();
  return 0;
}

// Flushes all outstanding work, as the HCA does on entering ERR.
void FakeVerbs::Fabric::toError(Qp& qp) {
  if (qp.state() == IBV_QPS_ERR) return;
  qp.qp.state = IBV_QPS_ERR;
  std::deque<SendWork> sq = std::move(qp.sq);
  std::deque<RecvWork> rq = std::move(qp.rq);
  qp.sq.clear();
  qp.rq.clear();
  for (const RecvWork& r : rq) pushRecvCqe(qp, r, IBV_WC_WR_FLUSH_ERR);
  for (const SendWork& w : sq) pushSendCqe(qp, w, IBV_WC_WR_FLUSH_ERR);
  kicks_.push_back(qp.num());
}

// RESET forgets everything: work without completions, the QP's completions
// still in its CQs (as mlx5 cleans them), attributes and slots.
void FakeVerbs::Fabric::toReset(Qp& qp) {
  qp.sq.clear();
  qp.rq.clear();
  removeCqes(*qp.sendCq, qp.num());
  removeCqes(*qp.recvCq, qp.num());
  qp.port = 0;
  qp.access = 0;
  qp.ah = {};
  qp.destQpn = qp.rqPsn = qp.sqPsn = 0;
  qp.rnrRetry = qp.retryCnt = qp.timeout = 0;
  qp.sendSeq = qp.sendRetired = qp.recvSeq = qp.recvRetired = 0;
  qp.qp.state = IBV_QPS_RESET;
  kicks_.push_back(qp.num());
}

int FakeVerbs::Fabric::destroyQp(ibv_qp* handle) {
  std::unique_lock<std::mutex> lock(mu_);
  // Like libibverbs: waits until every event of it read is acked.
  awaitAsyncAcks(lock, [&]() -> Qp& { return lookup(qps_, handle, "destroyQp"); }, "destroyQp");
  Qp& qp = lookup(qps_, handle, "destroyQp");
  dropAsync(*qp.ctx, &qp.qp);  // raised but never read: discarded, as the kernel does
  const uint32_t num = qp.num();
  removeCqes(*qp.sendCq, num);
  removeCqes(*qp.recvCq, num);
  --qp.pd->qps;
  --qp.sendCq->qps;
  --qp.recvCq->qps;
  qpNums_.erase(num);
  qps_.erase(handle);     // its timers find nothing when they fire
  kicks_.push_back(num);  // writers to it start their retry timeout
  settle();
  return 0;
}

// ---- posting ---------------------------------------------------------------------

int FakeVerbs::Fabric::postSend(ibv_qp* handle, ibv_send_wr* wr, ibv_send_wr** bad) {
  std::lock_guard<std::mutex> lock(mu_);
  Qp& qp = lookup(qps_, handle, "postSend");
  int rc = 0;
  for (ibv_send_wr* w = wr; w; w = w->next) {
    if ((rc = acceptSend(qp, *w))) {
      if (bad) *bad = w;
      break;
    }
  }
  pump(qp);  // the ones accepted before a bad one still go
  settle();
  return rc;
}

int FakeVerbs::Fabric::acceptSend(Qp& qp, const ibv_send_wr& wr) {
  if (qp.state() != IBV_QPS_RTS && qp.state() != IBV_QPS_ERR) return EINVAL;
  if (!supported(wr.opcode) || wr.num_sge < 0 ||
      static_cast<uint32_t>(wr.num_sge) > qp.cap.max_send_sge)
    return EINVAL;
  if (qp.sendSeq - qp.sendRetired >= qp.cap.max_send_wr) return ENOMEM;
  SendWork w;
  w.wr = wr;
  w.wr.next = nullptr;
  w.wr.sg_list = nullptr;
  w.sges.assign(wr.sg_list, wr.sg_list + wr.num_sge);
  w.signaled = qp.sigAll || (wr.send_flags & IBV_SEND_SIGNALED);
  if (wr.send_flags & IBV_SEND_INLINE) {
    if (totalLength(w.sges) > qp.cap.max_inline_data) return EINVAL;
    w.isInline = true;  // copied now: the caller may reuse its buffer at once
    for (const ibv_sge& s : w.sges) {
      const auto* p = reinterpret_cast<const std::byte*>(static_cast<uintptr_t>(s.addr));
      w.inlineData.insert(w.inlineData.end(), p, p + s.length);
    }
  }
  w.seq = qp.sendSeq++;
  ++counts_.posts;
  if (qp.state() == IBV_QPS_ERR) {
    pushSendCqe(qp, w, IBV_WC_WR_FLUSH_ERR);
    return 0;
  }
  matchFaults(qp, w);
  qp.sq.push_back(std::move(w));
  return 0;
}

void FakeVerbs::Fabric::matchFaults(const Qp& qp, SendWork& w) {
  bool applied = false;
  for (auto it = faults_.begin(); it != faults_.end();) {
    const Fault& f = it->fault;
    const bool matches =
        (f.qpNum == 0 || f.qpNum == qp.num()) && (f.anyOpcode || f.opcode == w.wr.opcode);
    if (!matches) {
      ++it;
    } else if (it->seen + 1 < f.afterPosts) {
      ++it->seen;
      ++it;
    } else if (applied) {
      ++it;  // due, but this WR already has a fault: it fires on the next one
    } else {
      applied = true;
      ++fired_[static_cast<size_t>(f.kind)];
      w.fault = f.kind;
      w.faultStatus = f.status;
      if (f.kind == Fault::Kind::kSlowCompletion || f.kind == Fault::Kind::kErrorCompletion)
        w.notBefore = Clock::now() + f.delay;
      it = faults_.erase(it);
    }
  }
}

int FakeVerbs::Fabric::postRecv(ibv_qp* handle, ibv_recv_wr* wr, ibv_recv_wr** bad) {
  std::lock_guard<std::mutex> lock(mu_);
  Qp& qp = lookup(qps_, handle, "postRecv");
  int rc = 0;
  for (ibv_recv_wr* w = wr; w; w = w->next) {
    if (qp.state() == IBV_QPS_RESET || w->num_sge < 0 ||
        static_cast<uint32_t>(w->num_sge) > qp.cap.max_recv_sge)
      rc = EINVAL;
    else if (qp.recvSeq - qp.recvRetired >= qp.cap.max_recv_wr)
      rc = ENOMEM;
    if (rc) {
      if (bad) *bad = w;
      break;
    }
    RecvWork r{qp.recvSeq++, w->wr_id, {w->sg_list, w->sg_list + w->num_sge}};
    ++counts_.recvsPosted;
    if (qp.state() == IBV_QPS_ERR)
      pushRecvCqe(qp, r, IBV_WC_WR_FLUSH_ERR);
    else
      qp.rq.push_back(std::move(r));
  }
  kicks_.push_back(qp.num());  // a sender waiting on RNR may go on
  settle();
  return rc;
}

// ---- delivery --------------------------------------------------------------------

// Runs the send queue from its head until a WR has to wait.
void FakeVerbs::Fabric::pump(Qp& qp) {
  while (qp.state() == IBV_QPS_RTS && !qp.sq.empty() && step(qp)) {
  }
}

// Executes the head WR; false when it has to wait (delay, retry, RNR, black hole).
bool FakeVerbs::Fabric::step(Qp& qp) {
  SendWork& w = qp.sq.front();
  const auto now = Clock::now();
  if (w.fault == Fault::Kind::kLostCompletion) return false;  // stalls the QP for good
  if (now < w.notBefore) {
    schedule(w.notBefore, qp.num());
    return false;
  }
  if (w.fault == Fault::Kind::kQpError) {
    toError(qp);  // flushes this WR with the rest
    return true;
  }
  if (w.fault == Fault::Kind::kErrorCompletion) {
    failSend(qp, w.faultStatus, remoteError(w.faultStatus) ? qpByNum(qp.destQpn) : nullptr);
    return true;
  }
  if (!w.isInline && !localOk(qp, w.sges, 0)) {
    failSend(qp, IBV_WC_LOC_PROT_ERR, nullptr);
    return true;
  }
  Qp* dst = reachable(qp);
  if (!dst) {
    // No ACK: the HCA retransmits until its retry count runs out. A peer
    // that becomes reachable meanwhile (reaches RTR) still gets the WR.
    if (!w.retryUntil) {
      w.retryUntil = now + options_.transportTimeout;
      schedule(*w.retryUntil, qp.num());
    }
    if (now < *w.retryUntil) return false;
    failSend(qp, IBV_WC_RETRY_EXC_ERR, nullptr);
    return true;
  }
  w.retryUntil.reset();
  return deliver(qp, *dst);
}

namespace {

void* pointer(uint64_t addr) { return reinterpret_cast<void*>(static_cast<uintptr_t>(addr)); }

// The payload, read now: a non-inline WR's buffer may have changed since it was posted.
std::vector<std::byte> gather(const SendWork& w) {
  if (w.isInline) return w.inlineData;
  std::vector<std::byte> data(totalLength(w.sges));
  size_t at = 0;
  for (const ibv_sge& s : w.sges) {
    if (s.length) std::memcpy(data.data() + at, pointer(s.addr), s.length);
    at += s.length;
  }
  return data;
}

}  // namespace

// The responder's side of the head WR: its checks, the data, both completions.
bool FakeVerbs::Fabric::deliver(Qp& qp, Qp& dst) {
  const SendWork& w = qp.sq.front();
  const ibv_wr_opcode op = w.wr.opcode;
  const uint64_t len = w.isInline ? w.inlineData.size() : totalLength(w.sges);
  if (isWrite(op)) {
    // Zero-length writes carry no R_Key check, but the QP must allow writes.
    auto mr = rkeys_.find(w.wr.wr.rdma.rkey);
    const bool keyOk = len == 0 || (mr != rkeys_.end() && mr->second->pd == dst.pd &&
                                    (mr->second->access & IBV_ACCESS_REMOTE_WRITE) &&
                                    inside(mr->second->mr, w.wr.wr.rdma.remote_addr, len));
    if (!keyOk || !(dst.access & IBV_ACCESS_REMOTE_WRITE)) {
      failSend(qp, IBV_WC_REM_ACCESS_ERR, &dst);
      return true;
    }
  }
  const bool consumes = op != IBV_WR_RDMA_WRITE;
  if (consumes && dst.rq.empty()) {
    if (qp.rnrRetry == 7) return false;  // retried forever: postRecv on dst kicks us
    failSend(qp, IBV_WC_RNR_RETRY_EXC_ERR, nullptr);
    return true;
  }
  RecvWork r;
  if (consumes) {
    r = std::move(dst.rq.front());
    dst.rq.pop_front();
  }
  const bool send = !isWrite(op);
  if (send && len > totalLength(r.sges))
    return failRecv(qp, dst, r, IBV_WC_LOC_LEN_ERR, IBV_WC_REM_INV_REQ_ERR);
  if (send && !localOk(dst, r.sges, IBV_ACCESS_LOCAL_WRITE))
    return failRecv(qp, dst, r, IBV_WC_LOC_PROT_ERR, IBV_WC_REM_OP_ERR);

  const std::vector<std::byte> data = gather(w);
  if (!send && len > 0) std::memcpy(pointer(w.wr.wr.rdma.remote_addr), data.data(), len);
  if (send) {
    size_t at = 0;
    for (const ibv_sge& s : r.sges) {
      const size_t n = std::min<size_t>(s.length, len - at);
      if (n) std::memcpy(pointer(s.addr), data.data() + at, n);
      at += n;
    }
  }
  ++(send ? counts_.sends : counts_.writes);
  counts_.bytesWritten += len;

  if (consumes) {
    ibv_wc wc{};
    wc.wr_id = r.wrId;
    wc.status = IBV_WC_SUCCESS;
    wc.opcode = send ? IBV_WC_RECV : IBV_WC_RECV_RDMA_WITH_IMM;
    wc.byte_len = static_cast<uint32_t>(len);
    if (hasImm(op)) {
      wc.wc_flags = IBV_WC_WITH_IMM;
      wc.imm_data = w.wr.imm_data;  // network byte order, untouched
    }
    wc.qp_num = dst.num();
    wc.src_qp = qp.num();
    wc.slid = qp.ctx->device->lids[qp.port - 1];
    pushCqe(*dst.recvCq, wc, false, r.seq, w.wr.send_flags & IBV_SEND_SOLICITED);
  }
  SendWork done = std::move(qp.sq.front());
  qp.sq.pop_front();
  if (done.signaled) pushSendCqe(qp, done, IBV_WC_SUCCESS);
  return true;
}

// The head WR completes with `status`; the QP (and `peer`, for a NAK) go to ERR.
void FakeVerbs::Fabric::failSend(Qp& qp, ibv_wc_status status, Qp* peer) {
  SendWork w = std::move(qp.sq.front());
  qp.sq.pop_front();
  pushSendCqe(qp, w, status);
  toError(qp);
  if (peer) toError(*peer);
}

// The receive `r` (already taken) could not hold the head WR's payload.
bool FakeVerbs::Fabric::failRecv(Qp& sender, Qp& receiver, RecvWork& r, ibv_wc_status recvStatus,
                                 ibv_wc_status sendStatus) {
  pushRecvCqe(receiver, r, recvStatus);
  failSend(sender, sendStatus, &receiver);  // sender first: it may be its own peer
  return true;
}

// The peer this QP's packets reach and whose ACKs come back, or nullptr.
Qp* FakeVerbs::Fabric::reachable(const Qp& qp) {
  Qp* dst = qpByNum(qp.destQpn);
  if (!dst || (dst->state() != IBV_QPS_RTR && dst->state() != IBV_QPS_RTS)) return nullptr;
  if (dst->destQpn != qp.num() || dst->rqPsn != qp.sqPsn) return nullptr;
  if (!addressed(qp.ah, *dst) || !addressed(dst->ah, qp)) return nullptr;
  return dst;
}

// Whether `ah` names `target`'s port, on the same kind of link, both ports up.
bool FakeVerbs::Fabric::addressed(const ibv_ah_attr& ah, const Qp& target) const {
  const Device& dev = *target.ctx->device;
  if (dev.spec.state != IBV_PORT_ACTIVE) return false;
  auto gidMatches = [&] {
    for (int i = 0; i < dev.spec.gidTableLen; ++i) {
      const ibv_gid g = gidOf(dev.index, target.port, i);
      if (std::memcmp(g.raw, ah.grh.dgid.raw, sizeof g.raw) == 0) return true;
    }
    return false;
  };
  if (dev.spec.linkLayer == IBV_LINK_LAYER_ETHERNET) return ah.is_global && gidMatches();
  return ah.dlid == dev.lids[target.port - 1] && (!ah.is_global || gidMatches());
}

// Every non-empty sge inside a live MR of this QP's PD, with `access`.
bool FakeVerbs::Fabric::localOk(const Qp& qp, const std::vector<ibv_sge>& sges, int access) const {
  for (const ibv_sge& s : sges) {
    if (s.length == 0) continue;
    auto it = lkeys_.find(s.lkey);
    if (it == lkeys_.end() || it->second->pd != qp.pd || (it->second->access & access) != access ||
        !inside(it->second->mr, s.addr, s.length))
      return false;
  }
  return true;
}

// Runs deferred work until none is left: QPs of an overrun CQ go to ERR,
// and every QP aimed at a kicked QP runs its send queue again.
void FakeVerbs::Fabric::settle() {
  while (!overrunQps_.empty() || !kicks_.empty()) {
    if (!overrunQps_.empty()) {
      const uint32_t num = overrunQps_.back();
      overrunQps_.pop_back();
      if (Qp* qp = qpByNum(num)) toError(*qp);
      continue;
    }
    const uint32_t target = kicks_.back();
    kicks_.pop_back();
    for (auto& [num, qp] : qpNums_)
      if (qp->destQpn == target && qp->state() == IBV_QPS_RTS) pump(*qp);
  }
}

void FakeVerbs::Fabric::schedule(Clock::time_point when, uint32_t qpn) {
  timers_.push({when, qpn});
  timerCv_.notify_all();
}

void FakeVerbs::Fabric::timerLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    if (timers_.empty()) {
      timerCv_.wait(lock);
      continue;
    }
    const Timer t = timers_.top();
    if (Clock::now() < t.when) {
      timerCv_.wait_until(lock, t.when);
      continue;
    }
    timers_.pop();
    if (Qp* qp = qpByNum(t.qpn)) pump(*qp);
    settle();
  }
}

// ---- asynchronous events ------------------------------------------------------------

void FakeVerbs::Fabric::queueAsync(Context& ctx, const ibv_async_event& event) {
  if (ctx.events.empty()) setReadable(ctx.ctx.async_fd);
  ctx.events.push_back(event);
  ++counts_.asyncEvents;
}

// Removes the unread events naming the QP or CQ `element`.
void FakeVerbs::Fabric::dropAsync(Context& ctx, const void* element) {
  std::erase_if(ctx.events, [&](const ibv_async_event& e) {
    switch (affiliation(e.event_type)) {
      case Affiliation::kQp:
        return static_cast<const void*>(e.element.qp) == element;
      case Affiliation::kCq:
        return static_cast<const void*>(e.element.cq) == element;
      default:
        return false;
    }
  });
  if (ctx.events.empty()) clearReadable(ctx.ctx.async_fd);
}

int FakeVerbs::Fabric::getAsyncEvent(ibv_context* handle, ibv_async_event* event) {
  for (;;) {
    int fd;
    {
      std::lock_guard<std::mutex> lock(mu_);
      Context& ctx = lookup(contexts_, handle, "getAsyncEvent");
      if (!ctx.events.empty()) {
        *event = ctx.events.front();
        ctx.events.pop_front();
        if (ctx.events.empty()) clearReadable(ctx.ctx.async_fd);
        // Its QP or CQ is alive: destroying one drops its queued events.
        if (affiliation(event->event_type) == Affiliation::kQp)
          ++lookup(qps_, event->element.qp, "getAsyncEvent").asyncRead;
        else if (affiliation(event->event_type) == Affiliation::kCq)
          ++lookup(cqs_, event->element.cq, "getAsyncEvent").asyncRead;
        ++counts_.asyncEventsRead;
        return 0;
      }
      fd = ctx.ctx.async_fd;
    }
    if (awaitEvent(fd) != 0) return -1;
  }
}

// Like libibverbs, only QP and CQ events are tracked (destroyQp and
// destroyCq wait for them); port and device events are only counted.
void FakeVerbs::Fabric::ackAsyncEvent(ibv_async_event* event) {
  std::lock_guard<std::mutex> lock(mu_);
  const Affiliation a = affiliation(event->event_type);
  if (a == Affiliation::kQp) {
    Qp& qp = lookup(qps_, event->element.qp, "ackAsyncEvent");
    if (qp.asyncAcked >= qp.asyncRead)
      die("ackAsyncEvent: QP %u has no event read and not acked", qp.num());
    ++qp.asyncAcked;
  } else if (a == Affiliation::kCq) {
    Cq& cq = lookup(cqs_, event->element.cq, "ackAsyncEvent");
    if (cq.asyncAcked >= cq.asyncRead)
      die("ackAsyncEvent: CQ %p has no event read and not acked", static_cast<void*>(&cq.cq));
    ++cq.asyncAcked;
  }
  ++counts_.asyncAcks;
  asyncAckCv_.notify_all();
}

template <typename Get>
void FakeVerbs::Fabric::awaitAsyncAcks(std::unique_lock<std::mutex>& lock, Get get,
                                       const char* call) {
  const auto deadline = Clock::now() + options_.asyncAckTimeout;
  for (;;) {
    auto& object = get();  // aborts if it was destroyed meanwhile
    if (object.asyncRead <= object.asyncAcked) return;
    if (asyncAckCv_.wait_until(lock, deadline) == std::cv_status::timeout) {
      auto& again = get();
      if (again.asyncRead <= again.asyncAcked) return;
      die("%s: an asynchronous event read from it was not acked within %lld ms "
          "(libibverbs would wait for ibv_ack_async_event forever)",
          call, static_cast<long long>(options_.asyncAckTimeout.count()));
    }
  }
}

void FakeVerbs::Fabric::injectAsyncEvent(ibv_event_type type, uint32_t qpNum, uint8_t port) {
  std::lock_guard<std::mutex> lock(mu_);
  const char* name = eventTypeStr(type);
  auto qpOf = [&]() -> Qp& {
    Qp* qp = qpByNum(qpNum);
    if (!qp) die("injectAsyncEvent(%s): no QP number %u", name, qpNum);
    return *qp;
  };
  ibv_async_event event{};
  event.event_type = type;
  switch (affiliation(type)) {
    case Affiliation::kQp: {
      Qp& qp = qpOf();
      if (qpError(type)) toError(qp);  // flushed before the event can be read
      event.element.qp = &qp.qp;
      queueAsync(*qp.ctx, event);
      break;
    }
    case Affiliation::kCq:
      overrunCq(*qpOf().sendCq);
      break;
    case Affiliation::kSrq:
    case Affiliation::kWq:
      die("injectAsyncEvent(%s): the fake has no SRQs or WQs", name);
    case Affiliation::kNone:
      event.element.port_num = port;
      if (type == IBV_EVENT_DEVICE_FATAL) {
        for (auto& [num, qp] : qpNums_) toError(*qp);
        for (auto& [handle, ctx] : contexts_) queueAsync(*ctx, event);
        break;
      }
      if (std::none_of(devices_.begin(), devices_.end(),
                       [&](const auto& d) { return validPort(*d, port); }))
        die("injectAsyncEvent(%s): no device has port %u", name, unsigned{port});
      for (auto& [handle, ctx] : contexts_)
        if (validPort(*ctx->device, port)) queueAsync(*ctx, event);
      break;
  }
  settle();
}

// ---- the rest of the table, and the test controls ---------------------------------

int FakeVerbs::Fabric::forkInit() {
  std::lock_guard<std::mutex> lock(mu_);
  ++counts_.forkInits;
  return 0;
}

void FakeVerbs::Fabric::inject(const Fault& fault) {
  std::lock_guard<std::mutex> lock(mu_);
  faults_.push_back({fault, 0});
}

void FakeVerbs::Fabric::clearFaults() {
  std::lock_guard<std::mutex> lock(mu_);
  faults_.clear();
}

uint64_t FakeVerbs::Fabric::fired(Fault::Kind kind) const {
  std::lock_guard<std::mutex> lock(mu_);
  return fired_[static_cast<size_t>(kind)];
}

FakeVerbs::Counts FakeVerbs::Fabric::counts() const {
  std::lock_guard<std::mutex> lock(mu_);
  Counts c = counts_;
  c.liveMrs = mrs_.size();
  c.liveQps = qps_.size();
  c.liveCqs = cqs_.size();
  c.livePds = pds_.size();
  c.liveChannels = channels_.size();
  c.liveContexts = contexts_.size();
  return c;
}

namespace {

FakeVerbs::Fabric& fabric() {
  FakeVerbs::Fabric* f = gFabric.load();
  if (!f) die("a verbs call with no FakeVerbs alive (installed table outlived it?)");
  return *f;
}

// ibv_wc_status_str's text.
const char* wcStatusStr(ibv_wc_status status) {
  // clang-format off
  static const char* const kNames[] = {
      "success", "local length error", "local QP operation error",
      "local EE context operation error", "local protection error", "Work Request Flushed Error",
      "memory management operation error", "bad response error", "local access error",
      "remote invalid request error", "remote access error", "remote operation error",
      "transport retry counter exceeded", "RNR retry counter exceeded",
      "local RDD violation error", "remote invalid RD request", "aborted error",
      "invalid EE context number", "invalid EE context state", "fatal error",
      "response timeout error", "general error", "TM error", "TM software rendezvous"};
  // clang-format on
  const auto i = static_cast<size_t>(status);
  return i < std::size(kNames) ? kNames[i] : "unknown";
}

// Each entry but three forwards to the Fabric method of the same name (whose
// signature must match the member's exactly, or this does not compile).
#define ECCL_FAKE_VERBS_FORWARD(name) .name = [](auto... args) { return fabric().name(args...); }
const transport::ibverbs::Api kApi = {
    ECCL_FAKE_VERBS_FORWARD(getDeviceList),
    .freeDeviceList = [](ibv_device** list) { delete[] list; },
    ECCL_FAKE_VERBS_FORWARD(getDeviceName),
    ECCL_FAKE_VERBS_FORWARD(openDevice),
    ECCL_FAKE_VERBS_FORWARD(closeDevice),
    ECCL_FAKE_VERBS_FORWARD(queryDevice),
    ECCL_FAKE_VERBS_FORWARD(queryPort),
    ECCL_FAKE_VERBS_FORWARD(queryGid),
    ECCL_FAKE_VERBS_FORWARD(allocPd),
    ECCL_FAKE_VERBS_FORWARD(deallocPd),
    ECCL_FAKE_VERBS_FORWARD(regMr),
    ECCL_FAKE_VERBS_FORWARD(deregMr),
    ECCL_FAKE_VERBS_FORWARD(createCompChannel),
    ECCL_FAKE_VERBS_FORWARD(destroyCompChannel),
    ECCL_FAKE_VERBS_FORWARD(createCq),
    ECCL_FAKE_VERBS_FORWARD(destroyCq),
    ECCL_FAKE_VERBS_FORWARD(reqNotifyCq),
    ECCL_FAKE_VERBS_FORWARD(getCqEvent),
    ECCL_FAKE_VERBS_FORWARD(ackCqEvents),
    ECCL_FAKE_VERBS_FORWARD(pollCq),
    ECCL_FAKE_VERBS_FORWARD(createQp),
    ECCL_FAKE_VERBS_FORWARD(modifyQp),
    ECCL_FAKE_VERBS_FORWARD(destroyQp),
    ECCL_FAKE_VERBS_FORWARD(postSend),
    ECCL_FAKE_VERBS_FORWARD(postRecv),
    ECCL_FAKE_VERBS_FORWARD(forkInit),
    .wcStatusStr = wcStatusStr,
    ECCL_FAKE_VERBS_FORWARD(getAsyncEvent),
    ECCL_FAKE_VERBS_FORWARD(ackAsyncEvent),
    .eventTypeStr = eventTypeStr,
};
#undef ECCL_FAKE_VERBS_FORWARD

}  // namespace

FakeVerbs::FakeVerbs() : FakeVerbs(Options{}) {}
FakeVerbs::FakeVerbs(Options options) : fabric_(std::make_unique<Fabric>(std::move(options))) {}
FakeVerbs::~FakeVerbs() = default;

const transport::ibverbs::Api* FakeVerbs::api() const { return &kApi; }
void FakeVerbs::inject(const Fault& fault) { fabric_->inject(fault); }
void FakeVerbs::clearFaults() { fabric_->clearFaults(); }
uint64_t FakeVerbs::fired(Fault::Kind kind) const { return fabric_->fired(kind); }
void FakeVerbs::injectAsyncEvent(ibv_event_type type, uint32_t qpNum, uint8_t port) {
  fabric_->injectAsyncEvent(type, qpNum, port);
}
FakeVerbs::Counts FakeVerbs::counts() const { return fabric_->counts(); }

}  // namespace eccl::test
