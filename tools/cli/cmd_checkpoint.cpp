// `samfast info` and `samfast make-checkpoint`.
#include <filesystem>
#include <iostream>

#include "commands.h"
#include "io/checkpoint.h"
#include "samfast/error.h"

namespace samfast::cli {

Runner add_info(CLI::App& app) {
  auto* cmd = app.add_subcommand("info", "Print a checkpoint's inferred config and parameter count");
  auto path = std::make_shared<std::string>();
  cmd->add_option("checkpoint", *path, "checkpoint file (.pth or .safetensors)")->required();
  return [path] {
    ModelOptions cpu;
    cpu.device = "cpu";  // reading shapes needs no GPU
    Model m = Model::load(*path, cpu);
    std::cout << m.config().describe() << "parameters: " << m.parameter_count() << "\n";
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
  cmd->add_option("--seed", a->seed, "random seed");
  cmd->add_option("--out", a->out, "output file: .pth (PyTorch zip) or .safetensors")->required();
  cmd->add_flag("--overwrite", a->overwrite, "replace an existing output file");
  return [a] {
    if (std::filesystem::exists(a->out) && !a->overwrite)
      throw Error(a->out + " already exists (pass --overwrite to replace it)");
    auto tensors = Model::synthetic_tensors(SamConfig::preset(a->model), a->seed);
    const bool st = a->out.size() > 12 && a->out.substr(a->out.size() - 12) == ".safetensors";
    if (st)
      save_safetensors(tensors, a->out);
    else
      save_pth(tensors, a->out);
    std::cerr << "wrote synthetic " << a->model << " checkpoint (seed " << a->seed << ", random weights) to " << a->out << "\n";
    return 0;
  };
}

}  // namespace samfast::cli
