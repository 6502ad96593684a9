// Errors carry a message a user can act on; the CLI prints it as one line.
#pragma once
#include <stdexcept>
#include <string>

namespace samfast {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace samfast
