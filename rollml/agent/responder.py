"""The responder: sends what an agent decided, as op-challenger's responder sends its solver's actions.

The decisions are pure (`rollml.core.dispute`: a game view and our trace in, a move out); the responder does
the chain I/O of carrying them out and keeps what it sent in the agent's store:

- `send(kind, call)`: one transaction, recorded (kind, gas, block; its request and game) and logged;
- `respond(row, move, trace)`: a game move: `dissect`, `pick`, `claimTimeout`, or the leaf `step`, which first
  loads the keccak preimage part the step reads (if the oracle does not hold it yet; anyone may load it).
  Each move carries the disputed hash of the game view it was decided on (`move.disputed`), so the contract
  refuses it if the game is no longer that one (a reorg, a renumbered game).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from eth_account.signers.local import LocalAccount
from web3.contract.contract import ContractFunction
from web3.types import TxReceipt

from mipsvm.constants import KEY_TYPE_KECCAK
from mipsvm.state import State
from rollml.core.chain import Chain, ChainError
from rollml.core.deploy import Contracts
from rollml.core.dispute import ClaimTimeout, Dissect, Move, Open, Pick, Step, Wait
from rollml.core.execution import GameTrace
from rollml.core.split import SplitTrace
from rollml.core.store import GameRow, Store

Emit = Callable[..., None]  # (event, level, **fields): the agent's log line


class Responder:
    """Sends an agent's transactions from `account` and records them in `store`; `on_sent(kind)` is told of
    each one (the agent counts its tick's transactions)."""

    def __init__(
        self,
        chain: Chain,
        contracts: Contracts,
        account: LocalAccount,
        store: Store,
        emit: Emit,
        on_sent: Callable[[str], None] = lambda kind: None,
    ) -> None:
        self.chain = chain
        self.contracts = contracts
        self.account = account
        self.store = store
        self.emit = emit
        self.on_sent = on_sent

    def send(
        self,
        kind: str,
        call: ContractFunction,
        value: int = 0,
        request_id: int | None = None,
        game_id: int | None = None,
        gas: int | None = None,
    ) -> TxReceipt:
        """Send a transaction, record it (kind, gas; a game's move count) and log it (`gas`: a fixed limit
        instead of an estimate)."""
        receipt = self.chain.transact(self.account, call, value=value, gas=gas)
        tx_hash = "0x" + bytes(receipt["transactionHash"]).hex()
        gas = int(receipt["gasUsed"])
        self.store.add_tx(tx_hash, kind, gas, int(receipt["blockNumber"]), request_id, game_id)
        self.on_sent(kind)
        fields: dict[str, object] = {"kind": kind, "tx": tx_hash, "gas": gas}
        if request_id is not None:
            fields["request"] = request_id
        if game_id is not None:
            fields["game"] = game_id
        self.emit("tx", logging.INFO, **fields)
        return receipt

    # -- game moves ------------------------------------------------------------------------------------------
    def respond(self, row: GameRow, move: Move, trace: Callable[[], GameTrace | SplitTrace]) -> None:
        """Send what the solver decided in game `row` (nothing for `Wait`); `trace()` gives our trace (only a
        leaf step needs it: its proof and preimages)."""
        gid, rid = row.game_id, row.request_id
        game = self.contracts.game.functions
        if isinstance(move, Wait):
            if row.last_move != "wait":
                self.emit("waiting", logging.DEBUG, game=gid, reason=move.reason)
            return
        if isinstance(move, Dissect):
            call = game.dissect(gid, move.disputed, list(move.hashes))
            self.send("dissect", call, request_id=rid, game_id=gid)
        elif isinstance(move, Pick):
            call = game.pick(gid, move.disputed, list(move.hashes), move.index)
            self.send("pick", call, request_id=rid, game_id=gid)
        elif isinstance(move, Step):
            self.step_leaf(row, trace(), move.pre_step, move.disputed)
        elif isinstance(move, Open):
            ours = trace()
            if not isinstance(ours, SplitTrace):
                raise RuntimeError(f"game {gid}: an Open move needs a split claim's trace")
            args, claim, steps = ours.open(move.exec)
            call = game.open(*args.call_args(gid, move.disputed, claim, steps))
            self.send("open", call, request_id=rid, game_id=gid)
        elif isinstance(move, ClaimTimeout):
            self.send("timeout", game.claimTimeout(gid), request_id=rid, game_id=gid)

    def step_leaf(self, row: GameRow, trace: GameTrace | SplitTrace, pre_step: int, disputed: bytes) -> None:
        """Execute the leaf on-chain: load the keccak preimage part the step reads (if any), then `step`
        (bound to `disputed`, the game's disputed hash as read)."""
        proof = trace.proof_at(pre_step)
        if proof.part is not None:
            self.ensure_preimage_part(row, State.decode(proof.pre_state), trace)
        call = self.contracts.game.functions.step(row.game_id, disputed, proof.pre_state, proof.proof)
        self.send("step", call, request_id=row.request_id, game_id=row.game_id)

    def ensure_preimage_part(self, row: GameRow, pre: State, trace: GameTrace | SplitTrace) -> None:
        """Load the part of the selected keccak key's stream that a read step needs, unless the oracle has
        it. Local keys need nothing: the game writes its own local data when it steps."""
        key = pre.preimage_key
        if key[0] != KEY_TYPE_KECCAK or self.part_loaded(key, pre.preimage_offset):
            return
        data = trace.preimage(key)
        offset = pre.preimage_offset if pre.preimage_offset < 8 + len(data) else 0  # past the end: the length
        call = self.contracts.oracle.functions.loadKeccak256PreimagePart(offset, data)
        self.send("load_preimage", call, request_id=row.request_id, game_id=row.game_id)

    def part_loaded(self, key: bytes, offset: int) -> bool:
        """Does the oracle hold the part of `key`'s stream at `offset`?"""
        try:
            self.chain.call(self.contracts.oracle.functions.readPreimage(key, offset))
            return True
        except ChainError as exc:
            if exc.error_name == "PreimageNotLoaded":
                return False
            raise
