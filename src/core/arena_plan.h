// Offsets in one arena for the buffers of a recorded computation (a CUDA graph replays with the
// pointers it was recorded with, so they are fixed once, at the recording), planned from the order
// in which the computation's eager run asked for buffers and gave them back (its trace): two
// buffers share bytes only where their lifetimes do not overlap. Every graph of a backend replays
// on one stream, one at a time, so all of them can share one arena as large as the largest plan.
#pragma once
#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <vector>

namespace samfast {

struct ArenaTrace {
  struct Buffer {
    size_t bytes;
    int64_t born, died;  // event numbers (asks and returns counted together); died: kNever if kept
    bool operator==(const Buffer& o) const { return bytes == o.bytes && born == o.born && died == o.died; }
  };
  static constexpr int64_t kNever = INT64_MAX;  // still held when the computation ended (its outputs)
  std::vector<Buffer> buffers;                  // in the order they were asked for
  bool operator==(const ArenaTrace& o) const { return buffers == o.buffers; }
  bool operator!=(const ArenaTrace& o) const { return !(*this == o); }
};

// Builds a trace from get/put events. Returns of pointers it did not hand out (buffers from before
// the trace began) are not part of it and are ignored.
class ArenaTracer {
 public:
  void on_get(void* p, size_t bytes);
  void on_put(void* p);
  // A pointer handed out while an earlier buffer with it was still held (an arena plan gone wrong).
  bool overlapped() const { return overlapped_; }
  ArenaTrace finish();

 private:
  ArenaTrace trace_;
  std::unordered_map<void*, size_t> live_;  // pointer -> buffer index
  int64_t events_ = 0;
  bool overlapped_ = false;
};

struct ArenaPlan {
  std::vector<size_t> offsets;  // of trace.buffers[i] from the arena's start (multiples of kAlign)
  size_t bytes = 0;             // the arena this plan needs
  static constexpr size_t kAlign = 256;
};

// Largest buffers first, each at the lowest offset clear of every placed buffer whose lifetime
// overlaps its own.
ArenaPlan plan_arena(const ArenaTrace& trace);

}  // namespace samfast
