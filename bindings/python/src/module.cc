// eccl._eccl: the C API for Python. Thin by design (STYLE.md "Python"): it turns arrays into
// (pointer, count, dtype) without copying, releases the GIL around every call that may block,
// and turns failed results into the eccl.Error hierarchy defined in eccl/_errors.py. Names,
// defaults and enums live in the pure-Python package on top.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <eccl/eccl.h>
#include <eccl/version.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <utility>
#include <vector>

#include "dlpack.h"

namespace py = pybind11;

namespace eccl::python {
namespace {

// A failed C call: raised as eccl.Error (the subclass for `result`) by the translator below.
struct Failure {
  ecclResult_t result;
  std::string message;
};

void check(ecclResult_t result, ecclComm_t comm = nullptr) {
  if (result != ecclSuccess) {
    throw Failure{result, ecclGetLastError(comm)};
  }
}

const char* cstr(const std::optional<std::string>& s) {
  return s ? s->c_str() : nullptr;
}

// ---- Arrays -------------------------------------------------------------------------------

// One array's memory, held (not copied) for as long as an op may touch it: a Py_buffer for
// objects with the buffer protocol (NumPy, bytearray, memoryview), else a DLPack managed
// tensor (torch, JAX, CuPy, NumPy's __dlpack__). Created and destroyed with the GIL held.
class Array {
 public:
  // `role` names the argument in errors ("tensor", "out", "state['w']").
  static Array of(py::handle obj, bool writable, const std::string& role) {
    Array a;
    if (PyObject_CheckBuffer(obj.ptr())) {
      a.fromBuffer(obj, writable, role);
    } else if (py::hasattr(obj, "__dlpack__")) {
      a.fromDlpack(obj, writable, role);
    } else {
      throw py::type_error("eccl: " + role + " is a " + typeName(obj) +
                           ", which has neither the buffer protocol nor __dlpack__; pass a "
                           "NumPy array or a torch tensor");
    }
    return a;
  }

  Array() = default;
  Array(Array&& o) noexcept { *this = std::move(o); }
  Array& operator=(Array&& o) noexcept {
    std::swap(buffer_, o.buffer_);
    std::swap(managed_, o.managed_);
    std::swap(versioned_, o.versioned_);
    std::swap(data, o.data);
    std::swap(count, o.count);
    std::swap(dtype, o.dtype);
    return *this;
  }
  Array(const Array&) = delete;
  Array& operator=(const Array&) = delete;
  ~Array() {
    if (buffer_) {
      PyBuffer_Release(buffer_.get());
    }
    if (managed_ != nullptr && managed_->deleter != nullptr) {
      managed_->deleter(managed_);
    }
    if (versioned_ != nullptr && versioned_->deleter != nullptr) {
      versioned_->deleter(versioned_);
    }
  }

  void* data = nullptr;
  size_t count = 0;
  ecclDataType_t dtype = ecclNumTypes;

 private:
  static std::string typeName(py::handle obj) {
    return py::str(py::type::handle_of(obj).attr("__name__"));
  }

  void fromBuffer(py::handle obj, bool writable, const std::string& role) {
    buffer_ = std::make_unique<Py_buffer>();
    if (PyObject_GetBuffer(obj.ptr(), buffer_.get(), PyBUF_RECORDS_RO) != 0) {
      buffer_.reset();
      throw py::error_already_set();
    }
    const Py_buffer& v = *buffer_;
    if (!PyBuffer_IsContiguous(&v, 'C')) {
      throw py::value_error("eccl: " + role + " is not contiguous (ECCL never copies "
                            "silently); pass numpy.ascontiguousarray(x)");
    }
    if (writable && v.readonly) {
      throw py::value_error("eccl: " + role + " is read-only and the op writes into it; "
                            "pass a writable array, or the read-only one as input with out=");
    }
    dtype = bufferType(v.format != nullptr ? v.format : "B", v.itemsize, role);
    data = v.buf;
    count = static_cast<size_t>(v.len / v.itemsize);
  }

