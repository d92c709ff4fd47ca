"""The largest flood of dispute games one honest agent answers within the move deadline (issue 12).

    python bench/flood.py [--sizes 50,100,200,300] [--models mnist-mlp,lenet,gpt2-tiny]
                          [--move-timeout 240] [--daemon] [--side node|challenger|both] [--json]

For each size, on a fresh anvil whose clock is the wall clock, the attacker of `rollml.harness.flood`
(garbage moves at once, never a step) opens that many games against one agent:
- node: `size / 15` requests served by the node, each result challenged 15 times (15 accounts);
- challenger: `size` wrong results (right output, forged final state: every one needs a VM run).
Sizes grow until the agent loses a game; the table prints, per size, the outcome next to the attacker's cost
(bonds locked) and the defender's (CPU seconds and peak memory, of the daemon's process tree with
`--daemon`). The old limit was 64 games per process (then a wrong result finalized or a correct one was
lost): `MAX_CTX` native executor contexts.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rollml.core.deploy import DEV_PARAMS
from rollml.core.devnet import Anvil
from rollml.harness import flood
from rollml.harness.loadtest import make_setup

OLD_LIMIT = 64  # games per process before the fix (native executor contexts)


def one(side: str, size: int, names: list[str], move_timeout: int, daemon: bool) -> dict[str, object]:
    params = replace(DEV_PARAMS, challenge_window=max(900, 3 * move_timeout))
    anvil = Anvil().start()
    try:
        with tempfile.TemporaryDirectory(prefix="rollml-flood-") as tmp:
            setup = make_setup(anvil.url, Path(tmp), params, move_timeout=move_timeout, models=names)
            world = setup.world
            if side == "node":
                per = 15
                if daemon:
                    with setup.daemon("node", 1, "node", workers=2, interval=0.2).running() as d:
                        rep, _ = flood.node_flood(world, None, max(1, size // per), per, flood.Usage(d.pid))
                else:
                    node = world.node(1, "node")
                    rep, _ = flood.node_flood(world, node, max(1, size // per), per, flood.Usage())
            elif daemon:
                with setup.daemon("challenger", 3, "challenger", workers=2, interval=0.2).running() as d:
                    rep, _ = flood.challenger_flood(world, None, size, flood.Usage(d.pid))
            else:
                rep, _ = flood.challenger_flood(world, world.challenger(3, "challenger"), size, flood.Usage())
    finally:
        anvil.stop()
    return {"side": side, "size": size, **asdict(rep), "all_won": rep.all_won}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="50,100,200,300")
    ap.add_argument("--models", default="mnist-mlp,lenet,gpt2-tiny")
    ap.add_argument("--move-timeout", type=int, default=240)
    ap.add_argument("--side", choices=["node", "challenger", "both"], default="both")
    ap.add_argument("--daemon", action="store_true", help="defend with the daemons (rollml node/challenger)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    names = args.models.split(",")
    sides = ["node", "challenger"] if args.side == "both" else [args.side]
    rows: list[dict[str, object]] = []
    for side in sides:
        for size in map(int, args.sizes.split(",")):
            try:
                row = one(side, size, names, args.move_timeout, args.daemon)
            except TimeoutError as exc:
                row = {"side": side, "size": size, "all_won": False, "error": str(exc)}
            rows.append(row)
            if not args.json:
                print(
                    f"{side:>10} {size:>4} games: {'all won' if row['all_won'] else 'LOST'}"
                    f"  {row.get('seconds', '-')} s"
                    f"  attacker {row.get('attacker_bonds_eth', '-')} ETH of bonds"
                    f"  defender {row.get('defender_cpu_s', '-')} CPU s,"
                    f" {row.get('defender_peak_rss_mib', '-')} MiB peak",
                    flush=True,
                )
            if not row["all_won"]:
                break
    largest = {
        side: max((int(str(r["size"])) for r in rows if r["side"] == side and r["all_won"]), default=0)
        for side in sides
    }
    summary = {
        "largest_flood_answered": largest,
        "old_limit_games_per_process": OLD_LIMIT,
        "move_timeout_s": args.move_timeout,
        "models": names,
        "daemon": args.daemon,
        "rows": rows,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"largest flood answered within the {args.move_timeout} s move deadline: {largest}")
        print(f"(before the fix: {OLD_LIMIT} games per process, the 65th lost by timeout)")
    return 0 if all(largest.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
