// Text from an untrusted file (tensor names, dtype strings, chunk types) going into an error
// message: a crafted name must not break the message's single line or reach the terminal as
// escape sequences.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

namespace samfast {

// `s` with backslash, control characters and every byte outside printable ASCII escaped as in C
// ("\n", "\x1b", "\\"), cut to its first `max_bytes` bytes with "..." after.
std::string printable(std::string_view s, size_t max_bytes = 100);

}  // namespace samfast
