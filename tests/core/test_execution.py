"""rollml.core.execution: the honest run of a request, the challenger's verification, and the traces honest
and dishonest parties play (tampering for real inside the run), on the mnist-mlp reference model (0.57M
steps).
"""

from __future__ import annotations

import random
from functools import cache
from pathlib import Path

import pytest
from support.models import first_keccak_read, mnist

from mipsvm.constants import Status
from mipsvm.hashing import keccak256
from mipsvm.state import State
from mipsvm.witness import verify_step
from mlkit.guest import guest_program
from mlkit.io import decode_payload
from rollml.core.execution import (
    Claim,
    Execution,
    GameTrace,
    Tamper,
    TamperKind,
    execute,
    snapshot_interval,
    tamper_cap,
    verify,
    wrong_output,
)

pytestmark = pytest.mark.requires("guest")


@cache
def honest() -> Execution:
    return execute(*mnist())


def test_execute_binds_the_native_output_to_a_valid_final_state() -> None:
    ex = honest()
    assert ex.honest and ex.claim.output == ex.output
    assert ex.final_hash[0] == Status.VALID and ex.steps > 500_000
    assert ex.claim == Claim(keccak256(ex.output), ex.final_hash, ex.steps, ex.output)


def test_verify_accepts_the_truth_and_catches_each_kind_of_lie() -> None:
    model, payload = mnist()
    ex = honest()
    out_hash = keccak256(ex.output)
    assert verify(model, payload, ex.claim).correct
    # exited states are fixed points: a larger step count with the final hash is the same true claim
    assert verify(model, payload, Claim(out_hash, ex.final_hash, ex.steps + 10)).correct
    short = verify(model, payload, Claim(out_hash, ex.final_hash, ex.steps - 1))
    assert not short.correct and "step count" in short.reason
    forged = verify(model, payload, Claim(out_hash, bytes(32), ex.steps))
    assert not forged.correct and "final state" in forged.reason
    wrong = verify(model, payload, Claim(keccak256(wrong_output(ex.output)), ex.final_hash, ex.steps))
    assert not wrong.correct and wrong.steps is None  # caught natively: no VM run


def test_wrong_output_predicts_another_digit() -> None:
    out = honest().output
    (a,), (b,) = decode_payload(out), decode_payload(wrong_output(out))
    assert a.shape == b.shape and a.argmax() != b.argmax()


