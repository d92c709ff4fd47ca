"""Benchmark of the VM executors: fast-path speed, state-at-step latency from snapshots, peak memory.

    python3 bench/vm.py            # a table, with the anchors side by side
    python3 bench/vm.py --json     # one JSON object

Figures: guest instructions per second of the fast executor on an integer kernel (tests/mips_programs/
fast_kernel.c, ~120M steps by default); an opML-style Unicorn loop with a Python callback per instruction
on the same kernel (the anchor, measured here too); the reference stepper; preimage reads (a guest that
loads 16 KiB chunks through the oracle 32 bytes per read, as the mlkit guest loads a model: the native
preimage syscalls of the fast executor); the time to build a trace of a ~15M-step run and to get the state
hash at random steps from it; peak RSS.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from mips_build import PROGRAMS, build_source, program  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402
from rich.table import Table  # noqa: E402
from unicorn import UC_ARCH_MIPS, UC_HOOK_CODE, UC_MODE_BIG_ENDIAN, UC_MODE_MIPS32, Uc, UcError  # noqa: E402
from unicorn.mips_const import UC_MIPS_REG_SP  # noqa: E402

from mipsvm.constants import CHUNK  # noqa: E402
from mipsvm.elf import Program, load_elf  # noqa: E402
from mipsvm.fast import FastVM  # noqa: E402
from mipsvm.preimage import LocalData, PreimageOracle, PreimageStore  # noqa: E402
from mipsvm.step import run as reference_run  # noqa: E402
from mipsvm.trace import Trace  # noqa: E402

ANCHOR_OPML = (5e6, 6.5e6)  # opML: Unicorn with a per-instruction callback, instr/s
TARGET_SPEED = 100e6  # instr/s
TARGET_LATENCY = 0.5  # s per state hash at a random step of a 15M-step run
STEPS_PER_ROUND = 595_700  # fast_kernel.c
BEFORE_NATIVE_READ_S = 15e-6  # a preimage read when each one was a stop, a reference step and a restart
MODEL_BYTES = 500e6  # "a 500 MB model": the load time the preimage figure extrapolates to

# Loads local 1 (the key of one 16 KiB chunk) and then the chunk, 32 bytes per read into an aligned buffer,
# ROUNDS times: the mlkit guest's access pattern (a select, then 513 reads, per chunk).
PREIMAGE_READER = r"""
#include "sys.h"
static unsigned char key[32] __attribute__((aligned(32)));
static unsigned char buf[16416] __attribute__((aligned(32)));
void __start(void) {
    for (int round = 0; round < ROUNDS; round++) {
        for (int i = 0; i < 32; i++) key[i] = i == 0 || i == 31;
        if (sys_write(6, key, 32) != 32 || sys_read(5, buf, 8) != 8) sys_exit_group(2);
        if (sys_read(5, key, 32) != 32 || sys_write(6, key, 32) != 32) sys_exit_group(3);
        unsigned long got = 0;
        for (long r; (r = sys_read(5, buf + got, 32)) > 0;) got += (unsigned long)r;
        if (got != 8 + 16384) sys_exit_group(4);
    }
    sys_exit_group(0);
}
"""


def kernel(rounds: int) -> Program:
    return load_elf(program("fast_kernel.c", extra_flags=[f"-DROUNDS={rounds}"]))


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def bench_fast(rounds: int, progress: Progress) -> dict[str, Any]:
    prog = kernel(rounds)
    task = progress.add_task("fast path", total=rounds * STEPS_PER_ROUND)
    with FastVM(prog, PreimageOracle()) as vm:
        final, seconds = timed(lambda: vm.run(progress=lambda n: progress.update(task, completed=n)))
        stats = {
            "unicorn_runs": vm.uc_runs,
            "reference_steps": vm.ref_steps,
            "write_faults": vm.guest.ctx.faults,
        }
    return {"steps": final.step, "seconds": seconds, "instr_per_s": final.step / seconds, **stats}


def bench_preimage(rounds: int) -> dict[str, Any]:
    """Preimage reads on the fast executor: MiB/s, time per read, and the load time of a 500 MB model."""
    flags = [f"-I{PROGRAMS}", f"-DROUNDS={rounds}"]
    elf = build_source(
        PREIMAGE_READER, suffix=".c", name="preimage_reader", extra_flags=flags, deps=[PROGRAMS / "sys.h"]
    )
    store = PreimageStore()
    oracle = PreimageOracle(store, LocalData({1: store.put(random.Random(1).randbytes(CHUNK))}))
    with FastVM(load_elf(elf), oracle) as vm:
        final, seconds = timed(vm.run)
        syscalls, ref_steps = vm.native_syscalls, vm.ref_steps
    assert final.exit_code == 0, f"the preimage reader exited {final.exit_code}"
    rate = rounds * CHUNK / seconds
    return {
        "steps": final.step,
        "seconds": seconds,
        "mib_per_s": rate / 2**20,
        "native_syscalls": syscalls,
        "reference_steps": ref_steps,
        "us_per_syscall": seconds / syscalls * 1e6,
        "model_500mb_load_s": MODEL_BYTES / rate,
        "model_500mb_load_s_before": MODEL_BYTES / 32 * BEFORE_NATIVE_READ_S,
    }


def bench_callback(steps: int) -> dict[str, Any]:
    """opML's way: Unicorn with a Python callback on every instruction (counts only; stops at `steps`)."""
    prog = kernel(50)
    uc = Uc(UC_ARCH_MIPS, UC_MODE_MIPS32 + UC_MODE_BIG_ENDIAN)
    for lo, hi in [(0, 0x400000), (0x400000, 0x1000000), (0x7FF00000, 0x100000)]:
        uc.mem_map(lo, hi)
    for p, data in prog.memory.pages.items():
        uc.mem_write(p << 12, bytes(data))
    uc.reg_write(UC_MIPS_REG_SP, prog.state.regs[29])
    count = [0]

    def hook(uc: Uc, address: int, size: int, user: object) -> None:
        count[0] += 1
        if count[0] >= steps:
            uc.emu_stop()

    uc.hook_add(UC_HOOK_CODE, hook)
    t = time.perf_counter()
    with contextlib.suppress(UcError):  # the syscall at the end, if `steps` is larger than the run
        uc.emu_start(prog.state.pc, 0xFFFFFFFF)
    seconds = time.perf_counter() - t
    return {"steps": count[0], "seconds": seconds, "instr_per_s": count[0] / seconds}


