// `samfast info` and `samfast make-checkpoint`.
#include <algorithm>
#include <cctype>
#include <filesystem>
#include <iostream>

#include "commands.h"
#include "options.h"
#include "samfast/checkpoint.h"
#include "samfast/error.h"
#include "samfast/safe_file.h"

namespace samfast::cli {

Runner add_info(CLI::App& app) {
  auto* cmd = app.add_subcommand("info", "Print a checkpoint's inferred config and parameter count");
  struct Args {
    std::string path;
    int64_t batch = 0, prompts = 16;
    ModelOptions options;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("checkpoint", a->path, "checkpoint file (.pth or .safetensors)")->required();
  cmd->add_option("--plan-batch", a->batch,
                  "also load it on --device and print the device memory for encoding this many images at a time")
      ->check(CLI::Range(1, 256));
  cmd->add_option("--plan-prompts", a->prompts, "with --plan-batch: single-point prompts decoded an image")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  add_backend_options(cmd, a->options);
  return [a] {
    ModelOptions options = a->options;
    if (a->batch == 0) options.device = "cpu";  // reading shapes needs no GPU
    Model m = Model::load(a->path, options);
    std::cout << m.config().describe() << "parameters: " << m.parameter_count() << "\n";
    if (a->batch == 0) return 0;
    const Model::MemoryPlan plan = m.plan_memory(a->batch, a->prompts);
    auto gib = [](int64_t b) { return std::to_string(b / double(1 << 30)).substr(0, 6) + " GiB"; };
    if (m.device() == "cpu")
      std::cout << "device memory: not tracked on the CPU (" << device_summary(m) << ")\n";
    else
      std::cout << "device memory at batch " << a->batch << " with " << a->prompts << " prompts an image on "
                << device_summary(m) << ": peak " << gib(plan.peak) << " (weights " << gib(plan.weights)
                << " in one allocation, CUDA-graph arena " << gib(plan.graph_arena) << ")\n";
    return 0;
  };
}

Runner add_make_checkpoint(CLI::App& app) {
  auto* cmd = app.add_subcommand("make-checkpoint", "Write a synthetic (random-weight) checkpoint in the official format");
  struct Args {
    std::string model = "vit_b", out;
    uint64_t seed = 0;
    bool overwrite = false;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--model", a->model, "vit_b, vit_l, vit_h or tiny")->check(CLI::IsMember({"vit_b", "vit_l", "vit_h", "tiny"}));
  add_seed_option(cmd, a->seed, "random seed");
  cmd->add_option("--out", a->out, "output file: .pth (PyTorch zip) or .safetensors")->required();
  cmd->add_flag("--overwrite", a->overwrite, "replace an existing output file");
  return [a] {
    if (a->out.empty()) throw Error("--out is empty: name a file (.pth or .safetensors)");
    if (std::filesystem::exists(std::filesystem::symlink_status(a->out)) && !a->overwrite)
      throw Error(a->out + " already exists (pass --overwrite to replace it)");
    require_replaceable(a->out);  // before the work: /dev/null or a symlink is refused, never replaced
    auto tensors = Model::synthetic_tensors(SamConfig::preset(a->model), a->seed);
    std::string ext = std::filesystem::path(a->out).extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return (char)std::tolower(c); });
    if (ext == ".safetensors")
      save_safetensors(tensors, a->out);
    else
      save_pth(tensors, a->out);
    std::cerr << "wrote synthetic " << a->model << " checkpoint (seed " << a->seed << ", random weights) to " << a->out << "\n";
    return 0;
  };
}

}  // namespace samfast::cli
