"""Gas of the on-chain one-step verifier (MIPS.sol) and the preimage oracle, by real transactions.

Deploys PreimageOracle and MIPS on an in-process py-evm chain (eth_tester) and sends one `MIPS.step`
transaction per instruction class, with witnesses made by the Python prover (`mipsvm.witness.make_proof`)
over a program-like memory (dense code, data and stack pages, so the proof siblings are real hashes and the
calldata is close to its worst case). For each class it prints the calldata size, the execution gas (the
call alone, as forge reports it) and the gas of the whole transaction under Cancun and under Prague (whose
EIP-7623 calldata floor prices a ~2 KB witness at about 100k gas whatever the execution costs), next to the
anchors: Cannon's MIPS.sol step (~58.5k gas, forge test) and opML (~1.6-3.4M gas per step).

    python3 bench/gas.py            # a table
    python3 bench/gas.py --json     # one JSON object
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eth_abi import encode  # noqa: E402

from mipsvm.constants import HEAP_START, STACK_TOP  # noqa: E402
from mipsvm.hashing import keccak256  # noqa: E402
from mipsvm.memory import Memory  # noqa: E402
from mipsvm.preimage import LocalData, PreimageOracle, PreimageStore, local_key  # noqa: E402
from mipsvm.state import State  # noqa: E402
from mipsvm.witness import make_proof  # noqa: E402

ANCHORS = {
    "cannon_mips_step_forge": 58_500,  # Cannon MIPS.sol step, forge test
    "opml_step_min": 1_600_000,  # opML one-step proof, per step
    "opml_step_max": 3_400_000,
}
CODE, DATA, STACK = 0x00400000, 0x10000000, STACK_TOP - 0x1000
CTX = keccak256(b"bench context")
PREIMAGE = bytes((i * 31 + 7) & 0xFF for i in range(1000))


def selector(signature: str) -> bytes:
    return keccak256(signature.encode())[:4]


def artifact(name: str) -> str:
    return json.loads((ROOT / "contracts" / "out" / f"{name}.sol" / f"{name}.json").read_text())["bytecode"][
        "object"
    ]


class Chain:
    """One eth_tester chain on a given fork with the oracle and the verifier deployed."""

    def __init__(self, fork: str) -> None:
        from eth.vm.forks import CancunVM, PragueVM
        from eth_tester import EthereumTester, PyEVMBackend

        vm = {"cancun": CancunVM, "prague": PragueVM}[fork]
        self.tester = EthereumTester(PyEVMBackend(vm_configuration=((0, vm),)))
        self.account = self.tester.get_accounts()[0]
        self.oracle = self.deploy(artifact("PreimageOracle"))
        self.mips = self.deploy(artifact("MIPS") + encode(["address"], [self.oracle]).hex())

    def deploy(self, code: str) -> str:
        tx = self.tester.send_transaction({"from": self.account, "data": code, "gas": 10_000_000})
        return self.tester.get_transaction_receipt(tx)["contract_address"]

    def transact(self, to: str, data: bytes) -> int:
        """Gas used by a mined transaction (it must succeed)."""
        tx = self.tester.send_transaction(
            {"from": self.account, "to": to, "data": "0x" + data.hex(), "gas": 5_000_000}
        )
        receipt = self.tester.get_transaction_receipt(tx)
        if receipt["status"] != 1:
            raise RuntimeError(f"transaction to {to} failed")
        return int(receipt["gas_used"])

    def execution_gas(self, to: str, data: bytes) -> tuple[int, bytes]:
        """Gas and output of the call alone (no intrinsic or calldata cost), as a message on the latest
        state."""
        from eth.vm.message import Message
        from eth_utils import to_canonical_address

        state = self.tester.backend.chain.get_vm().state
        sender, target = to_canonical_address(self.account), to_canonical_address(to)
        msg = Message(
            gas=5_000_000, to=target, sender=sender, value=0, data=data, code=state.get_code(target)
        )
        computation = state.computation_class.apply_message(
            state, msg, state.get_transaction_context_class()(gas_price=1, origin=sender)
        )
        if computation.is_error:
            raise RuntimeError(f"call failed: {computation.error!r}")
        return int(computation.get_gas_used()), bytes(computation.output)


@dataclass
class Case:
    name: str
    state: State
    mem: Memory


STORE = PreimageStore()
STORE_KEY = STORE.put(PREIMAGE)
ORACLE = PreimageOracle(STORE, LocalData({1: STORE_KEY}))


def program_like_memory(rng: random.Random) -> Memory:
    """Dense pages where a running program has them: 16 KiB of code, 16 KiB of data, the top stack page."""
    mem = Memory()
    mem.write(CODE, rng.randbytes(0x4000))
    mem.write(DATA, rng.randbytes(0x4000))
    mem.write(STACK, rng.randbytes(0x1000))
    return mem


def cases() -> list[Case]:
    rng = random.Random(7)

    def case(name: str, insn: int, regs: dict[int, int], **fields: Any) -> Case:
        mem = program_like_memory(rng)
        state = State(pc=CODE + 0x100, next_pc=CODE + 0x104, heap=HEAP_START, **fields)
        state.regs[29] = STACK + 0xF00  # sp
        state.regs[31] = CODE + 0x40  # ra
        for r, v in regs.items():
            state.regs[r] = v
        mem.write_u32(state.pc, insn)
        return Case(name, state, mem)

    def r(fn: int, rd: int, rs: int, rt: int) -> int:
        return (rs << 21) | (rt << 16) | (rd << 11) | fn

    def i(op: int, rs: int, rt: int, imm: int) -> int:
        return (op << 26) | (rs << 21) | (rt << 16) | (imm & 0xFFFF)

    return [
        case("ALU (addu)", r(0x21, 10, 8, 9), {8: 1234, 9: 0x10000}),
        case("load (lw)", i(0x23, 29, 8, 0x10), {}),
        case("store (sw)", i(0x2B, 29, 8, 0x10), {8: 0xDEADBEEF}),
        case("branch (bne, taken)", i(0x05, 8, 0, 0xFFF0), {8: 3}),
        case("syscall mmap", 0x0C, {2: 4090, 5: 0x10000, 6: 3, 7: 0x802}),
        case(
            "preimage read (32 bytes)",
            0x0C,
            {2: 4003, 4: 5, 5: DATA + 0x40, 6: 32},
            preimage_key=STORE_KEY,
            preimage_offset=8,
        ),
        case(
            "preimage read (local key)",
            0x0C,
            {2: 4003, 4: 5, 5: DATA + 0x40, 6: 32},
            preimage_key=local_key(1),
        ),
    ]


def measure() -> dict[str, Any]:
    subprocess.run([str(ROOT / "scripts" / "forge"), "build"], check=True, capture_output=True)
    chains = {fork: Chain(fork) for fork in ("cancun", "prague")}
    step_sel = selector("step(bytes,bytes,bytes32)")
    load_keccak = selector("loadKeccak256PreimagePart(uint256,bytes)")
    load_local = selector("loadLocalData(uint256,bytes32,bytes32)")
    results: dict[str, Any] = {"anchors": ANCHORS, "steps": [], "oracle": []}

    # oracle loads (the parts the read steps need, and the largest keccak preimage)
    big = bytes((i * 131 + 7) & 0xFF for i in range(16384))
    loads = [
        ("keccak part, 1000-byte preimage", load_keccak + encode(["uint256", "bytes"], [8, PREIMAGE])),
        ("keccak part, 16384-byte preimage", load_keccak + encode(["uint256", "bytes"], [16391, big])),
        (
            "local datum (32 bytes)",
            load_local + encode(["uint256", "bytes32", "bytes32"], [1, CTX, STORE_KEY]),
        ),
    ]
    for name, data in loads:
        row: dict[str, Any] = {"name": name, "calldata_bytes": len(data)}
        for fork, chain in chains.items():
            if fork == "cancun":
                row["execution_gas"] = chain.execution_gas(chain.oracle, data)[0]
            row[f"tx_gas_{fork}"] = chain.transact(chain.oracle, data)
        results["oracle"].append(row)

    for c in cases():
        c.state.mem_root = c.mem.root()
        proof = make_proof(c.state, c.mem, ORACLE)
        data = step_sel + encode(["bytes", "bytes", "bytes32"], [proof.pre_state, proof.proof, CTX])
        row = {"name": c.name, "calldata_bytes": len(data)}
        for fork, chain in chains.items():
            if fork == "cancun":
                row["execution_gas"], post = chain.execution_gas(chain.mips, data)
                assert post == proof.post_state_hash, f"{c.name}: MIPS.sol disagrees with the Python prover"
            row[f"tx_gas_{fork}"] = chain.transact(chain.mips, data)
        results["steps"].append(row)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    results = measure()
    if args.json:
        print(json.dumps(results))
        return
    print("MIPS.step, one transaction per instruction class (py-evm, witness from mipsvm.witness.make_proof)")
    header = f"{'class':34s} {'calldata':>8s} {'execution':>10s} {'tx Cancun':>10s} {'tx Prague':>10s}"
    for section in ("steps", "oracle"):
        print()
        print(header if section == "steps" else header.replace("class", "oracle load"))
        for row in results[section]:
            print(
                f"{row['name']:34s} {row['calldata_bytes']:8d} {row['execution_gas']:10,d} "
                f"{row['tx_gas_cancun']:10,d} {row['tx_gas_prague']:10,d}"
            )
    a = ANCHORS
    print()
    print(
        f"anchors: Cannon MIPS.sol step ~{a['cannon_mips_step_forge']:,} gas (forge test); "
        f"opML {a['opml_step_min'] / 1e6:.1f}-{a['opml_step_max'] / 1e6:.1f}M gas per step"
    )
    print(
        "Prague (EIP-7623) prices calldata at a floor of 10/40 gas per zero/non-zero byte when that exceeds"
    )
    print("the normal cost: a ~2.2 KB witness then costs ~100k gas whatever the execution; Cancun shows the")
    print("execution-dependent cost.")


if __name__ == "__main__":
    main()
