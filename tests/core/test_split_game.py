"""The split game end to end on an embedded chain: a result posted from the native states (no VM), the
top level over the state roots played by the solver, the proposer's `open`, the node guest's VM game at the
bottom, and the Python mirror of the rules (rollml/core/split.py) agreeing with the contract's verdicts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from support.models import mnist
from web3.logs import DISCARD

from mipsvm.constants import KEY_TYPE_KECCAK
from mipsvm.hashing import keccak256
from mipsvm.state import State
from mlkit.guest import States, exec_program_hash, run_states
from mlkit.state import SLOT_OUTPUT, ExecRecord, SlotTree
from rollml.agent.reads import read_game
from rollml.core import split
from rollml.core.chain import Chain, ChainError
from rollml.core.dispute import (
    ClaimTimeout,
    Dissect,
    GameStatus,
    GameView,
    Open,
    Pick,
    Role,
    Step,
    Wait,
    next_move,
)
from rollml.world import World

BAD = keccak256(b"a wrong tensor")
BAD_OUTPUT = b"a wrong output"
PROPOSER, CHALLENGER = 1, 2


@pytest.fixture(scope="module")
def states() -> States:
    model, payload = mnist()
    return run_states(model, payload)


def lying_tree(st: States, t: int) -> Callable[[int], SlotTree]:
    """States equal to the honest ones before execution t, with execution t's slot wrong from then on (the
    output slot for t = N: a wrong output hash)."""
    slot = st.entry(t).out_slot
    bad = keccak256(BAD_OUTPUT) if slot == SLOT_OUTPUT else BAD

    def tree(k: int) -> SlotTree:
        out = st.tree(k)
        if k >= t:
            out.set(slot, bad)
        return out

    return tree


def play(tmp_path: Path, st: States, liar: Role, t: int) -> tuple[bool, dict[str, int]]:
    """A request served by a split claim and disputed, `liar` lying from execution t: (proposer won,
    figures)."""
    world = World.create(Chain.embedded(), tmp_path, {"mnist-mlp": st.model})
    chain, c = world.chain, world.contracts
    assert bytes(chain.call(c.market.functions.execProgramHash())) == exec_program_hash()
    rid = world.request(st.model, st.payload)
    assert bytes(chain.call(c.market.functions.initialRoot(rid))) == split.initial_root(st.input_id)
    n = len(st)
    honest: Callable[[int], SlotTree] = st.tree
    trees = {Role.PROPOSER: honest, Role.CHALLENGER: honest}
    trees[liar] = lying_tree(st, t)
    accounts = {Role.PROPOSER: world.accounts[PROPOSER], Role.CHALLENGER: world.accounts[CHALLENGER]}
    figures = {"txs": 0, "gas": 0, "top_rounds": 0, "bottom_rounds": 0, "bottom_steps": 0}

    def send(role: Role, call: Any, value: int = 0) -> Any:
        receipt = chain.transact(accounts[role], call, value=value)
        figures["txs"] += 1
        figures["gas"] += int(receipt["gasUsed"])
        return receipt

    final = trees[Role.PROPOSER](n)
    output = BAD_OUTPUT if final.get(SLOT_OUTPUT) != st.output_hash else st.output
    split.check_output_bound(final.root(), keccak256(output), final.proof(SLOT_OUTPUT))
    params = world.deployment.params
    post = c.market.functions.postResult(rid, output, final.root(), n, final.proof(SLOT_OUTPUT))
    send(Role.PROPOSER, post, params.prover_bond)
    result_id = chain.call(c.market.functions.getRequest(rid))[8]
    receipt = send(Role.CHALLENGER, c.market.functions.challenge(rid, result_id), params.challenger_bond)
    gid = c.market.events.ResultChallenged().process_receipt(receipt, errors=DISCARD)[0]["args"]["gameId"]

    bottom: dict[Role, split.ExecTrace] = {}
    roots: dict[Role, dict[int, bytes]] = {Role.PROPOSER: {}, Role.CHALLENGER: {}}

    def our_hash(role: Role, top: bool) -> Callable[[int], bytes]:
        if top:
            return lambda k: roots[role].setdefault(k, trees[role](k).root())
        if role == liar == Role.CHALLENGER:  # a lying challenger disputes every state of the node guest's run
            return lambda s: bottom[role].hash_at(0) if s == 0 else BAD
        return bottom[role].hash_at

    for _ in range(200):
        g = read_game(chain, c, gid, world.deployment.arity, world.deployment.block).view
        if g.status != GameStatus.ACTIVE:
            break
        moved = False
        for role in (Role.PROPOSER, Role.CHALLENGER):
            g = read_game(chain, c, gid, world.deployment.arity, world.deployment.block).view
            if g.status != GameStatus.ACTIVE:
                break
            move = next_move(g, role, our_hash(role, g.top), chain.now())
            game = c.game.functions
            if isinstance(move, Wait):
                continue
            moved = True
            if isinstance(move, Dissect):
                send(role, game.dissect(gid, move.disputed, list(move.hashes)))
                figures["top_rounds" if g.top else "bottom_rounds"] += 1
            elif isinstance(move, Pick):
                send(role, game.pick(gid, move.disputed, list(move.hashes), move.index))
            elif isinstance(move, Open):
                k = move.exec
                tree = trees[role]
                entry = st.entry(k)
                args = split.open_args(tree(k - 1), tree(k), k, entry.out_slot, entry.reads)
                trace = split.ExecTrace(st.model, args.record, st.read_bytes(k), forge=role == liar)
                claim, steps = trace.claim_hash, trace.claim_steps
                split.check_open(g, args.record, args.out_proof, args.read_proofs, claim, steps)
                same_verdicts(chain, c, accounts[role], g, gid, args, claim, steps)
                receipt = send(role, game.open(*args.call_args(gid, move.disputed, claim, steps)))
                ev = c.game.events.Opened().process_receipt(receipt, errors=DISCARD)[0]["args"]
                record = ExecRecord.decode(bytes(ev["record"]))
                assert bytes(ev["recordKey"]) == split.record_key(record) == record.key()
                assert trace.accepts == (role != liar), "the node guest's verdict on the record"
                bottom[Role.PROPOSER] = trace
                bottom[Role.CHALLENGER] = split.ExecTrace(st.model, record, st.read_bytes(k))
                figures["bottom_steps"] = steps
            elif isinstance(move, Step):
                proof = bottom[role].proof_at(move.pre_step)
                pre = State.decode(proof.pre_state)
                if proof.part is not None and pre.preimage_key[0] == KEY_TYPE_KECCAK:
                    data = bottom[role].preimage(pre.preimage_key)
                    offset = pre.preimage_offset if pre.preimage_offset < 8 + len(data) else 0
                    send(role, c.oracle.functions.loadKeccak256PreimagePart(offset, data))
                send(role, game.step(gid, move.disputed, proof.pre_state, proof.proof))
            elif isinstance(move, ClaimTimeout):
                send(role, game.claimTimeout(gid))
        if not moved:
            chain.advance_time(world.deployment.move_timeout + 1)
    g = read_game(chain, c, gid, world.deployment.arity, world.deployment.block).view
    assert g.status in (GameStatus.PROPOSER_WON, GameStatus.CHALLENGER_WON)
    for trace in bottom.values():
        trace.close()
    return g.status == GameStatus.PROPOSER_WON, figures


def mutations(args: split.OpenArgs, claim: bytes, steps: int) -> list[tuple[split.OpenArgs, bytes, int]]:
    """`open` arguments each one rule refuses: another execution, a new value the disputed root does not hold,
    a read value the agreed root does not hold, reads out of order, a bottom claim not VALID or too long."""
    r = args.record
    other = keccak256(b"a value neither state holds")
    out = [
        (replace(args, record=replace(r, exec=r.exec + 1)), claim, steps),
        (replace(args, record=replace(r, new_value=other)), claim, steps),
        (args, b"\x01" + claim[1:], steps),
        (args, claim, split.MAX_EXEC_STEPS + 1),
    ]
    if r.reads:
        bad_reads = ((r.reads[0][0], other), *r.reads[1:])
        out.append((replace(args, record=replace(r, reads=bad_reads)), claim, steps))
    if len(r.reads) >= 2:  # the same reads, listed backwards (the record class itself refuses to build it)
        r_rev = replace(r)
        object.__setattr__(r_rev, "reads", r.reads[::-1])  # past ExecRecord's own order check
        out.append((split.OpenArgs(r_rev, args.out_proof, args.read_proofs[::-1]), claim, steps))
    return out


def same_verdicts(
    chain: Chain, c: Any, account: Any, g: GameView, gid: int, args: split.OpenArgs, claim: bytes, steps: int
) -> None:
    """The mirror and the contract refuse each mutation of an honest `open` with the same error."""
    for bad, bad_claim, bad_steps in mutations(args, claim, steps):
        with pytest.raises(split.SplitRuleError) as mirror:
            split.check_open(g, bad.record, bad.out_proof, bad.read_proofs, bad_claim, bad_steps)
        with pytest.raises(ChainError) as contract:
            call = c.game.functions.open(*bad.call_args(gid, g.disputed_hash, bad_claim, bad_steps))
            chain.call(call, account.address)
        assert contract.value.error_name == mirror.value.name, (mirror.value, contract.value)


@pytest.mark.parametrize("where", ["early", "late", "output"])
def test_honest_challenger_beats_a_wrong_tensor(tmp_path: Path, states: States, where: str) -> None:
    n = len(states)
    t = {"early": 2, "late": n - 1, "output": n}[where]
    proposer_won, figures = play(tmp_path, states, Role.PROPOSER, t)
    assert not proposer_won
    assert figures["bottom_steps"] > 0 and figures["top_rounds"] >= 1


def test_lying_challenger_loses_in_the_top_and_the_bottom_level(tmp_path: Path, states: States) -> None:
    proposer_won, figures = play(tmp_path, states, Role.CHALLENGER, 3)
    assert proposer_won
    assert figures["bottom_rounds"] >= 1


def test_the_mirror_refuses_what_the_contract_refuses(states: States) -> None:
    """The pure rules on real states: a one-slot update passes; a wrong slot proof, an execution out of order,
    a read S_k does not hold and an unbound output are refused with the contract's error names."""
    from rollml.core.dispute import GameView, Turn

    k = 3
    before, after = states.tree(k - 1), states.tree(k)
    e = states.entry(k)
    args = split.open_args(before, after, k, e.out_slot, e.reads)
    view = GameView(k - 1, k, before.root(), after.root(), Turn.OPEN, 0, 16, top=True)
    claim = bytes(32)
    split.check_open(view, args.record, args.out_proof, args.read_proofs, claim, 10)
    cases = {
        "SlotProofMismatch": (view, ExecRecord(k, e.out_slot, args.record.old_value, BAD, args.record.reads)),
        "WrongExecution": (
            view,
            ExecRecord(k + 1, e.out_slot, args.record.old_value, args.record.new_value, args.record.reads),
        ),
    }
    for name, (v, rec) in cases.items():
        with pytest.raises(split.SplitRuleError) as err:
            split.check_open(v, rec, args.out_proof, args.read_proofs, claim, 10)
        assert err.value.name == name
    r = args.record
    assert r.reads, "execution 3 reads a slot"
    bad_reads = ((r.reads[0][0], BAD), *r.reads[1:])
    with pytest.raises(split.SplitRuleError, match="SlotProofMismatch"):
        split.check_reads(
            before.root(), ExecRecord(k, e.out_slot, r.old_value, r.new_value, bad_reads), args.read_proofs
        )
    with pytest.raises(split.SplitRuleError, match="BadBottomClaim"):
        split.check_bottom_claim(b"\x01" + bytes(31), 10)
    with pytest.raises(split.SplitRuleError, match="OutputNotBound"):
        final = states.tree(len(states))
        split.check_output_bound(final.root(), keccak256(BAD_OUTPUT), final.proof(SLOT_OUTPUT))
    assert not split.timeout_proposer_won(Turn.OPEN) and split.timeout_proposer_won(Turn.STEP)
