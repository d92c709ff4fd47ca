"""The code in the docs runs as written: the Solidity quickstart's foundry.toml and consumer build with
scripts/forge in a fresh folder and the contract receives a real verified answer; its cast command deploys
it on anvil; the SDK snippets of docs/sdk.md and docs/models.md run as scripts from a folder outside the
repository and print what they got.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from support.env import ROOT
from support.models import mnist
from web3.logs import DISCARD

from mlkit import models, native
from mlkit.format import model_id
from mlkit.io import decode_payload, encode_payload
from rollml.core.chain import Chain
from rollml.core.deploy import Deployment, MarketParams, deploy
from rollml.core.devnet import Anvil
from rollml.core.execution import execute
from rollml.core.sdk import RequestStatus
from rollml.core.split import split_execute
from rollml.world import World

QUICKSTART = ROOT / "docs" / "solidity-quickstart.md"


def blocks(doc: Path, lang: str) -> list[str]:
    """The fenced code blocks of `doc` in language `lang`, in order."""
    return re.findall(rf"^```{lang}\n(.*?)^```", doc.read_text(), flags=re.S | re.M)


def quickstart_project(tmp_path: Path) -> Path:
    """myapp/ of the quickstart: its foundry.toml, its consumer, lib/rollml -> this checkout; built."""
    (toml,) = blocks(QUICKSTART, "toml")
    (source,) = blocks(QUICKSTART, "solidity")
    app = tmp_path / "myapp"
    (app / "src").mkdir(parents=True)
    (app / "lib").mkdir()
    (app / "lib" / "rollml").symlink_to(ROOT)
    (app / "foundry.toml").write_text(toml)
    (app / "src" / "DigitConsumer.sol").write_text(source)
    (build,) = [b for b in blocks(QUICKSTART, "sh") if "forge build" in b]
    cmd = build.strip().replace("lib/rollml/scripts/forge", str(app / "lib/rollml/scripts/forge"))
    done = subprocess.run(["bash", "-c", cmd], cwd=app, capture_output=True, text=True)
    assert done.returncode == 0, f"{cmd}\n{done.stdout}\n{done.stderr}"
    return app


@pytest.mark.requires("forge", "guest")
def test_the_solidity_quickstart_builds_and_its_consumer_gets_the_verified_digit(tmp_path: Path) -> None:
    app = quickstart_project(tmp_path)
    art = json.loads((app / "out" / "DigitConsumer.sol" / "DigitConsumer.json").read_text())
    model, payload = mnist()
    world = World.create(Chain.embedded(), tmp_path / "world", {"mnist-mlp": model})
    chain, market = world.chain, world.contracts.market
    factory = chain.w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"]["object"])
    receipt = chain.transact(world.accounts[0], factory.constructor(market.address, model_id(model)))
    consumer = chain.w3.eth.contract(address=receipt["contractAddress"], abi=art["abi"])
    fee = chain.call(consumer.functions.fee(len(payload)))
    receipt = chain.transact(world.accounts[6], consumer.functions.classify(payload), value=fee)
    (asked,) = consumer.events.Asked().process_receipt(receipt, errors=DISCARD)
    rid = int(asked["args"]["requestId"])
    node, challenger = world.node(1, "node"), world.challenger(3, "challenger")
    world.play([node, challenger], lambda: world.request_status(rid) == RequestStatus.FINALIZED)
    logits = native.run(model, payload)
    expected = int(np.argmax(decode_payload(logits)[0]))
    assert chain.call(consumer.functions.answered(rid)) is True
    assert chain.call(consumer.functions.digitOf(rid)) == expected
    assert not world.events("CallbackFailed")
    assert chain.call(consumer.functions.argmax(logits)) == expected


@pytest.mark.requires("forge", "anvil", "guest")
def test_the_quickstart_cast_command_deploys_the_consumer(anvil: Anvil, tmp_path: Path) -> None:
    app = quickstart_project(tmp_path)
    chain = Chain.connect(anvil.url)
    me = chain.dev_accounts()[9]
    model, _ = mnist()
    dep = deploy(chain, me, model_id(model), gan_model=model)
    keyfile = tmp_path / "dev.key"
    keyfile.write_text("0x" + bytes(me.key).hex() + "\n")
    (cast,) = [b for b in blocks(QUICKSTART, "sh") if "cast send" in b]
    settings = f"RPC={anvil.url} KEYFILE={keyfile} MARKET={dep.market} MODEL_ID=0x{model_id(model).hex()}"
    script = cast.replace(cast.splitlines()[0], settings).replace(
        "lib/rollml/scripts/cast", str(app / "lib/rollml/scripts/cast")
    )
    done = subprocess.run(["bash", "-c", script], cwd=app, capture_output=True, text=True)
    assert done.returncode == 0, f"{script}\n{done.stdout}\n{done.stderr}"
    (address,) = re.findall(r"^contractAddress\s+(0x[0-9a-fA-F]{40})", done.stdout, flags=re.M)
    art = json.loads((app / "out" / "DigitConsumer.sol" / "DigitConsumer.json").read_text())
    consumer = chain.w3.eth.contract(address=chain.w3.to_checksum_address(address), abi=art["abi"])
    assert chain.call(consumer.functions.market()) == dep.market
    assert bytes(chain.call(consumer.functions.modelId())) == model_id(model)


# --------------------------------------------------------------------------------------------------------
# Python snippets, run as scripts from a folder outside the repository
# --------------------------------------------------------------------------------------------------------


def script_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: this checkout importable (as `pip install -e` makes it)."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{path}" if path else str(ROOT), **extra}


def start_script(code: str, folder: Path, **env: str) -> subprocess.Popen[str]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "snippet.py").write_text(code)
    return subprocess.Popen(
        [sys.executable, "snippet.py"],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=script_env(**env),
    )


def finish(proc: subprocess.Popen[str], timeout: float = 300) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{err}"
    return out


SDK = ROOT / "docs" / "sdk.md"


@pytest.mark.requires("anvil", "guest")
def test_the_sdk_devnet_snippet_runs_from_any_folder(anvil: Anvil, tmp_path: Path) -> None:
    """The request snippet of docs/sdk.md against a devnet-like deployment on anvil, served by a prover node
    ticking here (its clock moved past the challenge window while it waits)."""
    (snippet,) = [b for b in blocks(SDK, "python") if "ROLLML_DEPLOYMENT" in b]
    model, _ = mnist()
    world = World.create(Chain.connect(anvil.url), tmp_path / "world", {"mnist-mlp": model})
    dep_file = world.deployment.save(tmp_path / "devnet" / "devnet.json")
    dep_file.with_suffix(".key").write_text("0x" + bytes(world.accounts[7].key).hex() + "\n")
    proc = start_script(
        snippet, tmp_path / "elsewhere", ROLLML_RPC=anvil.url, ROLLML_DEPLOYMENT=str(dep_file)
    )
    node = world.node(1, "node")
    deadline = time.monotonic() + 240
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if node.tick().txs == 0 and not node.busy():
                world.chain.advance_time(world.idle_advance)
            time.sleep(0.3)
    finally:
        node.close()
        if proc.poll() is None:
            proc.kill()
    out = finish(proc)
    digit, label = re.search(r"digit (\d) \(label (\d)\)", out).groups()  # type: ignore[union-attr]
    given = encode_payload([models.load_digits_28().x_test[:1]])  # the snippet's input
    executions = split_execute(model, given)[0].executions  # the node posts split claims by default
    assert re.search(r"request \d+: open, fee \d+ wei", out), out
    assert f"finalized, {executions} node executions proven" in out, out
    (request,) = world.events("ResultFinalized")
    assert digit == label and f"proven by {world.accounts[1].address}" in out
    assert request["prover"] == world.accounts[1].address


@pytest.mark.requires("guest")
def test_the_sdk_round_trip_snippet_runs_from_any_folder(tmp_path: Path) -> None:
    (snippet,) = [b for b in blocks(SDK, "python") if "A whole round trip" in b or "Chain.embedded()" in b]
    out = finish(start_script(snippet, tmp_path / "elsewhere"))
    steps = execute(*mnist()).steps
    assert re.search(r"^requested \d+ open$", out, flags=re.M) and f"finalized after {steps} steps" in out, (
        out
    )


MODELS = ROOT / "docs" / "models.md"


def test_the_own_torch_model_snippet_and_commands_run(tmp_path: Path) -> None:
    (snippet,) = blocks(MODELS, "python")
    folder = tmp_path / "elsewhere"
    out = finish(start_script(snippet, folder))
    assert re.search(r"model id 0x[0-9a-f]{64}", out)
    error = float(re.search(r"max \|mlkit - torch\| = (\S+)", out).group(1))  # type: ignore[union-attr]
    assert error < 1e-4, out
    written = (folder / "my_model.mlkit").read_bytes()
    (folder / "my_net.py").write_text(snippet)  # the file the text names; its `model()` is the factory
    (commands,) = blocks(MODELS, "sh")
    assert commands.startswith("rollml model export --module my_net.py -o my_model.mlkit")
    for line in commands.splitlines():
        command = line.split("#")[0].strip()
        if not command or "register" in command:
            continue  # registering needs a chain: tests/core/test_sdk.py runs `rollml model register`
        argv = [sys.executable, "-m", *command.split()]
        done = subprocess.run(argv, cwd=folder, capture_output=True, text=True, env=script_env())
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
        shown = done.stdout + done.stderr
        assert ("steps: " in shown) if "--vm" in command else ("0x" in shown), shown
    # the command exported what the library call did, and wrote its card
    assert (folder / "my_model.mlkit").read_bytes() == written
    assert json.loads((folder / "my_model.card.json").read_text())["notes"] == "exported from my_net.py:model"


REAL = ROOT / "docs" / "real-network.md"


@pytest.mark.requires("anvil", "guest")
def test_the_real_network_deploy_script_checks_the_rules_and_deploys(anvil: Anvil, tmp_path: Path) -> None:
    (snippet,) = blocks(REAL, "python")
    keyfile = tmp_path / "deployer.key"
    keyfile.write_text("0x" + bytes(Chain.connect(anvil.url).dev_accounts()[8].key).hex() + "\n")
    folder = tmp_path / "elsewhere"
    out = finish(start_script(snippet, folder, ROLLML_RPC=anvil.url, ROLLML_KEY=str(keyfile)))
    assert re.search(r"deployed on chain 31337 at block \d+: market 0x", out), out
    assert "longest game 21 h" in out
    dep = Deployment.load(folder / "deployment.json")
    assert dep.params.max_steps == 10**11 and dep.move_timeout == 3_600
    chain = Chain.connect(anvil.url)
    assert MarketParams.read(chain, dep.contracts(chain).market) == dep.params
    # the rules bite: a window too short for maxSteps stops the script before it sends anything
    broken = snippet.replace("challenge_window=3_600", "challenge_window=2_000")
    proc = start_script(broken, tmp_path / "broken", ROLLML_RPC=anvil.url, ROLLML_KEY=str(keyfile))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "maxSteps: security.md A1" in err
