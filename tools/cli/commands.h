// Subcommands of the samfast CLI; each registers its options on the app and returns what runs it
// when it is the one chosen.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>

namespace samfast::cli {

using Runner = std::function<int()>;
Runner add_segment(CLI::App& app);
Runner add_info(CLI::App& app);
Runner add_make_checkpoint(CLI::App& app);
Runner add_bench(CLI::App& app);
Runner add_everything(CLI::App& app);

}  // namespace samfast::cli
