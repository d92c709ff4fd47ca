"""Bad input everywhere: every entry point answers garbage with one clear error (or a decoded revert) and the
daemons keep running.

- RPC endpoints that fail or lie: a local JSON-RPC proxy in front of anvil drops connections, answers HTTP
  500, or rewrites receipts (status 0, a block the chain does not have, another transaction's receipt).
  `rollml.core.chain.Chain` retries what is transient and raises one `ChainError` line for the rest; a prover
  node's tick logs the error and carries on, and never posts twice.
- Invalid one-step proofs sent to the real dispute game (wrong pre-state, wrong Merkle siblings, truncated
  witnesses), decoded into the contracts' named errors. (Bit flips of proofs and malformed states against
  MIPS.sol alone: tests/contracts/test_mips_sol.py.)
- Malformed model files at every entry point (registration, native run, execution, a models directory), and
  inputs of the wrong type, shape or size through the runtime, the SDK, the market and a running node.

Every kind of malformed model: tests/mlkit/test_mlkit_ops.py (fixed cases) and
tests/mlkit/test_fuzz_parsers.py (fuzzing); garbage calldata to every contract: contracts/test/Garbage.t.sol.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from eth_account.signers.local import LocalAccount
from support.models import tiny_input, tiny_model

from mipsvm.memory import Memory
from mipsvm.preimage import PreimageOracle
from mipsvm.witness import make_proof
from mlkit import native
from mlkit.build import GUEST_ELF
from mlkit.format import ExitCode, ModelFormatError
from mlkit.guest import guest_program
from mlkit.io import PayloadError, encode_payload
from mlkit.native import MlkitError
from rollml.agent.models import ModelStore
from rollml.agent.reads import receipt_events
from rollml.core.chain import Chain, ChainError
from rollml.core.deploy import Deployment, deploy, program_hash, register_model
from rollml.core.devnet import Anvil
from rollml.core.execution import ExecutionError, execute
from rollml.core.sdk import Client
from rollml.core.store import JobState

GAN_ID = b"\x02" + b"\x47" * 31  # a stand-in GAN model id: never run here
ZERO = "0x0000000000000000000000000000000000000000"


# --------------------------------------------------------------------------------------------------------
# A JSON-RPC proxy that fails and lies on demand
# --------------------------------------------------------------------------------------------------------
class Fault(StrEnum):
    DROP = "drop"  # close the connection without an answer
    LOSE_ANSWER = "lose_answer"  # forward the request, then close the connection (the answer is lost)
    HTTP_500 = "http_500"
    RECEIPT_STATUS_0 = "receipt_status_0"  # a receipt that says the transaction reverted
    RECEIPT_WRONG_BLOCK = "receipt_wrong_block"  # a receipt of a block hash the chain does not have
    RECEIPT_OTHER_TX = "receipt_other_tx"  # the receipt of another transaction


RECEIPT_LIES = (Fault.RECEIPT_STATUS_0, Fault.RECEIPT_WRONG_BLOCK, Fault.RECEIPT_OTHER_TX)


@dataclass
class Rule:
    fault: Fault
    method: str | None  # None: any method
    times: int  # matching requests left; -1: forever


@dataclass
class RpcProxy:
    """An HTTP JSON-RPC endpoint on 127.0.0.1 forwarding to `upstream`, with injectable faults."""

    upstream: str
    rules: list[Rule] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)  # every method seen, in order
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def inject(self, fault: Fault, method: str | None = None, times: int = 1) -> None:
        with self.lock:
            self.rules.append(Rule(fault, method, times))

    def heal(self) -> None:
        with self.lock:
            self.rules.clear()

    def take(self, method: str) -> Fault | None:
        """The fault to apply to a request of `method` (each rule counts down its uses)."""
        with self.lock:
            self.methods.append(method)
            for rule in self.rules:
                if rule.times != 0 and rule.method in (None, method):
                    rule.times -= 1 if rule.times > 0 else 0
                    return rule.fault
        return None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler_for(proxy: RpcProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            request = json.loads(body)
            fault = proxy.take(request.get("method", "") if isinstance(request, dict) else "batch")
            if fault == Fault.DROP:
                self.close_connection = True
                return
            if fault == Fault.HTTP_500:
                self._answer(500, b"internal error")
                return
            upstream = requests.post(proxy.upstream, data=body, headers={"Content-Type": "application/json"})
            if fault == Fault.LOSE_ANSWER:
                self.close_connection = True
                return
            answer = upstream.content
            if fault in RECEIPT_LIES:
                answer = json.dumps(_lie(fault, upstream.json())).encode()
            self._answer(upstream.status_code, answer)

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    return Handler


def _lie(fault: Fault, answer: dict[str, Any]) -> dict[str, Any]:
    """Rewrite the receipt in a JSON-RPC answer (pending receipts, `null`, pass unchanged)."""
    receipt = answer.get("result")
    if not isinstance(receipt, dict):
        return answer
    if fault == Fault.RECEIPT_STATUS_0:
        receipt["status"] = "0x0"
    elif fault == Fault.RECEIPT_WRONG_BLOCK:
        receipt["blockHash"] = "0x" + "ab" * 32
    else:
        receipt["transactionHash"] = "0x" + "cd" * 32
    return answer


# --------------------------------------------------------------------------------------------------------
# Fixtures: one deployment on anvil, reached directly and through a proxy
# --------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def deployed(anvil: Anvil) -> tuple[Deployment, bytes]:
    """The contracts and the tiny model, registered, on the session's anvil; (deployment, model id)."""
    chain = Chain.connect(anvil.url)
    accounts = chain.dev_accounts()
    deployment = deploy(chain, accounts[0], GAN_ID)
    return deployment, register_model(chain, deployment, accounts[0], tiny_model(), "tiny")


