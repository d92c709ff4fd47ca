#!/usr/bin/env python3
"""Rebuild the reference models (from fixed seeds; see mlkit/models.py) into a directory.

    python3 scripts/build_models.py [OUT_DIR] [--with-gpt2]      # default OUT_DIR: out/models

Writes NAME.mlkit, NAME.input.npy, the DCGAN images NAME.png and manifest.json (name, model id, shapes,
parameters, test accuracy of the classifiers).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402

from mlkit.models import DEFAULT_BUILD, build_reference_models  # noqa: E402


def main() -> int:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("out_dir", nargs="?", default=str(ROOT / "out" / "models"))
    parser.add_argument("--with-gpt2", action="store_true", help="also build GPT-2 124M (~500 MB file)")
    parser.add_argument("--json", action="store_true", help="print the manifest as JSON")
    args = parser.parse_args()
    names = (*DEFAULT_BUILD, "gpt2") if args.with_gpt2 else DEFAULT_BUILD
    console = Console(stderr=True, quiet=args.json)
    with console.status("building") as status:
        manifest = build_reference_models(args.out_dir, names, lambda n: status.update(f"building {n}"))
    if args.json:
        print(json.dumps(manifest))
        return 0
    for e in manifest["models"]:
        acc = f"  accuracy {e['accuracy']:.4f}" if e["accuracy"] is not None else ""
        console.print(f"{e['name']:10} {e['params']:>10,} params  {e['model_id']}{acc}", soft_wrap=True)
    console.print(f"wrote {args.out_dir}/manifest.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
