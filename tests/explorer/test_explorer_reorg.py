"""The explorer against a chain that misbehaves: anvil's evm_snapshot / evm_revert stand for a reset dev
chain (the head below what the index saw) and for a reorg (same height, other blocks); a stopped anvil for a
dead endpoint."""

from __future__ import annotations

import json

import pytest
from support.devrpc import dev_rpc
from support.models import mnist

from mlkit.format import model_id
from rollml.core.chain import Chain
from rollml.core.deploy import deploy
from rollml.core.devnet import Anvil
from rollml.explorer.app import ExplorerSite
from rollml.explorer.index import ChainIndex
from rollml.world import ZERO_ADDRESS

pytestmark = pytest.mark.requires("guest")


def test_the_index_starts_over_after_a_revert_and_a_reorg(own_anvil: Anvil) -> None:
    anvil = own_anvil
    chain = Chain.connect(anvil.url)
    me = chain.dev_accounts()[6]
    model, payload = mnist()
    mid = model_id(model)
    dep = deploy(chain, me, mid, gan_model=model)
    market = dep.contracts(chain).market
    fee = chain.call(market.functions.estimateFee(mid, len(payload), 0))

    def request(n: int) -> None:
        sender = Chain.connect(anvil.url)  # a new connection: no nonce counted before a revert
        call = dep.contracts(sender).market.functions.requestInference(mid, payload, ZERO_ADDRESS, 0)
        for _ in range(n):
            sender.transact(me, call, value=fee)

    def seen() -> list[int]:
        return [r["request_id"] for r in index.snapshot()["requests"]]

    index = ChainIndex(Chain.connect(anvil.url), dep)  # a reader of its own, as in `rollml explorer`
    index.refresh()
    assert seen() == []
    snapshot = dev_rpc(chain, "evm_snapshot")
    request(2)
    index.refresh()
    assert seen() == [2, 1]

    dev_rpc(chain, "evm_revert", snapshot)  # the head goes below what the index saw
    request(1)
    index.refresh()
    assert seen() == [1] and index.snapshot()["chain"]["resets"] == 1

    snapshot = dev_rpc(chain, "evm_snapshot")
    request(1)
    index.refresh()
    assert seen() == [2, 1]
    height = chain.block_number()
    dev_rpc(chain, "evm_revert", snapshot)  # a reorg: as high as before, other blocks
    chain.mine(1)
    assert chain.block_number() == height
    index.refresh()
    assert seen() == [1] and index.snapshot()["chain"]["resets"] == 2


@pytest.mark.requires("anvil")
def test_a_dead_endpoint_is_one_line_naming_it() -> None:
    model, _ = mnist()
    node = Anvil().start()
    try:
        chain = Chain.connect(node.url, retries=1)
        dep = deploy(chain, chain.dev_accounts()[0], model_id(model), gan_model=model)
        site = ExplorerSite(chain, dep, min_interval=0)
        assert site.get("/api/state").status == 200
    finally:
        node.stop()
    page = site.get("/api/state")
    error = json.loads(page.body)["error"]
    assert page.status == 502 and "\n" not in error and error.startswith(f"{node.url}: connection failed"), (
        error
    )
