#!/usr/bin/env bash
# Installs what the UI tests drive a real browser with: Debian's headless Chromium
# (chromium-headless-shell) and playwright-core from npm (a CDP client; it downloads no browser
# of its own) into the tool cache outside the clone, unless they are there, and prints the
# directory holding node_modules/playwright-core. Seconds once the packages are cached.
#
#   scripts/install-browser.sh            # prints e.g. /root/.cache/sluice-tools/browser
#   SLUICE_TOOLS=DIR scripts/install-browser.sh
set -euo pipefail
tools="${SLUICE_TOOLS:-$HOME/.cache/sluice-tools}"
dir="$tools/browser"
need=()
command -v chromium-headless-shell >/dev/null 2>&1 || need+=(chromium-headless-shell)
command -v node >/dev/null 2>&1 || need+=(nodejs npm)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} (one time)" >&2
  apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" >&2
fi
if [ ! -f "$dir/node_modules/playwright-core/package.json" ]; then
  echo "installing playwright-core into $dir (one time)" >&2
  mkdir -p "$dir"
  (cd "$dir" && npm install --silent --no-audit --no-fund --no-save playwright-core@1.65.2 >&2)
fi
echo "$dir"
