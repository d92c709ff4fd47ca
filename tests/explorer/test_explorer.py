"""The explorer in a real browser (Debian's chromium, headless, driven by selenium) against a real world on
the embedded chain: a request served honestly after a dishonest node's wrong result lost its dispute, a GanNFT
mint (a small generator), and a short training run with a wrong update caught. The page must show the request
rows with the discarded result marked, the game's rounds drawn, the NFT as a picture, the training run's loss
curve, and a new request without a reload. Screenshots are written to $ROLLML_SCREENSHOTS (default: the
test's tmp directory) and checked for content.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from support.models import mnist, tiny_generator
from support.training import PlayedRun, play_training_run
from web3.logs import DISCARD

from mlkit.format import model_id
from mlkit.io import decode_payload
from rollml.core.chain import Chain
from rollml.core.dispute import rounds_needed
from rollml.core.execution import Tamper, TamperKind
from rollml.core.http import HttpServer
from rollml.core.sdk import RequestStatus
from rollml.core.training import TrainingClient
from rollml.explorer.app import ExplorerSite, create_app, mount, serve_in_thread
from rollml.explorer.index import ChainIndex, output_png
from rollml.world import World

pytestmark = pytest.mark.requires("guest")

GAN_SEED = 20_26
MINTER = 5


@dataclass
class Story:
    world: World
    request: int  # the MNIST request: a wrong result discarded by a game, then the honest one finalized
    token: int  # the GanNFT token minted
    run: PlayedRun  # a training run of 2 updates: the first posted wrong and discarded, the model registered


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Story:
    """One world for the module's tests, the story played once (the tests only add to it)."""
    model, _ = mnist()
    world = World.create(
        Chain.embedded(), tmp_path_factory.mktemp("world"), {"mnist-mlp": model}, gan_model=tiny_generator()
    )
    rid, token = play_story(world)
    return Story(world, rid, token, play_training_run(world, tmp_path_factory.mktemp("training")))


def play_story(world: World) -> tuple[int, int]:
    """A dishonest node answers an MNIST request first and loses its dispute; the honest node serves it; a
    GanNFT mint is served and minted. Returns (the MNIST request, the NFT's token id)."""
    model, payload = mnist()
    node, challenger = world.node(1, "node"), world.challenger(3, "challenger")
    liar = world.node(2, "liar", tamper=Tamper(TamperKind.OUTPUT))
    rid = world.request(model, payload)
    liar.tick()  # the dishonest node is the first to post
    nft = world.contracts.gan_nft
    fee = world.chain.call(nft.functions.mintFee())
    receipt = world.chain.transact(world.accounts[MINTER], nft.functions.mintRequest(GAN_SEED), value=fee)
    (minted,) = nft.events.MintRequested().process_receipt(receipt, errors=DISCARD)
    token = int(minted["args"]["requestId"])

    def done() -> bool:
        return all(world.request_status(r) == RequestStatus.FINALIZED for r in (rid, token))

    world.play([node, challenger, liar], done, max_ticks=200)
    for agent in (node, challenger, liar):
        agent.close()
    return rid, token


