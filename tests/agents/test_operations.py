"""What an operator meets on the first days (issue 15): models that arrive late, a chain nobody else uses, a
devnet that restarts under running agents.

- A challenger that could not verify a result (its model missing) verifies it once the model arrives, in
  the same process or after a restart, also from a database an older version left it in as `unknown`.
- A node that skipped a request (model not served) serves it once the model arrives, also after a liar's
  result on it lost its game and the request reopened.
- On a chain that mines only on transactions, a node finalizes its result when the window is over by the
  clock, with no other transaction; `rollml devnet`'s anvil mines on a clock.
- After a reset chain (head below the cursor) or a reorg (the cursor's block replaced), the agents say so,
  rewind and serve the new history.
- A model registered with a `uri` is fetched by the node that does not have it, and verified.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from support.devrpc import dev_rpc
from support.models import tiny_input, tiny_model
from web3.types import Wei

from mlkit.format import model_id
from mlkit.io import encode_payload
from rollml.agent import base
from rollml.agent.models import ModelStore
from rollml.core.chain import Chain
from rollml.core.deploy import DEV_PARAMS, register_model
from rollml.core.devnet import Anvil
from rollml.core.execution import Tamper, TamperKind
from rollml.core.sdk import RequestStatus
from rollml.core.store import JobState, Verdict
from rollml.world import World

pytestmark = pytest.mark.requires("guest")

LIAR = Tamper(TamperKind.OUTPUT)


@pytest.fixture
def tiny_world(tmp_path: Path) -> World:
    """An embedded chain with the tiny model registered (and served by the world's agents by default)."""
    return World.create(Chain.embedded(), tmp_path / "world", {"tiny": tiny_model()})


@pytest.fixture(autouse=True)
def scan_models_every_tick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "MODEL_SCAN_EVERY", 0.0)
    # the CLI tests (`configure_logging`) stop `rollml` records from reaching caplog's root handler
    monkeypatch.setattr(logging.getLogger("rollml"), "propagate", True)


def empty_models(tmp_path: Path, name: str) -> ModelStore:
    directory = tmp_path / name
    directory.mkdir()
    return ModelStore.from_dir(directory)


def add_model_file(store: ModelStore, model: bytes) -> None:
    assert store.directory is not None
    (store.directory / "tiny.mlkit").write_bytes(model)


def events(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == event]


