#!/usr/bin/env bash
# The README's first command: install everything, build (or reuse) the lab vmcore of the default kernel
# (Debian bookworm, 6.1), and run skbinspect report on it: which queue dropped what, and why.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
kernel=${1:-bookworm}
python3 -m tests.vmcores build --kernel "$kernel" --boot lab
mapfile -t paths < <(python3 -m tests.vmcores path --kernel "$kernel")
vmcore=${paths[0]}
syms=()
for s in "${paths[@]:1}"; do syms+=(-s "$s"); done
echo
echo "+ skbinspect -c $vmcore ${syms[*]} report"
skbinspect -c "$vmcore" "${syms[@]}" report