def test_the_read_model_tells_the_story(story: Story) -> None:
    world, rid, token = story.world, story.request, story.token
    index = ChainIndex(world.chain, world.deployment)
    assert index.refresh() > 0 and index.refresh() == 0  # the second refresh finds nothing new
    state = json.loads(json.dumps(index.snapshot()))  # JSON-ready
    by_id = {r["request_id"]: r for r in state["requests"]}
    wrong, right = by_id[rid]["results"]
    assert (wrong["state"], right["state"]) == ("discarded", "finalized")
    assert wrong["prover"] == world.accounts[2].address and right["prover"] == world.accounts[1].address
    assert wrong["output"]["argmax"] != right["output"]["argmax"]
    (game,) = state["games"]
    assert wrong["discarded_by_game"] == game["game_id"] and game["status"] == "challenger_won"
    # the node's split claim: rounds over its node executions, `open`, rounds over that execution's VM steps
    arity, timeout = world.deployment.arity, world.deployment.move_timeout
    assert game["split"] and game["open"] is not None
    top = [r for r in game["rounds"] if r["level"] == "top"]
    bottom = [r for r in game["rounds"] if r["level"] == "bottom"]
    assert game["rounds"] == top + bottom and top and bottom
    assert len(top) <= rounds_needed(game["steps"], arity)
    assert len(bottom) <= rounds_needed(game["open"]["bottom_steps"], arity)
    assert top[-1]["picked"]["hi"] == game["open"]["exec"] == top[-1]["picked"]["lo"] + 1
    assert (bottom[0]["lo"], bottom[0]["hi"]) == (0, game["open"]["bottom_steps"])
    assert bottom[0]["dissect_due"] == game["open"]["at"] + timeout
    for level in (top, bottom):
        for before, after in pairwise(level):
            assert (after["lo"], after["hi"]) == (before["picked"]["lo"], before["picked"]["hi"])
            assert after["dissect_due"] == before["picked_at"] + timeout
    assert game["step"]["lo"] + 1 == game["hi"] and game["end"]["proposer_won"] is False
    assert {p["address"]: p["discarded"] for p in state["provers"]}[world.accounts[2].address] == 1
    assert state["challengers"][0]["won"] == 1
    (nft,) = state["nfts"]
    assert nft["token_id"] == token and nft["minted"] and nft["seed"] == str(GAN_SEED)
    image = decode_payload(index.nft_output(token) or b"")[0]
    assert image.shape == (1, 3, 16, 16)
    png = output_png(index.nft_output(token) or b"")
    assert png is not None and png.startswith(b"\x89PNG")
    assert output_png(index.result_output(wrong["result_id"]) or b"") is None  # logits are no image

    (run,) = state["training"]
    played = story.run
    assert run["run_id"] == played.run_id and run["creator"] == world.accounts[5].address
    assert run["architecture"] == "0x" + played.plan.architecture.hex()
    assert (run["updates"], run["accepted"], run["discarded"]) == (2, 2, 1)
    workers = {w["address"]: w for w in run["workers"]}
    assert workers[played.liar]["discarded"] == 1 and workers[played.honest]["accepted"] >= 1
    (bad,) = [u for u in run["updates_posted"] if u["state"] == "discarded"]
    assert (bad["index"], bad["worker"]) == (0, played.liar)
    (tgame,) = run["games"]
    assert tgame["update_id"] == bad["update_id"] and tgame["index"] == 0
    assert bad["discarded_by_game"] == tgame["game_id"] and tgame["status"] == "challenger_won"
    assert tgame["proposer_won"] is False
    assert tgame["game_id"] not in {g["game_id"] for g in state["games"]}  # the market's games only there
    # the loss curve: one point per accepted update, in order, the losses the contract accepted
    assert [p["index"] for p in run["loss_curve"]] == [0, 1]
    client = TrainingClient(world.chain, world.deployment, world.accounts[5])
    assert [p["loss"] for p in run["loss_curve"]] == client.losses(played.run_id)
    assert run["registered"] and run["final_model_id"] == "0x" + model_id(played.final_model).hex()


def test_a_deployment_without_a_training_contract_still_reads(story: Story) -> None:
    """A deployment file from before training runs (no `training` address): everything but training."""
    world = story.world
    old = dataclasses.replace(world.deployment, training="")
    index = ChainIndex(world.chain, old)
    assert index.contracts.training is None
    index.refresh()
    state = index.snapshot()
    assert state["training"] == []
    assert {story.request, story.token} <= {r["request_id"] for r in state["requests"]}


