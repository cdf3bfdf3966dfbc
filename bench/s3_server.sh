#!/usr/bin/env bash
# The S3-compatible server that the object-storage checks and bench/replicas.sh run on loopback:
# moto's server mode (PyPI `moto[server]`, pinned), in a venv cached outside the clone
# ($AISERVE_S3_VENV, default ~/.cache/aiserve-s3; about 40 MB, a minute cold).
#
# Why moto: it is on PyPI (the machines reach only the package registries; MinIO and SeaweedFS
# ship from their own sites), speaks the S3 REST API the object_store crate uses (ListObjectsV2,
# ETags, conditional and ranged GETs, multipart), starts in a second, and with IAM
# authentication on (INITIAL_NO_AUTH_ACTION_COUNT) verifies every request's SigV4 signature, so
# the checks prove that the credentials come from the environment. It keeps objects in memory:
# a test server, not a production store.
#
#   bench/s3_server.sh python          installs if needed; prints the venv's python
#   bench/s3_server.sh serve PORT      installs if needed; serves on 127.0.0.1:PORT (no auth)
set -euo pipefail
venv="${AISERVE_S3_VENV:-$HOME/.cache/aiserve-s3}"
if ! "$venv/bin/python" -c 'import moto.server, boto3, flask' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check 'moto[server]==5.2.6' >&2
fi
case "${1:-}" in
  python) echo "$venv/bin/python" ;;
  serve) exec "$venv/bin/moto_server" -H 127.0.0.1 -p "${2:?port}" ;;
  *) echo "usage: $0 python | serve PORT" >&2; exit 2 ;;
esac
