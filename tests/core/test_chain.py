"""The chain layer and deployment on real chains: the embedded py-evm chain and an anvil process.

Covers deploying the six contracts, registering a model (idempotent, squatting detected), a request paying
`estimateFee`, reverts decoded into named `ChainError`s (at estimation, in a mined receipt, in eth_call),
time travel, event queries, concurrent senders, and unreachable endpoints.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import requests

from mipsvm.preimage import PreimageStore, put_blob
from mlkit.format import ModelBuilder, model_id
from mlkit.io import encode_payload
from rollml.core.chain import Chain, ChainError, decode_revert
from rollml.core.deploy import DEV_PARAMS, Deployment, MarketParams, deploy, program_hash, register_model
from rollml.core.devnet import Anvil, free_port

GAN_ID = b"\x02" + b"\x47" * 31  # a stand-in GAN model id: the chain tests never run it


def tiny_model() -> bytes:
    """A one-op model (relu of a 1x4 f32 input): registrable and runnable, built in microseconds."""
    b = ModelBuilder()
    b.output(b.relu(b.input((1, 4))))
    return b.to_bytes()


@pytest.fixture(scope="module")
def embedded() -> tuple[Chain, Deployment]:
    chain = Chain.embedded()
    return chain, deploy(chain, chain.dev_accounts()[0], GAN_ID)


def request(chain: Chain, dep: Deployment, mid: bytes, payload: bytes, sender: int = 1) -> tuple[int, int]:
    """Send `requestInference` paying exactly `estimateFee`; (request id, fee)."""
    market = dep.contracts(chain).market
    fee = chain.call(market.functions.estimateFee(mid, len(payload), 0))
    account = chain.dev_accounts()[sender]
    receipt = chain.transact(
        account, market.functions.requestInference(mid, payload, account.address, 0), fee
    )
    (event,) = market.events.InferenceRequested().process_receipt(receipt)
    return int(event["args"]["requestId"]), fee


# --------------------------------------------------------------------------------------------------------
# Deployment and registration
# --------------------------------------------------------------------------------------------------------


def test_deploy_wires_the_contracts_with_the_given_parameters(embedded: tuple[Chain, Deployment]) -> None:
    chain, dep = embedded
    c = dep.contracts(chain)
    assert MarketParams.read(chain, c.market) == DEV_PARAMS
    assert chain.call(c.market.functions.registry()) == dep.registry
    assert chain.call(c.market.functions.disputeGame()) == dep.game
    assert chain.call(c.game.functions.mips()) == dep.mips
    assert chain.call(c.mips.functions.oracle()) == dep.oracle
    assert (chain.call(c.game.functions.arity()), chain.call(c.game.functions.moveTimeout())) == (16, 300)
    assert chain.call(c.gan_nft.functions.modelId()) == GAN_ID
    assert c.training is not None and chain.call(c.training.functions.disputeGame()) == dep.game
    assert chain.call(c.training.functions.registry()) == dep.registry
    assert chain.call(c.registry.functions.programHashOf(GAN_ID)) == program_hash() == dep.program_hash
    assert program_hash()[0] == 3  # UNFINISHED: the registry rejects anything else
    assert 0 < dep.block <= chain.block_number()


def test_deployment_round_trips_through_json(embedded: tuple[Chain, Deployment], tmp_path: Path) -> None:
    _, dep = embedded
    assert Deployment.from_json(dep.to_json()) == dep
    assert Deployment.load(dep.save(tmp_path / "sub" / "dep.json")) == dep
    assert set(dep.addresses) == {"oracle", "mips", "game", "registry", "market", "gan_nft", "training"}
    # a deployment file from before training runs still loads; it has no TrainingRun
    old = json.loads(dep.to_json())
    del old["training"]
    assert Deployment.from_json(json.dumps(old)).training == ""
    with pytest.raises(ValueError, match="not a rollml deployment file"):
        Deployment.from_json('{"chain_id": 1}')
    with pytest.raises(ValueError, match="cannot read deployment file"):
        Deployment.load(tmp_path / "missing.json")


def test_deployment_refuses_another_chain(embedded: tuple[Chain, Deployment]) -> None:
    _, dep = embedded
    with pytest.raises(ChainError, match="no contract at the market address"):
        dep.contracts(Chain.embedded())  # same chain id, nothing deployed: like a restarted anvil


def test_register_model_uses_the_blob_id_and_is_idempotent(embedded: tuple[Chain, Deployment]) -> None:
    chain, dep = embedded
    data = tiny_model()
    sender = chain.dev_accounts()[2]
    mid = register_model(chain, dep, sender, data, "tiny", "ipfs://tiny")
    assert mid == model_id(data) and mid[0] == 2
    model = chain.call(dep.contracts(chain).registry.functions.getModel(mid))
    assert (model[0], model[1], model[3], model[4], model[5], model[6]) == (
        program_hash(),
        sender.address,
        "tiny",
        [1, 4],
        [1, 4],
        "ipfs://tiny",
    )
    block = chain.block_number()
    assert register_model(chain, dep, sender, data, "tiny") == mid
    assert chain.block_number() == block  # no transaction the second time


def test_register_model_detects_a_squatted_id(embedded: tuple[Chain, Deployment]) -> None:
    chain, dep = embedded
    b = ModelBuilder()
    b.output(b.tanh(b.input((2, 2))))
    data = b.to_bytes()
    squatter = chain.dev_accounts()[3]
    registry = dep.contracts(chain).registry
    other_program = b"\x03" + b"\x99" * 31
    chain.transact(squatter, registry.functions.register(model_id(data), "x", [], [], "", other_program))
    with pytest.raises(ChainError, match="already registered with another program"):
        register_model(chain, dep, chain.dev_accounts()[2], data, "mine")


# --------------------------------------------------------------------------------------------------------
# Requests, reverts, time and events
# --------------------------------------------------------------------------------------------------------


def test_request_pays_the_fee_and_the_event_carries_the_input(embedded: tuple[Chain, Deployment]) -> None:
    chain, dep = embedded
    mid = register_model(chain, dep, chain.dev_accounts()[2], tiny_model(), "tiny")
    payload = encode_payload([np.arange(4, dtype=np.float32).reshape(1, 4) - 2])
    market = dep.contracts(chain).market
    before = chain.balance(dep.market)
    rid, fee = request(chain, dep, mid, payload)
    assert fee == DEV_PARAMS.base_fee + DEV_PARAMS.fee_per_input_byte * len(payload)
    assert chain.balance(dep.market) == before + fee
    req = chain.call(market.functions.getRequest(rid))
    assert req[2] == 1 and req[4] == fee and req[5] == mid  # Open, fee escrowed, model
    (event,) = chain.events(market, "InferenceRequested", dep.block, requestId=rid)
    assert event["args"]["input"] == payload
    assert event["args"]["inputId"] == put_blob(PreimageStore(), payload) == req[6]


def test_reverts_are_decoded_into_named_errors(embedded: tuple[Chain, Deployment]) -> None:
    chain, dep = embedded
    mid = register_model(chain, dep, chain.dev_accounts()[2], tiny_model(), "tiny")
    market = dep.contracts(chain).market
    account = chain.dev_accounts()[1]
    required = chain.call(market.functions.estimateFee(mid, 3, 0))
    call = market.functions.requestInference(mid, b"abc", account.address, 0)
    with pytest.raises(ChainError) as at_estimate:
        chain.transact(account, call, value=required - 1)
    assert str(at_estimate.value) == f"InferenceMarket.InsufficientFee({required - 1}, {required})"
    assert at_estimate.value.error_name == "InsufficientFee"
    assert at_estimate.value.error_args == (required - 1, required)
    # With an explicit gas limit nothing is estimated: the transaction is mined, fails, and is replayed.
    rid, _ = request(chain, dep, mid, b"abc")
    block = chain.block_number()
    bad_bond = market.functions.postVMResult(rid, b"out", b"\x00" * 32, 1)
    with pytest.raises(ChainError, match=rf"^InferenceMarket\.WrongBond\(1, {DEV_PARAMS.prover_bond}\)$"):
        chain.transact(account, bad_bond, value=1, gas=300_000)
    assert chain.block_number() == block + 1  # it was mined
    with pytest.raises(ChainError, match=r"^ModelRegistry\.ModelNotRegistered\(0x02ab"):
        chain.call(dep.contracts(chain).registry.functions.programHashOf(b"\x02" + b"\xab" * 31))


def test_decode_revert_handles_standard_and_unknown_errors() -> None:
    from eth_abi import encode

    assert str(decode_revert(bytes.fromhex("08c379a0") + encode(["string"], ["nope"]))) == "reverted: nope"
    assert (
        str(decode_revert(bytes.fromhex("4e487b71") + (0x11).to_bytes(32, "big"))) == "reverted: Panic(0x11)"
    )
    assert "unknown error data 0xdeadbeef" in str(decode_revert(bytes.fromhex("deadbeef")))
    assert "without data" in str(decode_revert(b""))


def test_advance_time_moves_the_block_clock(embedded: tuple[Chain, Deployment]) -> None:
    chain, _ = embedded
    t0, b0 = chain.now(), chain.block_number()
    chain.advance_time(1000)
    assert chain.now() >= t0 + 1000 and chain.block_number() > b0
    with pytest.raises(ChainError):
        chain.advance_time(-1)


def test_events_are_filtered_and_ordered(embedded: tuple[Chain, Deployment]) -> None:
    chain, dep = embedded
    mid = register_model(chain, dep, chain.dev_accounts()[2], tiny_model(), "tiny")
    start = chain.block_number() + 1
    ids = [request(chain, dep, mid, bytes([i]), sender=4)[0] for i in range(3)]
    market = dep.contracts(chain).market
    got = chain.events(market, "InferenceRequested", start)
    assert [e["args"]["requestId"] for e in got] == ids
    assert [
        e["args"]["input"] for e in chain.events(market, "InferenceRequested", start, requestId=ids[1])
    ] == [b"\x01"]
    assert chain.events(market, "InferenceRequested", start, to_block=start - 1) == []


def test_concurrent_senders_share_nonces_safely(embedded: tuple[Chain, Deployment]) -> None:
    chain, dep = embedded
    mid = register_model(chain, dep, chain.dev_accounts()[2], tiny_model(), "tiny")
    errors: list[BaseException] = []

    def send(i: int) -> None:
        try:
            request(chain, dep, mid, bytes([i]), sender=5)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


# --------------------------------------------------------------------------------------------------------
# Endpoints
# --------------------------------------------------------------------------------------------------------


def test_connect_to_nothing_fails_with_a_clear_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(
        ChainError, match=rf"cannot reach the chain at {url}: connection failed .*\(after 2 attempts\)$"
    ):
        Chain.connect(url, retries=1)
    with pytest.raises(ChainError, match="not an http"):
        Chain.connect("embedded")


def test_transient_errors_are_retried_with_backoff() -> None:
    chain = Chain.embedded()
    chain.retries = 3
    failures = iter([requests.ConnectionError("reset"), requests.Timeout("slow")])

    def flaky() -> int:
        exc = next(failures, None)
        if exc is not None:
            raise exc
        return 7

    assert chain._retrying(flaky) == 7
    with pytest.raises(ValueError):  # not transient: raised at once
        chain._retrying(lambda: int("x"))


def test_deploy_request_and_time_on_anvil(anvil: Anvil) -> None:
    chain = Chain.connect(anvil.url)
    accounts = chain.dev_accounts()
    assert chain.chain_id == 31337
    assert accounts[0].address == "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"  # anvil's first dev key
    dep = deploy(chain, accounts[0], GAN_ID)
    mid = register_model(chain, dep, accounts[0], tiny_model(), "tiny")
    rid, fee = request(chain, dep, mid, b"input bytes")
    market = dep.contracts(chain).market
    assert chain.call(market.functions.getRequest(rid))[4] == fee
    (event,) = chain.events(market, "InferenceRequested", dep.block, requestId=rid)
    assert event["args"]["input"] == b"input bytes"
    with pytest.raises(ChainError, match=r"^InferenceMarket\.WrongBond\(0, "):
        chain.transact(accounts[1], market.functions.postVMResult(rid, b"", b"\x00" * 32, 1))
    t0 = chain.now()
    chain.advance_time(3600)
    assert chain.now() >= t0 + 3600
