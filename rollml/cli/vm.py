"""`rollml vm ...`: run a program in the rollml VM, show its state at any step, make a one-step proof.

    rollml vm run prog.elf [--preimage FILE ...] [--local N=HEX ...] [--max-steps N] [--json]
    rollml vm state prog.elf --step N [--preimage FILE ...] [--local N=HEX ...] [--json]
    rollml vm proof prog.elf --step N [--preimage FILE ...] [--local N=HEX ...] [--out FILE] [--json]
    rollml vm run --model lenet.mlkit --input x.npy      # the mlkit guest instead of a PROGRAM

The oracle of a run (docs/vm-spec.md section 6): `--preimage FILE` stores the file's bytes as a keccak
preimage (its key is reported), `--local N=HEX` sets local datum N (32 bytes). `--model/--input` run the
committed mlkit guest (`mlkit.build.GUEST_ELF`) with the oracle of `mlkit.guest.guest_oracle`: the model and
input as blobs, locals 1 (model id), 2 (input id) and 3 (the true output hash, from the native run);
`--local` overrides any of them (e.g. a wrong claim as local 3).

`run --json` includes the guest's `stdout` and `stderr` as text (UTF-8; an invalid byte becomes U+FFFD, the
exact lengths are `stdout_bytes` and `stderr_bytes`), so scripts can compare a program's output directly.

Everything runs on the fast executor (`mipsvm.fast`). `state` and `proof` run to step N; `proof` checks its
witness with `mipsvm.witness.verify_step`, and against the executor's own state N + 1, before it prints it.
Every expected failure (a missing or malformed ELF, bad hex, a step past the end of the run, a preimage the
oracle does not hold) prints one line `error: ...` on stderr and exits 1; no traceback.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from rollml.cli.common import CliError, errors_as_lines, hex0x

if TYPE_CHECKING:
    from mipsvm.elf import Program
    from mipsvm.fast import FastVM
    from mipsvm.preimage import PreimageOracle
    from mipsvm.state import State
    from mipsvm.witness import StepProof

app = typer.Typer(help="Run MIPS programs in the rollml VM; states at any step; one-step proofs.")
console = Console(stderr=True)

U64 = (1 << 64) - 1
STDOUT_PREVIEW = 200  # bytes of the guest's stdout shown by `vm run` (without --json)
NEW_TOKENS = 16  # --model with a generate-mode model: tokens to generate (as `rollml model run`'s default)
REGISTER_NAMES = (
    *("zero", "at", "v0", "v1", "a0", "a1", "a2", "a3"),
    *(f"t{i}" for i in range(8)),
    *(f"s{i}" for i in range(8)),
    *("t8", "t9", "k0", "k1", "gp", "sp", "fp", "ra"),
)

ProgramArg = Annotated[
    Path | None,
    typer.Argument(help="Static big-endian MIPS32 ELF (or --model and --input).", show_default=False),
]
PreimageOpt = Annotated[
    list[Path] | None,
    typer.Option("--preimage", help="A file whose bytes are a keccak preimage of the oracle (repeatable)."),
]
LocalOpt = Annotated[
    list[str] | None,
    typer.Option("--local", metavar="N=HEX", help="Local datum N: 32 bytes of hex (repeatable)."),
]
ModelOpt = Annotated[
    Path | None, typer.Option("--model", help="Run the mlkit guest on this model (with --input).")
]
InputOpt = Annotated[
    list[Path] | None, typer.Option("--input", "-i", help="The model's input .npy (repeat for several).")
]
StepOpt = Annotated[int, typer.Option("--step", min=0, help="The step number N.", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


# --------------------------------------------------------------------------------------------------------
# The program and its oracle
# --------------------------------------------------------------------------------------------------------
@dataclass
class Setup:
    """What a command runs: the program, its oracle, and where they came from (for the report)."""

    program: Program
    oracle: PreimageOracle
    source: str  # the ELF path, or the mlkit guest with its model
    preimages: dict[str, str] = field(default_factory=dict)  # --preimage file -> its keccak key (0x-hex)


def load_program(path: Path) -> Program:
    """The program of an ELF file (CliError, naming the file, if it is missing or not a VM program)."""
    from mipsvm.elf import ElfError, load_elf

    if not path.is_file():
        raise CliError(f"no such program file: {path}")
    try:
        return load_elf(path)
    except ElfError as exc:
        raise CliError(f"{path}: {exc}") from None


def parse_local(spec: str) -> tuple[int, bytes]:
    """`N=HEX` of --local: the local index and its value (the length is LocalData's to check)."""
    index_text, sep, hex_text = spec.partition("=")
    try:
        index = int(index_text, 0)
    except ValueError:
        index = -1
    if not sep or index < 0:
        raise CliError(f"--local {spec}: expected N=HEX with a local index N >= 0")
    try:
        return index, bytes.fromhex(hex_text.removeprefix("0x"))
    except ValueError:
        raise CliError(f"--local {spec}: {hex_text!r} is not hex") from None


def read_preimage(path: Path) -> bytes:
    """A --preimage file's bytes (at most MAX_PREIMAGE: the oracle's bound on a keccak preimage)."""
    from mipsvm.constants import MAX_PREIMAGE

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read preimage {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_PREIMAGE:
        raise CliError(f"{path}: a preimage is at most {MAX_PREIMAGE} bytes, the file has {len(data)}")
    return data


def guest_setup(model_path: Path, input_paths: list[Path]) -> Setup:
    """The mlkit guest with `mlkit.guest.guest_oracle` for this model and input (their files checked)."""
    from mlkit.build import GUEST_ELF
    from mlkit.guest import guest_oracle, input_payload, read_model, read_npy

    if not input_paths:
        raise CliError("--model needs its input: --input X.npy")
    model, parsed = read_model(model_path)
    payload = input_payload(parsed, [read_npy(p) for p in input_paths], NEW_TOKENS)
    return Setup(load_program(GUEST_ELF), guest_oracle(model, payload), f"mlkit guest, model {model_path}")


def load_setup(
    program: Path | None,
    preimages: list[Path] | None,
    locals_: list[str] | None,
    model: Path | None,
    inputs: list[Path] | None,
) -> Setup:
    """The program (an ELF, or the mlkit guest with --model/--input) and its oracle with the extra
    preimages and local data of the command line."""
    from mipsvm.preimage import PreimageOracle

    if (program is None) == (model is None):
        raise CliError("give a PROGRAM (an ELF file) or --model M.mlkit --input X.npy, not both or neither")
    if model is None and inputs:
        raise CliError("--input goes with --model")
    if program is not None:
        setup = Setup(load_program(program), PreimageOracle(), str(program))
    else:
        assert model is not None
        setup = guest_setup(model, inputs or [])
    for path in preimages or []:
        setup.preimages[str(path)] = "0x" + setup.oracle.store.put(read_preimage(path)).hex()
    for spec in locals_ or []:
        index, value = parse_local(spec)
        try:
            setup.oracle.local.set(index, value)
        except ValueError as exc:
            raise CliError(f"--local {spec}: {exc}") from None
    return setup


# --------------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------------
@contextmanager
def vm_errors() -> Iterator[None]:
    """The expected failures as `error: ...` lines (mlkit's, plus the C compiler the executor needs)."""
    from mipsvm.native import NativeBuildError

    with errors_as_lines():
        try:
            yield
        except NativeBuildError as exc:
            raise CliError(f"cannot build the fast executor's hooks: {exc}") from None


@contextmanager
def step_progress(total: int | None, quiet: bool) -> Iterator[Callable[[int], None]]:
    """A progress bar (steps, steps/s; a bar when the target step is known) and its callback."""
    columns = (
        SpinnerColumn(),
        TextColumn("VM"),
        BarColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
    )
    shown = not quiet and console.is_terminal  # (else rich would still leave an empty line on stderr)
    with Progress(*columns, console=console, disable=not shown, transient=True) as bar:
        task = bar.add_task("VM", total=total, info="")
        t0 = time.perf_counter()

        def tick(step: int) -> None:
            rate = step / max(time.perf_counter() - t0, 1e-9)
            bar.update(task, completed=step, info=f"{step:,} steps, {rate / 1e6:,.1f}M steps/s")

        yield tick


def run_until(vm: FastVM, until: int, quiet: bool) -> float:
    """Run `vm` until step `until` or its exit, with a progress bar; returns the seconds. A step that reads
    a preimage the oracle does not hold is a CliError naming the step and the key."""
    from mipsvm.preimage import PreimageMissing

    with step_progress(None if until == U64 else until, quiet) as tick:
        t0 = time.perf_counter()
        try:
            vm.run_to(until, tick)
        except PreimageMissing as exc:
            raise missing_preimage(vm.step, exc) from None
        return time.perf_counter() - t0


def missing_preimage(step: int, exc: Exception) -> CliError:
    return CliError(
        f"step {step} -> {step + 1} reads a preimage the oracle does not hold ({exc}); "
        "supply it with --preimage FILE or --local N=HEX"
    )


def past_the_end(vm: FastVM, step: int) -> CliError:
    return CliError(
        f"step {step} is past the end of the run: it exited at step {vm.step} with code {vm.exit_code}"
    )


# --------------------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------------------
def state_report(state: State) -> dict[str, Any]:
    """Every field of the packed state (spec section 2), decoded, with the encoding and the state hash."""
    return {
        "step": state.step,
        "state_hash": hex0x(state.hash()),
        "status": state.status.name,
        "mem_root": hex0x(state.mem_root),
        "preimage_key": hex0x(state.preimage_key),
        "preimage_offset": state.preimage_offset,
        "pc": state.pc,
        "next_pc": state.next_pc,
        "lo": state.lo,
        "hi": state.hi,
        "heap": state.heap,
        "exit_code": state.exit_code,
        "exited": state.exited,
        "registers": dict(zip(REGISTER_NAMES, state.regs, strict=True)),
        "encoded": hex0x(state.encode()),
    }


def proof_report(step: int, proof: StepProof) -> dict[str, Any]:
    """The witness of step -> step + 1 (spec section 10) in hex, with the preimage part of a read step."""
    from mipsvm.state import State

    pre = State.decode(proof.pre_state)
    leaf = proof.proof[:32]  # the first proven leaf holds the instruction
    preimage = None
    if proof.part is not None:
        preimage = {
            "key": hex0x(pre.preimage_key),
            "offset": pre.preimage_offset,
            "part": hex0x(proof.part),
            "stream_length": proof.part_len,
        }
    return {
        "step": step,
        "pc": pre.pc,
        "instruction": hex0x(leaf[pre.pc & 31 : (pre.pc & 31) + 4]),
        "pre_state": hex0x(proof.pre_state),
        "pre_state_hash": hex0x(pre.hash()),
        "proof": hex0x(proof.proof),
        "preimage": preimage,
        "post_state_hash": hex0x(proof.post_state_hash),
        "verified": True,
    }


def print_lines(report: dict[str, Any]) -> None:
    """A report as `key  value` lines, values never cut: 32-bit numbers in hex, a mapping one line each."""
    rows = [
        (f"{key}.{sub}" if isinstance(value, dict) else key, _cell(key, item))
        for key, value in report.items()
        for sub, item in (value.items() if isinstance(value, dict) else [(None, value)])
    ]
    width = max(len(name) for name, _ in rows)
    for name, text in rows:
        print(f"{name:<{width}}  {text}")


HEX_FIELDS = {"pc", "next_pc", "lo", "hi", "heap", "registers"}


def _cell(key: str, value: object) -> str:
    if key in HEX_FIELDS and isinstance(value, int):
        return f"0x{value:08x}"
    return "-" if value is None else str(value)


# --------------------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------------------
@app.command("run")
def run_cmd(
    program: ProgramArg = None,
    preimage: PreimageOpt = None,
    local: LocalOpt = None,
    model: ModelOpt = None,
    inputs: InputOpt = None,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", min=0, help="Stop after this many steps.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run a program to its exit (or --max-steps): status, steps, state hash, memory root, speed."""
    from mipsvm.fast import FastVM
    from mipsvm.hashing import keccak256

    with vm_errors():
        setup = load_setup(program, preimage, local, model, inputs)
        with FastVM(setup.program, setup.oracle) as vm:
            until = U64 if max_steps is None else max_steps
            seconds = run_until(vm, until, as_json)
            final = vm.state()
            out = {1: bytes(vm.stdout), 2: bytes(vm.stderr), 3: bytes(vm.output)}
    report: dict[str, Any] = {
        "program": setup.source,
        "status": final.status.name,
        "exited": final.exited,
        "exit_code": final.exit_code,
        "steps": final.step,
        "state_hash": hex0x(final.hash()),
        "memory_root": hex0x(final.mem_root),
        "stdout_bytes": len(out[1]),
        "stderr_bytes": len(out[2]),
        "output_bytes": len(out[3]),
        "output_sha": hex0x(keccak256(out[3])),
        "seconds": round(seconds, 6),
        "instr_per_s": round(final.step / seconds) if seconds > 0 else None,
    }
    if setup.preimages:
        report["preimages"] = setup.preimages
    if as_json:
        report["stdout"] = out[1].decode("utf-8", "replace")
        report["stderr"] = out[2].decode("utf-8", "replace")
        print(json.dumps(report))
        return
    if out[1]:
        report["stdout"] = repr(out[1][:STDOUT_PREVIEW].decode("utf-8", "replace"))
    print_lines(report)


@app.command("state")
def state_cmd(
    program: ProgramArg = None,
    step: StepOpt = 0,
    preimage: PreimageOpt = None,
    local: LocalOpt = None,
    model: ModelOpt = None,
    inputs: InputOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The state after --step N steps: every field of the packed state, decoded, and its hash."""
    from mipsvm.fast import FastVM

    with vm_errors():
        setup = load_setup(program, preimage, local, model, inputs)
        with FastVM(setup.program, setup.oracle) as vm:
            run_until(vm, step, as_json)
            if vm.step < step:
                raise past_the_end(vm, step)
            report = state_report(vm.state())
    if as_json:
        print(json.dumps(report))
    else:
        print_lines(report)


@app.command("proof")
def proof_cmd(
    program: ProgramArg = None,
    step: StepOpt = 0,
    preimage: PreimageOpt = None,
    local: LocalOpt = None,
    model: ModelOpt = None,
    inputs: InputOpt = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Also write the JSON object here.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The one-step proof of step N -> N + 1, verified before it is printed (hex in JSON)."""
    from mipsvm.fast import FastVM

    with vm_errors():
        setup = load_setup(program, preimage, local, model, inputs)
        with FastVM(setup.program, setup.oracle) as vm:
            run_until(vm, step, as_json)
            if vm.exited:
                raise CliError(
                    f"the run exited at step {vm.step} with code {vm.exit_code}: there is no step "
                    f"{step} -> {step + 1} to prove (an exited state is a fixed point)"
                )
            report = proof_report(step, checked_proof(vm, setup.oracle))
        if out is not None:
            try:
                out.write_text(json.dumps(report) + "\n")
            except OSError as exc:
                raise CliError(f"cannot write {out}: {exc.strerror or exc}") from None
    if as_json:
        print(json.dumps(report))
        return
    short = {**report, "proof": f"{report['proof'][:66]}... ({len(report['proof']) // 2 - 1} bytes)"}
    print_lines(short)
    if out is not None:
        console.print(f"wrote {out}", highlight=False)


def checked_proof(vm: FastVM, oracle: PreimageOracle) -> StepProof:
    """The witness of the VM's next step, checked twice: `verify_step` (what MIPS.sol does) must accept it
    and give the post-state hash, and that must be the executor's own state hash one step later."""
    from mipsvm.preimage import PreimageMissing
    from mipsvm.witness import WitnessError, make_proof, verify_step

    step = vm.step
    try:
        proof = make_proof(vm.state(), vm.memory, oracle)
    except PreimageMissing as exc:
        raise missing_preimage(step, exc) from None
    try:
        verified = verify_step(proof.pre_state, proof.proof, proof.part, proof.part_len)
    except WitnessError as exc:
        raise CliError(f"internal error: the proof of step {step} does not verify: {exc}") from None
    vm.run_to(step + 1)
    if verified != proof.post_state_hash or vm.state_hash() != verified:
        raise CliError(f"internal error: the proof of step {step} disagrees with the executor's step")
    return proof