@pytest.fixture
def proxy(anvil: Anvil) -> Iterator[RpcProxy]:
    p = RpcProxy(anvil.url)
    try:
        yield p
    finally:
        p.close()


def through(proxy: RpcProxy, retries: int = 2) -> Chain:
    """A Chain to anvil through the proxy, with short retries (backoff 0.2 s, 0.4 s)."""
    return Chain.connect(proxy.url, retries=retries)


def request_tiny(chain: Chain, dep: Deployment, mid: bytes, payload: bytes, sender: LocalAccount) -> int:
    """A request of the tiny model paying its fee, sent as a contract would (without the SDK's input
    check: the node must cope with what the market accepts); the request id."""
    return Client(chain, dep, sender).request(mid, payload, check=False).request_id


# --------------------------------------------------------------------------------------------------------
# The chain layer against failing and lying endpoints
# --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fault", [Fault.DROP, Fault.HTTP_500, Fault.LOSE_ANSWER])
def test_transient_failures_are_retried(proxy: RpcProxy, fault: Fault) -> None:
    chain = through(proxy)
    proxy.inject(fault, "eth_blockNumber", times=2)
    assert chain.block_number() == Chain.connect(proxy.upstream).block_number()
    assert proxy.methods.count("eth_blockNumber") == 3, "two failures, then the answer"


def test_an_endpoint_that_stays_down_is_one_clear_chain_error(proxy: RpcProxy) -> None:
    chain = through(proxy, retries=1)
    proxy.inject(Fault.HTTP_500, times=-1)
    with pytest.raises(ChainError) as e:
        chain.block_number()
    assert "500" in str(e.value) and "after 2 attempts" in str(e.value) and "\n" not in str(e.value)
    proxy.heal()
    assert chain.block_number() >= 0, "the same Chain works again once the endpoint is back"


def test_a_lost_answer_to_a_sent_transaction_is_not_a_failure(
    proxy: RpcProxy, deployed: tuple[Deployment, bytes]
) -> None:
    """The endpoint took the transaction but the answer was lost: the retry finds it sent (anvil mines at
    once, so it answers "nonce too low" to the resend) and the receipt is the transaction's."""
    dep, _ = deployed
    chain = through(proxy)
    account = chain.dev_accounts()[3]
    proxy.inject(Fault.LOSE_ANSWER, "eth_sendRawTransaction")
    oracle = dep.contracts(chain).oracle
    receipt = chain.transact(account, oracle.functions.loadKeccak256PreimagePart(0, b"lost answer"))
    assert receipt["status"] == 1
    assert proxy.methods.count("eth_sendRawTransaction") == 2


