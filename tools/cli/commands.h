// Subcommands of the samfast CLI; each registers its options on the app and runs when chosen.
#pragma once
#include <CLI/CLI.hpp>
#include <filesystem>
#include <functional>
#include <string>

#include "samfast/image.h"
#include "samfast/model.h"

namespace samfast::cli {

using Runner = std::function<int()>;
Runner add_segment(CLI::App& app);
Runner add_info(CLI::App& app);
Runner add_make_checkpoint(CLI::App& app);
Runner add_bench(CLI::App& app);
Runner add_everything(CLI::App& app);

// --exif apply|ignore: whether a JPEG's EXIF orientation turns the image (default: apply, as
// OpenCV's imread in upstream's scripts does).
void add_exif_option(CLI::App* cmd, std::string& exif);
ExifOrientation exif_choice(const std::string& exif);
// --device, --precision and --no-graphs, shared by the commands that run the model.
void add_backend_options(CLI::App* cmd, ModelOptions& options);
// The checkpoint to use: the file if given, otherwise synthetic weights for `model` (with a loud
// warning on stderr that masks from random weights are meaningless).
Model load_or_synthesize(const std::string& checkpoint, const std::string& model, uint64_t seed,
                         const ModelOptions& options);
double now_ms();
// Throws Error unless `dir` is a folder that can be written into, or can be created in a writable
// one: checked before any work, so that a refused run creates nothing.
void check_output_folder(const std::filesystem::path& dir, const std::string& flag);
// "cuda:0 (NVIDIA H100 ...), bf16", with the reason when the backend is not the one asked for (no
// GPU: the CPU). Commands print it in their closing line, so that an error stays a single line.
std::string device_summary(const Model& m);

}  // namespace samfast::cli
