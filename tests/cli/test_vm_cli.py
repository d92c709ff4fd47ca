"""`rollml vm run/state/proof` (rollml/cli/vm.py) against the reference stepper, on the small test programs.

Every figure the commands print is checked independently: state hashes against `mipsvm.step.step` run from
the ELF's initial state, proofs with `mipsvm.witness.verify_step`; and every expected failure is one
`error: ...` line with exit code 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support.mips_build import PROGRAMS, build_source, program
from typer.testing import CliRunner

from mipsvm.elf import load_elf
from mipsvm.hashing import keccak256
from mipsvm.preimage import LocalData, PreimageOracle, PreimageStore, keccak_key, local_key
from mipsvm.state import State
from mipsvm.step import Oracle, step
from mipsvm.witness import verify_step
from rollml.cli.vm import app

runner = CliRunner()
DATA = bytes(range(256)) * 20  # the keccak preimage preimage.c reads (5120 bytes)


class Reference:
    """The reference stepper from an ELF's initial state."""

    def __init__(self, elf: Path, oracle: Oracle) -> None:
        prog = load_elf(elf)
        self.state, self.mem, self.oracle = prog.state.copy(), prog.memory.copy(), oracle
        self.stdout = bytearray()

    def run_to(self, n: int) -> None:
        while self.state.step < n and not self.state.exited:
            step(self.state, self.mem, self.oracle, lambda fd, b: self.stdout.extend(b) if fd == 1 else None)

    def state_hash(self) -> bytes:
        st = self.state.copy()
        st.mem_root = self.mem.root()
        return st.hash()


def vm(*args: str | Path | int) -> dict[str, Any]:
    """Run `rollml vm ARGS --json` and return its JSON object (the command must succeed)."""
    result = runner.invoke(app, [*map(str, args), "--json"])
    assert result.exit_code == 0, result.output + result.stderr
    return json.loads(result.stdout)


def vm_error(*args: str | Path | int) -> str:
    """Run `rollml vm ARGS`, which must fail cleanly: exit 1, one `error: ...` line, no traceback."""
    result = runner.invoke(app, list(map(str, args)))
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def preimage_elf() -> Path:
    return program("preimage.c")


@pytest.fixture
def preimage_file(tmp_path: Path) -> Path:
    path = tmp_path / "data.bin"
    path.write_bytes(DATA)
    return path


def preimage_oracle() -> PreimageOracle:
    store = PreimageStore()
    return PreimageOracle(store, LocalData({1: store.put(DATA)}))


def local_1() -> str:
    return f"1=0x{keccak_key(DATA).hex()}"


# --------------------------------------------------------------------------------------------------------
# The figures
# --------------------------------------------------------------------------------------------------------
def test_run_reports_the_final_state() -> None:
    elf = program("compute.c")
    ref = Reference(elf, PreimageOracle())
    ref.run_to(10**9)
    out = vm("run", elf)
    assert out["status"] == "VALID" and out["exited"] is True and out["exit_code"] == 0
    assert out["steps"] == ref.state.step
    assert out["state_hash"] == "0x" + ref.state_hash().hex()
    assert out["memory_root"] == "0x" + ref.mem.root().hex()
    assert out["stdout_bytes"] == len(ref.stdout) and out["stderr_bytes"] == 0
    assert isinstance(out["seconds"], float) and out["instr_per_s"]


def test_run_max_steps_stops_unfinished() -> None:
    elf = program("compute.c")
    ref = Reference(elf, PreimageOracle())
    ref.run_to(5000)
    out = vm("run", elf, "--max-steps", 5000)
    assert (out["status"], out["exited"], out["steps"]) == ("UNFINISHED", False, 5000)
    assert out["state_hash"] == "0x" + ref.state_hash().hex()


@pytest.mark.parametrize("n", [0, 1, 777, 12345, 40000])
def test_state_at_step_equals_the_reference(n: int) -> None:
    elf = program("compute.c")
    ref = Reference(elf, PreimageOracle())
    ref.run_to(n)
    out = vm("state", elf, "--step", n)
    assert out["state_hash"] == "0x" + ref.state_hash().hex()
    st = ref.state
    assert (out["step"], out["pc"], out["next_pc"], out["heap"]) == (n, st.pc, st.next_pc, st.heap)
    assert (out["lo"], out["hi"], out["preimage_offset"]) == (st.lo, st.hi, st.preimage_offset)
    assert list(out["registers"].values()) == st.regs
    assert list(out["registers"])[29] == "sp"
    encoded = State.decode(bytes.fromhex(out["encoded"][2:]))
    assert encoded.hash().hex() == out["state_hash"][2:] and encoded.mem_root == ref.mem.root()


