#!/usr/bin/env bash
# The README's first command: install everything (apt packages, and skbinspect in .venv/), build (or
# reuse) the lab vmcore of the default kernel (Debian bookworm, 6.1), and run skbinspect report on it:
# which queue dropped what, and why.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
py=.venv/bin/python
kernel=${1:-bookworm}
"$py" -m tests.vmcores build --kernel "$kernel" --boot lab
mapfile -t paths < <("$py" -m tests.vmcores path --kernel "$kernel")
vmcore=${paths[0]}
syms=()
for s in "${paths[@]:1}"; do syms+=(-s "$s"); done
echo
echo "+ .venv/bin/skbinspect -c $vmcore ${syms[*]} report"
.venv/bin/skbinspect -c "$vmcore" "${syms[@]}" report
echo
echo "skbinspect is installed in $PWD/.venv: run .venv/bin/skbinspect (or 'source .venv/bin/activate' first)."
