#include "cuda/device.h"

#include <dlfcn.h>
#include <fmt/format.h>

#include <atomic>
#include <mutex>
#include <vector>

#include "common/env.h"
#include "common/log.h"

namespace eccl::cuda {
namespace {

std::atomic<Device*> testDevice{nullptr};

// The plugin's file name: the soname, so an installed libeccl finds the
// plugin of its own major version.
constexpr const char* kPluginFile = "libeccl_cuda.so." ECCL_PLUGIN_SOVERSION;

// The directory of the module this code is linked into (libeccl.so, or the
// executable for the static library), where an install puts the plugin too.
std::string ownDirectory() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&ownDirectory), &info) == 0 || info.dli_fname == nullptr) {
    return "";
  }
  const std::string path = info.dli_fname;
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "" : path.substr(0, slash + 1);
}

Result<Device*> load() {
  std::vector<std::string> candidates;
  if (const std::string forced = env::cudaPlugin(); !forced.empty()) {
    candidates.push_back(forced);
  } else {
    if (const std::string dir = ownDirectory(); !dir.empty()) candidates.push_back(dir + kPluginFile);
    candidates.emplace_back(kPluginFile);  // LD_LIBRARY_PATH, RUNPATH, ld.so.cache
  }
  std::string tried;
  for (const std::string& path : candidates) {
    // RTLD_LOCAL: CUDA's symbols stay out of the application's namespace.
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
      const char* why = dlerror();
      tried += fmt::format("\n  {}: {}", path, why != nullptr ? why : "not loadable");
      continue;
    }
    auto entry = reinterpret_cast<PluginEntry>(dlsym(handle, kPluginEntryName));
    if (entry == nullptr) {
      tried += fmt::format("\n  {}: no {} symbol", path, kPluginEntryName);
      dlclose(handle);
      continue;
    }
    std::string whyNot;
    Device* dev = entry(kPluginAbi, &whyNot);
    if (dev == nullptr) {
      // The plugin loaded but CUDA is unusable here (no driver, no device).
      return error(ecclUnsupported, fmt::format("ecclMemCuda: {} ({})", whyNot, path));
    }
    ECCL_LOG(kInfo, kApi, "CUDA plugin {}: {}", path, dev->describe());
    return dev;  // the handle stays open: the device lives as long as the process
  }
  return error(ecclUnsupported,
               fmt::format("ecclMemCuda: the CUDA plugin could not be loaded (build with "
                           "ECCL_WITH_CUDA=ON, install {} next to libeccl or set "
                           "ECCL_CUDA_PLUGIN); tried:{}", kPluginFile, tried));
}

}  // namespace

Result<Device*> device() {
  if (Device* t = testDevice.load(std::memory_order_acquire)) return t;
  // Loaded once; a failure is remembered too (the answer will not change).
  static const Result<Device*> loaded = load();
  return loaded;
}

void setDeviceForTesting(Device* dev) { testDevice.store(dev, std::memory_order_release); }

Status copyAndWait(Device& dev, int device, void* dst, const void* src, size_t bytes) {
  Result<int> previous = dev.currentDevice();
  if (!previous) return previous.status();
  if (*previous != device) ECCL_RETURN_IF_ERROR(dev.useDevice(device));
  Result<Event> done = dev.createEvent();
  Status st = done ? Status::ok() : done.status();
  if (done) {
    st = dev.copy(dst, src, bytes, nullptr);
    if (st.isOk()) st = dev.record(*done, nullptr);
    if (st.isOk()) st = dev.synchronize(*done);
    dev.destroyEvent(*done);
  }
  if (*previous != device) {
    Status back = dev.useDevice(*previous);
    if (st.isOk()) st = std::move(back);
  }
  return st;
}

}  // namespace eccl::cuda
