#!/usr/bin/env bash
# Installs Debian's headless Chromium for the web view's browser tests
# (cmd/aml, driven by chromedp). Idempotent: when it is present it only prints
# its version. Tests find it as /usr/bin/chromium (or $AML_CHROMIUM).
set -euo pipefail

have() { command -v chromium >/dev/null || [ -x /usr/bin/chromium ]; }

if ! have; then
  if ! command -v apt-get >/dev/null; then
    echo "install-chromium: chromium missing and apt-get is not available" >&2
    exit 1
  fi
  if [ "$(id -u)" != 0 ]; then
    echo "install-chromium: chromium missing; run as root to install it (apt-get install chromium)" >&2
    exit 1
  fi
  log=$(mktemp)
  trap 'rm -f "$log"' EXIT
  export DEBIAN_FRONTEND=noninteractive
  # One apt-get update, then the package (fonts come with it as dependencies,
  # so screenshots show text).
  if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core; } >"$log" 2>&1; then
    echo "install-chromium: apt-get failed:" >&2
    tail -n 30 "$log" >&2
    exit 1
  fi
  have || { echo "install-chromium: installed, but chromium is still missing" >&2; exit 1; }
fi
echo "chromium: $( (chromium --version || /usr/bin/chromium --version) 2>/dev/null | head -1)"