  static ecclDataType_t bufferType(std::string format, Py_ssize_t itemsize,
                                   const std::string& role) {
    if (!format.empty() && (format[0] == '@' || format[0] == '=' || format[0] == '<')) {
      format.erase(0, 1);
    }
    if (format.size() == 1) {
      const char c = format[0];
      const bool isSigned = c == 'b' || c == 'h' || c == 'i' || c == 'l' || c == 'q' || c == 'n';
      const bool isUnsigned =
          c == 'B' || c == 'H' || c == 'I' || c == 'L' || c == 'Q' || c == 'N';
      if (isSigned || isUnsigned) {
        switch (itemsize) {
          case 1: return isSigned ? ecclInt8 : ecclUint8;
          case 2: return isSigned ? ecclInt16 : ecclUint16;
          case 4: return isSigned ? ecclInt32 : ecclUint32;
          case 8: return isSigned ? ecclInt64 : ecclUint64;
          default: break;
        }
      }
      if (c == 'e') return ecclFloat16;
      if (c == 'f') return ecclFloat32;
      if (c == 'd') return ecclFloat64;
    }
    throw py::type_error("eccl: " + role + " has element format '" + format +
                         "', which ECCL does not reduce (it takes int8..int64, uint8..uint64, "
                         "float16, bfloat16, float32, float64 in native byte order)");
  }

  void fromDlpack(py::handle obj, bool writable, const std::string& role) {
    py::object capsule;
    try {
      try {
        capsule = obj.attr("__dlpack__")(py::arg("max_version") = py::make_tuple(1, 0));
      } catch (py::error_already_set& e) {
        if (!e.matches(PyExc_TypeError)) {
          throw;
        }
        capsule = obj.attr("__dlpack__")();  // a DLPack 0.x producer: no max_version
      }
    } catch (py::error_already_set& e) {
      // torch refuses tensors that require grad, and bool tensors, here: say whose.
      throw py::type_error("eccl: " + role + " cannot be shared without a copy: " +
                           py::str(e.value()).cast<std::string>());
    }
    const dlpack::Tensor* t = nullptr;
    if (PyCapsule_IsValid(capsule.ptr(), "dltensor_versioned")) {
      versioned_ = static_cast<dlpack::ManagedTensorVersioned*>(
          PyCapsule_GetPointer(capsule.ptr(), "dltensor_versioned"));
      // The consumer owns it now: renaming tells the capsule's destructor not to free it.
      PyCapsule_SetName(capsule.ptr(), "used_dltensor_versioned");
      if ((versioned_->flags & dlpack::kFlagIsCopied) != 0) {
        throw py::value_error("eccl: " + role + " was exported as a copy by its producer; "
                              "ECCL works in place only");
      }
      if (writable && (versioned_->flags & dlpack::kFlagReadOnly) != 0) {
        throw py::value_error("eccl: " + role + " is read-only and the op writes into it; "
                              "pass a writable array, or the read-only one as input with out=");
      }
      t = &versioned_->tensor;
    } else {
      managed_ = static_cast<dlpack::ManagedTensor*>(
          PyCapsule_GetPointer(capsule.ptr(), "dltensor"));
      if (managed_ == nullptr) {
        throw py::error_already_set();
      }
      PyCapsule_SetName(capsule.ptr(), "used_dltensor");
      t = &managed_->tensor;
    }
    if (t->device.deviceType != dlpack::kCpu && t->device.deviceType != dlpack::kCudaHost) {
      throw py::value_error("eccl: " + role + " lives on a device (DLPack device type " +
                            std::to_string(t->device.deviceType) +
                            "); this build of ECCL moves host memory only: move it to the CPU");
    }
    dtype = dlpackType(t->dtype, role);
    size_t n = 1;
    for (int d = 0; d < t->ndim; ++d) {
      n *= static_cast<size_t>(t->shape[d]);
    }
    // Row-major: each dimension's stride is the product of the later dimensions' sizes
    // (dimensions of size 1 may have any stride; an empty tensor has no layout to check).
    int64_t expected = 1;
    bool contiguous = true;
    for (int d = t->ndim - 1; d >= 0 && n > 0 && t->strides != nullptr; --d) {
      if (t->shape[d] > 1 && t->strides[d] != expected) {
        contiguous = false;
      }
      expected *= t->shape[d];
    }
    if (!contiguous) {
      throw py::value_error("eccl: " + role + " is not contiguous (ECCL never copies "
                            "silently); pass x.contiguous()");
    }
    data = static_cast<char*>(t->data) + t->byteOffset;
    count = n;
  }