@pytest.mark.parametrize("fault", RECEIPT_LIES)
def test_a_lying_receipt_is_a_clear_chain_error(
    proxy: RpcProxy, deployed: tuple[Deployment, bytes], fault: Fault
) -> None:
    dep, _ = deployed
    chain = through(proxy)
    account = chain.dev_accounts()[4]
    oracle = dep.contracts(chain).oracle
    proxy.inject(fault, "eth_getTransactionReceipt", times=-1)
    with pytest.raises(ChainError) as e:
        chain.transact(account, oracle.functions.loadKeccak256PreimagePart(0, f"lie {fault}".encode()))
    message = str(e.value)
    assert "\n" not in message
    expected = {
        Fault.RECEIPT_STATUS_0: "failed",
        Fault.RECEIPT_WRONG_BLOCK: "does not have",
        Fault.RECEIPT_OTHER_TX: "receipt of another transaction",
    }[fault]
    assert expected in message, message
    proxy.heal()
    receipt = chain.transact(account, oracle.functions.loadKeccak256PreimagePart(0, b"after the lie"))
    assert receipt["status"] == 1, "the next transaction goes through (the nonce counter is right)"


# --------------------------------------------------------------------------------------------------------
# A prover node keeps running
# --------------------------------------------------------------------------------------------------------
def node_on(chain: Chain, dep: Deployment, account: LocalAccount, db: Path) -> Any:
    from node.prover import ProverNode

    # a logger outside "rollml": the CLI tests set `rollml` loggers not to propagate to caplog's root handler
    log = logging.getLogger("tests.bad_input.node")
    return ProverNode(chain, dep, account, db, ModelStore([tiny_model()]), logger=log)