def test_the_site_answers_paths_without_a_web_framework(story: Story) -> None:
    """What an agent's HTTP server mounts: `ExplorerSite.get(path)` (the FastAPI app only wraps it)."""
    world, rid, token = story.world, story.request, story.token
    site = ExplorerSite(world.chain, world.deployment, min_interval=0)
    page = site.get("")
    assert page.status == 200 and page.content_type.startswith("text/html") and b"static/app.js" in page.body
    state = json.loads(site.get("/api/state").body)
    assert {rid, token} <= {r["request_id"] for r in state["requests"]}
    png = site.get(f"/api/nft/{token}.png")
    assert png.status == 200 and png.content_type == "image/png" and png.body.startswith(b"\x89PNG")
    assert site.get(f"/api/nft/{rid}.png").status == 404  # an MNIST request mints nothing
    assert site.get("/static/app.js").content_type.startswith("text/javascript")
    for bad in ("/static/../app.py", "/static/index.py", "/etc/passwd", "/api/nft/x.png"):
        assert site.get(bad).status == 404, bad


def test_an_agents_http_port_serves_the_explorer(story: Story) -> None:
    """`rollml node --http` mounts the site under /explorer/ next to /metrics (`explorer.app.mount`)."""
    world, rid = story.world, story.request
    server = HttpServer("127.0.0.1", 0).start()
    try:
        mount(server, world.chain, world.deployment)
        with urllib.request.urlopen(f"{server.url}/explorer") as redirected:  # followed to /explorer/
            assert redirected.url.endswith("/explorer/") and b"static/app.js" in redirected.read()
        with urllib.request.urlopen(f"{server.url}/explorer/api/state") as answer:
            assert rid in {r["request_id"] for r in json.loads(answer.read())["requests"]}
        with urllib.request.urlopen(f"{server.url}/explorer/static/app.js") as script:
            assert script.headers["Content-Type"].startswith("text/javascript")
    finally:
        server.stop()


# --------------------------------------------------------------------------------------------------------
# The browser
# --------------------------------------------------------------------------------------------------------


@pytest.fixture
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    try:
        yield driver
    finally:
        driver.quit()


def screenshots_dir(tmp_path: Path) -> Path:
    out = Path(os.environ.get("ROLLML_SCREENSHOTS") or tmp_path / "screenshots")
    out.mkdir(parents=True, exist_ok=True)
    return out


def shot(driver: Any, element: Any, path: Path) -> Path:
    """A screenshot of `element`, checked to be a picture with content (not a blank box)."""
    from PIL import Image

    driver.execute_script("arguments[0].scrollIntoView()", element)
    data = element.screenshot_as_png
    path.write_bytes(data)
    image = Image.open(io.BytesIO(data)).convert("RGB")
    colors = image.getcolors(maxcolors=1 << 16)
    assert image.width > 100 and image.height > 50 and (colors is None or len(colors) > 8), path
    return path