  static ecclDataType_t dlpackType(const dlpack::DataType& t, const std::string& role) {
    if (t.lanes == 1) {
      switch (t.code) {
        case dlpack::kInt:
        case dlpack::kUInt: {
          const bool s = t.code == dlpack::kInt;
          switch (t.bits) {
            case 8: return s ? ecclInt8 : ecclUint8;
            case 16: return s ? ecclInt16 : ecclUint16;
            case 32: return s ? ecclInt32 : ecclUint32;
            case 64: return s ? ecclInt64 : ecclUint64;
            default: break;
          }
          break;
        }
        case dlpack::kFloat:
          if (t.bits == 16) return ecclFloat16;
          if (t.bits == 32) return ecclFloat32;
          if (t.bits == 64) return ecclFloat64;
          break;
        case dlpack::kBfloat:
          if (t.bits == 16) return ecclBfloat16;
          break;
        default:
          break;
      }
    }
    static const char* const kCodes[] = {"int", "uint", "float", "opaque", "bfloat", "complex",
                                         "bool"};
    const std::string code = t.code < 7 ? kCodes[t.code] : std::to_string(t.code);
    throw py::type_error("eccl: " + role + " has element type " + code +
                         std::to_string(t.bits) +
                         (t.lanes != 1 ? "x" + std::to_string(t.lanes) : std::string()) +
                         ", which ECCL does not reduce (it takes int8..int64, uint8..uint64, "
                         "float16, bfloat16, float32, float64)");
  }

  std::unique_ptr<Py_buffer> buffer_;
  dlpack::ManagedTensor* managed_ = nullptr;
  dlpack::ManagedTensorVersioned* versioned_ = nullptr;
};

// The op's input and output: `out` absent means in place. Shapes may differ; element counts
// and types may not.
struct Operands {
  Array in;
  std::optional<Array> out;
  void* send() const { return in.data; }
  void* recv() const { return out ? out->data : in.data; }
};

Operands operands(py::handle tensor, py::handle out) {
  Operands o;
  if (out.is_none()) {
    o.in = Array::of(tensor, true, "tensor");
    return o;
  }
  o.in = Array::of(tensor, false, "tensor");
  o.out = Array::of(out, true, "out");
  if (o.out->dtype != o.in.dtype || o.out->count != o.in.count) {
    throw py::value_error("eccl: out must have the element type and count of tensor (" +
                          std::to_string(o.out->count) + " vs " + std::to_string(o.in.count) +
                          " elements)");
  }
  return o;
}

py::dict opInfo(const ecclOpInfo_t& i) {
  py::dict d;
  d["bytes_sent"] = i.bytesSent;
  d["bytes_received"] = i.bytesReceived;
  d["logical_bytes_sent"] = i.logicalBytesSent;
  d["logical_bytes_received"] = i.logicalBytesReceived;
  d["world_size"] = i.worldSize;
  d["epoch"] = i.epoch;
  d["seconds"] = i.seconds;
  d["streams"] = i.streams;
  d["shared_memory"] = i.sharedMemory != 0;
  return d;
}

ecclOpOptions_t opOptions(int quantization, int rounding, uint32_t blockSize, uint32_t tag) {
  ecclOpOptions_t o = ECCL_OP_OPTIONS_INIT;
  o.tag = tag;
  o.quantization = static_cast<ecclQuantization_t>(quantization);
  o.rounding = static_cast<ecclRounding_t>(rounding);
  o.quantBlockSize = blockSize;
  return o;
}

// ---- Master -------------------------------------------------------------------------------

class Master {
 public:
  Master(const std::optional<std::string>& host, uint16_t port,
         const std::optional<std::string>& authToken, uint32_t heartbeatMs,
         uint32_t failureTimeoutMs, uint32_t voteTimeoutMs, bool allowUnauthenticated,
         bool trustAdvertisedAddresses, const std::optional<std::string>& tls,
         const std::optional<std::string>& tlsCert, const std::optional<std::string>& tlsKey,
         const std::optional<std::string>& tlsCa) {
    ecclMasterConfig_t c = ECCL_MASTER_CONFIG_INIT;
    c.listenAddress = cstr(host);
    c.port = port;
    c.authToken = cstr(authToken);
    c.heartbeatIntervalMs = heartbeatMs;
    c.failureTimeoutMs = failureTimeoutMs;
    c.voteTimeoutMs = voteTimeoutMs;
    c.allowUnauthenticated = allowUnauthenticated ? 1 : 0;
    c.trustAdvertisedAddresses = trustAdvertisedAddresses ? 1 : 0;
    c.tls = cstr(tls);
    c.tlsCertFile = cstr(tlsCert);
    c.tlsKeyFile = cstr(tlsKey);
    c.tlsCaFile = cstr(tlsCa);
    ecclResult_t r;
    {
      py::gil_scoped_release nogil;
      r = ecclMasterCreate(&c, &master_);
    }
    check(r);
  }
  ~Master() { close(); }

