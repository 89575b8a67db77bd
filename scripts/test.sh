#!/usr/bin/env bash
# The test suite, as CI runs it: builds the lab for all four kernels (cached), then runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m tests.vmcores build
exec python3 -m pytest -q -ra "$@"
