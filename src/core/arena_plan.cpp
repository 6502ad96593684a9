#include "core/arena_plan.h"

#include <algorithm>
#include <numeric>

namespace samfast {

void ArenaTracer::on_get(void* p, size_t bytes) {
  if (live_.count(p)) overlapped_ = true;
  live_[p] = trace_.buffers.size();
  trace_.buffers.push_back({bytes, events_++, ArenaTrace::kNever});
}

void ArenaTracer::on_put(void* p) {
  auto it = live_.find(p);
  if (it == live_.end()) return;
  trace_.buffers[it->second].died = events_++;
  live_.erase(it);
}

ArenaTrace ArenaTracer::finish() {
  ArenaTrace t = std::move(trace_);
  *this = ArenaTracer();
  return t;
}

ArenaPlan plan_arena(const ArenaTrace& trace) {
  const auto& bufs = trace.buffers;
  const size_t n = bufs.size();
  auto rounded = [](size_t b) { return (b + ArenaPlan::kAlign - 1) / ArenaPlan::kAlign * ArenaPlan::kAlign; };
  auto overlap = [&](size_t i, size_t j) { return bufs[i].born < bufs[j].died && bufs[j].born < bufs[i].died; };
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(), [&](size_t i, size_t j) { return bufs[i].bytes > bufs[j].bytes; });
  ArenaPlan plan;
  plan.offsets.assign(n, 0);
  std::vector<size_t> placed;
  std::vector<std::pair<size_t, size_t>> taken;  // [begin, end) of placed buffers alive with the one being placed
  for (size_t i : order) {
    taken.clear();
    for (size_t j : placed)
      if (overlap(i, j)) taken.emplace_back(plan.offsets[j], plan.offsets[j] + rounded(bufs[j].bytes));
    std::sort(taken.begin(), taken.end());
    size_t at = 0;
    const size_t need = rounded(bufs[i].bytes);
    for (const auto& [b, e] : taken) {
      if (b >= at + need) break;  // the gap before this one fits
      at = std::max(at, e);
    }
    plan.offsets[i] = at;
    plan.bytes = std::max(plan.bytes, at + need);
    placed.push_back(i);
  }
  return plan;
}

}  // namespace samfast
