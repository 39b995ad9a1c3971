// Buffers of a megabyte and more on transparent huge pages, where the kernel
// offers them (THP "always" or "madvise"). A same-host peer reads such a
// buffer with process_vm_readv (transport/shm/), which pins every page of it
// per call: a 1 MiB segment is 256 small pages but one huge page, and the
// copies into and out of it miss the TLB less. The price: a huge page is
// 2 MiB, so a 1 MiB buffer takes 2 MiB. Allocators made with `large` false,
// and buffers under a megabyte, come from the ordinary heap.
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <cstdlib>
#include <new>
#include <type_traits>
#include <vector>

namespace eccl {

template <class T>
class LargePageAllocator {
 public:
  using value_type = T;
  // A buffer keeps the allocator it was made with, whatever it is moved to.
  using propagate_on_container_move_assignment = std::true_type;
  using propagate_on_container_swap = std::true_type;
  static constexpr size_t kHugePage = 2 << 20;
  static constexpr size_t kMinBytes = 1 << 20;

  explicit LargePageAllocator(bool large = false) : large_(large) {}
  template <class U>
  LargePageAllocator(const LargePageAllocator<U>& o) : large_(o.large()) {}  // NOLINT: rebinding

  bool large() const { return large_; }

  T* allocate(size_t n) {
    const size_t bytes = n * sizeof(T);
    if (!onHugePages(bytes)) return static_cast<T*>(::operator new(bytes));
    // Whole huge pages, aligned, so that every part of the buffer can be one.
    const size_t rounded = (bytes + kHugePage - 1) / kHugePage * kHugePage;
    void* p = std::aligned_alloc(kHugePage, rounded);
    if (p == nullptr) throw std::bad_alloc();
    ::madvise(p, rounded, MADV_HUGEPAGE);  // advice: without THP, small pages
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t n) {
    if (onHugePages(n * sizeof(T))) {
      std::free(p);
    } else {
      ::operator delete(p);
    }
  }
  template <class U>
  bool operator==(const LargePageAllocator<U>& o) const { return large_ == o.large(); }

 private:
  bool onHugePages(size_t bytes) const { return large_ && bytes >= kMinBytes; }
  bool large_;
};

// A byte buffer; on huge pages once it is a megabyte or more when its
// allocator says so (LargePageBytes(LargePageAllocator<std::byte>(true))).
using LargePageBytes = std::vector<std::byte, LargePageAllocator<std::byte>>;

}  // namespace eccl
