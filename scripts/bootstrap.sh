#!/usr/bin/env bash
# Installs what rollml needs on a Debian machine, skipping whatever is already there.
#   scripts/bootstrap.sh         runtime: the Python package with torch (the demo builds its reference models
#                                from fixed seeds) and the Foundry tools (anvil for `rollml devnet`)
#   scripts/bootstrap.sh --dev   also the MIPS cross compiler, qemu-mips, the test tools and the fortunes
#                                corpus (Debian's `fortunes`, which fortune-gpt is trained on)
# Python packages go into the active interpreter (`python3`): the system one, or a venv you activated.
set -euo pipefail
cd "$(dirname "$0")/.."
dev=0
[ "${1:-}" = "--dev" ] && dev=1
stamps=.bootstrap
mkdir -p "$stamps"
say() { printf '\033[1mbootstrap:\033[0m %s\n' "$*"; }

python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { say "Python 3.11+ is required"; exit 1; }

# Debian packages: the host C compiler builds the VM's hooks and mlkit's native library at first use; the
# MIPS cross compiler and qemu-mips are for the tests only (the demo runs the committed MIPS program).
missing=()
command -v cc >/dev/null || missing+=(gcc)
if [ "$dev" = 1 ]; then
  command -v mips-linux-gnu-gcc >/dev/null || missing+=(gcc-mips-linux-gnu binutils-mips-linux-gnu)
  command -v qemu-mips >/dev/null || missing+=(qemu-user)
  # the text files in /usr/share/games/fortunes: `fortunes` and the `fortunes-min` it depends on
  [ -f /usr/share/games/fortunes/fortunes ] && [ -f /usr/share/games/fortunes/zippy ] || missing+=(fortunes)
  # the explorer's browser test drives Debian's chromium through its chromedriver (selenium)
  command -v chromedriver >/dev/null || missing+=(chromium chromium-driver)
fi
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  say "apt-get install ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Node tools from the npm registry, pinned by contracts/package-lock.json: forge, anvil, cast, solc-js, OpenZeppelin.
command -v npm >/dev/null || { say "npm is required (apt-get install nodejs npm)"; exit 1; }
lock_sum=$(sha256sum contracts/package-lock.json | cut -d' ' -f1)
if [ "$(cat "$stamps/npm" 2>/dev/null)" != "$lock_sum" ] || [ ! -x contracts/node_modules/.bin/forge ]; then
  say "npm ci (contracts)"
  (cd contracts && npm ci --no-audit --no-fund --loglevel=error)
  echo "$lock_sum" > "$stamps/npm"
fi

# Python packages. torch is pinned to 2.13.0 in pyproject.toml (an unpinned torch pulls a multi-GB CUDA build).
extra="[models]"; [ "$dev" = 1 ] && extra="[dev]"
py_sum=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)"$extra"$(python3 -c 'import sys; print(sys.prefix)')
if [ "$(cat "$stamps/pip" 2>/dev/null)" != "$py_sum" ] || ! python3 -c 'import rollml' 2>/dev/null; then
  say "pip install -e .$extra"
  python3 -m pip install -q --disable-pip-version-check -e ".$extra"
  echo "$py_sum" > "$stamps/pip"
fi
say "ready"
