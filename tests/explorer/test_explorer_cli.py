"""`rollml explorer` as a user runs it: a process serving a deployment on anvil, and one-line errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from support.models import mnist
from typer.testing import CliRunner

from mlkit.format import model_id
from rollml.cli import app
from rollml.core.chain import Chain
from rollml.core.deploy import deploy
from rollml.core.devnet import Anvil, free_port
from rollml.world import ZERO_ADDRESS

pytestmark = pytest.mark.requires("guest")


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_rollml_explorer_serves_a_deployment_on_anvil(anvil: Anvil, tmp_path: Path) -> None:
    chain = Chain.connect(anvil.url)
    me = chain.dev_accounts()[8]
    model, payload = mnist()
    dep = deploy(chain, me, model_id(model), gan_model=model)
    dep_file = dep.save(tmp_path / "dep.json")
    market = dep.contracts(chain).market
    fee = chain.call(market.functions.estimateFee(model_id(model), len(payload), 0))
    chain.transact(
        me, market.functions.requestInference(model_id(model), payload, ZERO_ADDRESS, 0), value=fee
    )

    port = free_port()
    cmd = [sys.executable, "-m", "rollml", "explorer", "--rpc", anvil.url, "--deployment", str(dep_file)]
    proc = subprocess.Popen(
        [*cmd, "--port", str(port)], stderr=subprocess.PIPE, text=True, env=os.environ.copy()
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                status, body = get(f"{base}/api/state")
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "the explorer did not start"
                time.sleep(0.2)
        assert status == 200
        state = json.loads(body)
        assert state["chain"]["chain_id"] == 31337 and state["deployment"]["market"] == dep.market
        (request,) = state["requests"]
        assert request["status"] == "open" and request["requester"] == me.address
        assert state["models"][request["model_id"]]["name"] == "dcgan32"  # the model the GanNFT pins
        status, page = get(f"{base}/")
        assert status == 200 and b'src="static/app.js"' in page and b"http" not in page.split(b"<body>")[1]
        assert get(f"{base}/static/app.js")[0] == 200
        status, body = get(f"{base}/api/nft/99.png")
        assert status == 404 and b"no image for token 99" in body
        taken = CliRunner().invoke(app, [*cmd[3:], "--port", str(port)])
        assert (
            taken.exit_code == 1
            and taken.output == f"error: port {port} on 127.0.0.1 is taken: pass another --port\n"
        )
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)


def test_rollml_explorer_errors_are_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = tmp_path / "none.json"
    rpc = f"http://127.0.0.1:{free_port()}"
    bad = runner.invoke(app, ["explorer", "--rpc", rpc, "--deployment", str(missing)])
    assert bad.exit_code == 1 and bad.output.startswith(f"error: cannot read deployment file {missing}")
    missing.write_text("{}")
    bad = runner.invoke(app, ["explorer", "--rpc", rpc, "--deployment", str(missing)])
    assert (
        bad.exit_code == 1 and "not a rollml deployment file" in bad.output and "Traceback" not in bad.output
    )
