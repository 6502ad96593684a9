// A test helper: the message of the samfast::Error that a call throws.
#pragma once
#include <string>

#include "samfast/error.h"

namespace samfast::testing {

// The message of the samfast::Error that f throws ("" if it throws none).
template <class F>
std::string error_of(F f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace samfast::testing