def bench_reference(steps: int) -> dict[str, Any]:
    prog = kernel(1)
    state = prog.state.copy()
    n, seconds = timed(lambda: reference_run(state, prog.memory, PreimageOracle(), steps))
    return {"steps": n, "seconds": seconds, "instr_per_s": n / seconds}


def bench_trace(rounds: int, queries: int, progress: Progress) -> dict[str, Any]:
    prog = kernel(rounds)
    task = progress.add_task("trace run", total=rounds * STEPS_PER_ROUND)
    trace, build = timed(
        lambda: Trace(prog, PreimageOracle(), progress=lambda n: progress.update(task, completed=n))
    )
    rnd = random.Random(7)
    task = progress.add_task("state hashes", total=queries)
    latencies = []
    for _ in range(queries):
        n = rnd.randrange(trace.steps)
        t = time.perf_counter()
        trace.state_hash_at(n)
        latencies.append(time.perf_counter() - t)
        progress.advance(task)
    proof_seconds = timed(lambda: trace.proof_at(rnd.randrange(trace.steps)))[1]
    out = {
        "steps": trace.steps,
        "build_seconds": build,
        "snapshots": len(trace.snapshots),
        "snapshot_pages": trace.page_count(),
        "snapshot_mib": trace.page_count() * 4096 / 2**20,
        "state_hash_mean_s": sum(latencies) / len(latencies),
        "state_hash_max_s": max(latencies),
        "proof_s": proof_seconds,
    }
    trace.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument(
        "--rounds", type=int, default=200, help="kernel rounds of the speed run (~0.6M steps each)"
    )
    ap.add_argument(
        "--trace-rounds", type=int, default=26, help="kernel rounds of the trace run (~15M steps)"
    )
    ap.add_argument("--queries", type=int, default=20, help="random state-hash queries on the trace")
    ap.add_argument("--callback-steps", type=int, default=3_000_000, help="steps of the per-callback anchor")
    ap.add_argument("--preimage-rounds", type=int, default=2000, help="16 KiB chunks the preimage test loads")
    args = ap.parse_args()

    console = Console(stderr=True)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True, disable=args.json) as progress:
        fast = bench_fast(args.rounds, progress)
        trace = bench_trace(args.trace_rounds, args.queries, progress)
    preimage = bench_preimage(args.preimage_rounds)
    callback = bench_callback(args.callback_steps)
    reference = bench_reference(200_000)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "fast": fast,
        "trace": trace,
        "unicorn_python_callback": callback,
        "reference_stepper": reference,
        "preimage_reads": preimage,
        "peak_rss_mib": peak_mib,
        "anchors": {
            "opml_callback_instr_per_s": ANCHOR_OPML,
            "target_instr_per_s": TARGET_SPEED,
            "target_state_hash_s": TARGET_LATENCY,
        },
    }
    if args.json:
        print(json.dumps(result))
        return
    table = Table(title="rollml VM executors")
    for col in ("measure", "rollml (this machine)", "anchor / target"):
        table.add_column(col)
    table.add_row(
        "fast path, instr/s",
        f"{fast['instr_per_s'] / 1e6:,.0f}M ({fast['steps'] / 1e6:,.0f}M steps in {fast['seconds']:.2f} s)",
        f">= {TARGET_SPEED / 1e6:.0f}M target",
    )
    table.add_row(
        "Unicorn + Python callback per instr",
        f"{callback['instr_per_s'] / 1e6:.1f}M",
        f"opML {ANCHOR_OPML[0] / 1e6:.0f}-{ANCHOR_OPML[1] / 1e6:.1f}M",
    )
    table.add_row("reference stepper, instr/s", f"{reference['instr_per_s'] / 1e3:,.0f}k", "")
    table.add_row(
        "preimage reads (native syscalls)",
        f"{preimage['mib_per_s']:,.0f} MiB/s, {preimage['us_per_syscall']:.2f} us per syscall; "
        f"a 500 MB model loads in {preimage['model_500mb_load_s']:.1f} s",
        f"before: {BEFORE_NATIVE_READ_S * 1e6:.0f} us per read, "
        f"{preimage['model_500mb_load_s_before'] / 60:.0f} min for 500 MB",
    )
    table.add_row(
        f"trace of {trace['steps'] / 1e6:.1f}M steps",
        f"{trace['build_seconds']:.2f} s, {trace['snapshots']} snapshots, {trace['snapshot_mib']:.1f} MiB",
        "",
    )
    table.add_row(
        "state hash at a random step",
        f"mean {trace['state_hash_mean_s'] * 1e3:.0f} ms, max {trace['state_hash_max_s'] * 1e3:.0f} ms",
        f"< {TARGET_LATENCY * 1e3:.0f} ms target",
    )
    table.add_row("one-step proof at a random step", f"{trace['proof_s'] * 1e3:.0f} ms", "")
    table.add_row("peak RSS", f"{peak_mib:,.0f} MiB", "")
    Console().print(table)


if __name__ == "__main__":
    main()
