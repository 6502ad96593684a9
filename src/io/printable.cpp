#include "io/printable.h"

#include <cstdio>

namespace samfast {

std::string printable(std::string_view s, size_t max_bytes) {
  std::string out;
  for (const char c : s.substr(0, max_bytes)) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c >= 32 && c < 127) {
          out += c;
        } else {
          char hex[8];
          std::snprintf(hex, sizeof hex, "\\x%02x", static_cast<unsigned char>(c));
          out += hex;
        }
    }
  }
  return s.size() > max_bytes ? out + "..." : out;
}

}  // namespace samfast
