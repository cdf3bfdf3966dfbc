#!/usr/bin/env bash
# Validates everything in deploy/ and the Dockerfile offline, with the tools of
# .ci/install-k8s-tools.sh (from the package registries):
#   - hadolint on the Dockerfile;
#   - `helm lint --strict` on the chart, and the chart rendered with its defaults and with every
#     option on (API keys, object storage and its credentials, extra settings);
#   - every rendered manifest and deploy/kubernetes/ against the Kubernetes schemas
#     (kubernetes-validate --strict: unknown fields fail) of the oldest and newest versions the
#     chart supports;
#   - deploy/kubernetes/aiserve.yaml equal to the chart rendered with its defaults (regenerate:
#     deploy/check.sh --write);
#   - the KServe runtime and InferenceService with deploy/kserve_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=$(.ci/install-k8s-tools.sh)
helm="$tools/bin/helm"
validate() { "$tools/venv/bin/kubernetes-validate" --strict --quiet -k "$1" "${@:2}"; }
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
export HELM_CACHE_HOME="$out/helm-cache" HELM_CONFIG_HOME="$out/helm-config" HELM_DATA_HOME="$out/helm-data"

"$tools/bin/hadolint" Dockerfile
echo "Dockerfile: hadolint OK"

"$helm" lint --strict deploy/helm/aiserve >/dev/null
"$helm" template aiserve deploy/helm/aiserve --namespace models > "$out/default.yaml"
"$helm" template aiserve deploy/helm/aiserve --namespace models \
  --set repository=s3://my-models/prod --set repositoryCredentialsSecret=aiserve-s3 \
  --set apiKeysSecret=aiserve-keys --set replicaCount=3 --set podDisruptionBudget.maxUnavailable=1 \
  --set 'extraEnv[0].name=AISERVE_MAX_BODY_BYTES' --set-string 'extraEnv[0].value=16777216' > "$out/options.yaml"
echo "chart: helm lint --strict OK, rendered with defaults and with every option"
grep -q 'name: AISERVE_API_KEYS_FILE' "$out/options.yaml" && grep -q 'secretName: aiserve-keys' "$out/options.yaml" \
  && grep -q 'terminationGracePeriodSeconds: 45' "$out/default.yaml" \
  || { echo "the rendered chart lacks the key file, its Secret or the grace period" >&2; exit 1; }

if [ "${1:-}" = --write ]; then
  { echo "# Rendered from deploy/helm/aiserve with its defaults (deploy/check.sh --write); edit the chart, not this."
    cat "$out/default.yaml"; } > deploy/kubernetes/aiserve.yaml
fi
if ! diff -q <(tail -n +2 deploy/kubernetes/aiserve.yaml) "$out/default.yaml" >/dev/null; then
  diff <(tail -n +2 deploy/kubernetes/aiserve.yaml) "$out/default.yaml" | head -20 >&2
  echo "deploy/kubernetes/aiserve.yaml differs from the chart's rendering: run deploy/check.sh --write" >&2
  exit 1
fi

for k in 1.25.0 1.37.0; do
  validate "$k" "$out/default.yaml" "$out/options.yaml" deploy/kubernetes/*.yaml
  echo "Kubernetes $k schemas (strict): OK"
done
"$tools/venv/bin/python" deploy/kserve_check.py deploy/kserve/*.yaml
