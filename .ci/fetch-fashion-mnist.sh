#!/usr/bin/env bash
# Fetches Fashion-MNIST (Zalando's, MIT) as Debian's dataset-fashion-mnist package (`apt-get
# download`, no root needed), verifies its sha256 and unpacks it into the asset cache outside the
# clone. Prints the directory holding the four IDX files (MNIST's names, gzipped).
#
#   .ci/fetch-fashion-mnist.sh [DEST]    DEST defaults to $AISERVE_ASSETS or ~/.cache/aiserve-assets
set -euo pipefail
dest=${1:-${AISERVE_ASSETS:-$HOME/.cache/aiserve-assets}}/fashion-mnist
dir="$dest/usr/share/datasets/fashion-mnist"
if [ ! -f "$dir/t10k-labels-idx1-ubyte.gz" ]; then
  echo "fetching Fashion-MNIST (Debian dataset-fashion-mnist, 31 MB) ..." >&2
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && apt-get download -q 'dataset-fashion-mnist=0.0~git20200523.55506a9-1' >/dev/null 2>&1) \
    || { echo "apt-get download failed (Debian's package registry must be reachable)" >&2; exit 1; }
  sha256sum -c --quiet - <<SUMS || { echo "fashion-mnist: sha256 mismatch" >&2; exit 1; }
39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0  $tmp/dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb
SUMS
  mkdir -p "$dest"
  dpkg-deb -x "$tmp"/*.deb "$dest"
fi
echo "$dir"
