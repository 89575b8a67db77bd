#!/usr/bin/env bash
# Install everything skbinspect and its real-kernel lab need on a Debian machine (run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
apt_pkgs=(qemu-system-x86 busybox-static iproute2 xz-utils zstd gcc libc6-dev dpkg tar util-linux e2fsprogs debian-archive-keyring makedumpfile)
missing=()
for p in "${apt_pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
python3 -m pip install -q --disable-pip-version-check -e '.[test]'
