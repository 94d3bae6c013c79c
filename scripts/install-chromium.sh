#!/usr/bin/env bash
# Install Debian's headless-capable Chromium for the report's browser test (tests/reports/test_browser.py).
#   bash scripts/install-chromium.sh      # no-op when a chromium binary is already on PATH
# Needs root (or sudo) and apt-get; elsewhere it says so and exits 0, and the browser test skips
# with a reason. No browser is downloaded from anywhere but the distribution's own archive.
set -euo pipefail
for name in chromium chromium-browser google-chrome; do
  if command -v "$name" >/dev/null 2>&1; then
    echo "chromium present: $(command -v "$name")" >&2
    exit 0
  fi
done
if ! command -v apt-get >/dev/null 2>&1; then
  echo "no apt-get here: install Chromium yourself to run the browser test (it skips otherwise)" >&2
  exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
    echo "not root and no sudo: cannot install chromium (the browser test will skip)" >&2
    exit 0
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core
echo "installed: $(command -v chromium)" >&2
