#!/usr/bin/env bash
# Installs Debian's nginx (package nginx) for bench/replicas.sh, once per machine: /usr/sbin/nginx.
# apt verifies the package against Debian's signed archive; the service is not started (the
# bench runs its own nginx on a loopback port with its own configuration). A few seconds cold.
set -euo pipefail
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] && exit 0
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
echo "installing Debian's nginx ..." >&2
$sudo apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends nginx >/dev/null
/usr/sbin/nginx -v
