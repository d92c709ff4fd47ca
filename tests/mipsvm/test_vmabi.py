"""The C definition of the VM ABI (mipsvm/csrc/vmabi.h) against the Python one (mipsvm/constants.py).

The guest (mlkit/csrc/guest.c) and the native hooks (mipsvm/csrc/uchooks.c) take the syscall numbers, file
descriptors, errno values, keys and blob sizes from the header; the reference stepper takes them from
constants.py. Every `#define VM_X v` must equal `constants.X`, and every ABI constant of constants.py must be
in the header.
"""

from __future__ import annotations

import re
from enum import Enum

import pytest

from mipsvm import ABI_HEADER, constants

ROOT = ABI_HEADER.parents[2]  # the repository: mipsvm/csrc/vmabi.h
# constants.py's values of the state encoding and the proofs: the verifier's business, no guest's.
NOT_ABI = frozenset({"STATE_SIZE", "MEM_TREE_DEPTH", "MEM_PROOF_SIZE"})
DEFINE = re.compile(r"^\s*#\s*define\s+(\w+)\s*(.*?)\s*(/\*.*)?$")
LITERAL = re.compile(r"0x[0-9A-Fa-f]+|0|[1-9][0-9]*")
NUMBER = re.compile(r"(?<![\w.])(\d+)[uUlL]*(?![\w.])")  # a decimal integer literal in C


def header_problems(text: str) -> list[str]:
    """What is wrong with a vmabi.h text against constants.py: a name without the VM_ prefix, a value that is
    no plain literal, a name defined twice, a name constants.py lacks, a value that differs, an ABI constant
    of constants.py that the header lacks. Empty: nothing."""
    header: set[str] = set()
    problems = []
    for line in text.splitlines():
        m = DEFINE.match(line)
        if m is None or m.group(1) == "ROLLML_VMABI_H":  # the include guard
            continue
        name, value = m.group(1), m.group(2)
        if not name.startswith("VM_"):
            problems.append(f"{name}: not a VM_ name")
        elif not LITERAL.fullmatch(value):
            problems.append(f"{name}: {value!r} is not a plain decimal or hex literal")
        elif name[3:] in header:
            problems.append(f"{name}: defined twice")
        elif not hasattr(constants, name[3:]):
            problems.append(f"{name}: mipsvm/constants.py has no {name[3:]}")
        elif getattr(constants, name[3:]) != int(value, 0):
            problems.append(
                f"{name}: {value} differs from constants.{name[3:]} = {getattr(constants, name[3:])}"
            )
        header.add(name[3:])
    problems += [
        f"VM_{name}: missing (constants.{name} = {v})"
        for name, v in abi_constants().items()
        if name not in header
    ]
    return problems


def abi_constants() -> dict[str, int]:
    """The module-level integer constants of constants.py that belong in the header."""
    return {
        name: value
        for name, value in vars(constants).items()
        if name.isupper() and isinstance(value, int) and not isinstance(value, Enum) and name not in NOT_ABI
    }


def test_the_header_matches_constants_py() -> None:
    assert header_problems(ABI_HEADER.read_text()) == []


@pytest.mark.parametrize(
    "old, new, problem",
    [
        ("#define VM_SYS_READ 4003", "#define VM_SYS_READ 4004", "VM_SYS_READ: 4004 differs"),
        ("#define VM_FD_PREIMAGE_KEY 6", "#define VM_FD_PREIMAGE_KEY 0x7", "VM_FD_PREIMAGE_KEY: 0x7 differs"),
        ("#define VM_CHUNK 16384\n", "", "VM_CHUNK: missing"),
        ("#define VM_EINVAL 22", "#define VM_EINVAL (22)", "VM_EINVAL: '(22)' is not a plain"),
        ("#define VM_EBADF 9", "#define VM_EBADF 9\n#define VM_EBADF 9", "VM_EBADF: defined twice"),
        (
            "#define VM_EBADF 9",
            "#define VM_EBADF 9\n#define VM_EBADFD 77",
            "VM_EBADFD: mipsvm/constants.py has no EBADFD",
        ),
        ("#define VM_EBADF 9", "#define EBADF 9", "EBADF: not a VM_ name"),
    ],
)
def test_a_wrong_header_is_caught(old: str, new: str, problem: str) -> None:
    text = ABI_HEADER.read_text()
    assert old in text
    assert any(p.startswith(problem) for p in header_problems(text.replace(old, new))), problem


def test_the_c_sources_take_the_syscall_numbers_from_the_header() -> None:
    """No C file of the guest or the hooks spells a syscall number itself (the header is the one copy)."""
    numbers = {str(v) for n, v in abi_constants().items() if n.startswith("SYS_")}
    sources = [
        *sorted((ROOT / "mlkit" / "csrc").glob("*.[ch]")),
        *sorted((ROOT / "mipsvm" / "csrc").glob("*.c")),
    ]
    found = [
        f"{path.relative_to(ROOT)}:{k}"
        for path in sources
        for k, line in enumerate(path.read_text().splitlines(), 1)
        if numbers & set(NUMBER.findall(line))
    ]
    assert sources and not found, f"syscall numbers spelled outside vmabi.h: {found}"
