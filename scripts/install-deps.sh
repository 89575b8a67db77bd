#!/usr/bin/env bash
# Install everything skbinspect and its real-kernel lab need on a Debian machine (run as root):
# Debian packages from apt, then skbinspect (editable, with its test extras) in a virtual environment,
# .venv/ in the checkout.  Nothing is installed into the system Python (Debian's is externally managed,
# PEP 668) and no pip or pyenv is assumed.
#   --ci    also what only CI's tests need: debootstrap (the fresh-root quick-start test) and pipx (the
#           "Install on a host" test).
# The venv is made by $SKBINSPECT_PYTHON, else the first python3 on PATH (on Debian /usr/bin/python3,
# whose venv module comes from python3-venv); an existing working .venv is reused.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
apt_pkgs=(python3 python3-venv qemu-system-x86 busybox-static iproute2 xz-utils zstd gcc libc6-dev dpkg tar util-linux
          e2fsprogs debian-archive-keyring makedumpfile tcpdump groff-base less)
if [ "${1:-}" = --ci ]; then
    apt_pkgs+=(debootstrap pipx)
fi
missing=()
for p in "${apt_pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

venv=.venv
py=${SKBINSPECT_PYTHON:-python3}
if ! "$venv/bin/python" -c 'import pip' 2>/dev/null; then  # missing, or broken (its interpreter is gone)
    if ! "$py" -c 'import venv, ensurepip' 2>/dev/null; then
        echo "$(command -v "$py" || echo "$py") cannot make a virtual environment (no venv/ensurepip module);" \
             "set SKBINSPECT_PYTHON to a python3 that can (on Debian: /usr/bin/python3 with python3-venv)" >&2
        exit 1
    fi
    rm -rf "$venv"
    echo "making $venv with $(command -v "$py") ($("$py" -c 'import sys; print(sys.version.split()[0])'))"
    "$py" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'
