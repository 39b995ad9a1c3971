// Background threads (the master's and a peer's io loops, the data acceptor)
// must never die of an exception: that would terminate the process, which is
// what a remote party could then aim for. runGuarded logs the exception and
// runs the loop again; the handler that threw has failed on its own.
#pragma once

#include <exception>
#include <string>

#include "common/log.h"

namespace eccl {

template <typename Loop>
void runGuarded(log::Subsys subsys, const char* what, Loop&& loop) {
  for (;;) {
    try {
      loop();
      return;
    } catch (const std::exception& e) {
      log::write(log::Level::kError, subsys, std::string(what) + ": " + e.what() + "; continuing");
    } catch (...) {
      log::write(log::Level::kError, subsys, std::string(what) + ": unknown exception; continuing");
    }
  }
}

}  // namespace eccl