  uint16_t port() {
    uint16_t p = 0;
    check(ecclMasterGetPort(handle(), &p));
    return p;
  }

  void close() {
    ecclMaster_t m = std::exchange(master_, nullptr);
    if (m != nullptr) {
      py::gil_scoped_release nogil;
      ecclMasterDestroy(m);
    }
  }

  bool closed() const { return master_ == nullptr; }

 private:
  ecclMaster_t handle() const {
    if (master_ == nullptr) {
      throw Failure{ecclInvalidUsage, "the master is closed"};
    }
    return master_;
  }
  ecclMaster_t master_ = nullptr;
};

// ---- Communicator and requests ------------------------------------------------------------

// One asynchronous op. The C request must be finished by exactly one ecclWait; wait() may be
// called from any thread, and the communicator finishes what is left before it is destroyed.
class RequestState {
 public:
  RequestState(ecclRequest_t request, Operands operands)
      : request_(request), operands_(std::move(operands)) {}

  // Without the GIL.
  void finish() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (request_ != nullptr) {
      result_ = ecclWait(request_, &info_);
      if (result_ != ecclSuccess) {
        message_ = ecclGetLastError(nullptr);
      }
      request_ = nullptr;
      done_.store(true, std::memory_order_release);
    }
  }

  // Without the GIL; never blocks on the op.
  bool done() {
    std::unique_lock<std::mutex> lock(mutex_, std::try_to_lock);
    if (!lock.owns_lock() || request_ == nullptr) {
      return done_.load(std::memory_order_acquire);  // another thread may be in finish()
    }
    int d = 0;
    return ecclTest(request_, &d) == ecclSuccess && d != 0;
  }

  py::dict result() {
    if (result_ != ecclSuccess) {
      throw Failure{result_, message_};
    }
    return opInfo(info_);
  }

  void releaseOperands() { operands_.reset(); }  // with the GIL

 private:
  std::mutex mutex_;
  ecclRequest_t request_;
  std::optional<Operands> operands_;
  ecclResult_t result_ = ecclSuccess;
  std::string message_;
  ecclOpInfo_t info_ = ECCL_OP_INFO_INIT;
  std::atomic<bool> done_{false};
};

// Move-only: pybind11 moves the returned Request into the Python object. A copy would let the
// temporary's destructor finish (wait for) the op before the caller ever saw it.
class Request {
 public:
  explicit Request(std::shared_ptr<RequestState> state) : state_(std::move(state)) {}
  Request(Request&&) noexcept = default;
  Request& operator=(Request&&) noexcept = default;
  Request(const Request&) = delete;
  Request& operator=(const Request&) = delete;
  ~Request() {
    if (state_ == nullptr) {
      return;  // moved from
    }
    // An op nobody waited for still holds its arrays: finish it before they are released.
    py::gil_scoped_release nogil;
    state_->finish();
  }

  py::dict wait() {
    {
      py::gil_scoped_release nogil;
      state_->finish();
    }
    state_->releaseOperands();
    return state_->result();
  }

  bool done() {
    py::gil_scoped_release nogil;
    return state_->done();
  }

