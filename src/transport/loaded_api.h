// A table of a shared library's functions, loaded with dlopen on first use,
// or a test stand-in installed in its place: how the NCCL backend and the
// RDMA transport reach libraries that libeccl never links.
#pragma once

#include <dlfcn.h>

#include <atomic>
#include <string>

#include "common/status.h"

namespace eccl::transport {

template <typename Api>
class LoadedApi {
 public:
  // `load` runs once, on the first call of get() without a stand-in.
  constexpr explicit LoadedApi(Result<const Api*> (*load)()) : load_(load) {}

  // The stand-in when one is installed, else what `load` gave.
  Result<const Api*> get() {
    if (const Api* t = test_.load(std::memory_order_acquire)) return t;
    static const Result<const Api*> loaded = load_();
    return loaded;
  }
  void setForTesting(const Api* api) { test_.store(api, std::memory_order_release); }

 private:
  Result<const Api*> (*load_)();
  std::atomic<const Api*> test_{nullptr};
};

// Looks `name` up in `lib`; a missing one is added to `missing`.
template <typename F>
void bindSymbol(void* lib, const char* name, F* fn, std::string* missing) {
  *fn = reinterpret_cast<F>(dlsym(lib, name));
  if (*fn == nullptr) *missing += std::string(" ") + name;
}

}  // namespace eccl::transport
