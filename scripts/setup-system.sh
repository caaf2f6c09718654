#!/usr/bin/env bash
# Installs the Debian packages the project needs (build tools and the servers that integration
# tests run on loopback). Idempotent: packages already present are not fetched again.
set -euo pipefail

packages=(build-essential)

missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$package")
done
if ((${#missing[@]} == 0)); then
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "setup-system: missing Debian packages: ${missing[*]}; install them as root" >&2
    exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
