// samfast command line: a thin client of the library. Errors become one line on stderr and exit 1.
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <iostream>

#include "commands.h"
#include "samfast/error.h"

namespace samfast::cli {

std::string device_summary(const Model& m) {
  return m.device() + ", " + m.precision() + (m.backend_note().empty() ? "" : " (" + m.backend_note() + ")");
}

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void add_exif_option(CLI::App* cmd, std::string& exif) {
  cmd->add_option("--exif", exif, "apply (default: turn JPEGs as their EXIF orientation says, as OpenCV's imread does) "
                  "or ignore (use the stored pixels, as PIL's Image.open does)")
      ->check(CLI::IsMember({"apply", "ignore"}));
}

ExifOrientation exif_choice(const std::string& exif) {
  return exif == "ignore" ? ExifOrientation::ignore : ExifOrientation::apply;
}

void add_backend_options(CLI::App* cmd, ModelOptions& options) {
  cmd->add_option("--device", options.device, "auto (a CUDA GPU if there is one), cpu, cuda or cuda:N");
  cmd->add_option("--precision", options.precision, "auto (bf16 on a GPU, fp32 on the CPU), fp32, bf16, fp16, or fp8 (bf16 with the image encoder's "
                 "Linear layers in fp8: faster, less exact)")
      ->check(CLI::IsMember({"auto", "fp32", "bf16", "fp16", "fp8"}));
  cmd->add_flag_callback("--no-graphs", [&options] { options.cuda_graphs = false; },
                         "on a GPU, launch every kernel from the host instead of replaying CUDA graphs of the encoder and decoder");
}

void check_output_folder(const std::filesystem::path& dir, const std::string& flag) {
  namespace fs = std::filesystem;
  const std::string named = flag + " " + dir.string();
  std::error_code ec;
  const fs::file_status st = fs::status(dir, ec);
  if (fs::exists(st)) {
    if (!fs::is_directory(st)) throw Error(named + " exists and is not a folder");
    if (::access(dir.c_str(), W_OK | X_OK) != 0) throw Error(named + " is not writable: " + std::strerror(errno));
    return;
  }
  if (fs::exists(fs::symlink_status(dir, ec))) throw Error(named + " is a symlink to nothing (or a symlink loop)");
  fs::path parent = fs::absolute(dir).parent_path();
  while (!fs::exists(fs::symlink_status(parent, ec)) && parent != parent.parent_path()) parent = parent.parent_path();
  if (!fs::is_directory(parent, ec)) throw Error(named + " cannot be created: " + parent.string() + " is not a folder");
  if (::access(parent.c_str(), W_OK | X_OK) != 0)
    throw Error(named + " cannot be created in " + parent.string() + ": " + std::strerror(errno));
}

Model load_or_synthesize(const std::string& checkpoint, const std::string& model, uint64_t seed,
                         const ModelOptions& options) {
  if (!checkpoint.empty()) return Model::load(checkpoint, options);
  std::cerr << "WARNING: no --checkpoint given: using a SYNTHETIC " << model << " model with RANDOM weights (seed "
            << seed << ").\nWARNING: its masks are MEANINGLESS; pass --checkpoint sam_vit_b_01ec64.pth (or l/h) for real ones.\n";
  return Model::from_tensors(Model::synthetic_tensors(SamConfig::preset(model), seed), options);
}

}  // namespace samfast::cli

int main(int argc, char** argv) {
  using namespace samfast::cli;
  CLI::App app{"samfast: Segment Anything (SAM v1) inference"};
  app.require_subcommand(1);
  Runner segment = add_segment(app), info = add_info(app), make = add_make_checkpoint(app), bench = add_bench(app),
         everything = add_everything(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // A first word that is no option and no command is a mistyped command: say so, not CLI11's
    // "The following argument was not expected".
    if (argc > 1 && argv[1][0] != '-' && app.get_subcommands().empty()) {
      std::string names;
      for (const CLI::App* sub : app.get_subcommands({})) names += (names.empty() ? "" : ", ") + sub->get_name();
      std::cerr << "samfast: unknown command '" << argv[1] << "' (commands: " << names << "; see samfast --help)\n";
      return 2;
    }
    std::cerr << "samfast: " << e.what() << " (see samfast --help)\n";
    return 2;
  }
  try {
    for (auto* sub : app.get_subcommands()) {
      const std::string n = sub->get_name();
      if (n == "segment") return segment();
      if (n == "info") return info();
      if (n == "make-checkpoint") return make();
      if (n == "bench") return bench();
      if (n == "everything") return everything();
    }
  } catch (const std::exception& e) {
    std::cerr << "samfast: error: " << e.what() << "\n";
    return 1;
  }
  return 1;
}
