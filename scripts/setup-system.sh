#!/usr/bin/env bash
# Installs the Debian packages the project needs (build tools and the servers that integration
# tests run on loopback). Idempotent: packages already present are not fetched again.
set -euo pipefail

packages=(build-essential chrony)

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
# Servers (chrony, ...) are started by the tests on loopback, never as system services: a
# system chronyd would try to reach public NTP pools. Deny service starts during the install.
created_policy=
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    created_policy=1
fi
cleanup() { if [[ -n $created_policy ]]; then rm -f /usr/sbin/policy-rc.d; fi; }
trap cleanup EXIT
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
