#!/usr/bin/env bash
# The house style, as CI checks it before the tests: ruff's formatter and linter on the whole tree, mypy
# on the package.  Run it before committing (or install the pre-commit hooks: pre-commit install).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${SKBINSPECT_PYTHON:-python3}
[ -x .venv/bin/python ] && py=.venv/bin/python
"$py" -m ruff format --check .
"$py" -m ruff check .
"$py" -m mypy
echo "lint: ruff format, ruff check and mypy are clean"
