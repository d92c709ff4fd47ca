"""The command line as an operator and a dApp developer use it on anvil (issue 15): requests checked before
paying and their id printed at once, `cancel`, `withdraw`, `status` with dates and discarded results,
`deploy` with every market parameter and the safe-parameter rules, settings from env and a TOML file,
`doctor`'s fix text, the key-file permission warning.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from support.models import tiny_input, tiny_model
from typer.testing import CliRunner

from mlkit.format import model_id
from rollml.cli import app
from rollml.core.chain import Chain
from rollml.core.deploy import DEV_PARAMS
from rollml.core.devnet import Anvil
from rollml.core.execution import Tamper, TamperKind
from rollml.core.sdk import RequestStatus
from rollml.world import World

pytestmark = pytest.mark.requires("anvil")
runner = CliRunner()
REQUEST_TIMEOUT = 900


@pytest.fixture
def setup(anvil: Anvil, tmp_path: Path) -> tuple[World, list[str], Path]:
    """A world on anvil with the tiny model; the common flags (rpc, key of dev account 6, deployment)."""
    params = replace(DEV_PARAMS, request_timeout=REQUEST_TIMEOUT)
    world = World.create(Chain.connect(anvil.url), tmp_path / "world", {"tiny": tiny_model()}, params=params)
    dep = tmp_path / "dep.json"
    world.deployment.save(dep)
    key = tmp_path / "user.key"
    key.write_text("0x" + bytes(world.accounts[6].key).hex() + "\n")
    key.chmod(0o600)
    return world, ["--rpc", anvil.url, "--key", str(key), "--deployment", str(dep)], tmp_path


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def npy(path: Path, array: np.ndarray) -> str:
    np.save(path, array)
    return str(path)


def request_count(world: World) -> int:
    return int(world.chain.call(world.contracts.market.functions.requestCount()))


def test_a_request_by_id_is_checked_against_the_registry_before_anything_is_paid(
    setup: tuple[World, list[str], Path],
) -> None:
    world, common, tmp = setup
    mid = "0x" + model_id(tiny_model()).hex()
    before = request_count(world)
    code, _, err = run("request", mid, "--input", npy(tmp / "w.npy", np.zeros((2, 2), np.float32)), *common)
    assert code == 1 and "takes an input of shape [1, 4]" in err and "float32[2, 2]" in err, err
    big = npy(tmp / "big.npy", np.zeros((1, 100_000), np.float32))  # 400 KB
    code, _, err = run("request", mid, "--input", big, *common)
    assert code == 1 and err.startswith("error: the input payload is 400") and "at most 16384" in err, err
    unknown = "0x" + "02" * 32
    code, _out, err = run(
        "request", unknown, "--input", npy(tmp / "x.npy", np.ones((1, 4), np.float32)), *common
    )
    assert code == 1 and "is not registered" in err
    assert request_count(world) == before, "nothing was requested, nothing paid"


def test_request_prints_its_id_at_once_then_waits_and_cancel_and_withdraw_refund_the_fee(
    setup: tuple[World, list[str], Path],
) -> None:
    world, common, tmp = setup
    x = npy(tmp / "x.npy", np.array([[1, -2, 3, -4]], np.float32))
    code, out, err = run(
        "request", "0x" + model_id(tiny_model()).hex(), "--input", x, *common, "--wait", "--timeout", "1"
    )
    assert code == 1 and "is still open after 1 s" in err
    rid = request_count(world)
    assert out.startswith(f"requested inference {rid} (fee "), "the id comes before the wait"
    code, out, err = run("cancel", str(rid), *common)
    assert code == 1 and "can be cancelled from 20" in err and "UTC" in err, err
    world.chain.advance_time(REQUEST_TIMEOUT + 1)
    code, out, err = run("cancel", str(rid), *common, "--json")
    assert code == 0, err
    cancelled = json.loads(out)
    assert cancelled["status"] == "cancelled" and cancelled["balance_wei"] >= cancelled["refund_wei"] > 0
    code, out, err = run("withdraw", *common, "--json")
    assert code == 0 and json.loads(out)["withdrawn_wei"] == cancelled["balance_wei"]
    code, out, err = run("withdraw", *common)
    assert code == 0 and "nothing to withdraw" in out
    assert world.request_status(rid) == RequestStatus.CANCELLED


def test_status_marks_the_discarded_result_and_shows_dates(setup: tuple[World, list[str], Path]) -> None:
    world, common, _tmp = setup
    liar = world.node(1, "liar", tamper=Tamper(TamperKind.OUTPUT))
    challenger = world.challenger(3, "challenger")
    rid = world.request(tiny_model(), tiny_input())
    world.play([liar, challenger], lambda: bool(world.events("ChallengeResolved")))
    node = world.node(2, "node")
    world.play([node, challenger], lambda: world.request_status(rid) == RequestStatus.PROPOSED)
    rpc_and_dep = [common[0], common[1], common[4], common[5]]
    code, out, err = run("status", str(rid), *rpc_and_dep)
    assert code == 0, err
    lines = out.splitlines()
    (discarded,) = [line for line in lines if "DISCARDED" in line]
    assert liar.address in discarded and "UTC" in discarded
    (current,) = [line for line in lines if " current " in line]
    assert node.address in current and "node executions (split claim)" in current  # the node's default
    (created,) = [line for line in lines if line.strip().startswith("created_at")]
    assert created.strip().endswith("UTC")
    code, out, _ = run("status", str(rid), *rpc_and_dep, "--json")
    results = json.loads(out)["results"]
    assert [r["discarded"] for r in results] == [True, False]
    assert [r["split"] for r in results] == [True, True] and json.loads(out)["split"] is True
    for agent in (liar, challenger, node):
        agent.close()


def test_deploy_exposes_every_parameter_and_refuses_unsafe_ones(setup: tuple[World, list[str], Path]) -> None:
    world, common, tmp = setup
    model_file = tmp / "tiny.mlkit"
    model_file.write_bytes(tiny_model())
    flags = [common[0], common[1], common[2], common[3], "--gan-model", str(model_file)]
    code, out, err = run("deploy", *flags, "--challenge-window", "100", "--max-steps", str(2**40))
    assert code == 1 and "security.md A1" in err and "--allow-unsafe" in err, err
    code, out, err = run("deploy", *flags, "--prover-bond", "10", "--gas-price", "1000000000")
    assert code == 1 and "security.md A4" in err, err
    custom = {
        "--base-fee": 7,
        "--fee-per-input-byte": 3,
        "--callback-gas-price": 2,
        "--prover-bond": 5 * 10**18,
        "--challenger-bond": 4 * 10**18,
        "--burn-bps": 2500,
        "--challenge-window": 1200,
        "--request-timeout": 7200,
        "--move-timeout": 240,
    }
    args = [str(v) for pair in custom.items() for v in pair]
    code, out, err = run("deploy", *flags, *args, "--out", str(tmp / "d.json"), "--json")
    assert code == 0, err
    params = json.loads(out)["params"]
    assert params["prover_bond_burn_bps"] == 2500 and params["move_timeout"] == 240
    assert params["max_steps"] == 110_000_000 * (1200 - 60), "the safe maximum for the window"
    from rollml.core.deploy import Deployment, MarketParams

    on_chain = MarketParams.read(world.chain, Deployment.load(tmp / "d.json").contracts(world.chain).market)
    assert (on_chain.base_fee, on_chain.challenger_bond, on_chain.request_timeout) == (7, 4 * 10**18, 7200)
    code, out, err = run(
        "deploy", *flags, "--challenge-window", "100", "--max-steps", str(2**40), "--allow-unsafe"
    )
    assert code == 0 and "warning: maxSteps" in err


def test_agents_take_settings_from_a_config_file_and_the_environment_with_flags_winning(
    setup: tuple[World, list[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    world, common, tmp = setup
    models = tmp / "models"
    models.mkdir()
    (models / "tiny.mlkit").write_bytes(tiny_model())
    config = tmp / "conf" / "rollml.toml"
    config.parent.mkdir()
    config.write_text(
        f'rpc = "http://127.0.0.1:1"\ndeployment = "{common[5]}"\nkey = "../user.key"\n'
        f'[node]\nmodels = "../models"\ndb = "node.db"\n'
    )
    world.request(tiny_model(), tiny_input())
    monkeypatch.setenv("ROLLML_RPC", common[1])
    code, out, err = run("node", "--once", "--config", str(config), "--workers", "0")
    assert code == 0 and json.loads(out)["moves"] == ["post"], "the environment wins over the file"
    assert (config.parent / "node.db").exists(), "paths in the file are relative to it"
    monkeypatch.setenv("ROLLML_RPC", "http://127.0.0.1:1")
    code, out, err = run("node", "--once", "--config", str(config), "--workers", "0", "--rpc", common[1])
    assert code == 0 and json.loads(out)["errors"] == 0, "the flag wins over the environment"
    config.write_text('rpc = "x"\nrcp = "typo"\n')
    code, out, err = run("node", "--once", "--config", str(config))
    assert code == 1 and "unknown key 'rcp'" in err
    monkeypatch.delenv("ROLLML_RPC")
    code, out, err = run("challenger", "--once", "--key", common[3])
    assert code == 1 and "no --rpc: pass --rpc, set $ROLLML_RPC" in err


def test_a_key_file_readable_by_others_gets_a_warning(setup: tuple[World, list[str], Path]) -> None:
    _world, common, _tmp = setup
    key = Path(common[3])
    code, _, err = run("withdraw", *common)
    assert code == 0 and "readable by others" not in err
    key.chmod(0o644)
    code, _out, err = run("withdraw", *common)
    assert code == 0 and f"warning: key file {key} is readable by others (mode 0644): chmod 600 {key}" in err


def test_doctor_shows_the_pip_fix_with_its_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import rollml.cli.doctor as doctor

    real = doctor.run_checks
    monkeypatch.setattr(
        doctor,
        "run_checks",
        lambda: [*real(), doctor._python_package("rollml-no-such-dist", "pip install -e '.[dev]'")],
    )
    monkeypatch.setenv("COLUMNS", "250")
    code, out, _ = run("doctor")
    assert code == 1
    (line,) = [line for line in out.splitlines() if "rollml-no-such-dist" in line]
    assert "pip install -e '.[dev]'" in line, line


def test_fault_injection_is_documented_in_the_help() -> None:
    for command in ("node", "challenger"):
        result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
        assert "--dishonest" in result.stdout and "FAULT INJECTION" in result.stdout


def test_the_devnet_key_file_is_the_owners_only(tmp_path: Path) -> None:
    from rollml.cli.chain import _deploy_devnet  # the part of `rollml devnet` after anvil started

    with Anvil(block_time=1) as node:
        report = _deploy_devnet(node.url, tmp_path / "devnet.json", no_models=True, quiet=True)
    assert os.stat(report["key"]).st_mode & 0o077 == 0


def test_status_shows_why_a_prover_cannot_serve_a_request(setup: tuple[World, list[str], Path]) -> None:
    from rollml.core.sdk import Client

    world, common, _ = setup
    node = world.node(1, "node")
    client = Client(world.chain, world.deployment, world.accounts[5])
    wrong_dtype = np.zeros((1, 4), np.int32)  # the registry keeps shapes only: the SDK cannot tell
    rid = client.request(model_id(tiny_model()), [wrong_dtype]).request_id
    node.tick()
    code, out, err = run("status", str(rid), common[0], common[1], common[4], common[5])
    assert code == 0, err
    (line,) = [line for line in out.splitlines() if "UNSERVABLE" in line]
    assert node.address in line and "rejects" in line
    node.close()
