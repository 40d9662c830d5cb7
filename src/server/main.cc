// cubby-serve: `cubby serve` (the CLI execs this binary, so the CLI itself
// stays small and quick to start). Flags as in docs/openapi.json's info.
#include <CLI/CLI.hpp>
#include <iostream>

#include "base/log.h"
#include "server/server.h"

int main(int argc, char** argv) {
  cubby::server::Options o;
  CLI::App app("Serve the cubby REST + WebSocket API", "cubby serve");
  app.add_option("--home", o.home, "cubby's home (default: $CUBBY_HOME, else the default home)");
  app.add_option("--socket", o.socket_path, "Unix socket (default: HOME/cubby.sock, mode 0660)");
  app.add_option("--listen", o.listen, "Also listen on TCP ADDR:PORT (needs --token-file)");
  app.add_option("--token-file", o.token_file, "File holding the bearer token TCP clients must send");
  app.add_option("--tls-cert", o.tls_cert, "TLS certificate chain (PEM) for --listen");
  app.add_option("--tls-key", o.tls_key, "TLS private key (PEM) for --listen");
  app.add_option("--idle-exit", o.idle_exit, "Exit after this many seconds with no connection and no request (0: never)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--io-timeout", o.io_timeout,
                 "Seconds a request or reply under way may make no progress before the server gives up (408)")
      ->check(CLI::PositiveNumber);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::cout << app.help();
    return 0;
  } catch (const CLI::ParseError& e) {
    std::string what = e.what();
    std::cerr << "cubby serve: " << what.substr(0, what.find('\n')) << "\n";
    return 125;
  }
  cubby::server::Server srv(std::move(o));
  return srv.run();
}
