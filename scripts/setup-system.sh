#!/usr/bin/env bash
# Installs the Debian packages the project needs (build tools, the servers that integration tests
# run on loopback: chrony and etcd, libfaketime for the skewed-clock tests, and venv support for
# `make`). Idempotent and quiet: packages already present are not fetched again, and nothing is
# printed when there is nothing to do.
set -euo pipefail

# etcd-server and etcd-client (3.4.23 in bookworm): the clustered mode's shared state; tests start
# their own members on loopback (tests/support/etcd_process.py).
# faketime: libfaketimeMT.so.1, which the skewed-clock tests preload into a node to put its wall
# clock seconds ahead or behind (FAKETIME=+2s) while its monotonic clock stays true.
# openssl: deploy/etcd-pki.sh makes the deploy files' etcd certificates with it (its test runs it).
packages=(build-essential chrony etcd-server etcd-client faketime openssl)
# `make` runs `python3 -m venv`, which with Debian's python3 needs python3-venv (ensurepip). A
# python3 from pyenv or a similar build has venv built in, but the package is installed anyway
# when Debian has it, so `make` works whichever python3 comes first on PATH. Skipped where the
# package does not exist (no candidate in apt's lists).
optional_packages=(python3-venv)

installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

# Whether apt's lists offer a version of package $1.
has_candidate() {
    local candidate
    candidate=$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ { print $2 }')
    [[ -n $candidate && $candidate != "(none)" ]]
}

missing=()
for package in "${packages[@]}"; do
    installed "$package" || missing+=("$package")
done
missing_optional=()
for package in "${optional_packages[@]}"; do
    installed "$package" || missing_optional+=("$package")
done
if ((${#missing[@]} == 0 && ${#missing_optional[@]} == 0)); then
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    if ((${#missing[@]} == 0)) && python3 -c 'import ensurepip, venv' 2>/dev/null; then
        exit 0 # this python3 makes venvs without the Debian package
    fi
    all_missing=("${missing[@]}" "${missing_optional[@]}")
    echo "setup-system: missing Debian packages: ${all_missing[*]}; install them as root" >&2
    exit 1
fi
# Servers (chrony, etcd) are started by the tests on loopback, never as system services: a
# system chronyd would try to reach public NTP pools, and the packaged etcd.service would hold the
# default ports 2379/2380 with a data dir in /var/lib/etcd. Deny service starts during the install.
policy=${SETUP_SYSTEM_POLICY_RC_D:-/usr/sbin/policy-rc.d} # overridable for tests
created_policy=
if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    created_policy=1
fi
cleanup() { if [[ -n $created_policy ]]; then rm -f "$policy"; fi; }
trap cleanup EXIT
apt-get update -qq
for package in "${missing_optional[@]}"; do
    if has_candidate "$package"; then
        missing+=("$package")
    fi
done
if ((${#missing[@]} == 0)); then
    exit 0
fi
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    >/dev/null
# Where systemd runs, the package also enabled etcd.service for the next boot: disable it (the
# policy above only stopped it from starting now).
if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
    systemctl disable --now etcd.service >/dev/null 2>&1 || true
fi
