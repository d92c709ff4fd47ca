"""`make e2e-large`'s harness (rollml/harness/e2e.py) on the small models: the daemons on split claims, their
default, end to end on anvil. A dishonest `rollml node --dishonest FAULT` posts a wrong split claim, the
`rollml challenger` daemon wins the two-level game, the honest `rollml node` daemon re-serves the request and
finalizes mlkit's native output. GPT-2 124M and DCGAN-128 run the same code by `make e2e-large` (minutes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rollml.harness import e2e

pytestmark = [pytest.mark.requires("guest", "anvil"), pytest.mark.slow]


@pytest.mark.parametrize(("name", "fault"), [("mnist-mlp", "output"), ("gpt2-tiny", "tensor")])
def test_a_dishonest_node_daemon_loses_a_split_game_and_the_request_is_re_served(
    tmp_path: Path, name: str, fault: str
) -> None:
    result = e2e.run(name, fault, tmp_path, log=print, timeout=300)  # a stuck phase fails, not CI
    assert result.honest_won, result
    assert result.served_correctly, result
    # the game went through both levels: the top over node executions, `open`, the bottom VM game
    assert result.top_rounds >= 1 and result.bottom_rounds >= 1 and result.bottom_steps > 0, result
    assert set(result.peak_rss_mib) == {"liar", "node", "challenger"}


def test_a_text_request_is_eight_prompt_tokens_and_sixteen_new() -> None:
    from mlkit.io import decode_payload

    ids, new_tokens = decode_payload(e2e.example_payload("gpt2-tiny"))
    assert ids.shape == (e2e.PROMPT_TOKENS,) == (8,) and int(new_tokens) == e2e.NEW_TOKENS == 16


def test_an_unknown_fault_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown fault 'register'"):
        e2e.run("mnist-mlp", "register", tmp_path)