# --------------------------------------------------------------------------------------------------------
# Bug 1: unverifiable results are retried
# --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["same process", "restart", "restart from an old database"])
def test_a_result_unverifiable_for_want_of_its_model_is_challenged_once_the_model_arrives(
    tiny_world: World, tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    world = tiny_world
    liar = world.node(1, "liar", tamper=LIAR)
    models = empty_models(tmp_path, "challenger-models")
    challenger = world.challenger(3, "challenger", models=models)
    rid = world.request(tiny_model(), tiny_input())
    with caplog.at_level(logging.INFO, logger="rollml"):
        for _ in range(3):
            liar.tick()
            challenger.tick()
    (result,) = challenger.store.results(Verdict.UNVERIFIABLE)
    assert result.reason == "model not available"
    assert events(caplog, "unverifiable"), "the operator is warned about the result"
    if how != "same process":
        if how == "restart from an old database":  # what the code before the fix recorded
            challenger.store.set_verdict(result.result_id, Verdict.UNKNOWN, "model not available")
            challenger.store.set_handled(result.result_id)
        challenger.close()  # as after a kill -9, nothing else is saved
    add_model_file(models, tiny_model())
    if how != "same process":
        challenger = world.challenger(
            3, "challenger", models=ModelStore.from_dir(tmp_path / "challenger-models")
        )
    world.play([liar, challenger], lambda: world.request_status(rid) == RequestStatus.OPEN)
    assert world.events("ResultChallenged", requestId=rid)
    assert challenger.store.result(result.result_id).verdict == Verdict.WRONG  # type: ignore[union-attr]


def test_an_unverifiable_result_is_given_up_with_a_warning_when_its_window_closes(
    tiny_world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from challenger import agent as challenger_agent

    monkeypatch.setattr(challenger_agent, "WINDOW_CHECK", 0.0)
    world = tiny_world
    node = world.node(1, "node")
    challenger = world.challenger(3, "challenger", models=empty_models(tmp_path, "none"))
    rid = world.request(tiny_model(), tiny_input())
    with caplog.at_level(logging.INFO, logger="rollml"):
        world.play([node, challenger], lambda: world.request_status(rid) == RequestStatus.FINALIZED)
        challenger.tick()
    (result,) = challenger.store.results(Verdict.UNKNOWN)
    assert result.handled and "never verified" in (result.reason or "")
    assert events(caplog, "unverified_result_settled")


# --------------------------------------------------------------------------------------------------------
# Bug 2: skipped requests are served once the model arrives
# --------------------------------------------------------------------------------------------------------
def test_a_skipped_request_is_served_when_the_model_arrives_after_a_liar_lost(
    tiny_world: World, tmp_path: Path
) -> None:
    world = tiny_world
    liar = world.node(1, "liar", tamper=LIAR)
    challenger = world.challenger(3, "challenger")
    models = empty_models(tmp_path, "node-models")
    node = world.node(2, "node", models=models)
    rid = world.request(tiny_model(), tiny_input())
    node.tick()
    job = node.store.job(rid)
    assert job is not None and job.state == JobState.SKIPPED
    world.play([liar, challenger, node], lambda: bool(world.events("ResultChallenged", requestId=rid)))
    node.close()  # restarted with the model added
    add_model_file(models, tiny_model())
    node = world.node(2, "node", models=ModelStore.from_dir(tmp_path / "node-models"))
    world.play([liar, challenger, node], lambda: world.request_status(rid) == RequestStatus.FINALIZED)
    (final,) = world.events("ResultFinalized", requestId=rid)
    assert final["prover"] == world.accounts[2].address


def test_a_request_skipped_by_an_older_node_is_served_once_the_model_arrives(
    tiny_world: World, tmp_path: Path
) -> None:
    world = tiny_world
    models = empty_models(tmp_path, "node-models")
    node = world.node(2, "node", models=models)
    rid = world.request(tiny_model(), tiny_input())
    node.tick()
    node.store.db.execute("DELETE FROM jobs")  # the code before the fix kept no record of the skip
    node.close()
    add_model_file(models, tiny_model())
    node = world.node(2, "node", models=ModelStore.from_dir(tmp_path / "node-models"))
    world.play([node], lambda: world.request_status(rid) == RequestStatus.FINALIZED)


# --------------------------------------------------------------------------------------------------------
# Model uri: fetched and verified
# --------------------------------------------------------------------------------------------------------
def test_a_node_fetches_a_model_from_its_registered_uri_and_refuses_other_bytes(
    tiny_world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from mlkit.format import ModelBuilder

    world = tiny_world
    other = ModelBuilder()
    other.output(other.relu(other.input((1, 3))))
    impostor_file = tmp_path / "impostor.mlkit"
    impostor_file.write_bytes(tiny_model())  # the right model file, but not the model registered below
    wrong_id = register_model(
        world.chain, world.deployment, world.accounts[0], other.to_bytes(), "other", impostor_file.as_uri()
    )
    good_file = tmp_path / "served" / "tiny.mlkit"
    good_file.parent.mkdir()
    good_file.write_bytes(tiny_model())
    sq = ModelBuilder()
    sq.output(sq.relu(sq.relu(sq.input((1, 4)))))
    fetched = sq.to_bytes()
    (tmp_path / "sq.mlkit").write_bytes(fetched)
    mid = register_model(
        world.chain, world.deployment, world.accounts[0], fetched, "sq", (tmp_path / "sq.mlkit").as_uri()
    )
    models = empty_models(tmp_path, "node-models")
    node = world.node(2, "node", models=models, fetch_models=True)
    good = world.request(mid, tiny_input())
    bad = world.request(wrong_id, encode_payload([np.zeros((1, 3), np.float32)]))
    with caplog.at_level(logging.INFO, logger="rollml"):
        world.play([node], lambda: world.request_status(good) == RequestStatus.FINALIZED)
    assert (models.directory / f"0x{mid.hex()}.mlkit").read_bytes() == fetched  # type: ignore[operator]
    assert node.store.job(bad).state == JobState.SKIPPED  # type: ignore[union-attr]
    (failed,) = events(caplog, "model_fetch_failed")
    assert "not the registered" in failed.fields["reason"]  # type: ignore[attr-defined]
    assert model_id(fetched) == mid


# --------------------------------------------------------------------------------------------------------
# Bug 3: no other traffic needed
# --------------------------------------------------------------------------------------------------------
@pytest.mark.requires("anvil")
def test_a_node_finalizes_on_a_chain_nobody_else_uses(anvil: Anvil, tmp_path: Path) -> None:
    """anvil mining only on transactions: after the post, no block comes until the node's own finalize."""
    params = replace(DEV_PARAMS, challenge_window=2)
    world = World.create(Chain.connect(anvil.url), tmp_path, {"tiny": tiny_model()}, params=params)
    node = world.node(1, "node")
    rid = world.request(tiny_model(), tiny_input())
    node.tick()
    assert world.request_status(rid) == RequestStatus.PROPOSED
    head = world.chain.block_number()
    deadline = time.monotonic() + 30
    while world.request_status(rid) != RequestStatus.FINALIZED:
        assert time.monotonic() < deadline, "not finalized 30 s after a 2 s window"
        assert world.chain.block_number() == head, "somebody else sent a transaction"
        time.sleep(0.5)
        node.tick()
    node.close()


@pytest.mark.requires("anvil")
def test_the_devnet_mines_on_a_clock_and_transactions_at_once() -> None:
    with Anvil(block_time=1) as node:
        chain = Chain.connect(node.url)
        first = chain.block_number()
        time.sleep(2.5)
        assert chain.block_number() >= first + 2
        accounts = chain.dev_accounts()
        t0 = time.monotonic()
        tx = chain.w3.eth.send_transaction(
            {"from": accounts[0].address, "to": accounts[1].address, "value": Wei(1)}
        )
        chain.w3.eth.wait_for_transaction_receipt(tx, poll_latency=0.05)
        assert time.monotonic() - t0 < 0.9, "a transaction waits for no block interval"


# --------------------------------------------------------------------------------------------------------
# Bug 4: a reset or reorged chain
# --------------------------------------------------------------------------------------------------------
@pytest.mark.requires("anvil")
@pytest.mark.parametrize("kind", ["reset", "reorg"])
def test_agents_resync_after_the_chain_was_reset_or_reorged(
    own_anvil: Anvil, tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The node serves request 1 of the first history; the chain goes back to just after the deployment
    (`evm_revert`, as a restarted devnet redeploys the same addresses) and, for a reorg, grows past the
    node's cursor; request 1 of the new history has another input, and the node serves it."""
    world = World.create(Chain.connect(own_anvil.url), tmp_path, {"tiny": tiny_model()})
    snapshot = dev_rpc(world.chain, "evm_snapshot")
    node = world.node(1, "node", chain=Chain.connect(own_anvil.url))
    challenger = world.challenger(3, "challenger", chain=Chain.connect(own_anvil.url))
    first = world.request(tiny_model(), tiny_input())
    for agent in (node, challenger, node):
        agent.tick()
    cursor = node.store.cursor(0)
    assert world.request_status(first) == RequestStatus.PROPOSED
    dev_rpc(world.chain, "evm_revert", snapshot)
    world.chain.forget_nonces()
    if kind == "reorg":
        world.chain.mine(cursor - world.chain.block_number() + 2)
    other = encode_payload([np.array([[5.0, 6.0, -7.0, 8.0]], np.float32)])
    with caplog.at_level(logging.INFO, logger="rollml"):
        again = world.request(tiny_model(), other)
        assert again == first, "the new history numbers its requests from 1 again"
        world.play([node, challenger], lambda: world.request_status(again) == RequestStatus.FINALIZED)
    (reset,) = [r for r in events(caplog, "chain_reset") if r.name.endswith("node")]
    assert reset.fields["kind"] == kind  # type: ignore[attr-defined]
    assert not events(caplog, "result_lost")
    (posted,) = world.events("ResultPosted", requestId=again)
    assert posted["prover"] == world.accounts[1].address
    from rollml.core.sdk import Client

    assert Client(world.chain, world.deployment).output_bytes(again) == posted["output"]
    assert node.store.request(again).input == other  # type: ignore[union-attr]


# --------------------------------------------------------------------------------------------------------
# Metrics and health
# --------------------------------------------------------------------------------------------------------
def test_metrics_and_health_are_served_and_count_what_the_agents_did(
    tiny_world: World, tmp_path: Path
) -> None:
    import requests

    from rollml.agent.metrics import serve

    world = tiny_world
    liar = world.node(1, "liar", tamper=LIAR)
    node = world.node(2, "node")
    challenger = world.challenger(3, "challenger", models=empty_models(tmp_path, "none"))
    served = [serve(agent, "127.0.0.1", 0) for agent in (liar, challenger)]
    (liar_http, _), (challenger_http, _) = served
    try:
        assert requests.get(f"{liar_http.url}/healthz", timeout=5).status_code == 503, "no tick yet"
        rid = world.request(tiny_model(), tiny_input())
        for _ in range(2):
            for agent in (liar, challenger, node):
                agent.tick()
        health = requests.get(f"{challenger_http.url}/healthz", timeout=5)
        assert health.status_code == 200 and health.json()["unverifiable_results"] == 1
        page = requests.get(f"{liar_http.url}/metrics", timeout=5)
        assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/plain")
        text = page.text
        labels = f'address="{liar.address}",kind="node"'
        assert f"rollml_requests_seen_total{{{labels}}} 1.0" in text
        assert f"rollml_results_posted_total{{{labels}}} 1.0" in text
        assert f'rollml_jobs{{{labels},state="posted"}} 1.0' in text
        assert f"rollml_vm_seconds_total{{{labels}}}" in text
        assert "rollml_balance_wei{" in text
        watcher = requests.get(f"{challenger_http.url}/metrics", timeout=5).text
        assert (
            f'rollml_unverifiable_results{{address="{challenger.address}",kind="challenger"}} 1.0' in watcher
        )
        assert requests.get(f"{liar_http.url}/nothing", timeout=5).status_code == 404
        assert world.request_status(rid) == RequestStatus.PROPOSED
    finally:
        for server, _ in served:
            server.stop()


# --------------------------------------------------------------------------------------------------------
# Bug 5: requests checked before paying; a prover says why it cannot serve one
# --------------------------------------------------------------------------------------------------------
def test_the_sdk_refuses_a_request_no_prover_could_serve_before_paying(tiny_world: World) -> None:
    from rollml.core.sdk import Client, InputRejected

    world = tiny_world
    client = Client(world.chain, world.deployment, world.accounts[5])
    mid = model_id(tiny_model())
    count = world.chain.call(world.contracts.market.functions.requestCount())
    cases = {
        "takes an input of shape [1, 4]; the input is float32[2, 2]": encode_payload(
            [np.zeros((2, 2), np.float32)]
        ),
        "the input payload is 20000 bytes; the market takes at most 16384": bytes(20000),
        "not an mlkit payload": b"garbage",
    }
    for expected, payload in cases.items():
        with pytest.raises(InputRejected, match=expected.replace("[", r"\[").replace("]", r"\]")):
            client.request(mid, payload)
    with pytest.raises(InputRejected, match=r"takes float32\[1, 4\]; the input is int32\[1, 4\]"):
        client.request(mid, encode_payload([np.zeros((1, 4), np.int32)]), model=tiny_model())
    assert world.chain.call(world.contracts.market.functions.requestCount()) == count
    assert client.request(mid, tiny_input()).request_id == count + 1


def test_a_node_tells_the_requester_why_it_cannot_serve_a_request(tiny_world: World) -> None:
    from rollml.core.sdk import Client

    world = tiny_world
    node = world.node(1, "node")
    client = Client(world.chain, world.deployment, world.accounts[5])
    wrong_dtype = encode_payload([np.zeros((1, 4), np.int32)])  # the registry keeps shapes, not dtypes
    rid = client.request(model_id(tiny_model()), wrong_dtype).request_id
    node.tick()
    assert node.store.job(rid).state == JobState.FAILED  # type: ignore[union-attr]
    (report,) = client.status(rid).unservable
    assert report["prover"] == node.address and "rejects" in report["reason"]
    assert world.request_status(rid) == RequestStatus.OPEN, "the requester cancels from the deadline on"
    node.tick()
    assert len(client.status(rid).unservable) == 1, "said once"
