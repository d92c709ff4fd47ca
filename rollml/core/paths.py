"""Where rollml finds its checkout-level tools (the Foundry project, scripts)."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # rollml/
REPO_ROOT = PACKAGE_DIR.parent
CONTRACTS_DIR = REPO_ROOT / "contracts"
SCRIPTS_DIR = REPO_ROOT / "scripts"
NPM_BIN = CONTRACTS_DIR / "node_modules" / ".bin"