@pytest.mark.requires("guest")
def test_a_node_tick_survives_a_dead_and_a_lying_endpoint(
    proxy: RpcProxy, deployed: tuple[Deployment, bytes], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dep, mid = deployed
    chain = through(proxy, retries=1)
    accounts = chain.dev_accounts()
    node = node_on(chain, dep, accounts[5], tmp_path / "node.db")
    node.store.set_cursor(chain.block_number())  # only requests made from now on
    rid = request_tiny(Chain.connect(proxy.upstream), dep, mid, tiny_input(), accounts[6])

    caplog.set_level(logging.WARNING, logger="tests.bad_input.node")
    proxy.inject(Fault.HTTP_500, times=-1)  # the endpoint is down
    stats = node.tick()
    assert stats.errors >= 1 and stats.txs == 0
    assert "event=error" in caplog.text

    proxy.heal()
    proxy.inject(Fault.RECEIPT_OTHER_TX, "eth_getTransactionReceipt", times=-1)  # up, but lying
    stats = node.tick()
    assert stats.errors >= 1
    job = node.store.job(rid)
    assert job is not None and job.state == JobState.READY, "executed; the post is unconfirmed"

    proxy.heal()
    node.tick()  # re-reads the request: its own result is pending, adopt it instead of posting again
    job = node.store.job(rid)
    assert job is not None and job.state == JobState.POSTED
    market = dep.contracts(chain).market
    posted = chain.events(market, "ResultPosted", dep.block, requestId=rid)
    assert [ev["args"]["prover"] for ev in posted] == [accounts[5].address], "posted exactly once"
    node.close()


# --------------------------------------------------------------------------------------------------------
# Inputs of the wrong type, shape or size
# --------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def embedded() -> tuple[Chain, Deployment, bytes]:
    chain = Chain.embedded()
    account = chain.dev_accounts()[0]
    dep = deploy(chain, account, GAN_ID)
    return chain, dep, register_model(chain, dep, account, tiny_model(), "tiny")


def malformed_models() -> dict[str, bytes]:
    good = tiny_model()
    wrong_version = bytearray(good)
    wrong_version[5] = 9
    return {
        "empty": b"",
        "junk": b"junk" * 10,
        "truncated": good[:-4],
        "padded": good + b"\0",
        "wrong version": bytes(wrong_version),
        "an ELF": GUEST_ELF.read_bytes()[:4096] if GUEST_ELF.is_file() else b"\x7fELF" + bytes(60),
    }


@pytest.mark.parametrize("name", sorted(malformed_models()))
def test_malformed_model_files_are_one_clear_error_at_every_entry_point(
    embedded: tuple[Chain, Deployment, bytes], tmp_path: Path, name: str
) -> None:
    """Registering, running natively, executing for a claim, serving from a models directory: each refuses
    the file with its documented error (and registers nothing)."""
    chain, dep, _ = embedded
    model = malformed_models()[name]
    block = chain.block_number()
    with pytest.raises(ModelFormatError):
        register_model(chain, dep, chain.dev_accounts()[0], model, "bad")
    assert chain.block_number() == block, "no transaction"
    with pytest.raises(MlkitError) as e:
        native.run(model, tiny_input())
    assert e.value.code == ExitCode.MODEL
    with pytest.raises(ExecutionError):
        execute(model, tiny_input())
    (tmp_path / "bad.mlkit").write_bytes(model)
    (tmp_path / "a directory.mlkit").mkdir(exist_ok=True)
    assert ModelStore.from_dir(tmp_path).ids() == []


def test_inputs_of_the_wrong_shape_or_type_are_one_clear_error() -> None:
    model = tiny_model()
    wrong = {
        "shape": encode_payload([np.zeros((1, 5), np.float32)]),
        "dtype": encode_payload([np.zeros((1, 4), np.int32)]),
        "count": encode_payload([np.zeros((1, 4), np.float32)] * 2),
        "not a payload": b"RMLD",
    }
    for what, payload in wrong.items():
        with pytest.raises(MlkitError) as e:
            native.run(model, payload)
        assert e.value.code == ExitCode.INPUT, what
        with pytest.raises(ExecutionError):
            execute(model, payload)


@pytest.mark.parametrize(
    "inputs",
    [
        np.array([[True, False]]),  # bool
        np.array([["a", "b"]]),  # strings
        np.array([1 + 2j], np.complex64),
        [np.zeros((1, 2, 3, 4, 5), np.float32)],  # rank 5
        [np.zeros((0, 4), np.float32)],  # no elements
        np.array([1 << 40], np.int64),  # beyond int32
        np.broadcast_to(np.float32(0), (1 << 14, 1 << 14)),  # 2^28 elements, never allocated
    ],
    ids=["bool", "str", "complex", "rank5", "empty", "int64", "huge"],
)
def test_unencodable_inputs_are_payload_errors_before_any_transaction(
    embedded: tuple[Chain, Deployment, bytes], inputs: Any
) -> None:
    chain, dep, mid = embedded
    client = Client(chain, dep, chain.dev_accounts()[1])
    count = chain.call(dep.contracts(chain).market.functions.requestCount())
    with pytest.raises(PayloadError):
        client.request(mid, inputs)
    assert chain.call(dep.contracts(chain).market.functions.requestCount()) == count


def test_requests_the_market_refuses_are_decoded_reverts(embedded: tuple[Chain, Deployment, bytes]) -> None:
    chain, dep, mid = embedded
    client = Client(chain, dep, chain.dev_accounts()[1])
    cases = {
        "InferenceMarket.InputTooLarge(16385, 16384)": (mid, bytes(16385), 0),
        "InferenceMarket.CallbackGasTooHigh(5000001, 5000000)": (mid, tiny_input(), 5_000_001),
        "InferenceMarket.ModelNotRegistered": (b"\x02" + bytes(31), tiny_input(), 0),
    }
    for expected, (model, payload, gas) in cases.items():
        with pytest.raises(ChainError) as e:
            client.request(model, payload, callback_gas_limit=gas, check=False)  # the market's own checks
        assert str(e.value).startswith(expected), str(e.value)


@pytest.mark.requires("guest")
def test_a_node_fails_malformed_requests_and_serves_the_next(
    embedded: tuple[Chain, Deployment, bytes], tmp_path: Path
) -> None:
    """Requests the runtime rejects (not a payload, a wrong shape, a wrong dtype, an extra tensor) are
    recorded as failed with the reason; the node never posts for them and serves the next good request."""
    chain, dep, mid = embedded
    accounts = chain.dev_accounts()
    node = node_on(chain, dep, accounts[2], tmp_path / "node.db")
    node.store.set_cursor(chain.block_number())
    bad = [
        b"not a payload",
        encode_payload([np.zeros((1, 5), np.float32)]),
        encode_payload([np.zeros((1, 4), np.int32)]),
        encode_payload([np.zeros((1, 4), np.float32), np.zeros(1, np.float32)]),
    ]
    bad_ids = [request_tiny(chain, dep, mid, payload, accounts[3]) for payload in bad]
    good_id = request_tiny(chain, dep, mid, tiny_input(), accounts[3])
    stats = node.tick()
    assert stats.errors == 0, "a rejected request is a failed job, not an error of the node"
    for rid in bad_ids:
        job = node.store.job(rid)
        assert job is not None and job.state == JobState.FAILED and job.reason, rid
    good = node.store.job(good_id)
    assert good is not None and good.state == JobState.POSTED
    node.close()


# --------------------------------------------------------------------------------------------------------
# Invalid one-step proofs sent to the dispute game on a real chain
# --------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def leaf_game(embedded: tuple[Chain, Deployment, bytes]) -> tuple[int, bytes, bytes]:
    """A market game at its leaf: a wrong one-step claim about the tiny model's request, challenged.
    Returns (game id, the pre-state of step 0, its valid proof)."""
    chain, dep, mid = embedded
    accounts = chain.dev_accounts()
    c = dep.contracts(chain)
    rid = request_tiny(chain, dep, mid, tiny_input(), accounts[1])
    wrong_claim = bytes(32)  # VALID status byte, not the state after one step
    chain.transact(
        accounts[2], c.market.functions.postVMResult(rid, b"x", wrong_claim, 1), value=dep.params.prover_bond
    )
    result_id = chain.call(c.market.functions.getRequest(rid))[8]
    receipt = chain.transact(
        accounts[3], c.market.functions.challenge(rid, result_id), value=dep.params.challenger_bond
    )
    (ev,) = receipt_events(c.market, "ResultChallenged", receipt)
    program = guest_program()
    assert program.state.hash() == program_hash()
    witness = make_proof(program.state, program.memory, PreimageOracle())
    assert witness.part is None, "the guest's first step reads no preimage"
    return int(ev["args"]["gameId"]), witness.pre_state, witness.proof


def foreign_siblings(pre_state: bytes, proof: bytes) -> bytes:
    """The instruction proof of the same leaf in a memory that differs elsewhere: the right leaf, the wrong
    siblings."""
    program = guest_program()
    memory: Memory = program.memory.copy()
    memory.write(0x10000000, b"elsewhere")
    pc = int.from_bytes(pre_state[68:72], "big")
    return memory.proof(pc) + proof[896:]


def test_invalid_leaf_steps_are_refused_with_named_errors(
    embedded: tuple[Chain, Deployment, bytes], leaf_game: tuple[int, bytes, bytes]
) -> None:
    chain, dep, _ = embedded
    game_id, pre, proof = leaf_game
    game = dep.contracts(chain).game
    stepper = chain.dev_accounts()[4]
    other_state = bytearray(pre)
    other_state[105] ^= 1  # another value of register r1: another pre-state
    disputed = bytes(chain.call(game.functions.getGame(game_id))[9])
    assert disputed == bytes(32), "the wrong one-step claim"
    cases = [
        ("DisputeGame.DisputedHashMismatch", b"\x01" * 32, pre, proof),  # a valid witness, another dispute
        ("DisputeGame.BadStateLength(225)", disputed, pre[:-1], proof),
        ("DisputeGame.PreStateMismatch", disputed, bytes(other_state), proof),
        ("MIPS.InvalidProofLength(1791)", disputed, pre, proof[:-1]),
        ("MIPS.InvalidProofLength(0)", disputed, pre, b""),
        ("MIPS.InvalidMemoryProof", disputed, pre, foreign_siblings(pre, proof)),
        ("MIPS.InvalidMemoryProof", disputed, pre, proof[896:] + proof[:896]),  # the two proofs swapped
        ("MIPS.InvalidMemoryProof", disputed, pre, bytes(len(proof))),
    ]
    for expected, named, state, witness in cases:
        with pytest.raises(ChainError) as e:
            chain.transact(stepper, game.functions.step(game_id, named, state, witness))
        assert str(e.value).startswith(expected), str(e.value)
    assert chain.call(game.functions.getGame(game_id))[3] == 1, "still active"
    settle = game.functions.step(game_id, disputed, pre, proof)
    chain.transact(stepper, settle)  # the valid witness settles it
    assert chain.call(game.functions.getGame(game_id))[3] == 3, "the wrong claim lost"