 private:
  std::shared_ptr<RequestState> state_;
};

class Comm {
 public:
  Comm(const std::string& master, uint32_t peerGroup, const std::optional<std::string>& transport,
       uint32_t streams, const std::optional<std::string>& authToken, uint32_t connectTimeoutMs,
       uint32_t opTimeoutMs, const std::optional<std::string>& advertisedAddress,
       const std::optional<std::string>& bindAddress, uint32_t heartbeatMs,
       uint32_t failureTimeoutMs, const std::optional<std::string>& tls,
       const std::optional<std::string>& tlsCert, const std::optional<std::string>& tlsKey,
       const std::optional<std::string>& tlsCa) {
    ecclCommConfig_t c = ECCL_COMM_CONFIG_INIT;
    c.masterAddress = master.c_str();
    c.peerGroup = peerGroup;
    c.transport = cstr(transport);
    c.streamsPerPeer = streams;
    c.authToken = cstr(authToken);
    c.connectTimeoutMs = connectTimeoutMs;
    c.opTimeoutMs = opTimeoutMs;
    c.advertisedAddress = cstr(advertisedAddress);
    c.bindAddress = cstr(bindAddress);
    c.heartbeatIntervalMs = heartbeatMs;
    c.failureTimeoutMs = failureTimeoutMs;
    c.tls = cstr(tls);
    c.tlsCertFile = cstr(tlsCert);
    c.tlsKeyFile = cstr(tlsKey);
    c.tlsCaFile = cstr(tlsCa);
    check(ecclCommCreate(&c, &comm_));
  }
  ~Comm() {
    try {
      close();
    } catch (const Failure&) {
      // Only a connect or update still running in another thread refuses; that thread holds
      // a reference, so this cannot happen for the last one. Nothing to free then.
    }
  }

  // Runs `call(comm)` without the GIL while close() cannot free the communicator.
  template <typename F>
  void blocking(F&& call) {
    ecclResult_t r;
    std::string message;
    {
      py::gil_scoped_release nogil;
      std::shared_lock<std::shared_mutex> lock(life_);
      if (comm_ == nullptr) {
        r = ecclInvalidUsage;
        message = "the communicator is closed";
      } else {
        r = call(comm_);
        if (r != ecclSuccess) {
          message = ecclGetLastError(nullptr);  // this thread's: others may fail meanwhile
        }
      }
    }
    if (r != ecclSuccess) {
      throw Failure{r, message};
    }
  }

  void connect() { blocking([](ecclComm_t c) { return ecclCommConnect(c); }); }
  void updateTopology() { blocking([](ecclComm_t c) { return ecclCommUpdateTopology(c); }); }
  void optimizeTopology() { blocking([](ecclComm_t c) { return ecclCommOptimizeTopology(c); }); }

  bool peersPending() {
    int p = 0;
    blocking([&](ecclComm_t c) { return ecclCommArePeersPending(c, &p); });
    return p != 0;
  }
  int worldSize() {
    int n = 0;
    blocking([&](ecclComm_t c) { return ecclCommGetWorldSize(c, &n); });
    return n;
  }
  int rank() {
    int r = 0;
    blocking([&](ecclComm_t c) { return ecclCommGetRank(c, &r); });
    return r;
  }
  uint64_t epoch() {
    uint64_t e = 0;
    blocking([&](ecclComm_t c) { return ecclCommGetEpoch(c, &e); });
    return e;
  }
  uint32_t peerGroup() {
    uint32_t g = 0;
    blocking([&](ecclComm_t c) { return ecclCommGetPeerGroup(c, &g); });
    return g;
  }

  py::dict allReduce(py::handle tensor, py::handle out, int op, int quantization, int rounding,
                     uint32_t blockSize, uint32_t tag) {
    Operands o = operands(tensor, out);
    const ecclOpOptions_t opts = opOptions(quantization, rounding, blockSize, tag);
    ecclOpInfo_t info = ECCL_OP_INFO_INIT;
    blocking([&](ecclComm_t c) {
      return ecclAllReduce(o.send(), o.recv(), o.in.count, o.in.dtype,
                           static_cast<ecclRedOp_t>(op), &opts, c, &info);
    });
    return opInfo(info);
  }

  py::dict broadcast(py::handle tensor, int root, int quantization, int rounding,
                     uint32_t blockSize, uint32_t tag) {
    Operands o = operands(tensor, py::none());
    const ecclOpOptions_t opts = opOptions(quantization, rounding, blockSize, tag);
    ecclOpInfo_t info = ECCL_OP_INFO_INIT;
    blocking([&](ecclComm_t c) {
      return ecclBroadcast(o.recv(), o.in.count, o.in.dtype, root, &opts, c, &info);
    });
    return opInfo(info);
  }