@pytest.mark.requires("chromium")
def test_the_page_shows_requests_games_and_the_nft_and_updates_live(
    story: Story, browser: Any, tmp_path: Path
) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    world, rid, token = story.world, story.request, story.token
    out = screenshots_dir(tmp_path)
    # a section is redrawn when its data changes: an element found just before may be gone when read
    wait = WebDriverWait(
        browser, 20, poll_frequency=0.2, ignored_exceptions=(StaleElementReferenceException,)
    )
    from fastapi import FastAPI

    host = FastAPI()  # as an agent's HTTP server would mount it: every URL of the page is relative
    host.mount("/explorer", create_app(world.chain, world.deployment, min_interval=0.2))
    with serve_in_thread(host) as base:
        url = f"{base}/explorer"
        with urllib.request.urlopen(f"{url}/api/state") as response:
            assert json.load(response)["chain"]["chain_id"] == world.deployment.chain_id
        browser.get(f"{url}/?poll=300")
        rows = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "tr.request-row"))
        assert {rid, token} <= {int(r.get_attribute("data-request-id")) for r in rows}

        row = browser.find_element(By.CSS_SELECTOR, f'tr.request-row[data-request-id="{rid}"]')
        assert "finalized" in row.find_element(By.CSS_SELECTOR, ".badge").text
        discarded = row.find_elements(By.CSS_SELECTOR, ".result.discarded")
        assert len(discarded) == 1 and "discarded" in discarded[0].text
        kept = row.find_elements(By.CSS_SELECTOR, ".result:not(.discarded)")
        assert len(kept) == 1 and "finalized" in kept[0].text
        assert " UTC" in row.find_element(By.CSS_SELECTOR, "time").text  # times are dates
        shot(browser, browser.find_element(By.ID, "requests"), out / "explorer-requests.png")

        game = browser.find_element(By.CSS_SELECTOR, ".game")
        rounds = game.find_elements(By.CSS_SELECTOR, "svg.game-svg rect.round")
        # a split game: its top rounds, the `open` of one execution, its bottom rounds, the leaf step
        marks = [r.get_attribute("data-round") for r in rounds]
        levels = [r.get_attribute("data-level") for r in rounds if r.get_attribute("data-level")]
        assert marks[-1] == "leaf" and marks.count("open") == 1 and len(rounds) >= 4, marks
        assert levels == sorted(levels, reverse=True) and set(levels) == {"top", "bottom"}, levels
        assert len(game.find_elements(By.CSS_SELECTOR, "svg rect.pick")) == len(rounds) - 2
        assert "node executions claimed" in game.text and "opened: the node guest runs it" in game.text
        assert "challenger won at the one-step proof" in game.text
        assert "due" in game.find_element(By.CSS_SELECTOR, "svg").text  # deadlines drawn per round
        shot(browser, game, out / "explorer-game.png")

        img = browser.find_element(By.CSS_SELECTOR, f'.nft[data-token-id="{token}"] img.nft-image')
        wait.until(
            lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img)
        )
        assert browser.execute_script("return arguments[0].naturalWidth", img) == 128  # 16 px x 8
        shot(browser, browser.find_element(By.ID, "nfts"), out / "explorer-nfts.png")
        assert len(browser.find_elements(By.CSS_SELECTOR, "tr.prover-row")) == 2
        assert len(browser.find_elements(By.CSS_SELECTOR, "tr.challenger-row")) == 1
        # mnist-mlp, the generator, the training graph and the trained model
        assert len(browser.find_elements(By.CSS_SELECTOR, "tr.model-row")) == 4

        run = browser.find_element(By.CSS_SELECTOR, f'.run[data-run-id="{story.run.run_id}"]')
        curve = run.find_element(By.CSS_SELECTOR, "svg.loss-svg")
        assert len(curve.find_elements(By.CSS_SELECTOR, "circle.point")) == 2  # one per accepted update
        assert len(curve.find_elements(By.CSS_SELECTOR, "polyline.loss")) == 1
        assert len(curve.find_elements(By.CSS_SELECTOR, ".discarded-mark")) == 1
        assert "registered" in run.text and "game" in run.text
        shot(browser, run, out / "explorer-training.png")

        # live: a new request shows up, then its result, without a reload
        browser.execute_script("window.notReloaded = true")
        new = world.request(*mnist())
        selector = f'tr.request-row[data-request-id="{new}"]'
        wait.until(lambda d: "no result yet" in d.find_element(By.CSS_SELECTOR, selector).text)
        assert "open" in browser.find_element(By.CSS_SELECTOR, selector).text
        node = world.node(1, "node")
        world.play([node], lambda: world.request_status(new) == RequestStatus.PROPOSED)
        node.close()
        wait.until(lambda d: "proposed" in d.find_element(By.CSS_SELECTOR, selector).text)
        assert browser.execute_script("return window.notReloaded") is True
        browser.execute_script("window.scrollTo(0, 0)")
        shot(browser, browser.find_element(By.TAG_NAME, "body"), out / "explorer-page.png")
        assert not browser.find_element(By.ID, "error").is_displayed()
