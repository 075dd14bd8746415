#!/usr/bin/env bash
# Vendors the portal's front-end packages: installs exactly what
# package-lock.json pins, then copies the built files the pages load into
# portal/static/vendor/ (served by the broker) and axe-core into
# e2e/testdata/ (used only by the browser tests), with a licence list.
# Run through `make assets`; `go build` never needs Node.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --ignore-scripts --no-audit --no-fund --silent
out=../static/vendor
rm -rf "$out"
mkdir -p "$out/xterm" "$out/asciinema-player" ../../e2e/testdata
cp node_modules/@xterm/xterm/lib/xterm.js node_modules/@xterm/xterm/css/xterm.css node_modules/@xterm/xterm/LICENSE "$out/xterm/"
cp node_modules/@xterm/addon-fit/lib/addon-fit.js "$out/xterm/"
cp node_modules/asciinema-player/dist/bundle/asciinema-player.min.js \
   node_modules/asciinema-player/dist/bundle/asciinema-player.css "$out/asciinema-player/"
cp node_modules/asciinema-player/LICENSE "$out/asciinema-player/" 2>/dev/null || true
cp node_modules/axe-core/axe.min.js ../../e2e/testdata/axe.min.js

# The licence list: every vendored package, its pinned version and licence.
{
  echo "# Vendored front-end packages"
  echo
  echo "Made by \`make assets\` from portal/assets/package-lock.json; do not edit."
  echo
  echo "| package | version | licence | files |"
  echo "|---|---|---|---|"
  for p in @xterm/xterm @xterm/addon-fit asciinema-player solid-js seroval seroval-plugins axe-core; do
    node -e '
      const p = require("./node_modules/" + process.argv[1] + "/package.json");
      const where = { "@xterm/xterm": "xterm/", "@xterm/addon-fit": "xterm/addon-fit.js", "asciinema-player": "asciinema-player/", "axe-core": "e2e/testdata/axe.min.js (tests only)",
        "solid-js": "bundled in asciinema-player.min.js", "seroval": "bundled in asciinema-player.min.js", "seroval-plugins": "bundled in asciinema-player.min.js" };
      console.log(`| ${p.name} | ${p.version} | ${p.license} | ${where[p.name]} |`);
    ' "$p"
  done
} > "$out/LICENSES.md"
echo "vendored into portal/static/vendor and e2e/testdata:"
find "$out" ../../e2e/testdata/axe.min.js -type f | sort
