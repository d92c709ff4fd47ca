"""Benchmark of the VM: the exact fast path next to Unicorn without its counting hook, per model.

    python3 bench/vm.py                     # a table, with the anchors and targets side by side
    python3 bench/vm.py --json              # one JSON object
    python3 bench/vm.py --models mnist-mlp,lenet --reps 1
    python3 bench/vm.py --dispute           # also a whole MNIST dispute on anvil (bench/dispute.py)

Per program (the reference models mnist-mlp, lenet, gpt2-tiny, dcgan32 in the mlkit guest, and the
integer-only kernel tests/support/mips_programs/fast_kernel.c): steps per second of the exact fast path
(`FastVM.run_to`, the step count exact, no memory root) and, in the same run, of the same executor on the
same instruction stream without the block hook that counts steps (`mipsvm.fast.uncounted_run`: "raw
Unicorn", with the same TLB-fill, syscall and delay-slot handling; its registers at the exit are checked
equal), best of --reps runs each, wall time and CPU time. The ratio exact / raw is taken from CPU time
(on a machine shared with other work wall time measures the neighbours too); both are printed. Also per
model: the recording run of a dispute party (`mipsvm.trace.Trace` from a 64Ki-step interval, what
`rollml.core.execution.recorded_run` does): its CPU time next to the plain run's with the final memory root
(which a run for a claim computes too), its snapshots and their bytes.

Then, as before: a state hash at random steps of a ~15M-step trace, preimage reads (the native syscalls
that load a model), the reference stepper, and opML's way (Unicorn with a Python callback per instruction,
measured here on the kernel) next to opML's published 5-6.5M instructions/s.

Targets (issue 14): >= 400M steps/s on dcgan32, and within 1.5x of raw Unicorn on every model.
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
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402
from rich.table import Table  # noqa: E402
from support.mips_build import PROGRAMS, build_source, program  # noqa: E402
from unicorn import UC_ARCH_MIPS, UC_HOOK_CODE, UC_MODE_BIG_ENDIAN, UC_MODE_MIPS32, Uc, UcError  # noqa: E402
from unicorn.mips_const import UC_MIPS_REG_SP  # noqa: E402

from mipsvm.constants import CHUNK  # noqa: E402
from mipsvm.elf import Program, load_elf  # noqa: E402
from mipsvm.fast import FastVM, uncounted_run  # noqa: E402
from mipsvm.preimage import LocalData, PreimageOracle, PreimageStore  # noqa: E402
from mipsvm.step import Oracle  # noqa: E402
from mipsvm.step import run as reference_run  # noqa: E402
from mipsvm.trace import Trace  # noqa: E402

ANCHOR_OPML = (5e6, 6.5e6)  # opML: Unicorn with a per-instruction callback, instr/s
TARGET_DCGAN = 400e6  # steps/s on dcgan32
TARGET_RATIO = 1.5  # exact fast path / raw Unicorn, on every model
TARGET_LATENCY = 0.5  # s per state hash at a random step of a 15M-step run
MODELS = ("mnist-mlp", "lenet", "gpt2-tiny", "dcgan32")
KERNEL = "int-kernel"
RECORD_INTERVAL = 1 << 16  # the first snapshot interval of a recording run (rollml.core.execution's)
STEPS_PER_ROUND = 595_700  # fast_kernel.c
U64 = (1 << 64) - 1
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


def programs(names: list[str], kernel_rounds: int) -> dict[str, tuple[Program, Oracle]]:
    """The benchmarked programs with their oracles: the mlkit guest per model (the oracle of a true claim),
    and the integer kernel."""
    out: dict[str, tuple[Program, Oracle]] = {}
    models = [n for n in names if n != KERNEL]
    if models:
        from mlkit import models as reference
        from mlkit.guest import guest_oracle, guest_program

        for name in models:
            exp = reference.reference(name)
            out[name] = (guest_program(), guest_oracle(exp.model, reference.example_payload(exp)))
    if KERNEL in names:
        out[KERNEL] = (kernel(kernel_rounds), PreimageOracle())
    return out


def bench_speed(prog: Program, oracle: Oracle, reps: int) -> dict[str, Any]:
    """The exact fast path and raw Unicorn on one program, best of `reps` each (interleaved)."""
    exact_wall = exact_cpu = raw_wall = raw_cpu = float("inf")
    stats: dict[str, Any] = {}
    for _ in range(reps):
        with FastVM(prog, oracle) as vm:
            t, c = time.perf_counter(), time.process_time()
            vm.run_to(U64)
            exact_wall = min(exact_wall, time.perf_counter() - t)
            exact_cpu = min(exact_cpu, time.process_time() - c)
            final = vm.cpu_state()
            c = time.process_time()
            vm.memory_root()  # what a run for a claim does next (the final state hash)
            root_cpu = time.process_time() - c
            stats = {
                "unicorn_runs": vm.uc_runs,
                "reference_steps": vm.ref_steps,
                "slot_fill_stops": vm.slot_fills,
                "native_syscalls": vm.native_syscalls,
            }
        raw = uncounted_run(prog, oracle)
        if (raw.exit_code, raw.regs) != (final.exit_code, final.regs):
            raise SystemExit("the uncounted run ended elsewhere than the exact one")
        raw_wall, raw_cpu = min(raw_wall, raw.seconds), min(raw_cpu, raw.cpu_seconds)
    steps = final.step
    return {
        "steps": steps,
        "exit_code": final.exit_code,
        "exact_seconds": exact_wall,
        "exact_cpu_seconds": exact_cpu,
        "raw_seconds": raw_wall,
        "raw_cpu_seconds": raw_cpu,
        "steps_per_s": steps / exact_wall,
        "steps_per_cpu_s": steps / exact_cpu,
        "raw_steps_per_s": steps / raw_wall,
        "raw_steps_per_cpu_s": steps / raw_cpu,
        "ratio_to_raw": exact_cpu / raw_cpu,
        "ratio_to_raw_wall": exact_wall / raw_wall,
        "final_root_cpu_seconds": root_cpu,
        **stats,
    }


def bench_recording(prog: Program, oracle: Oracle, plain_cpu: float) -> dict[str, Any]:
    """A dispute party's recording run: time (next to a plain run with its final memory root, `plain_cpu`),
    snapshots, their bytes."""
    t, c = time.perf_counter(), time.process_time()
    trace = Trace(prog, oracle, interval=RECORD_INTERVAL)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    sizes = [s.nbytes for s in trace.snapshots]
    trace.close()
    return {
        "seconds": wall,
        "cpu_seconds": cpu,
        "overhead_vs_plain_run": cpu / plain_cpu if plain_cpu else None,
        "snapshots": len(sizes),
        "interval": trace.interval,
        "bytes": sum(sizes),
        "max_snapshot_bytes": max(sizes),
        "mean_snapshot_bytes": sum(sizes) / len(sizes),
    }


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


def bench_trace(rounds: int, queries: int) -> dict[str, Any]:
    prog = kernel(rounds)
    trace, build = timed(lambda: Trace(prog, PreimageOracle()))
    rnd = random.Random(7)
    latencies = []
    for _ in range(queries):
        n = rnd.randrange(trace.steps)
        t = time.perf_counter()
        trace.state_hash_at(n)
        latencies.append(time.perf_counter() - t)
    proof_seconds = timed(lambda: trace.proof_at(rnd.randrange(trace.steps)))[1]
    out = {
        "steps": trace.steps,
        "build_seconds": build,
        "snapshots": len(trace.snapshots),
        "snapshot_bytes": trace.snapshot_bytes(),
        "state_hash_mean_s": sum(latencies) / len(latencies),
        "state_hash_max_s": max(latencies),
        "proof_s": proof_seconds,
    }
    trace.close()
    return out


def bench_dispute(console: Console) -> list[dict[str, Any]]:
    """A whole MNIST dispute on anvil, both scenarios (bench/dispute.py's)."""
    from dispute import figures, play

    from rollml.core.devnet import Anvil, anvil_missing

    missing = anvil_missing()
    if missing:
        raise SystemExit(f"error: --dispute: {missing}")
    with Anvil() as anvil:
        return [figures(s) for s in play(console, anvil.url)]


def verdicts(rows: dict[str, dict[str, Any]]) -> dict[str, bool]:
    out = {
        f"{name}_within_{TARGET_RATIO}x_of_raw": r["ratio_to_raw"] <= TARGET_RATIO
        for name, r in rows.items()
        if name != KERNEL
    }
    if "dcgan32" in rows:
        out["dcgan32_at_least_400M_steps_per_s"] = rows["dcgan32"]["steps_per_s"] >= TARGET_DCGAN
        out["dcgan32_at_least_400M_steps_per_cpu_s"] = rows["dcgan32"]["steps_per_cpu_s"] >= TARGET_DCGAN
    return out


def m(x: float) -> str:
    return f"{x / 1e6:,.0f}M"


def print_tables(result: dict[str, Any]) -> None:
    console = Console()
    rows: dict[str, dict[str, Any]] = result["programs"]
    table = Table(title="rollml VM: the exact fast path and raw Unicorn on the same instruction stream")
    for col in ("program", "steps", "exact steps/s", "raw steps/s", "exact / raw", "stops", "recording run"):
        table.add_column(col, justify="right")
    for name, r in rows.items():
        rec = r.get("recording")
        rec_text = (
            f"x{rec['overhead_vs_plain_run']:.2f} CPU, {rec['snapshots']} snapshots, "
            f"{rec['bytes'] / 2**20:,.1f} MiB"
            if rec
            else ""
        )
        table.add_row(
            name,
            f"{r['steps'] / 1e6:,.1f}M",
            f"{m(r['steps_per_s'])} wall, {m(r['steps_per_cpu_s'])} CPU",
            f"{m(r['raw_steps_per_s'])} wall, {m(r['raw_steps_per_cpu_s'])} CPU",
            f"{r['ratio_to_raw']:.2f} CPU, {r['ratio_to_raw_wall']:.2f} wall",
            f"{r['unicorn_runs']:,}",
            rec_text,
        )
    table.add_row(
        "opML (anchor)",
        "",
        f"{ANCHOR_OPML[0] / 1e6:.0f}-{ANCHOR_OPML[1] / 1e6:.1f}M",
        "",
        "",
        "",
        "",
    )
    table.add_row(
        "target",
        "",
        f">= {m(TARGET_DCGAN)} on dcgan32",
        "",
        f"<= {TARGET_RATIO}x on every model",
        "",
        "",
    )
    console.print(table)
    for name, ok in result["verdicts"].items():
        console.print(f"{name}: {'yes' if ok else 'NO'}")
    other = Table(title="rollml VM: other figures")
    for col in ("measure", "rollml (this machine)", "anchor / target"):
        other.add_column(col)
    cb, ref, pre, tr = (
        result[k] for k in ("unicorn_python_callback", "reference_stepper", "preimage_reads", "trace")
    )
    other.add_row(
        "Unicorn + Python callback per instr (kernel)",
        f"{cb['instr_per_s'] / 1e6:.1f}M/s",
        f"opML {ANCHOR_OPML[0] / 1e6:.0f}-{ANCHOR_OPML[1] / 1e6:.1f}M/s",
    )
    other.add_row("reference stepper", f"{ref['instr_per_s'] / 1e3:,.0f}k/s", "")
    other.add_row(
        "preimage reads (native syscalls)",
        f"{pre['mib_per_s']:,.0f} MiB/s, {pre['us_per_syscall']:.2f} us per syscall; "
        f"a 500 MB model loads in {pre['model_500mb_load_s']:.1f} s",
        f"before: {BEFORE_NATIVE_READ_S * 1e6:.0f} us per read, "
        f"{pre['model_500mb_load_s_before'] / 60:.0f} min for 500 MB",
    )
    other.add_row(
        f"trace of {tr['steps'] / 1e6:.1f}M steps (kernel)",
        f"{tr['build_seconds']:.2f} s, {tr['snapshots']} snapshots, {tr['snapshot_bytes'] / 2**20:.1f} MiB",
        "",
    )
    other.add_row(
        "state hash at a random step",
        f"mean {tr['state_hash_mean_s'] * 1e3:.0f} ms, max {tr['state_hash_max_s'] * 1e3:.0f} ms",
        f"< {TARGET_LATENCY * 1e3:.0f} ms target",
    )
    other.add_row("one-step proof at a random step", f"{tr['proof_s'] * 1e3:.0f} ms", "")
    for s in result.get("dispute", []):
        other.add_row(f"whole MNIST dispute: {s['scenario']}", f"{s['seconds']:.1f} s, {s['txs']} txs", "")
    other.add_row("peak RSS", f"{result['peak_rss_mib']:,.0f} MiB", "")
    console.print(other)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument(
        "--models",
        default=",".join([*MODELS, KERNEL]),
        help=f"comma-separated, of {', '.join([*MODELS, KERNEL])}",
    )
    ap.add_argument("--reps", type=int, default=3, help="runs of each program and mode (the best counts)")
    ap.add_argument(
        "--kernel-rounds", type=int, default=200, help="rounds of the integer kernel (~0.6M steps each)"
    )
    ap.add_argument("--no-recording", action="store_true", help="skip the recording runs")
    ap.add_argument(
        "--trace-rounds", type=int, default=26, help="kernel rounds of the trace run (~15M steps)"
    )
    ap.add_argument("--queries", type=int, default=20, help="random state-hash queries on the trace")
    ap.add_argument("--callback-steps", type=int, default=3_000_000, help="steps of the per-callback anchor")
    ap.add_argument("--preimage-rounds", type=int, default=2000, help="16 KiB chunks the preimage test loads")
    ap.add_argument("--dispute", action="store_true", help="also time a whole MNIST dispute on anvil")
    args = ap.parse_args()
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = sorted(set(names) - {*MODELS, KERNEL})
    if unknown:
        raise SystemExit(
            f"error: unknown program(s) {', '.join(unknown)}; expected {', '.join([*MODELS, KERNEL])}"
        )

    console = Console(stderr=True)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
    )
    rows: dict[str, dict[str, Any]] = {}
    with Progress(*columns, console=console, transient=True, disable=args.json) as progress:
        task = progress.add_task("building the programs", total=None)
        progs = programs(names, args.kernel_rounds)
        progress.update(task, total=len(progs), completed=0)
        for name, (prog, oracle) in progs.items():
            progress.update(task, description=f"{name}: exact and raw")
            rows[name] = bench_speed(prog, oracle, args.reps)
            if not args.no_recording and name != KERNEL:
                progress.update(task, description=f"{name}: recording run")
                plain = rows[name]["exact_cpu_seconds"] + rows[name]["final_root_cpu_seconds"]
                rows[name]["recording"] = bench_recording(prog, oracle, plain)
            progress.advance(task)
        progress.update(task, description="trace, preimage reads, reference stepper, callback anchor")
        trace = bench_trace(args.trace_rounds, args.queries)
        preimage = bench_preimage(args.preimage_rounds)
        callback = bench_callback(args.callback_steps)
        reference = bench_reference(200_000)
    result: dict[str, Any] = {
        "programs": rows,
        "verdicts": verdicts(rows),
        "trace": trace,
        "preimage_reads": preimage,
        "unicorn_python_callback": callback,
        "reference_stepper": reference,
        "anchors": {"opml_callback_instr_per_s": ANCHOR_OPML},
        "targets": {
            "dcgan32_steps_per_s": TARGET_DCGAN,
            "ratio_to_raw": TARGET_RATIO,
            "state_hash_s": TARGET_LATENCY,
        },
    }
    if args.dispute:
        result["dispute"] = bench_dispute(Console(stderr=True, quiet=args.json))
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.json:
        print(json.dumps(result))
        return
    print_tables(result)


if __name__ == "__main__":
    main()
