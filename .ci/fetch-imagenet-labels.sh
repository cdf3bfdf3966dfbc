#!/usr/bin/env bash
# Fetches the ImageNet-1k class lists timm ships (PyPI `timm` wheel, no PyTorch needed: the wheel
# is only unpacked), verifies the wheel's sha256, and keeps the two files in the asset cache
# outside the clone: imagenet_synsets.txt (the 1000 WordNet ids in the classifiers' order) and
# imagenet_synset_to_lemma.txt (their names). Prints the directory.
#
#   .ci/fetch-imagenet-labels.sh [DEST]    DEST defaults to $AISERVE_ASSETS or ~/.cache/aiserve-assets
set -euo pipefail
dest=${1:-${AISERVE_ASSETS:-$HOME/.cache/aiserve-assets}}/imagenet
version=1.0.31
wheel=timm-$version-py3-none-any.whl
sha=5bd50f7d0fe6d09bf9285ac2523234a1b7e6bf075c0be3e7aed09139fcb617c7
if [ ! -f "$dest/imagenet_synsets.txt" ] || [ ! -f "$dest/imagenet_synset_to_lemma.txt" ]; then
  echo "fetching ImageNet class names (timm $version wheel) ..." >&2
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" "timm==$version"
  echo "$sha  $tmp/$wheel" | sha256sum -c --quiet - || { echo "timm wheel: sha256 mismatch" >&2; exit 1; }
  mkdir -p "$dest"
  python3 - "$tmp/$wheel" "$dest" <<'PY'
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for name in ("imagenet_synsets.txt", "imagenet_synset_to_lemma.txt"):
        with open(os.path.join(sys.argv[2], name + ".tmp"), "wb") as out:
            out.write(z.read("timm/data/_info/" + name))
        os.rename(os.path.join(sys.argv[2], name + ".tmp"), os.path.join(sys.argv[2], name))
PY
fi
echo "$dest"
