"""GanNFT's latent rules: the Python mirror (`rollml.core.gan_nft`) against the deployed contract on the
embedded py-evm chain, function for function (seedLatent, blendLatent, latentPayload, latentInput), on
random seeds and weights (hypothesis), and the properties the rules promise (exact binary32 values, the ends
of a blend are the parents, symmetry). A whole mint and blend through the market, served by the real agents,
is the demo's `blend` step (tests/cli/test_demo.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlkit.io import decode_payload
from rollml.core import gan_nft
from rollml.core.chain import Chain
from rollml.core.deploy import Contracts, deploy

GAN_ID = b"\x02" + b"\x47" * 31  # a stand-in GAN model id: the pure functions never run it
seeds = st.integers(min_value=0, max_value=2**256 - 1)
weights = st.integers(min_value=0, max_value=gan_nft.WEIGHT_ONE)


@pytest.fixture(scope="module")
def nft() -> Contracts:
    chain = Chain.embedded()
    return deploy(chain, chain.dev_accounts()[0], GAN_ID).contracts(chain)


@settings(max_examples=12, deadline=None)
@given(seed=seeds)
def test_seed_latent_and_input_match_the_contract(nft: Contracts, seed: int) -> None:
    c = nft.gan_nft.functions
    t = gan_nft.seed_latent(seed)
    assert tuple(c.seedLatent(seed).call()) == t
    assert bytes(c.latentInput(seed).call()) == gan_nft.latent_input(seed)
    assert bytes(c.latentPayload(list(t)).call()) == gan_nft.latent_payload(t)


@settings(max_examples=12, deadline=None)
@given(a=seeds, b=seeds, weight=weights)
def test_blend_latent_matches_the_contract(nft: Contracts, a: int, b: int, weight: int) -> None:
    c = nft.gan_nft.functions
    la, lb = gan_nft.seed_latent(a), gan_nft.seed_latent(b)
    ours = gan_nft.blend_latent(la, lb, weight)
    assert tuple(c.blendLatent(list(la), list(lb), weight).call()) == ours
    assert bytes(c.latentPayload(list(ours)).call()) == gan_nft.latent_payload(ours)


@settings(max_examples=50, deadline=None)
@given(a=seeds, b=seeds, weight=weights)
def test_blends_are_exact_floats_between_the_parents(a: int, b: int, weight: int) -> None:
    la, lb = gan_nft.seed_latent(a), gan_nft.seed_latent(b)
    c = gan_nft.blend_latent(la, lb, weight)
    assert c == gan_nft.blend_latent(lb, la, gan_nft.WEIGHT_ONE - weight)
    (z,) = decode_payload(gan_nft.latent_payload(c))
    exact = np.asarray(c, dtype=np.float64) / 2**18
    assert np.array_equal(z.reshape(-1).astype(np.float64), exact), "every value is exact in binary32"
    for x, y, v in zip(la, lb, c, strict=True):
        assert min(x, y) - 1 <= v <= max(x, y) + 1
    assert gan_nft.blend_latent(la, lb, 0) == la and gan_nft.blend_latent(la, lb, gan_nft.WEIGHT_ONE) == lb


def test_division_truncates_toward_zero_like_solidity() -> None:
    # seed 42 and 43, index 1, weight 3333: -105509824 / 10000 is -10550 in Solidity (floor: -10551)
    a, b = gan_nft.seed_latent(42), gan_nft.seed_latent(43)
    assert gan_nft.blend_latent(a, b, 3333)[1] == -10550


@pytest.mark.parametrize(
    ("call_", "message"),
    [
        (lambda: gan_nft.blend_latent((0,) * 100, (0,) * 100, 10_001), "weight is 0 .. 10000"),
        (lambda: gan_nft.blend_latent((0,) * 99, (0,) * 100, 1), "100 values"),
        (lambda: gan_nft.seed_latent(-1), "uint256"),
        (lambda: gan_nft.latent_array((1 << 20,) * 100), "< 2\\^20"),
        (lambda: gan_nft.sweep_weights(1), "at least 2"),
    ],
)
def test_bad_arguments_are_clear_errors(call_: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call_()  # type: ignore[operator]


def test_sweep_weights_go_from_one_parent_to_the_other() -> None:
    assert gan_nft.sweep_weights(2) == [0, gan_nft.WEIGHT_ONE]
    assert gan_nft.sweep_weights(5) == [0, 2500, 5000, 7500, 10_000]
