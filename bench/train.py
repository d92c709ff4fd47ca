"""Verifiable training: time per update natively and in the VM, gas per accepted update, the gas of a disputed
update's game, and the accuracy reached after N updates next to the same training in torch.

The run is the demo's (an MLP 64-16-10 on scikit-learn's digits, batch 48, 2 SGD steps per update, lr 0.2,
momentum 0.9), on the embedded py-evm chain (gas is the EVM's, the same on any chain):

- per update: the native run of the training graph and the guest run in the VM (Unicorn), and the VM steps;
- per accepted update: takeLease + postUpdate (the new 16 KiB state as calldata) + finalize;
- a disputed update: a worker posts a wrong update, the fraud-proofer challenges and wins the VM game;
  the gas of the challenge, every move and preimage load, and the step;
- accuracy on the held-out quarter of digits after N updates: ours (the accepted chain of updates, computed
  by the runtime) and torch's `SGD(lr, momentum)` from the same weights on the same batches.

No peer trains verifiably (opML, Cannon and zkML serve inference); the anchors printed are the nearest ones:
opML's ~814 VM instructions per parameter for an MNIST inference, and EZKL's 9.6 s to prove one MNIST
inference (our /work/shared/anchors.md).

    python3 bench/train.py [--updates N] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from mlkit import native  # noqa: E402
from mlkit.guest import run_vm  # noqa: E402
from mlkit.train import MLPSpec, digits_batches, next_state  # noqa: E402
from rollml.core.chain import Chain  # noqa: E402
from rollml.core.training import (  # noqa: E402
    TrainingClient,
    compute_update,
    dataset_store,
    plan_run,
    put_batches,
)
from rollml.world import World  # noqa: E402

SPEC = MLPSpec(sizes=(64, 16, 10), batch=48, steps=2, lr=0.2, momentum=0.9)
ANCHORS = {"opml_instructions_per_param_inference": 814, "ezkl_mnist_prove_seconds": 9.6}


def accuracy(params: list[Any], x: Any, y: Any) -> float:
    h = np.maximum(x @ params[0].T + params[1], 0)
    return float(((h @ params[2].T + params[3]).argmax(1) == y).mean())


def torch_accuracy(chunks: list[bytes], n: int, x: Any, y: Any) -> float:
    import torch
    import torch.nn.functional as F

    ts = [torch.tensor(p, requires_grad=True) for p in SPEC.init_params(0)]
    opt = torch.optim.SGD(ts, lr=SPEC.lr, momentum=SPEC.momentum)
    for chunk in chunks[: n * SPEC.steps]:
        bx, by = SPEC.decode_batch(chunk)
        opt.zero_grad()
        h = torch.relu(F.linear(torch.tensor(bx), ts[0], ts[1]))
        F.cross_entropy(F.linear(h, ts[2], ts[3]), torch.tensor(by, dtype=torch.long)).backward()
        opt.step()
    return accuracy([t.detach().numpy() for t in ts], x, y)


def measure(updates: int, console: Console) -> dict[str, Any]:
    chunks, _, _, x_test, y_test = digits_batches(SPEC, updates * SPEC.steps, seed=0)
    graph = SPEC.training_graph()
    state = SPEC.encode_state(SPEC.init_params(0))
    native_s, vm_s, steps, losses = [], [], [], []
    with console.status("running the updates natively and in the VM"):
        for u in range(updates):
            payload = state + b"".join(chunks[u * SPEC.steps : (u + 1) * SPEC.steps])
            t0 = time.perf_counter()
            out = native.run(graph, payload)
            native_s.append(time.perf_counter() - t0)
            run = run_vm(graph, payload)
            assert run.output == out and run.exit_code == 0
            vm_s.append(run.seconds)
            steps.append(run.steps)
            state, loss_bits = next_state(state, out, SPEC.records_end)
            losses.append(float(np.frombuffer(loss_bits, ">f4")[0]))
    ours = accuracy(SPEC.decode_state(state)[0], x_test, y_test)
    theirs = torch_accuracy(chunks, updates, x_test, y_test)
    n_params = sum(int(np.prod(s)) for s in SPEC.param_shapes)

    with (
        console.status("gas on the embedded chain: accepted and disputed updates"),
        tempfile.TemporaryDirectory() as tmp,
    ):
        chain = Chain.embedded()
        store = dataset_store(Path(tmp) / "data")
        ids = put_batches(store, chunks[: 2 * SPEC.steps])
        plan = plan_run(SPEC, SPEC.init_params(0), ids, 10**15, 10**17, 10**17, 600, 300)
        world = World.create(chain, Path(tmp), {"mlp-train": graph})
        creator = TrainingClient(chain, world.deployment, world.accounts[5])
        run_id = creator.create_run(plan)
        worker = TrainingClient(chain, world.deployment, world.accounts[1])
        st0 = plan.initial_state
        work = compute_update(graph, st0, [store.get(i) for i in ids[: SPEC.steps]], SPEC.records_end, 0)
        g_lease = int(worker.take_lease(run_id)["gasUsed"])
        first = chain.block_number() + 1
        worker.post_update(run_id, work)
        g_post = gas_since(chain, first)
        chain.advance_time(601)
        g_final = int(worker.finalize(1)["gasUsed"])
        accepted = g_lease + g_post + g_final

        from trainer.fraudproofer import FraudProofer
        from trainer.worker import TrainingWorker

        quiet = logging.getLogger("bench.train.agents")
        quiet.propagate, quiet.disabled = False, True
        kw: dict[str, Any] = {"dataset": store, "run_ids": [run_id], "logger": quiet}
        liar = world.agent(TrainingWorker, 2, "liar", wrong_at=[0], **kw)
        proofer = world.agent(FraudProofer, 3, "proofer", **kw)
        proofer.store.set_cursor(chain.block_number())
        liar.tick()  # lease + the wrong post
        assert creator.run(run_id).pending_update
        first = chain.block_number() + 1
        t0 = time.perf_counter()
        world.play(
            [proofer, liar], lambda: creator.status(run_id)["wrong_updates_caught"] == 1, max_ticks=120
        )
        dispute_s = time.perf_counter() - t0
        dispute_gas, dispute_txs = gas_since(chain, first), chain.block_number() + 1 - first
        liar.close()
        proofer.close()

    return {
        "spec": {"sizes": list(SPEC.sizes), "batch": SPEC.batch, "steps": SPEC.steps, "lr": SPEC.lr},
        "updates": updates,
        "native_ms_per_update": round(1e3 * statistics.median(native_s), 3),
        "vm_s_per_update": round(statistics.median(vm_s), 3),
        "vm_steps_per_update": int(statistics.median(steps)),
        "vm_steps_per_param_per_sample": round(
            statistics.median(steps) / (SPEC.steps * SPEC.batch * n_params), 1
        ),
        "gas_per_accepted_update": accepted,
        "gas": {"take_lease": g_lease, "post_update": g_post, "finalize": g_final},
        "disputed_update": {"gas": dispute_gas, "blocks": dispute_txs, "seconds": round(dispute_s, 2)},
        "loss": {"first": round(losses[0], 4), "last": round(losses[-1], 4)},
        "accuracy": round(ours, 4),
        "torch_accuracy": round(theirs, 4),
        "anchors": ANCHORS,
    }


def gas_since(chain: Chain, first: int) -> int:
    total = 0
    for n in range(first, chain.block_number() + 1):
        for tx in chain.w3.eth.get_block(n)["transactions"]:
            total += int(chain.w3.eth.get_transaction_receipt(tx)["gasUsed"])  # type: ignore[arg-type]
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--updates", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    warnings.filterwarnings("ignore", message="The log with transaction hash")  # other contracts' events
    console = Console(stderr=True, quiet=args.json)
    r = measure(args.updates, console)
    if args.json:
        print(json.dumps(r))
        return
    t = Table(
        title=f"verifiable training: MLP 64-16-10 on digits, {r['updates']} updates of {SPEC.steps} SGD steps"
    )
    t.add_column("figure")
    t.add_column("rollml", justify="right")
    t.add_column("anchor", justify="right")
    t.add_row("native time per update", f"{r['native_ms_per_update']} ms", "")
    t.add_row(
        "VM time per update",
        f"{r['vm_s_per_update']} s",
        f"EZKL MNIST inference proof {ANCHORS['ezkl_mnist_prove_seconds']} s",
    )
    t.add_row("VM steps per update", f"{r['vm_steps_per_update']:,}", "")
    t.add_row(
        "VM steps / parameter / sample",
        f"{r['vm_steps_per_param_per_sample']} (forward + backward + update)",
        f"opML inference ~{ANCHORS['opml_instructions_per_param_inference']} / parameter",
    )
    t.add_row("gas per accepted update", f"{r['gas_per_accepted_update']:,}", "")
    g = r["gas"]
    t.add_row(
        "  lease / post / finalize", f"{g['take_lease']:,} / {g['post_update']:,} / {g['finalize']:,}", ""
    )
    d = r["disputed_update"]
    t.add_row("disputed update: game gas", f"{d['gas']:,} ({d['blocks']} txs, {d['seconds']} s)", "")
    t.add_row("loss first -> last", f"{r['loss']['first']} -> {r['loss']['last']}", "")
    t.add_row(
        f"test accuracy after {r['updates']} updates",
        f"{r['accuracy']:.1%}",
        f"torch {r['torch_accuracy']:.1%}",
    )
    Console().print(t)


if __name__ == "__main__":
    main()