def test_state_at_the_exit_step_is_the_final_state() -> None:
    elf = program("hello.S")
    final = vm("run", elf)
    out = vm("state", elf, "--step", final["steps"])
    assert out["state_hash"] == final["state_hash"] and out["exited"] is True


@pytest.mark.parametrize("n", [0, 5, 999, 23456])
def test_proof_verifies_and_reaches_the_reference_state(n: int, tmp_path: Path) -> None:
    elf = program("compute.c")
    out_file = tmp_path / "proof.json"
    out = vm("proof", elf, "--step", n, "--out", out_file)
    assert json.loads(out_file.read_text()) == out
    ref = Reference(elf, PreimageOracle())
    ref.run_to(n)
    assert out["pre_state_hash"] == "0x" + ref.state_hash().hex()
    ref.run_to(n + 1)
    pre, proof = bytes.fromhex(out["pre_state"][2:]), bytes.fromhex(out["proof"][2:])
    assert len(pre) == 226 and len(proof) == 1792 and out["preimage"] is None
    assert "0x" + verify_step(pre, proof).hex() == out["post_state_hash"] == "0x" + ref.state_hash().hex()


def test_proof_of_a_preimage_read(preimage_elf: Path, preimage_file: Path) -> None:
    """The first read(5, ...) step of preimage.c: the proof carries the key, offset and stream part."""
    ref = Reference(preimage_elf, preimage_oracle())
    while (access := step(ref.state.copy(), ref.mem.copy(), ref.oracle)).preimage is None:
        step(ref.state, ref.mem, ref.oracle)
    n, (key, offset) = ref.state.step, access.preimage
    out = vm("proof", preimage_elf, "--step", n, "--preimage", preimage_file, "--local", local_1())
    part = out["preimage"]
    assert (part["key"], part["offset"]) == ("0x" + key.hex(), offset) and key == local_key(1)
    assert part["part"] == "0x" + preimage_oracle().stream_part(key, offset)[0].hex()
    pre, proof = bytes.fromhex(out["pre_state"][2:]), bytes.fromhex(out["proof"][2:])
    post = verify_step(pre, proof, bytes.fromhex(part["part"][2:]), part["stream_length"])
    ref.run_to(n + 1)
    assert "0x" + post.hex() == out["post_state_hash"] == "0x" + ref.state_hash().hex()


# Writes text to stdout and stderr (one byte that is not UTF-8 on stderr), then exits 3.
TWO_STREAMS = r"""
#include "sys.h"
void __start(void) {
    static const char out[] = "hello, stdout\n";
    static const char err[] = "warning \xff on stderr\n";
    sys_write(1, out, sizeof out - 1);
    sys_write(2, err, sizeof err - 1);
    sys_write(1, out, 5);
    sys_exit_group(3);
}
"""


def test_run_json_includes_stdout_and_stderr() -> None:
    flags, deps = [f"-I{PROGRAMS}"], [PROGRAMS / "sys.h"]
    elf = build_source(TWO_STREAMS, suffix=".c", name="two_streams", extra_flags=flags, deps=deps)
    out = vm("run", elf)
    assert out["exit_code"] == 3 and out["status"] == "PANIC"
    assert out["stdout"] == "hello, stdout\nhello"
    assert out["stderr"] == "warning \ufffd on stderr\n" and out["stderr_bytes"] == 20
    compute = vm("run", program("compute.c"))
    assert compute["stdout"].startswith("primes 550") and compute["stderr"] == ""


def test_run_with_preimage_and_local(preimage_elf: Path, preimage_file: Path) -> None:
    out = vm("run", preimage_elf, "--preimage", preimage_file, "--local", local_1())
    assert out["status"] == "VALID" and out["stdout_bytes"] == len(DATA)
    assert out["preimages"] == {str(preimage_file): "0x" + keccak_key(DATA).hex()}
    ref = Reference(preimage_elf, preimage_oracle())
    ref.run_to(10**9)
    assert out["state_hash"] == "0x" + ref.state_hash().hex()


def test_human_output_prints_every_field() -> None:
    result = runner.invoke(app, ["state", str(program("hello.S")), "--step", "3"])
    assert result.exit_code == 0
    names = [line.split()[0] for line in result.stdout.splitlines()]
    assert names[:3] == ["step", "state_hash", "status"] and "registers.ra" in names and "encoded" in names


