// Checkpoint files: PyTorch's zip format (read through a restricted unpickler that never executes
// anything) and safetensors. Tensors come back as fp32 whatever their stored dtype (f32/f16/bf16).
#pragma once
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "samfast/tensor.h"

namespace samfast {

struct LoadedTensor {
  std::string dtype;  // as stored: "float32", "float16" or "bfloat16"
  Tensor value;       // fp32, contiguous
};
using StateDict = std::map<std::string, LoadedTensor>;

// Reads a .pth (PyTorch zip) or .safetensors file, chosen by content, not by name.
// Throws samfast::Error naming the file and what is wrong with it.
StateDict load_checkpoint(const std::string& path);
StateDict load_pth(const std::string& path);
StateDict load_safetensors(const std::string& path);
// The same from bytes in memory (used by the fuzz target and tests); `what` names the source.
StateDict load_pth_bytes(const std::vector<uint8_t>& bytes, const std::string& what);
StateDict load_safetensors_bytes(const std::vector<uint8_t>& bytes, const std::string& what);

// Writes a state_dict (in the given order) as torch.save would: a zip archive with data.pkl
// (pickle protocol 2: OrderedDict of torch._utils._rebuild_tensor_v2 over FloatStorage) and
// data/N storages, readable by torch.load. Writes to a temporary name, then renames.
void save_pth(const std::vector<std::pair<std::string, Tensor>>& tensors, const std::string& path);
void save_safetensors(const std::vector<std::pair<std::string, Tensor>>& tensors, const std::string& path);

}  // namespace samfast
