#!/usr/bin/env bash
# Every test of the project: lint, format, types, import layers, forge, pytest. Run after `scripts/bootstrap.sh --dev`.
set -uo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "ruff (lint + format check)"
python3 -m ruff check . || exit 1
python3 -m ruff format --check . || exit 1

step "mypy"
python3 -m mypy || exit 1

step "import layers (docs/architecture.md, Layers)"
lint-imports || exit 1

step "forge test"
scripts/forge test || exit 1

step "pytest"
# campaign-sized tests run by their make targets (`make flood`); everything else, slow tests included, here
# the slowest tests listed (CI has 90 minutes); the property tests on fixed examples (tests/conftest.py)
python3 -m pytest -m "not campaign" --hypothesis-profile=ci --durations=25 "$@"
rc=$?
if [ "$rc" = 5 ]; then
  echo "pytest collected no tests: the set-up is broken" >&2
  exit 1
fi
exit "$rc"
