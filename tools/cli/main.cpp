// samfast command line: a thin client of the library. Errors become one line on stderr and exit 1.
#include <iostream>

#include "commands.h"
#include "options.h"
#include "samfast/error.h"

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
      std::cerr << "samfast: unknown command '" << for_terminal(argv[1]) << "' (commands: " << names << "; see samfast --help)\n";
      return 2;
    }
    std::cerr << "samfast: " << for_terminal(e.what()) << " (see samfast --help)\n";
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
    std::cerr << "samfast: error: " << for_terminal(e.what()) << "\n";
    return 1;
  }
  return 1;
}
