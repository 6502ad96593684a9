// What several samfast commands share: the options that choose the weights, the device and the
// generator, registered once here, and the helpers their runs have in common.
#pragma once
#include <CLI/CLI.hpp>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "samfast/image.h"
#include "samfast/mask_generator.h"
#include "samfast/model.h"

namespace samfast::cli {

// --checkpoint, or synthetic weights of --model drawn with --seed.
struct WeightsChoice {
  std::string checkpoint, model = "vit_b";
  uint64_t seed = 0;
};
void add_weights_options(CLI::App* cmd, WeightsChoice& weights);
// --seed of synthetic weights: a whole number 0..2^64-1 (CLI11 alone saturates a larger one and
// names a range up to 1.8e308 for a negative one).
void add_seed_option(CLI::App* cmd, uint64_t& seed, const std::string& help);
// The checkpoint if one is given, otherwise the synthetic model (with a loud warning on stderr that
// masks from random weights are meaningless).
Model load_model(const WeightsChoice& weights, const ModelOptions& options);

// --device, --precision and --no-graphs.
void add_backend_options(CLI::App* cmd, ModelOptions& options);

// --exif apply|ignore: whether a JPEG's EXIF orientation turns the image (default: apply, as
// OpenCV's imread in upstream's scripts does).
void add_exif_option(CLI::App* cmd, std::string& exif);
ExifOrientation exif_choice(const std::string& exif);

// SamAutomaticMaskGenerator's options under amg.py's flag names (--points-per-side, ...), for
// `everything` and `bench --amg`. (--output-mode is each command's own: a file format for one, the
// generator's record form for the other.)
void add_generator_options(CLI::App* cmd, MaskGeneratorOptions& gen);

// Throws Error unless `dir` is a folder that can be written into, or can be created in a writable
// one: checked before any work, so that a refused run creates nothing.
void check_output_folder(const std::filesystem::path& dir, const std::string& flag);

// "cuda:0 (NVIDIA H100 ...), bf16", with the reason when the backend is not the one asked for (no
// GPU: the CPU). Commands print it in their closing line, so that an error stays a single line.
std::string device_summary(const Model& m);

double now_ms();

// `s` for a terminal line: control characters (C0, DEL, and C1 as UTF-8 encodes them) escaped as
// "\x1b", everything else (backslashes, UTF-8 names) as it is. File names from a folder listing
// and messages that quote them pass through it, so a crafted name cannot move the cursor, recolour
// or retitle the terminal, or forge a line of the report.
std::string for_terminal(std::string_view s);

}  // namespace samfast::cli
