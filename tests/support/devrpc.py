"""Raw JSON-RPC calls of a dev chain (anvil's evm_snapshot, evm_revert, ...), for tests that make the chain
misbehave."""

from __future__ import annotations

from rollml.core.chain import Chain


def dev_rpc(chain: Chain, method: str, *params: object) -> object:
    """`method(*params)` on `chain`'s endpoint; its result (an error answer fails the test)."""
    response = chain.w3.provider.make_request(method, list(params))  # type: ignore[arg-type]
    assert "error" not in response, response
    return response["result"]
