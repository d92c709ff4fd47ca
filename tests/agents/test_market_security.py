"""Issue 12 items 2 and 3 end to end, with the agents and the deployed contracts (docs/security.md section 6):

- the self-challenge siege on the embedded chain: a prover keeps a wrong result pending with the help of an
  accomplice whose game on it ends first (the prover concedes it), for up to 100 cycles; the honest
  challenger agent challenges every one, an honest node never gets to post, and the request's fixed
  deadline ends it;
- a move replayed across a reorg on anvil (`evm_snapshot`/`evm_revert`): the prover's dissection, sent by the
  agent's responder for one game, is included again after the games were renumbered, and reverts.

The forge tests hold the same rules against deliberately broken contracts (contracts/test/Audit.t.sol).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount
from support.devrpc import dev_rpc
from support.models import mnist

from mlkit.format import model_id
from rollml.agent.base import Agent
from rollml.agent.reads import read_game, receipt_events
from rollml.agent.responder import Responder
from rollml.core.chain import Chain, ChainError
from rollml.core.deploy import DEV_MOVE_TIMEOUT, DEV_PARAMS, Contracts, Deployment, deploy
from rollml.core.devnet import Anvil
from rollml.core.dispute import Dissect, GameStatus, Role, Turn, next_move
from rollml.core.execution import GameTrace, execute
from rollml.core.sdk import RequestStatus
from rollml.core.store import GameState, JobState, Store
from rollml.harness.campaign import credited, credits_by_rule, market_invariant, participants
from rollml.world import REQUESTER, ZERO_ADDRESS, World, play_until

pytestmark = pytest.mark.requires("guest")
WRONG_CLAIM = bytes(32)  # a VALID status byte, and not the guest's state after two steps


SIEGE_CYCLES = 100  # the attacker's plan
# The request deadline falls after about this many cycles. The forge siege runs 84 of its 100; here each
# cycle costs the agents' event scans of the whole embedded chain (eth-tester's get_logs), so 20.
SIEGE_DEADLINE_CYCLES = 20


def cancelled(agent: Agent, game_id: int) -> bool:
    """The agent recorded its game as cancelled (refunded after another game discarded the result)."""
    row = agent.store.game(game_id)
    return row is not None and row.state == GameState.CANCELLED


def test_a_100_cycle_self_challenge_siege_ends_at_the_request_deadline(tmp_path: Path) -> None:
    """A prover posts a wrong result and its accomplice challenges it at once; the honest challenger agent
    (alice) challenges it too. The prover never dissects (it concedes): when the accomplice's game times out
    the accomplice claims it, which discards the result, and the prover posts the next wrong result at once.
    A wrong result is pending whenever an agent looks: the honest node never gets to post, the requester
    cannot cancel. The request's fixed deadline ends it after about 20 of the 100 planned cycles: the next
    post reverts with `RequestExpired` and the requester cancels. Each cycle burned half the prover's bond and
    paid alice a quarter of it (two games open on each result)."""
    model, payload = mnist()
    move_timeout = DEV_MOVE_TIMEOUT
    cycle = move_timeout + 1
    params = replace(DEV_PARAMS, request_timeout=SIEGE_DEADLINE_CYCLES * cycle + cycle // 2)
    world = World.create(Chain.embedded(), tmp_path, {"mnist-mlp": model}, params=params)
    chain, c = world.chain, world.contracts
    market, game = c.market.functions, c.game.functions
    prover, accomplice, requester = world.accounts[5], world.accounts[6], world.accounts[REQUESTER]
    alice, node = world.challenger(3, "alice"), world.node(1, "node")
    first = chain.block_number() + 1
    rid = world.request(model, payload)
    deadline = int(chain.call(market.getRequest(rid))[1]) + params.request_timeout
    assert int(chain.call(market.expiresAt(rid))) == deadline

    def post_and_challenge() -> tuple[int, int] | None:
        """The prover's next wrong result and its accomplice's challenge (result id, game id), or None when
        the market refuses the post."""
        try:
            receipt = chain.transact(
                prover, market.postVMResult(rid, b"wrong output", WRONG_CLAIM, 2), value=params.prover_bond
            )
        except ChainError as exc:
            assert exc.error_name == "RequestExpired", str(exc)
            assert chain.now() >= deadline
            return None
        assert chain.now() < deadline
        result_id = int(receipt_events(c.market, "ResultPosted", receipt)[0]["args"]["resultId"])
        receipt = chain.transact(accomplice, market.challenge(rid, result_id), value=params.challenger_bond)
        return result_id, int(receipt_events(c.market, "ResultChallenged", receipt)[0]["args"]["gameId"])

    def alice_game(result_id: int) -> int | None:
        """Alice's game on the result, as her agent recorded it."""
        mine = [g for g in alice.store.games() if g.result_id == result_id and g.role == Role.CHALLENGER]
        return mine[0].game_id if mine else None

    pending, posts, cycles = post_and_challenge(), 1, 0
    while pending is not None and cycles < SIEGE_CYCLES:
        cycles += 1
        result_id, game_x = pending
        play_until(chain, [node, alice], lambda r=result_id: alice_game(r) is not None, max_ticks=5)
        game_a = alice_game(result_id)
        assert game_a is not None
        chain.advance_time(cycle)  # the prover does not dissect; the result stays pending
        with pytest.raises(ChainError, match=r"WrongStatus"):
            chain.transact(requester, market.cancelRequest(rid))
        # the accomplice claims its game's timeout (discarding the result) and the prover posts again, before
        # anybody else acts
        chain.transact(accomplice, game.claimTimeout(game_x))
        assert world.request_status(rid) == RequestStatus.OPEN
        pending = post_and_challenge() if cycles < SIEGE_CYCLES else None
        posts += pending is not None
        # alice's game was on a discarded result: her agent refunds it (her bond and her share)
        play_until(chain, [alice], lambda g=game_a: cancelled(alice, g), max_ticks=5)

    # the deadline ended the siege: the requester cancels at once
    assert pending is None and cycles == posts < SIEGE_CYCLES and chain.now() >= deadline
    assert posts >= SIEGE_DEADLINE_CYCLES - 3, "(the blocks' own seconds shorten the siege a little)"
    cancelled_after = chain.now() - deadline
    chain.transact(requester, market.cancelRequest(rid))
    assert world.request_status(rid) == RequestStatus.CANCELLED
    assert cancelled_after < cycle, "within a cycle of the deadline"
    node.tick()
    job = node.store.job(rid)
    assert job is not None and job.state == JobState.CLOSED
    assert "post" not in [t.kind for t in node.store.txs()], "the honest node never got to post"

    # per conceded result, half the bond burned and a quarter to each of the two games open on it
    share, burnt = params.discard_split(2)
    assert int(chain.call(market.burned())) == posts * burnt
    alice.tick()  # withdraws
    alice_gain = credited(chain, c, alice.address, first) - posts * params.challenger_bond
    assert alice_gain == posts * share > 0
    sent = posts * (params.prover_bond + params.challenger_bond)
    attacker = credited(chain, c, prover.address, first) + credited(chain, c, accomplice.address, first)
    assert attacker - sent == -(posts * burnt + alice_gain), "the attacker paid the burn and alice"
    # the funds invariant, and every account credited exactly what the rules say
    assert market_invariant(chain, c, world.deployment, first) == []
    rule = credits_by_rule(chain, c, world.deployment, first)
    for account in participants(chain, c, first) | set(rule):
        assert credited(chain, c, account, first) == rule.get(account, 0), account
    print(
        f"siege: {posts} wrong results in {cycles} cycles; burned {posts * burnt} wei; alice earned "
        f"{alice_gain} wei; the attacker lost {sent - attacker} wei; the requester cancelled "
        f"{cancelled_after} s after the deadline ({params.request_timeout} s after its request)"
    )


