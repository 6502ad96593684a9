// Subcommands of the samfast CLI; each registers its options on the app and runs when chosen.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <string>

#include "samfast/model.h"

namespace samfast::cli {

using Runner = std::function<int()>;
Runner add_segment(CLI::App& app);
Runner add_info(CLI::App& app);
Runner add_make_checkpoint(CLI::App& app);
Runner add_bench(CLI::App& app);

// --device and --precision, shared by the commands that run the model.
void add_backend_options(CLI::App* cmd, ModelOptions& options);
// The checkpoint to use: the file if given, otherwise synthetic weights for `model` (with a loud
// warning on stderr that masks from random weights are meaningless). Says on stderr when the
// backend differs from the one asked for (no GPU: CPU).
Model load_or_synthesize(const std::string& checkpoint, const std::string& model, uint64_t seed,
                         const ModelOptions& options);
double now_ms();

}  // namespace samfast::cli
