"""The test environment: where the repo is, and how much the property-based campaigns run.

`ROLLML_FUZZ_SCALE` scales every campaign's example count (`make fuzz` runs them 50x; 0.1 is the floor).
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FUZZ_SCALE = max(0.1, float(os.environ.get("ROLLML_FUZZ_SCALE", "1")))


def scaled(examples: int, minimum: int = 1) -> int:
    """`examples` at this ROLLML_FUZZ_SCALE, at least `minimum`."""
    return max(minimum, int(examples * FUZZ_SCALE))
