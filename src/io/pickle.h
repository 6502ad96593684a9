// The pickle side of PyTorch's checkpoint format. Reading is a restricted unpickler: it knows the
// few opcodes and globals a state_dict uses, builds plain values from them, and never executes
// anything. Writing emits what torch.save emits for a state_dict of fp32 tensors (protocol 2).
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace samfast::pickle {

// A tensor as torch._utils._rebuild_tensor_v2 describes it: a strided view into a storage, which
// lives in the archive as data/<storage_key>.
struct TensorRef {
  std::string storage_key;
  std::string dtype;  // "float32", "float16", "bfloat16", or an unsupported one such as "int64"
  int64_t storage_offset = 0;
  std::vector<int64_t> size, stride;
};

// Parses data.pkl into name -> tensor, in file order; a name given twice keeps its first place and
// its last tensor, as in a Python dict. The top level must be a dict of tensors, or a dict holding
// one under "state_dict" or "model". What a crafted pickle can make it build is bounded (objects,
// memo entries, bytes of metadata, dimensions per tensor, entries); each error names the limit hit.
// `what` begins every error message.
std::vector<std::pair<std::string, TensorRef>> read_state_dict(std::span<const uint8_t> pkl,
                                                               const std::string& what);

struct TensorToWrite {
  std::string name;
  std::vector<int64_t> shape;  // contiguous fp32; its storage is data/<position in the list>
};

// data.pkl for torch.save's layout: an OrderedDict of _rebuild_tensor_v2 over FloatStorage.
std::string write_state_dict(const std::vector<TensorToWrite>& tensors);

}  // namespace samfast::pickle
