"""The dApp SDK and the chain commands of the CLI on real chains.

SDK (embedded chain): a request for mnist-mlp whose result is posted by hand with the real output, final
state hash and step count of the VM run, finalized after the challenge window; `wait()` and `output()` must
give the native output. CLI (anvil): `deploy`, `model register`, `request`, `status --json`, `devnet`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support.env import ROOT
from typer.testing import CliRunner

from mipsvm.hashing import keccak256
from mlkit.format import ModelBuilder, model_id
from mlkit.io import decode_payload, encode_payload
from rollml.cli import app
from rollml.core.chain import Chain, ChainError
from rollml.core.deploy import DEV_PARAMS, Deployment, deploy, register_model
from rollml.core.devnet import Anvil, free_port, port_in_use
from rollml.core.sdk import Client, RequestCancelled, RequestTimeout

GAN_ID = b"\x02" + b"\x47" * 31
runner = CliRunner()


# --------------------------------------------------------------------------------------------------------
# A real VM run of mnist-mlp (the prover's side, done by hand)
# --------------------------------------------------------------------------------------------------------


class VmRun:
    def __init__(self, model: bytes, example: np.ndarray) -> None:
        from mipsvm.elf import load_elf
        from mipsvm.fast import FastVM
        from mipsvm.preimage import LocalData, PreimageOracle, PreimageStore, put_blob
        from mlkit.build import GUEST_ELF
        from mlkit.guest import run_native

        self.model, self.example = model, example
        self.payload = encode_payload([example])
        self.native = run_native(model, self.payload).output
        store = PreimageStore()
        local = LocalData(
            {1: put_blob(store, model), 2: put_blob(store, self.payload), 3: keccak256(self.native)}
        )
        with FastVM(load_elf(GUEST_ELF), PreimageOracle(store, local)) as vm:
            final = vm.run()
            assert final.exited and final.exit_code == 0
            self.output, self.steps, self.state_hash = bytes(vm.output), final.step, vm.state_hash()
        assert self.output == self.native and self.state_hash[0] == 0  # VALID


@pytest.fixture(scope="module")
def mnist() -> VmRun:
    from mlkit import models

    exp = models.export_reference("mnist-mlp")
    return VmRun(exp.model, exp.example)


@pytest.fixture(scope="module")
def market(mnist: VmRun) -> tuple[Chain, Deployment, bytes]:
    chain = Chain.embedded()
    dep = deploy(chain, chain.dev_accounts()[0], GAN_ID)
    return chain, dep, register_model(chain, dep, chain.dev_accounts()[0], mnist.model, "mnist-mlp")


def post_result(chain: Chain, dep: Deployment, run: VmRun, request_id: int) -> None:
    prover = chain.dev_accounts()[2]
    call = dep.contracts(chain).market.functions.postVMResult(
        request_id, run.output, run.state_hash, run.steps
    )
    chain.transact(prover, call, value=DEV_PARAMS.prover_bond)


# --------------------------------------------------------------------------------------------------------
# SDK
# --------------------------------------------------------------------------------------------------------


def test_request_wait_and_output_give_the_native_output(
    market: tuple[Chain, Deployment, bytes], mnist: VmRun
) -> None:
    chain, dep, mid = market
    client = Client(chain, dep, chain.dev_accounts()[1])
    handle = client.request(mid, [mnist.example])
    opened = handle.status()
    assert (opened.status, opened.model_id, opened.result_id) == ("open", mid, 0)
    assert opened.fee == client.fee(mid, len(mnist.payload))
    post_result(chain, dep, mnist, handle.request_id)
    proposed = handle.status()
    assert proposed.status == "proposed" and proposed.steps == mnist.steps
    assert proposed.output_hash == keccak256(mnist.native) and proposed.final_state_hash == mnist.state_hash
    assert proposed.challenge_window_end == proposed.posted_at + DEV_PARAMS.challenge_window
    with pytest.raises(RequestTimeout, match=r"still proposed after 0\.1 s, challenge window ends at"):
        handle.wait(timeout=0.1, poll=0.05)
    with pytest.raises(ChainError, match=r"^InferenceMarket\.ChallengeWindowOpen\("):
        client.finalize(handle.request_id)
    with pytest.raises(ChainError, match="is proposed, not finalized"):
        handle.output()
    chain.advance_time(DEV_PARAMS.challenge_window)
    market_contract = dep.contracts(chain).market
    chain.transact(
        chain.dev_accounts()[2], market_contract.functions.finalize(handle.request_id, mnist.output)
    )
    done = handle.wait(timeout=5, poll=0.05)
    assert done.status == "finalized" and done.prover == chain.dev_accounts()[2].address
    assert done.finalized_at is not None and done.finalized_at >= done.challenge_window_end
    (logits,) = handle.output()
    (native,) = decode_payload(mnist.native)
    np.testing.assert_array_equal(logits, native)
    assert client.output_bytes(handle.request_id) == mnist.native
    json.dumps(done.to_json_dict())  # JSON-ready


def test_wait_can_finalize_by_itself(market: tuple[Chain, Deployment, bytes], mnist: VmRun) -> None:
    chain, dep, mid = market
    client = Client(chain, dep, chain.dev_accounts()[3])
    handle = client.request(mid, mnist.payload)  # payload bytes work as well as arrays
    post_result(chain, dep, mnist, handle.request_id)
    chain.advance_time(DEV_PARAMS.challenge_window)
    assert handle.wait(timeout=5, poll=0.05, finalize=True).status == "finalized"
    assert handle.output_bytes() == mnist.native


def test_a_cancelled_request_fails_wait_clearly(market: tuple[Chain, Deployment, bytes]) -> None:
    chain, dep, mid = market
    client = Client(chain, dep, chain.dev_accounts()[4])
    handle = client.request(mid, np.zeros((1, 1, 28, 28), np.float32))
    with pytest.raises(ChainError, match=r"^InferenceMarket\.RequestNotExpired\("):
        client.cancel(handle.request_id)
    chain.advance_time(DEV_PARAMS.request_timeout)
    client.cancel(handle.request_id)
    with pytest.raises(RequestCancelled, match="was cancelled"):
        handle.wait(timeout=1)
    assert client.status(handle.request_id).status == "cancelled"
    with pytest.raises(ChainError, match="no request 999"):
        client.status(999)
    with pytest.raises(ChainError, match="has no account"):
        Client(chain, dep).request(mid, b"x")


# --------------------------------------------------------------------------------------------------------
# CLI against anvil
# --------------------------------------------------------------------------------------------------------


def tiny_model_file(path: Path) -> bytes:
    b = ModelBuilder()
    b.output(b.relu(b.input((1, 4))))
    data = b.to_bytes()
    path.write_bytes(data)
    return data


def invoke(*args: str) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_cli_deploy_register_request_status(anvil: Anvil, tmp_path: Path) -> None:
    key = tmp_path / "dev.key"
    key.write_text("0x" + bytes(Chain.connect(anvil.url).dev_accounts()[6].key).hex() + "\n")
    tiny = tmp_path / "tiny.mlkit"
    mid = "0x" + model_id(tiny_model_file(tmp_path / "tiny.mlkit")).hex()
    dep_file = tmp_path / "dep.json"
    rpc = ("--rpc", anvil.url)
    deployed = invoke("deploy", *rpc, "--key", str(key), "--out", str(dep_file), "--gan-model", str(tiny))
    assert deployed["gan_model_id"] == mid and Deployment.load(dep_file).market == deployed["market"]
    common = (*rpc, "--key", str(key), "--deployment", str(dep_file))
    registered = invoke("model", "register", str(tiny), *common, "--uri", "file://tiny")
    assert registered == {**registered, "model_id": mid, "already_registered": True, "input_shape": [1, 4]}
    x = tmp_path / "x.npy"
    np.save(x, np.array([[1, -2, 3, -4]], np.float32))
    requested = invoke("request", str(tiny), "--input", str(x), *common)
    assert requested["status"] == "open" and requested["model_id"] == mid
    by_id = invoke("request", mid, "--input", str(x), *common)
    assert by_id["request_id"] == requested["request_id"] + 1
    status = invoke("status", str(requested["request_id"]), *rpc, "--deployment", str(dep_file))
    assert status["status"] == "open" and status["fee"] == requested["fee_wei"] and status["games"] == []

    bad = runner.invoke(app, ["request", str(tiny), "--input", str(tmp_path / "no.npy"), *common])
    assert (
        bad.exit_code == 1
        and bad.output.startswith("error: cannot read input")
        and "Traceback" not in bad.output
    )
    wrong_shape = tmp_path / "w.npy"
    np.save(wrong_shape, np.zeros((2, 2), np.float32))
    bad = runner.invoke(app, ["request", str(tiny), "--input", str(wrong_shape), *common])
    assert bad.exit_code == 1 and "input 0: the model expects float32[1, 4]" in bad.output
    bad = runner.invoke(app, ["status", "12345", *rpc, "--deployment", str(dep_file)])
    assert (
        bad.exit_code == 1
        and bad.output.strip() == f"error: no request 12345 in the market at {deployed['market']}"
    )
    bad = runner.invoke(app, ["status", "1", "--rpc", "embedded", "--deployment", str(dep_file)])
    assert bad.exit_code == 1 and "must be an http(s) URL" in bad.output
    bad = runner.invoke(
        app, ["status", "1", "--rpc", f"http://127.0.0.1:{free_port()}", "--deployment", str(key)]
    )
    assert bad.exit_code == 1 and "not a rollml deployment file" in bad.output
    key.write_text("not a key")
    bad = runner.invoke(app, ["deploy", *rpc, "--key", str(key), "--gan-model", str(tiny)])
    assert bad.exit_code == 1 and "expected a 0x-prefixed 32-byte hex private key" in bad.output


def test_cli_accepts_a_keystore(anvil: Anvil, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from eth_account import Account

    account = Chain.connect(anvil.url).dev_accounts()[7]
    keystore = tmp_path / "key.json"
    keystore.write_text(json.dumps(Account.encrypt(account.key, "pw", iterations=2)))
    monkeypatch.setenv("ROLLML_TEST_PW", "pw")
    tiny = tmp_path / "tiny.mlkit"
    tiny_model_file(tiny)
    args = ["deploy", "--rpc", anvil.url, "--key", str(keystore), "--gan-model", str(tiny)]
    out = invoke(*args, "--out", str(tmp_path / "d.json"), "--password-env", "ROLLML_TEST_PW")
    assert out["chain_id"] == 31337
    bad = runner.invoke(app, args)
    assert bad.exit_code == 1 and "pass --password-env" in bad.output


@pytest.mark.requires("anvil")
def test_cli_devnet_deploys_and_stops_anvil_on_interrupt(tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "devnet.json"
    cmd = [
        sys.executable,
        "-m",
        "rollml",
        "devnet",
        "--port",
        str(port),
        "--out",
        str(out),
        "--no-models",
        "--json",
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy()
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        report = json.loads(line)
        assert report["market"] == Deployment.load(out).market and report["rpc"] == f"http://127.0.0.1:{port}"
        chain = Chain.connect(report["rpc"])
        assert chain.code_at(report["market"])
        assert Path(report["key"]).read_text().strip() == "0x" + bytes(chain.dev_accounts()[0].key).hex()
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert not port_in_use(port)


def test_the_round_trip_snippet_of_docs_sdk_runs(mnist: VmRun, capsys: pytest.CaptureFixture[str]) -> None:
    text = (ROOT / "docs" / "sdk.md").read_text()
    section = text[text.index("### A whole round trip without a node") :]
    code = section[section.index("```python\n") + 10 : section.index("\n```", section.index("```python"))]
    exec(compile(code, "docs/sdk.md", "exec"), {})
    digit = int(np.argmax(decode_payload(mnist.native)[0]))
    assert capsys.readouterr().out.splitlines()[-1].endswith(f"steps: digit {digit}")
