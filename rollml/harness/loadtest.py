"""Load: N MNIST requests queued at once against ONE `rollml node` daemon on anvil, every one finalized.

Starts anvil (or uses `--rpc`), deploys every contract with a short challenge window, registers the MNIST
MLP, starts the real daemons as subprocesses (`rollml node`, and the honest `rollml challenger` that
re-executes every result), then sends N `requestInference` transactions for random test digits in a row and
waits until every request is Finalized. Checked for every request: finalized, posted exactly once, by the
node, with the native runtime's output for that digit (none lost, none wrong). Printed:

- throughput: requests per minute from the first request to the last finalization (and to the last post);
- latency percentiles (p50, p90, p99, max) of request -> posted and request -> finalized, wall clock, as
  seen by polling the chain every `POLL` seconds;
- gas: every transaction of the run by sender (node, challenger, requester) and in total;
- peak memory: VmHWM of the node daemon (and of its largest worker process), from /proc.

Time: anvil mines only when a transaction arrives, so a quiet chain's clock would stand still and no window
would ever close; the driver mines an empty block every `--block-time` seconds, like a live chain. The
challenge window is real chain time (`--window`, 10 s by default), so request -> finalized includes it.

The load test as a library: `bench/load.py` prints its figures, tests/agents/test_load.py holds its
guarantees, and tests/agents/test_crash_recovery.py reuses the daemon helpers.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount

from mlkit.models import reference_model
from rollml.core.chain import Chain
from rollml.core.deploy import DEV_MOVE_TIMEOUT, DEV_PARAMS, Contracts, Deployment, MarketParams
from rollml.core.paths import REPO_ROOT
from rollml.world import REQUESTER, World

POLL = 0.25  # seconds between the driver's looks at the chain
NODE, CHALLENGER = 1, 3  # dev account indices (0 deploys, REQUESTER requests)
STOP_TIMEOUT = 10.0  # seconds a daemon gets to exit after SIGTERM


# --------------------------------------------------------------------------------------------------------
# Daemons as subprocesses (shared with tests/agents/test_crash_recovery.py)
# --------------------------------------------------------------------------------------------------------
@dataclass
class Daemon:
    """One `rollml node|challenger` process. It runs in its own session (process group), so the worker
    processes it spawned can be ended with it even after the daemon itself was killed with SIGKILL."""

    role: str
    args: list[str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> Daemon:
        """Start (or restart, after `kill`) the daemon; its stderr goes to `log` (appended)."""
        if self.alive():
            raise RuntimeError(f"{self.role} daemon is already running (pid {self.pid})")
        self.reap()  # the workers a killed predecessor left behind
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "rollml", self.role, *self.args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
                cwd=REPO_ROOT,
            )
        self.starts += 1
        return self

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError(f"{self.role} daemon was never started")
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """kill -9 the daemon process itself (a crash: no cleanup, no flush; its workers are orphaned)."""
        if self.alive():
            assert self.process is not None
            self.process.kill()
            self.process.wait()

    def stop(self) -> int | None:
        """SIGTERM (the daemon finishes its pass and exits), SIGKILL after STOP_TIMEOUT; then end whatever
        is left of its process group. Returns the exit code (None if it was not running)."""
        code = None
        if self.alive():
            assert self.process is not None
            self.process.terminate()
            try:
                code = self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                code = self.process.wait()
        self.reap()
        return code

    def reap(self) -> None:
        """End the processes left in the daemon's process group (orphaned workers), by its group id."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)

    @contextlib.contextmanager
    def running(self) -> Iterator[Daemon]:
        """The daemon started for the `with` block, stopped (with its workers) after it."""
        self.start()
        try:
            yield self
        finally:
            self.stop()

    def peak_rss_kib(self) -> dict[str, int]:
        """VmHWM (peak resident set, KiB) of the daemon and of its largest child (a worker), while alive."""
        own = vm_hwm_kib(self.pid)
        children = [vm_hwm_kib(c) for c in child_pids(self.pid)]
        return {"daemon": own, "worker": max(children, default=0)}

    def started(self) -> bool:
        """The daemon logged its `started` event (`--log-json`) since its last start."""
        return self.log_text().count('"event": "started"') >= self.starts

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def vm_hwm_kib(pid: int) -> int:
    """The VmHWM line of /proc/PID/status in KiB (0 when the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def child_pids(pid: int) -> list[int]:
    """The direct children of a process (from /proc/PID/task/*/children)."""
    out: list[int] = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            out.extend(int(c) for c in children.read_text().split())
        except (OSError, ValueError):
            continue
    return out


@dataclass
class Setup:
    """A world on a chain at `url` (`rollml.world.World`) and the files the daemons need: the deployment file
    and the models directory."""

    url: str
    world: World
    model: bytes
    deployment_file: Path
    models_dir: Path

    @property
    def chain(self) -> Chain:
        return self.world.chain

    @property
    def deployment(self) -> Deployment:
        return self.world.deployment

    @property
    def contracts(self) -> Contracts:
        return self.world.contracts

    @property
    def accounts(self) -> list[LocalAccount]:
        return self.world.accounts

    @property
    def workdir(self) -> Path:
        return self.world.workdir

    def key_file(self, index: int) -> Path:
        """A file with dev account `index`'s 0x-hex private key (what `--key` takes)."""
        path = self.workdir / f"account{index}.key"
        path.write_text("0x" + bytes(self.accounts[index].key).hex() + "\n")
        return path

    def daemon(
        self, role: str, index: int, name: str, workers: int, interval: float, extra: Sequence[str] = ()
    ) -> Daemon:
        """The daemon of account `index` with the SQLite file `<name>.db` (not started yet)."""
        args = ["--rpc", self.url, "--key", str(self.key_file(index))]
        args += ["--deployment", str(self.deployment_file), "--models", str(self.models_dir)]
        args += ["--db", str(self.workdir / f"{name}.db"), "--workers", str(workers)]
        args += ["--interval", str(interval), "--log-json", *extra]
        return Daemon(role, args, self.workdir / f"{name}.log")

    def request(self, payload: bytes, sender: int = REQUESTER) -> int:
        """`requestInference` of the model on `payload` with the estimated fee; the request id."""
        return self.world.request(self.model, payload, sender)

    def events(self, event: str, **filters: Any) -> list[dict[str, Any]]:
        return self.world.events(event, **filters)


def make_setup(
    url: str,
    workdir: Path,
    params: MarketParams,
    move_timeout: int = DEV_MOVE_TIMEOUT,
    models: Sequence[str] = ("mnist-mlp",),
) -> Setup:
    """Deploy with `params`, register the reference `models` (the first doubles as the GanNFT's pinned model)
    and write the deployment file and the models directory the daemons read."""
    files = {name: reference_model(name) for name in models}
    world = World.create(Chain.connect(url), workdir, files, params=params, move_timeout=move_timeout)
    models_dir = workdir / "models"
    models_dir.mkdir(exist_ok=True)
    for name, data in files.items():
        (models_dir / f"{name}.mlkit").write_bytes(data)
    model = files[models[0]]
    dep_file = world.deployment.save(workdir / "deployment.json")
    return Setup(url, world, model, dep_file, models_dir)


def wait_for(
    what: str, done: Callable[[], bool], timeout: float, every: Callable[[], None] | None = None
) -> float:
    """Poll `done()` every POLL seconds (calling `every()` before each look) until true; the seconds it
    took. TimeoutError names `what` after `timeout` seconds."""
    t0 = time.monotonic()
    while True:
        if every is not None:
            every()
        if done():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"{what}: not done after {timeout:.0f} s")
        time.sleep(POLL)


class BlockClock:
    """Mines an empty block every `period` seconds when called (`tick()`): a live chain's clock."""

    def __init__(self, chain: Chain, period: float) -> None:
        self.chain, self.period = chain, period
        self.last = time.monotonic()

    def tick(self) -> None:
        if time.monotonic() - self.last >= self.period:
            self.chain.mine()
            self.last = time.monotonic()


# --------------------------------------------------------------------------------------------------------
# The load run
# --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LoadConfig:
    """One load run: how many requests, and how the daemons and the chain are set up."""

    requests: int = 200
    workers: int = 2  # the node's VM worker processes
    interval: float = 0.2  # seconds between the daemons' passes
    window: int = 10  # challenge window, seconds of chain time
    challenger: bool = True  # also run the honest challenger daemon (it verifies every result)
    block_time: float = 1.0  # seconds between the empty blocks the driver mines
    seed: int = 7  # which test digits
    timeout: float = 900.0  # seconds for every request to finalize


@dataclass
class Tracker:
    """When (wall clock) each request was sent, first seen posted and first seen finalized."""

    chain: Chain
    contracts: Contracts
    next_block: int
    sent: dict[int, float] = field(default_factory=dict)
    posted: dict[int, float] = field(default_factory=dict)
    finalized: dict[int, float] = field(default_factory=dict)

    def poll(self) -> None:
        head = self.chain.block_number()
        if head < self.next_block:
            return
        now = time.monotonic()
        for name, seen in (("ResultPosted", self.posted), ("ResultFinalized", self.finalized)):
            for ev in self.chain.events(self.contracts.market, name, self.next_block, head):
                seen.setdefault(int(ev["args"]["requestId"]), now)
        self.next_block = head + 1

    def all_finalized(self) -> bool:
        return len(self.finalized) >= len(self.sent)


@dataclass
class LoadResult:
    """The outcome and the figures of a load run (what `--json` prints)."""

    requests: int
    finalized: int
    correct: int
    lost: list[int]
    seconds: float  # first request sent -> last finalization seen
    send_seconds: float  # sending the N requests
    per_minute: float  # finalized requests per minute
    posted_per_minute: float
    posted_latency: dict[str, float]
    finalized_latency: dict[str, float]
    gas: dict[str, int]
    txs: dict[str, int]
    peak_rss_kib: dict[str, int]  # the node daemon's VmHWM and its largest child's (a VM worker)
    config: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.finalized == self.correct == self.requests and not self.lost


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50, p90, p99 (nearest rank) and max, rounded to 10 ms; zeros for no values."""
    ordered = sorted(values)
    if not ordered:
        return dict.fromkeys(("p50", "p90", "p99", "max"), 0.0)

    def rank(q: int) -> float:
        return ordered[max(0, -(-len(ordered) * q // 100) - 1)]

    return {
        "p50": round(rank(50), 2),
        "p90": round(rank(90), 2),
        "p99": round(rank(99), 2),
        "max": round(ordered[-1], 2),
    }


def digit_payloads(n: int, seed: int) -> list[bytes]:
    """N mlkit input payloads of random test digits (28x28, scikit-learn's digits), seeded."""
    from mlkit.io import encode_payload
    from mlkit.models import load_digits_28

    x = load_digits_28().x_test
    rng = random.Random(seed)
    return [encode_payload([x[i : i + 1]]) for i in (rng.randrange(len(x)) for _ in range(n))]


def gas_by_sender(
    chain: Chain, first_block: int, names: dict[str, str]
) -> tuple[dict[str, int], dict[str, int]]:
    """(gas, transaction count) of every transaction since `first_block`, by sender name ("other" for
    senders not in `names`, which maps lower-case addresses to names), with a "total"."""
    gas: dict[str, int] = {"total": 0}
    txs: dict[str, int] = {"total": 0}
    for number in range(first_block, chain.block_number() + 1):
        for receipt in chain.w3.eth.get_block_receipts(number):
            who = names.get(str(receipt["from"]).lower(), "other")
            for bucket in (who, "total"):
                gas[bucket] = gas.get(bucket, 0) + int(receipt["gasUsed"])
                txs[bucket] = txs.get(bucket, 0) + 1
    return gas, txs


def check_outputs(setup: Setup, payloads: dict[int, bytes]) -> tuple[int, int, list[int]]:
    """(finalized, correct, lost): every request must be Finalized, posted once, by the node, with the
    native output of its digit."""
    from mlkit import native

    node = setup.accounts[NODE].address
    posts: dict[int, list[dict[str, Any]]] = {}
    for ev in setup.events("ResultPosted"):
        posts.setdefault(int(ev["requestId"]), []).append(ev)
    finalized = correct = 0
    lost: list[int] = []
    for rid, payload in payloads.items():
        req = setup.chain.call(setup.contracts.market.functions.getRequest(rid))
        if int(req[2]) != 3:  # RequestStatus.Finalized
            lost.append(rid)
            continue
        finalized += 1
        mine = posts.get(rid, [])
        if (
            len(mine) == 1
            and mine[0]["prover"] == node
            and bytes(mine[0]["output"]) == native.run(setup.model, payload)
        ):
            correct += 1
    return finalized, correct, lost


def load_params(window: int) -> MarketParams:
    """The dev parameters with a `window` s challenge window."""
    return MarketParams(**{**asdict(DEV_PARAMS), "challenge_window": window})


def agent_daemons(setup: Setup, config: LoadConfig) -> list[Daemon]:
    """The node daemon (first) and, if configured, the honest challenger daemon (one worker)."""
    daemons = [setup.daemon("node", NODE, "node", config.workers, config.interval)]
    if config.challenger:
        daemons.append(setup.daemon("challenger", CHALLENGER, "challenger", 1, config.interval))
    return daemons


def send_requests(setup: Setup, payloads: Sequence[bytes], tracker: Tracker) -> dict[int, bytes]:
    """Send one request per payload, in a row; request id -> payload (send times go to `tracker`)."""
    by_id: dict[int, bytes] = {}
    for payload in payloads:
        rid = setup.request(payload)
        tracker.sent[rid] = time.monotonic()
        by_id[rid] = payload
    return by_id


def watch(daemons: Sequence[Daemon], clock: BlockClock, tracker: Tracker) -> Callable[[], None]:
    """What the driver does between looks: keep the chain's clock going, record progress, and fail fast
    (with the log's tail) when a daemon died."""

    def every() -> None:
        clock.tick()
        tracker.poll()
        for d in daemons:
            if not d.alive():
                raise RuntimeError(f"the {d.role} daemon exited:\n{d.log_text()[-3000:]}")

    return every


def run_load(url: str, workdir: Path, config: LoadConfig, log: Callable[[str], None] = print) -> LoadResult:
    """The whole run (see the module docstring) against the chain at `url`; files go to `workdir`."""
    setup = make_setup(url, workdir, load_params(config.window))
    payloads = digit_payloads(config.requests, config.seed)
    daemons = agent_daemons(setup, config)
    first_block = setup.chain.block_number() + 1
    tracker = Tracker(setup.chain, setup.contracts, first_block)
    try:
        for d in daemons:
            d.start()
        wait_for("the daemons start", lambda: all(d.started() for d in daemons), 60)
        log(f"daemons up; sending {config.requests} requests")
        t0 = time.monotonic()
        by_id = send_requests(setup, payloads, tracker)
        send_seconds = time.monotonic() - t0
        log(f"sent in {send_seconds:.1f} s; waiting for every request to finalize")
        every = watch(daemons, BlockClock(setup.chain, config.block_time), tracker)
        wait_for("every request finalizes", tracker.all_finalized, config.timeout, every)
        rss = daemons[0].peak_rss_kib()  # before stopping: /proc forgets the process
    finally:
        for d in daemons:
            d.stop()
    return summarize(setup, config, tracker, by_id, first_block, t0, send_seconds, rss)


def summarize(
    setup: Setup,
    config: LoadConfig,
    tracker: Tracker,
    by_id: dict[int, bytes],
    first_block: int,
    t0: float,
    send_seconds: float,
    rss: dict[str, int],
) -> LoadResult:
    """Check every request on-chain and compute the figures of a finished run."""
    finalized, correct, lost = check_outputs(setup, by_id)
    names = {
        setup.accounts[NODE].address.lower(): "node",
        setup.accounts[CHALLENGER].address.lower(): "challenger",
        setup.accounts[REQUESTER].address.lower(): "requester",
    }
    gas, txs = gas_by_sender(setup.chain, first_block, names)
    seconds = max(tracker.finalized.values()) - t0
    posted_span = max(tracker.posted.values()) - t0
    return LoadResult(
        requests=config.requests,
        finalized=finalized,
        correct=correct,
        lost=lost,
        seconds=round(seconds, 2),
        send_seconds=round(send_seconds, 2),
        per_minute=round(60 * finalized / seconds, 1),
        posted_per_minute=round(60 * len(tracker.posted) / posted_span, 1),
        posted_latency=percentiles([tracker.posted[r] - tracker.sent[r] for r in tracker.posted]),
        finalized_latency=percentiles([tracker.finalized[r] - tracker.sent[r] for r in tracker.finalized]),
        gas=gas,
        txs=txs,
        peak_rss_kib=rss,
        config=asdict(config),
    )
