// A timeline of the GPU work of this process (kernels, copies, memsets) and of the CUDA runtime
// calls that queued it (host threads, with the correlation id that links a call to its GPU work)
// through NVIDIA's CUPTI activity API, written as a Chrome trace (open it in ui.perfetto.dev or
// chrome://tracing), with per-kernel totals. CUPTI (libcupti.so, part of the CUDA toolkit) is loaded
// when a trace starts, so samfast itself does not depend on it; without it, or without a CUDA build,
// starting throws.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace samfast {

class GpuTrace {
 public:
  struct KernelTotal {
    std::string name;  // demangled, without its parameter list
    int64_t launches = 0;
    double ms = 0;     // summed GPU time
  };
  // Starts recording (one trace at a time per process).
  GpuTrace();
  ~GpuTrace();
  GpuTrace(const GpuTrace&) = delete;
  GpuTrace& operator=(const GpuTrace&) = delete;
  // Stops recording, writes the trace to `path` (JSON, Chrome trace event format) and returns the
  // kernels by summed GPU time, largest first.
  std::vector<KernelTotal> finish(const std::string& path);

 private:
  bool active_ = true;
};

}  // namespace samfast