  Request allReduceAsync(py::handle tensor, py::handle out, int op, int quantization,
                         int rounding, uint32_t blockSize, uint32_t tag) {
    const ecclOpOptions_t opts = opOptions(quantization, rounding, blockSize, tag);
    return launch(operands(tensor, out), [&](const Operands& o, ecclComm_t c, ecclRequest_t* r) {
      return ecclAllReduceAsync(o.send(), o.recv(), o.in.count, o.in.dtype,
                                static_cast<ecclRedOp_t>(op), &opts, c, r);
    });
  }

  Request broadcastAsync(py::handle tensor, int root, int quantization, int rounding,
                         uint32_t blockSize, uint32_t tag) {
    const ecclOpOptions_t opts = opOptions(quantization, rounding, blockSize, tag);
    return launch(operands(tensor, py::none()), [&](const Operands& o, ecclComm_t c,
                                                    ecclRequest_t* r) {
      return ecclBroadcastAsync(o.recv(), o.in.count, o.in.dtype, root, &opts, c, r);
    });
  }

  // entries: (name, array, allow_divergence). Returns (revision, info).
  std::pair<uint64_t, py::dict> syncSharedState(
      const std::vector<std::tuple<std::string, py::object, bool>>& entries, uint64_t revision,
      int strategy) {
    std::vector<Array> arrays;
    std::vector<ecclTensorInfo_t> tensors;
    arrays.reserve(entries.size());
    for (const auto& [name, obj, allowDivergence] : entries) {
      arrays.push_back(Array::of(obj, true, "state['" + name + "']"));
      const Array& a = arrays.back();
      tensors.push_back({name.c_str(), a.data, a.count, a.dtype, ecclMemHost,
                         allowDivergence ? 1 : 0});
    }
    ecclSharedState_t state = ECCL_SHARED_STATE_INIT;
    state.revision = revision;
    state.tensors = tensors.data();
    state.tensorCount = tensors.size();
    ecclSyncInfo_t info = ECCL_SYNC_INFO_INIT;
    blocking([&](ecclComm_t c) {
      return ecclSharedStateSync(c, &state, static_cast<ecclSyncStrategy_t>(strategy), &info);
    });
    py::dict d;
    d["bytes_sent"] = info.bytesSent;
    d["bytes_received"] = info.bytesReceived;
    d["revision"] = info.revision;
    d["tensors_fetched"] = info.tensorsFetched;
    d["sources_lost"] = info.sourcesLost;
    py::dict sources;
    for (uint32_t i = 0; i < info.sourcesUsed && i < ECCL_SYNC_MAX_SOURCES; ++i) {
      sources[py::int_(info.sourcePeers[i])] = info.bytesFromSource[i];
    }
    d["bytes_from_source"] = sources;
    d["seconds"] = info.seconds;
    return {state.revision, d};
  }

  // Finishes the ops still in flight (their Work objects then report their results), leaves
  // the group and frees the communicator. Idempotent.
  void close() {
    std::vector<std::shared_ptr<RequestState>> pending;  // released below, with the GIL
    ecclResult_t r = ecclSuccess;
    std::string message;
    {
      py::gil_scoped_release nogil;
      // Exclusive: no call is between starting a request and registering it.
      std::unique_lock<std::shared_mutex> lock(life_);
      {
        std::lock_guard<std::mutex> guard(requestsMu_);
        for (auto& w : requests_) {
          if (auto st = w.lock()) {
            pending.push_back(std::move(st));
          }
        }
        requests_.clear();
      }
      for (auto& st : pending) {
        st->finish();
      }
      ecclComm_t c = std::exchange(comm_, nullptr);
      if (c != nullptr) {
        r = ecclCommDestroy(c);
        if (r != ecclSuccess) {
          comm_ = c;  // still running a connect or update in another thread
          message = ecclGetLastError(nullptr);
        }
      }
    }
    if (r != ecclSuccess) {
      throw Failure{r, message};
    }
  }

  bool closed() const { return comm_ == nullptr; }

