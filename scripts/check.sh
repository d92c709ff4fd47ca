#!/usr/bin/env bash
# Every test of the project: lint, format, types, pytest, forge. Run after `scripts/bootstrap.sh --dev`.
set -uo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "ruff (lint + format check)"
python3 -m ruff check . || exit 1
python3 -m ruff format --check . || exit 1

step "mypy"
python3 -m mypy || exit 1

step "forge test"
scripts/forge test || exit 1

step "pytest"
python3 -m pytest "$@"
rc=$?
if [ "$rc" = 5 ]; then
  echo "pytest collected no tests: the set-up is broken" >&2
  exit 1
fi
exit "$rc"
