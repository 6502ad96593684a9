#include "samfast/precision.h"

#include <array>
#include <utility>

#include "samfast/error.h"

namespace samfast {
namespace {

// The one list of precisions and their names.
constexpr std::array<std::pair<Precision, const char*>, 6> kNames{{
    {Precision::Auto, "auto"},
    {Precision::FP32, "fp32"},
    {Precision::BF16, "bf16"},
    {Precision::FP16, "fp16"},
    {Precision::FP8, "fp8"},
    {Precision::INT8, "int8"},
}};

}  // namespace

const std::vector<std::string>& precision_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (const auto& [p, name] : kNames) v.emplace_back(name);
    return v;
  }();
  return names;
}

Precision parse_precision(const std::string& name) {
  for (const auto& [p, n] : kNames)
    if (name == n) return p;
  std::string expected;
  const std::vector<std::string>& names = precision_names();
  for (size_t i = 0; i < names.size(); ++i)
    expected += (i == 0 ? "" : i + 1 == names.size() ? " or " : ", ") + names[i];
  throw InvalidArgument("unknown precision '" + name + "': expected " + expected);
}

std::string to_string(Precision precision) {
  for (const auto& [p, name] : kNames)
    if (p == precision) return name;
  throw Error("unknown precision value " + std::to_string(static_cast<int>(precision)));
}

}  // namespace samfast