# --------------------------------------------------------------------------------------------------------
# A move replayed across a reorg (anvil)
# --------------------------------------------------------------------------------------------------------
def challenge(chain: Chain, c: Contracts, dep: Deployment, who: LocalAccount, rid: int) -> int:
    result_id = int(chain.call(c.market.functions.getRequest(rid))[8])
    call = c.market.functions.challenge(rid, result_id)
    receipt = chain.transact(who, call, value=dep.params.challenger_bond)
    return int(receipt_events(c.market, "ResultChallenged", receipt)[0]["args"]["gameId"])


@pytest.mark.requires("anvil")
def test_a_dissection_replayed_across_a_reorg_into_a_renumbered_game_reverts(own_anvil: Anvil) -> None:
    """Two correct results of one prover (two inputs, two traces), each challenged. In the first history
    game 1 is about input x, and the prover's responder dissects it. A reorg (`evm_revert` to before the
    challenges) puts the challenges in the other order, so game 1 is about input y; the prover's signed
    dissection is included again, as it was: it names x's claim as the disputed hash and reverts with
    `DisputedHashMismatch` (unbound, it would have put x's hashes into y's game: a correct result lost)."""
    chain = Chain.connect(own_anvil.url)
    accounts = chain.dev_accounts()
    model, payload_x = mnist()
    mid = len(payload_x) - 4 * 400  # a value in the middle of the image (its corners are 0.0)
    payload_y = payload_x[:mid] + bytes(4) + payload_x[mid + 4 :]  # another input: that value zeroed
    assert payload_y != payload_x
    dep = deploy(chain, accounts[0], model_id(model), gan_model=model)
    c = dep.contracts(chain)
    prover, alice, bob = accounts[1], accounts[2], accounts[3]
    claims, rids = {}, {}
    for name, payload in (("x", payload_x), ("y", payload_y)):
        fee = int(chain.call(c.market.functions.estimateFee(model_id(model), len(payload), 0)))
        call = c.market.functions.requestInference(model_id(model), payload, ZERO_ADDRESS, 0)
        receipt = chain.transact(accounts[4], call, value=fee)
        rids[name] = int(receipt_events(c.market, "InferenceRequested", receipt)[0]["args"]["requestId"])
        claims[name] = execute(model, payload).claim
        call = c.market.functions.postVMResult(
            rids[name], claims[name].output, claims[name].final_hash, claims[name].steps
        )
        chain.transact(prover, call, value=dep.params.prover_bond)
    assert claims["x"].final_hash != claims["y"].final_hash

    snapshot = dev_rpc(chain, "evm_snapshot")
    game = challenge(chain, c, dep, alice, rids["x"])
    challenge(chain, c, dep, bob, rids["y"])
    # the prover's agent dissects game `game` (about x): solver + responder, as `rollml node` does
    store = Store(":memory:")
    result_x = int(chain.call(c.market.functions.getRequest(rids["x"]))[8])
    store.add_game(game, Role.PROPOSER, rids["x"], result_x, chain.block_number())
    row = store.game(game)
    assert row is not None
    trace = GameTrace(model, payload_x, claims["x"].output_hash, steps_hint=claims["x"].steps)
    view = read_game(chain, c, game, dep.arity, dep.block).view
    move = next_move(view, Role.PROPOSER, trace.hash_at, chain.now())
    assert isinstance(move, Dissect) and move.disputed == claims["x"].final_hash
    Responder(chain, c, prover, store, lambda *a, **k: None).respond(row, move, lambda: trace)
    (sent,) = store.txs(game_id=game)
    raw = bytes(chain.w3.eth.get_raw_transaction(sent.tx_hash))  # type: ignore[arg-type]

    assert dev_rpc(chain, "evm_revert", snapshot) is True  # the reorg
    chain = Chain.connect(own_anvil.url)  # fresh nonce counters: the reverted chain is behind ours
    assert challenge(chain, c, dep, bob, rids["y"]) == game, "the game id is now y's"
    challenge(chain, c, dep, alice, rids["x"])
    tx_hash = chain.w3.eth.send_raw_transaction(raw)  # the prover's dissection, included again
    receipt = chain.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
    assert receipt["status"] == 0, "the replayed dissection reverted"
    with pytest.raises(ChainError) as err:
        chain.call(c.game.functions.dissect(game, move.disputed, list(move.hashes)), sender=prover.address)
    assert err.value.error_name == "DisputedHashMismatch"
    after = read_game(chain, c, game, dep.arity, dep.block).view
    assert after.turn == Turn.DISSECT and after.status == GameStatus.ACTIVE, "y's game is untouched"
    assert after.disputed_hash == claims["y"].final_hash
    # re-reading the game, the prover dissects it with y's trace, and the move lands
    trace_y = GameTrace(model, payload_y, claims["y"].output_hash, steps_hint=claims["y"].steps)
    move_y = next_move(after, Role.PROPOSER, trace_y.hash_at, chain.now())
    assert isinstance(move_y, Dissect)
    chain.transact(prover, c.game.functions.dissect(game, move_y.disputed, list(move_y.hashes)))
    assert read_game(chain, c, game, dep.arity, dep.block).view.turn == Turn.PICK
