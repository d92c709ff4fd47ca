"""Load benchmark: N MNIST requests queued at once against ONE `rollml node` daemon on anvil, every one
finalized; throughput, latency percentiles, gas and the node's peak memory (see rollml/harness/loadtest.py).

    python3 bench/load.py                     # 200 requests, a table
    python3 bench/load.py --requests 50 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rollml.harness.loadtest import LoadConfig, LoadResult, run_load  # noqa: E402


# --------------------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------------------
def table(result: LoadResult) -> Any:
    from rich.table import Table

    t = Table(title=f"load: {result.requests} MNIST requests on one node (anvil)")
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_row("finalized / correct / lost", f"{result.finalized} / {result.correct} / {len(result.lost)}")
    t.add_row("wall time (s)", f"{result.seconds:.1f} (sending {result.send_seconds:.1f})")
    t.add_row("throughput (finalized / min)", f"{result.per_minute:.1f}")
    t.add_row("throughput (posted / min)", f"{result.posted_per_minute:.1f}")
    for name, lat in (
        ("request -> posted", result.posted_latency),
        ("request -> finalized", result.finalized_latency),
    ):
        t.add_row(
            f"{name} (s) p50/p90/p99/max", " / ".join(f"{lat[k]:.2f}" for k in ("p50", "p90", "p99", "max"))
        )
    for who in ("node", "challenger", "requester", "total"):
        if who in result.gas:
            t.add_row(f"gas: {who} ({result.txs[who]} txs)", f"{result.gas[who]:,}")
    t.add_row(
        "node peak RSS (MiB): daemon / worker",
        f"{result.peak_rss_kib['daemon'] / 1024:.0f} / {result.peak_rss_kib['worker'] / 1024:.0f}",
    )
    return t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--requests", type=int, default=LoadConfig.requests, help="requests to queue")
    ap.add_argument("--workers", type=int, default=LoadConfig.workers, help="the node's worker processes")
    ap.add_argument("--interval", type=float, default=LoadConfig.interval, help="daemon pass interval (s)")
    ap.add_argument("--window", type=int, default=LoadConfig.window, help="challenge window (s)")
    ap.add_argument("--no-challenger", action="store_true", help="run the node alone")
    ap.add_argument("--rpc", help="an existing dev chain (default: start anvil)")
    args = ap.parse_args()
    config = LoadConfig(
        requests=args.requests,
        workers=args.workers,
        interval=args.interval,
        window=args.window,
        challenger=not args.no_challenger,
    )
    log: Callable[[str], None] = (lambda _: None) if args.json else (lambda m: print(m, file=sys.stderr))
    with tempfile.TemporaryDirectory(prefix="rollml-load-") as tmp:
        if args.rpc:
            result = run_load(args.rpc, Path(tmp), config, log)
        else:
            from rollml.core.devnet import Anvil, anvil_missing

            missing = anvil_missing()
            if missing:
                print(f"error: {missing}", file=sys.stderr)
                return 1
            with Anvil() as anvil:
                result = run_load(anvil.url, Path(tmp), config, log)
    if args.json:
        print(json.dumps(asdict(result)))
    else:
        from rich.console import Console

        Console().print(table(result))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