def test_attached_to_the_rollml_command() -> None:
    from rollml.cli import app as rollml_app

    result = runner.invoke(rollml_app, ["vm", "--help"])
    assert result.exit_code == 0 and "proof" in result.stdout


# --------------------------------------------------------------------------------------------------------
# Clean errors
# --------------------------------------------------------------------------------------------------------
def test_missing_and_malformed_elf(tmp_path: Path) -> None:
    assert vm_error("run", tmp_path / "nope.elf") == f"error: no such program file: {tmp_path / 'nope.elf'}"
    bad = tmp_path / "bad.elf"
    bad.write_bytes(b"\x7fELF" + bytes(60))
    assert vm_error("state", bad, "--step", "1").startswith(f"error: {bad}: ")
    bad.write_text("not an elf")
    assert vm_error("proof", bad, "--step", "1") == f"error: {bad}: not an ELF file"


def test_bad_local_data(preimage_elf: Path) -> None:
    assert "'zz' is not hex" in vm_error("run", preimage_elf, "--local", "1=zz")
    assert "exactly 32 bytes, got 2" in vm_error("run", preimage_elf, "--local", "1=abcd")
    assert "expected N=HEX" in vm_error("run", preimage_elf, "--local", "one=00")


def test_step_beyond_the_end() -> None:
    elf = program("hello.S")
    steps = vm("run", elf)["steps"]
    assert f"exited at step {steps} with code 0" in vm_error("state", elf, "--step", "100")
    assert f"exited at step {steps} with code 0" in vm_error("proof", elf, "--step", str(steps))


def test_missing_preimage(preimage_elf: Path) -> None:
    ref = Reference(preimage_elf, PreimageOracle())
    with pytest.raises(LookupError):
        ref.run_to(10**9)
    n = ref.state.step  # the read of local 1, which no one set
    expected = f"error: step {n} -> {n + 1} reads a preimage the oracle does not hold (no preimage for key 0x"
    assert vm_error("run", preimage_elf).startswith(expected + local_key(1).hex())
    assert vm_error("proof", preimage_elf, "--step", str(n)).startswith(expected + local_key(1).hex())
    msg = vm_error("run", preimage_elf, "--local", local_1())  # local 1 is there, not the data it names
    assert f"no preimage for key 0x{keccak_key(DATA).hex()}" in msg and "--preimage FILE" in msg


def test_bad_preimage_files(tmp_path: Path, preimage_elf: Path) -> None:
    assert "cannot read preimage" in vm_error("run", preimage_elf, "--preimage", tmp_path / "none")
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(16385))
    assert "at most 16384 bytes" in vm_error("run", preimage_elf, "--preimage", big)


def test_program_or_model() -> None:
    assert "not both or neither" in vm_error("run")
    assert "--model needs its input" in vm_error("run", "--model", "m.mlkit")
    assert "--input goes with --model" in vm_error("run", program("hello.S"), "--input", "x.npy")


# --------------------------------------------------------------------------------------------------------
# The mlkit guest
# --------------------------------------------------------------------------------------------------------
@pytest.mark.requires("guest")
def test_model_and_input_run_the_mlkit_guest(tmp_path: Path) -> None:
    import numpy as np

    from mipsvm.fast import FastVM
    from mlkit import models
    from mlkit.build import GUEST_ELF
    from mlkit.guest import guest_oracle, run_native

    exp = models.reference("mnist-mlp")
    model, x = tmp_path / "m.mlkit", tmp_path / "x.npy"
    model.write_bytes(exp.model)
    np.save(x, exp.example)
    out = vm("run", "--model", model, "--input", x)
    payload = models.example_payload(exp)
    with FastVM(load_elf(GUEST_ELF), guest_oracle(exp.model, payload)) as fast:
        final = fast.run()
        assert out["state_hash"] == "0x" + final.hash().hex() and out["steps"] == final.step
    assert out["status"] == "VALID"
    assert out["output_sha"] == "0x" + keccak256(run_native(exp.model, payload).output).hex()
    wrong = vm("run", "--model", model, "--input", x, "--local", "3=" + "ab" * 32)
    assert wrong["status"] == "INVALID" and wrong["output_sha"] == out["output_sha"]
    state = vm("state", "--model", model, "-i", x, "--step", 1000)
    assert state["step"] == 1000
