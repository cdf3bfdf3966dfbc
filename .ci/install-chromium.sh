#!/usr/bin/env bash
# Installs Debian's Chromium and ChromeDriver (packages chromium, chromium-driver) for the
# playground's browser check, once per machine: /usr/bin/chromium and /usr/bin/chromedriver.
# apt verifies the packages against Debian's signed archive. Not pinned to a version: Debian
# replaces Chromium with each security release and drops the old one from its archive.
# About 100 MB to download and a minute to install, cold; nothing when already there.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
echo "installing Debian's chromium and chromium-driver ..." >&2
$sudo apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null
chromium --version >&2
