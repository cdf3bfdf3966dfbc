#!/usr/bin/env bash
# Fetches the fonts the OCR checks render text with, as Debian packages (`apt-get download`,
# no root needed), verifies their sha256 and unpacks them into the asset cache outside the clone:
# DejaVu (Latin) and WenQuanYi Zen Hei (Chinese). Prints the fonts directory.
#
#   .ci/fetch-fonts.sh [DEST]    DEST defaults to $AISERVE_ASSETS or ~/.cache/aiserve-assets
set -euo pipefail
dest=${1:-${AISERVE_ASSETS:-$HOME/.cache/aiserve-assets}}/fonts
want() { [ -f "$dest/usr/share/fonts/truetype/$1" ]; }
if ! want dejavu/DejaVuSans.ttf || ! want wqy/wqy-zenhei.ttc; then
  echo "fetching fonts (Debian fonts-dejavu-core, fonts-wqy-zenhei) ..." >&2
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && apt-get download -q fonts-dejavu-core=2.37-6 fonts-wqy-zenhei=0.9.45-8 >/dev/null 2>&1) \
    || { echo "apt-get download failed (Debian's package registry must be reachable)" >&2; exit 1; }
  sha256sum -c --quiet - <<SUMS || { echo "fonts: sha256 mismatch" >&2; exit 1; }
8892669e51aab4dc56682c8e39d8ddb7d70fad83c369344e1e240bf3ca22bb76  $tmp/fonts-dejavu-core_2.37-6_all.deb
cfed2c29164ff2f133e40ed2046610b172b8618d174840936ac4ec9b6fd668e7  $tmp/fonts-wqy-zenhei_0.9.45-8_all.deb
SUMS
  mkdir -p "$dest"
  for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$dest"; done
fi
echo "$dest/usr/share/fonts/truetype"