def test_honest_trace_matches_the_run_and_its_proofs_verify() -> None:
    model, payload = mnist()
    ex = honest()
    with GameTrace(model, payload, keccak256(ex.output), max_steps=ex.steps, steps_hint=ex.steps) as trace:
        assert trace.hash_at(0) == guest_program().state.hash()
        assert (trace.claim_steps, trace.claim_hash) == (ex.steps, ex.final_hash)
        assert trace.hash_at(ex.steps) == trace.hash_at(ex.steps + 12345) == ex.final_hash  # fixed point
        read = first_keccak_read(model, payload, keccak256(ex.output))
        for n in (0, read, ex.steps // 3, ex.steps - 1):
            proof = trace.proof_at(n)
            post = verify_step(proof.pre_state, proof.proof, proof.part, proof.part_len)
            assert post == trace.hash_at(n + 1)
        proof = trace.proof_at(read)
        key = State.decode(proof.pre_state).preimage_key
        assert proof.part is not None and keccak256(trace.preimage(key))[1:] == key[1:]


def test_one_vm_run_per_party(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The runs of `execute` and `verify` are recorded: the game trace of the same claim starts from the
    recording (no second run of the guest), and answers as a trace that ran afresh; without a recording
    (or one that stops short of the trace's max_steps) it runs."""
    monkeypatch.setenv("ROLLML_CACHE", str(tmp_path))
    model, payload = mnist()
    ex = execute(model, payload)
    out_hash = keccak256(ex.output)
    (path,) = (tmp_path / "recordings").glob("*.rec")
    with GameTrace(model, payload, out_hash, max_steps=ex.steps) as recorded:
        assert not recorded.base.live  # nothing ran: the first query builds an executor from a snapshot
        assert len(recorded.base.snapshots) > 8
        points = [1, ex.steps // 7, ex.steps // 2, ex.steps - 3, ex.steps]
        hashes = [recorded.hash_at(n) for n in points]
        assert hashes[-1] == recorded.claim_hash == ex.final_hash
    path.unlink()
    assert verify(model, payload, ex.claim).correct  # the challenger's check records the same run
    assert path.exists()
    path.unlink()
    with GameTrace(model, payload, out_hash, max_steps=ex.steps) as fresh:
        assert fresh.base.live  # it ran (a trace from a recording has no executor before a query)
        assert [fresh.hash_at(n) for n in points] == hashes


@pytest.mark.parametrize("kind", [TamperKind.REGISTER, TamperKind.MEMORY])
def test_a_tampered_trace_deviates_exactly_at_the_tampered_step(kind: TamperKind) -> None:
    model, payload = mnist()
    ex = honest()
    out_hash = keccak256(ex.output)
    tamper = Tamper.random(kind, random.Random(7))
    with (
        GameTrace(model, payload, out_hash, max_steps=ex.steps) as good,
        GameTrace(model, payload, out_hash, tamper, max_steps=ex.steps) as bad,
    ):
        s = bad.tamper_step
        assert s is not None and 1 <= s < ex.steps
        assert s == tamper.step_in(ex.steps)
        for n in (0, s // 2, s - 1):
            assert bad.hash_at(n) == good.hash_at(n)
        assert bad.hash_at(s) != good.hash_at(s)
        # the one-step proof of the agreed pre-state refutes the tampered state at s
        proof = good.proof_at(s - 1)
        assert verify_step(proof.pre_state, proof.proof, proof.part, proof.part_len) == good.hash_at(s)


def test_a_dishonest_provers_claims_are_forged_valid() -> None:
    model, payload = mnist()
    ex = honest()
    cases = {
        TamperKind.OUTPUT: Tamper(TamperKind.OUTPUT),
        TamperKind.STEPS: Tamper(TamperKind.STEPS, delta=-1000),
        TamperKind.REGISTER: Tamper(TamperKind.REGISTER, fraction=0.3, register=29, mask=1 << 8),
    }
    for kind, tamper in cases.items():
        bad = execute(model, payload, tamper)
        assert not bad.honest and bad.output == ex.output, kind
        claim = bad.claim
        assert claim.final_hash[0] == Status.VALID and claim.final_hash != ex.final_hash, kind
        assert not verify(model, payload, claim).correct, kind
        # the dishonest trace ends in the forged claim and is a genuine run right before it
        with GameTrace(
            model, payload, claim.output_hash, tamper, forge=True, max_steps=tamper_cap(ex.steps)
        ) as trace:
            assert (trace.claim_steps, trace.claim_hash) == (claim.steps, claim.final_hash), kind
            assert trace.hash_at(claim.steps) == trace.hash_at(claim.steps + 5) == claim.final_hash
            assert trace.hash_at(claim.steps - 1)[0] == Status.UNFINISHED
    assert execute(model, payload, cases[TamperKind.STEPS]).claim.steps == ex.steps - 1000


def test_the_honest_trace_of_a_wrong_output_claim_exits_invalid() -> None:
    """The challenger's trace uses the claim's output hash (the game's local 3), not the honest output."""
    model, payload = mnist()
    claimed = keccak256(wrong_output(honest().output))
    with GameTrace(model, payload, claimed) as trace:
        assert trace.claim_hash[0] == Status.INVALID


def test_tampers_are_deterministic_and_round_trip_as_json() -> None:
    tamper = Tamper.random(TamperKind.MEMORY, random.Random(3))
    assert Tamper.from_json(tamper.to_json()) == tamper
    model, payload = mnist()
    first, second = execute(model, payload, tamper), execute(model, payload, tamper)
    assert first.claim == second.claim  # a restarted dishonest party reproduces its own claim
    with pytest.raises(ValueError):
        GameTrace(model, payload, bytes(32), Tamper(TamperKind.OUTPUT))  # a prover's tamper, not a run's


def test_snapshot_interval_scales_with_the_run() -> None:
    assert snapshot_interval(None) == 1 << 22
    assert snapshot_interval(1000) == 1 << 16
    assert snapshot_interval(2_750_000) == 1 << 17
    assert snapshot_interval(11_600_000_000) == 1 << 22
