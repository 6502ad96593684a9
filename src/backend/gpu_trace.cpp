#include "samfast/gpu_trace.h"

#include <algorithm>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>

#include "samfast/error.h"

#ifdef SAMFAST_WITH_CUDA
#include <cupti.h>
#include <cxxabi.h>
#include <dlfcn.h>

#include <cstdlib>
#endif

namespace samfast {

#ifndef SAMFAST_WITH_CUDA
GpuTrace::GpuTrace() { throw Error("--trace needs a CUDA build of samfast (and a GPU)"); }
GpuTrace::~GpuTrace() = default;
std::vector<GpuTrace::KernelTotal> GpuTrace::finish(const std::string&) { return {}; }
#else
namespace {

struct Event {
  std::string name, cat;
  uint64_t start, end;  // ns
  uint32_t stream, device;  // for a CUDA runtime call: the host thread and process
  nlohmann::json args;
};

// CUPTI's entry points, looked up in libcupti at the first trace.
struct Cupti {
  decltype(&cuptiActivityRegisterCallbacks) register_callbacks = nullptr;
  decltype(&cuptiActivityEnable) enable = nullptr;
  decltype(&cuptiActivityDisable) disable = nullptr;
  decltype(&cuptiActivityFlushAll) flush_all = nullptr;
  decltype(&cuptiActivityGetNextRecord) next_record = nullptr;
  decltype(&cuptiGetResultString) result_string = nullptr;
  decltype(&cuptiGetCallbackName) callback_name = nullptr;
};

std::mutex g_mu;  // g_events, g_active
std::vector<Event> g_events;
bool g_active = false;
constexpr size_t kBufferBytes = size_t(8) << 20;

const Cupti& cupti() {
  static const Cupti api = [] {
    void* lib = nullptr;
    for (const char* name : {"libcupti.so.13", "libcupti.so.12", "libcupti.so"})
      if ((lib = dlopen(name, RTLD_NOW | RTLD_LOCAL))) break;
    if (!lib)
      throw Error(std::string("--trace needs NVIDIA's CUPTI library (libcupti.so, in the CUDA toolkit or the "
                              "nvidia-cuda-cupti package): ") + dlerror() + "; add its folder to LD_LIBRARY_PATH");
    Cupti c;
    auto sym = [&](const char* n) {
      void* p = dlsym(lib, n);
      if (!p) throw Error(std::string("CUPTI library has no ") + n);
      return p;
    };
    c.register_callbacks = reinterpret_cast<decltype(c.register_callbacks)>(sym("cuptiActivityRegisterCallbacks"));
    c.enable = reinterpret_cast<decltype(c.enable)>(sym("cuptiActivityEnable"));
    c.disable = reinterpret_cast<decltype(c.disable)>(sym("cuptiActivityDisable"));
    c.flush_all = reinterpret_cast<decltype(c.flush_all)>(sym("cuptiActivityFlushAll"));
    c.next_record = reinterpret_cast<decltype(c.next_record)>(sym("cuptiActivityGetNextRecord"));
    c.result_string = reinterpret_cast<decltype(c.result_string)>(sym("cuptiGetResultString"));
    c.callback_name = reinterpret_cast<decltype(c.callback_name)>(sym("cuptiGetCallbackName"));
    return c;
  }();
  return api;
}

void check(CUptiResult r, const char* what) {
  if (r == CUPTI_SUCCESS) return;
  const char* s = "unknown error";
  cupti().result_string(r, &s);
  throw Error(std::string("GPU trace: ") + what + " failed: " + s);
}

std::string demangle(const char* name) {
  int status = 0;
  char* d = abi::__cxa_demangle(name, nullptr, nullptr, &status);
  std::string s = status == 0 && d ? d : name;
  std::free(d);
  return s;
}

// "void samfast::cuda::(anonymous namespace)::k<64>(args)" -> "samfast::cuda::k<64>"
std::string short_kernel_name(std::string n) {
  for (size_t p; (p = n.find("(anonymous namespace)::")) != std::string::npos;) n.erase(p, 23);
  if (n.rfind("void ", 0) == 0) n.erase(0, 5);
  return n.substr(0, n.find('('));
}

void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
  *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, kBufferBytes));
  *size = kBufferBytes;
  *max_records = 0;
}