 private:
  // Starts an async op and registers its request while close() cannot run, so close() always
  // finishes it before ecclCommDestroy frees it.
  template <typename Start>
  Request launch(Operands o, Start&& start) {
    std::shared_ptr<RequestState> state;
    blocking([&](ecclComm_t c) {
      ecclRequest_t request = nullptr;
      const ecclResult_t r = start(o, c, &request);
      if (r == ecclSuccess) {
        state = std::make_shared<RequestState>(request, std::move(o));
        std::lock_guard<std::mutex> guard(requestsMu_);
        std::erase_if(requests_, [](const std::weak_ptr<RequestState>& w) { return w.expired(); });
        requests_.push_back(state);
      }
      return r;
    });
    return Request(std::move(state));
  }

  std::shared_mutex life_;
  ecclComm_t comm_ = nullptr;
  std::mutex requestsMu_;
  std::vector<std::weak_ptr<RequestState>> requests_;  // requests not finished by close()
};

}  // namespace
}  // namespace eccl::python

PYBIND11_MODULE(_eccl, m) {
  using namespace eccl::python;
  m.doc() = "ECCL's C API (internal: use the eccl package)";
  m.attr("__version__") = ECCL_VERSION_STRING;
  m.def("library_version", [] {
    int v = 0;
    check(ecclGetVersion(&v));
    return v;
  });
  m.def("error_string", [](int r) { return ecclGetErrorString(static_cast<ecclResult_t>(r)); });

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) {
        std::rethrow_exception(p);
      }
    } catch (const Failure& f) {
      py::object error = py::module_::import("eccl._errors")
                             .attr("from_result")(static_cast<int>(f.result), f.message);
      PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(error.ptr())), error.ptr());
    }
  });

  py::class_<Master>(m, "Master")
      .def(py::init<const std::optional<std::string>&, uint16_t,
                    const std::optional<std::string>&, uint32_t, uint32_t, uint32_t, bool, bool,
                    const std::optional<std::string>&, const std::optional<std::string>&,
                    const std::optional<std::string>&, const std::optional<std::string>&>(),
           py::arg("host"), py::arg("port"), py::arg("auth_token"), py::arg("heartbeat_ms"),
           py::arg("failure_timeout_ms"), py::arg("vote_timeout_ms"),
           py::arg("allow_unauthenticated"), py::arg("trust_advertised_addresses"),
           py::arg("tls"), py::arg("tls_cert"), py::arg("tls_key"), py::arg("tls_ca"))
      .def_property_readonly("port", &Master::port)
      .def_property_readonly("closed", &Master::closed)
      .def("close", &Master::close);

  py::class_<Request>(m, "Request")
      .def("wait", &Request::wait)
      .def("done", &Request::done);

  py::class_<Comm>(m, "Comm")
      .def(py::init<const std::string&, uint32_t, const std::optional<std::string>&, uint32_t,
                    const std::optional<std::string>&, uint32_t, uint32_t,
                    const std::optional<std::string>&, const std::optional<std::string>&,
                    uint32_t, uint32_t, const std::optional<std::string>&,
                    const std::optional<std::string>&, const std::optional<std::string>&,
                    const std::optional<std::string>&>(),
           py::arg("master"), py::arg("peer_group"), py::arg("transport"), py::arg("streams"),
           py::arg("auth_token"), py::arg("connect_timeout_ms"), py::arg("op_timeout_ms"),
           py::arg("advertised_address"), py::arg("bind_address"), py::arg("heartbeat_ms"),
           py::arg("failure_timeout_ms"), py::arg("tls"), py::arg("tls_cert"),
           py::arg("tls_key"), py::arg("tls_ca"))
      .def("connect", &Comm::connect)
      .def("update_topology", &Comm::updateTopology)
      .def("optimize_topology", &Comm::optimizeTopology)
      .def("peers_pending", &Comm::peersPending)
      .def("world_size", &Comm::worldSize)
      .def("rank", &Comm::rank)
      .def("epoch", &Comm::epoch)
      .def("peer_group", &Comm::peerGroup)
      .def("all_reduce", &Comm::allReduce)
      .def("all_reduce_async", &Comm::allReduceAsync)
      .def("broadcast", &Comm::broadcast)
      .def("broadcast_async", &Comm::broadcastAsync)
      .def("sync_shared_state", &Comm::syncSharedState)
      .def_property_readonly("closed", &Comm::closed)
      .def("close", &Comm::close);
}
