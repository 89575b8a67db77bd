#!/usr/bin/env bash
# The test suite, as CI runs it: builds the lab for all four kernels (cached), then runs pytest, in the
# virtual environment that scripts/install-deps.sh made (.venv/, first on PATH as if activated).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    echo "no .venv in $PWD: run ./scripts/install-deps.sh (or ./scripts/quickstart.sh) first" >&2
    exit 1
fi
export VIRTUAL_ENV="$PWD/.venv" PATH="$PWD/.venv/bin:$PATH"
python -m tests.vmcores build
exec python -m pytest -q -ra "$@"