void CUPTIAPI buffer_completed(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid) {
  std::vector<Event> batch;
  CUpti_Activity* rec = nullptr;
  while (cupti().next_record(buffer, valid, &rec) == CUPTI_SUCCESS) {
    if (rec->kind == CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL || rec->kind == CUPTI_ACTIVITY_KIND_KERNEL) {
      const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(rec);
      batch.push_back({demangle(k->name), "kernel", k->start, k->end, k->streamId, k->deviceId,
                       {{"grid", {k->gridX, k->gridY, k->gridZ}},
                        {"block", {k->blockX, k->blockY, k->blockZ}},
                        {"registers", k->registersPerThread},
                        {"shared_bytes", k->staticSharedMemory + k->dynamicSharedMemory},
                        {"graph", k->graphId},
                        {"correlation", k->correlationId}}});
    } else if (rec->kind == CUPTI_ACTIVITY_KIND_MEMCPY) {
      const auto* m = reinterpret_cast<const CUpti_ActivityMemcpy6*>(rec);
      static const char* kinds[] = {"?", "HtoD", "DtoH", "HtoA", "AtoH", "AtoA", "AtoD", "DtoA", "DtoD", "HtoH", "PtoP"};
      const char* kind = m->copyKind < sizeof(kinds) / sizeof(kinds[0]) ? kinds[m->copyKind] : "?";
      batch.push_back({std::string("memcpy ") + kind, "memcpy", m->start, m->end, m->streamId, m->deviceId,
                       {{"bytes", m->bytes}, {"correlation", m->correlationId}}});
    } else if (rec->kind == CUPTI_ACTIVITY_KIND_MEMSET) {
      const auto* m = reinterpret_cast<const CUpti_ActivityMemset4*>(rec);
      batch.push_back({"memset", "memset", m->start, m->end, m->streamId, m->deviceId,
                       {{"bytes", m->bytes}, {"correlation", m->correlationId}}});
    } else if (rec->kind == CUPTI_ACTIVITY_KIND_RUNTIME) {
      // The host side: when each CUDA runtime call ran and how long it kept the host, with the
      // correlation id of the GPU work it queued (a gap on the GPU that ends with work queued
      // after the gap began is the GPU waiting on the host).
      const auto* a = reinterpret_cast<const CUpti_ActivityAPI*>(rec);
      const char* name = nullptr;
      if (cupti().callback_name(CUPTI_CB_DOMAIN_RUNTIME_API, a->cbid, &name) != CUPTI_SUCCESS || !name) name = "?";
      batch.push_back({name, "api", a->start, a->end, a->threadId, a->processId, {{"correlation", a->correlationId}}});
    }
  }
  std::free(buffer);
  std::lock_guard<std::mutex> lock(g_mu);
  for (auto& e : batch) g_events.push_back(std::move(e));
}

constexpr CUpti_ActivityKind kKinds[] = {CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL, CUPTI_ACTIVITY_KIND_MEMCPY,
                                         CUPTI_ACTIVITY_KIND_MEMSET, CUPTI_ACTIVITY_KIND_RUNTIME};

}  // namespace

GpuTrace::GpuTrace() {
  {
    std::lock_guard<std::mutex> lock(g_mu);
    if (g_active) throw Error("a GPU trace is already recording in this process");
    g_active = true;
    g_events.clear();
  }
  try {
    const Cupti& c = cupti();
    check(c.register_callbacks(buffer_requested, buffer_completed), "cuptiActivityRegisterCallbacks");
    for (CUpti_ActivityKind k : kKinds) check(c.enable(k), "cuptiActivityEnable");
  } catch (...) {
    std::lock_guard<std::mutex> lock(g_mu);
    g_active = false;
    throw;
  }
}

GpuTrace::~GpuTrace() {
  if (!active_) return;
  try {
    for (CUpti_ActivityKind k : kKinds) cupti().disable(k);
    cupti().flush_all(1);
  } catch (...) {
  }
  std::lock_guard<std::mutex> lock(g_mu);
  g_active = false;
}

std::vector<GpuTrace::KernelTotal> GpuTrace::finish(const std::string& path) {
  if (!active_) throw Error("GpuTrace::finish called twice");
  for (CUpti_ActivityKind k : kKinds) check(cupti().disable(k), "cuptiActivityDisable");
  check(cupti().flush_all(1), "cuptiActivityFlushAll");
  active_ = false;
  std::vector<Event> events;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    events.swap(g_events);
    g_active = false;
  }
  std::sort(events.begin(), events.end(), [](const Event& a, const Event& b) { return a.start < b.start; });
  const uint64_t t0 = events.empty() ? 0 : events.front().start;
  nlohmann::json trace = nlohmann::json::array();
  std::map<std::string, KernelTotal> totals;
  std::map<uint32_t, std::string> rows;  // each pid's name in the viewer
  for (const Event& e : events) {
    rows.emplace(e.device, e.cat == "api" ? "host: CUDA runtime calls" : "GPU " + std::to_string(e.device));
    trace.push_back({{"name", e.name},
                     {"cat", e.cat},
                     {"ph", "X"},
                     {"ts", (e.start - t0) / 1000.0},
                     {"dur", (e.end - e.start) / 1000.0},
                     {"pid", e.device},
                     {"tid", e.stream},
                     {"args", e.args}});
    if (e.cat != "kernel") continue;
    const std::string short_name = short_kernel_name(e.name);
    KernelTotal& t = totals[short_name];
    t.name = short_name;
    ++t.launches;
    t.ms += (e.end - e.start) / 1e6;
  }
  for (const auto& [pid, name] : rows)
    trace.push_back({{"name", "process_name"}, {"ph", "M"}, {"pid", pid}, {"args", {{"name", name}}}});
  std::ofstream f(path);
  if (!f) throw Error("cannot write the GPU trace to " + path);
  f << nlohmann::json{{"traceEvents", trace}, {"displayTimeUnit", "ms"}}.dump() << "\n";
  if (!f) throw Error("could not write the GPU trace to " + path);
  std::vector<KernelTotal> out;
  for (auto& [n, t] : totals) out.push_back(t);
  std::sort(out.begin(), out.end(), [](const KernelTotal& a, const KernelTotal& b) { return a.ms > b.ms; });
  return out;
}
#endif

}  // namespace samfast
