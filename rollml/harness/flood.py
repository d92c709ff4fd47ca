"""Floods of dispute games against one honest agent: the attacker's side (docs/security.md, "Floods").

The attacker pays for its games (a bond each) but computes nothing: it answers every move at once with
garbage and never executes a leaf step, which is the cheapest way to make the honest side work:

- `Attacker.challenge(request, result, n)`: n challenges of a (correct) result from n fresh accounts: the
  node defends every game, picks land anywhere (a random sub-interval each round);
- `Attacker.post_wrong(request, output, steps)`: a result with the right output and a forged final state
  from one of its accounts: every verification and every game needs a VM run of the honest challenger
  (a wrong output would be caught natively in microseconds);
- `Attacker.play()`: one move in every game of its own that is due (random hashes for a dissection, a
  random index for a pick; never a step, never a timeout claim).

`RealClock` ties a dev chain's clock to the wall clock, so that a defender too slow for a move timeout
really misses it. `play_flood` plays a flood against one agent (in-process, or a daemon) and `report` gives
the defender's cost (CPU seconds, peak memory, wall time) next to the attacker's (bonds locked) and the
outcome of every game. `serve_requests`, `challenge_every_result` and `post_wrong_results` set up the two
floods: games against a node's correct results, and wrong results against a challenger.
"""

from __future__ import annotations

import os
import random
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from mipsvm.hashing import keccak256
from mlkit import models
from mlkit.guest import run_native
from rollml.agent.base import Agent
from rollml.agent.reads import receipt_events
from rollml.core.chain import Chain, ChainError, Transfer
from rollml.core.dispute import GameStatus, Role, Turn, dissection_points
from rollml.core.sdk import RequestStatus, game_status
from rollml.harness.campaign import random_input
from rollml.harness.loadtest import child_pids, vm_hwm_kib
from rollml.world import World

FORGED_STEPS = 10**9  # the step count of the attacker's forged claims (past any reference model's exit)


@dataclass
class AttackGame:
    game_id: int
    account: LocalAccount
    role: Role  # the attacker's side in it


class Attacker:
    """Many funded accounts opening games and answering them with garbage (see the module docstring)."""

    def __init__(
        self, world: World, accounts: int, seed: int = 1, funder: int = 0, bonds_each: int = 4
    ) -> None:
        self.world, self.chain, self.contracts = world, world.chain, world.contracts
        self.rng = random.Random(seed)
        params = world.deployment.params
        self.accounts = [
            Account.from_key(keccak256(f"rollml flood {seed} {i}".encode())) for i in range(accounts)
        ]
        # each account can put up `bonds_each` bonds, and pay its gas
        stake = bonds_each * max(params.prover_bond, params.challenger_bond) + 10**18
        for account in self.accounts:
            if self.chain.balance(account.address) < stake:
                self.chain.transact(world.accounts[funder], Transfer(account.address), stake)
        self.games: dict[int, AttackGame] = {}
        self.bonds_locked = 0  # wei the attacker put at stake
        self.txs = 0
        self._next = 0
        self._posted: dict[int, tuple[bytes, ...]] = {}  # game id -> hashes of its last dissection
        self._over: set[int] = set()  # games that ended (kept in `games`: the report needs the sides)
        self._cursor = world.deployment.block  # the first block whose events were not read yet

    def _account(self) -> LocalAccount:
        account = self.accounts[self._next % len(self.accounts)]
        self._next += 1
        return account

    def challenge(self, request_id: int, result_id: int, n: int) -> list[int]:
        """n challenges of `result_id`, each from another account (at most one per account and result)."""
        if n > len(self.accounts):
            raise ValueError(f"{n} challenges need {n} accounts, the attacker has {len(self.accounts)}")
        bond = self.world.deployment.params.challenger_bond
        ids = []
        for account in self.accounts[:n]:
            call = self.contracts.market.functions.challenge(request_id, result_id)
            receipt = self.chain.transact(account, call, value=bond)
            (ev,) = receipt_events(self.contracts.market, "ResultChallenged", receipt)
            gid = int(ev["args"]["gameId"])
            self.games[gid] = AttackGame(gid, account, Role.CHALLENGER)
            self.bonds_locked += bond
            self.txs += 1
            ids.append(gid)
        return ids

    def post_wrong(self, request_id: int, output: bytes, steps: int) -> int:
        """A result with the right `output` and a forged VALID final state hash; its result id."""
        forged = b"\x00" + bytes(self.rng.randrange(256) for _ in range(31))
        bond = self.world.deployment.params.prover_bond
        call = self.contracts.market.functions.postVMResult(request_id, output, forged, steps)
        receipt = self.chain.transact(self._account(), call, value=bond)
        (ev,) = receipt_events(self.contracts.market, "ResultPosted", receipt)
        self.bonds_locked += bond
        self.txs += 1
        return int(ev["args"]["resultId"])

    def sync(self) -> None:
        """Read the events since the last look: games the honest challenger opened against the attacker's
        results become its own; dissections give the hashes a pick resubmits."""
        head = self.chain.block_number()
        if head < self._cursor:
            return
        mine = {a.address: a for a in self.accounts}
        for ev in self.chain.events(self.contracts.market, "ResultChallenged", self._cursor, head):
            gid = int(ev["args"]["gameId"])
            if gid not in self.games:
                proposer = str(self.chain.call(self.contracts.game.functions.getGame(gid))[6])
                if proposer in mine:
                    self.games[gid] = AttackGame(gid, mine[proposer], Role.PROPOSER)
        for ev in self.chain.events(self.contracts.game, "Dissected", self._cursor, head):
            self._posted[int(ev["args"]["gameId"])] = tuple(bytes(h) for h in ev["args"]["hashes"])
        self._cursor = head + 1

    def play(self) -> int:
        """One garbage move in every attacker game that is due and still in time; the moves sent."""
        self.sync()
        sent = 0
        now = self.chain.now()
        game = self.contracts.game.functions
        for gid, ag in self.games.items():
            if gid in self._over:
                continue
            g = self.chain.call(game.getGame(gid))
            lo, hi, deadline, status, turn = int(g[0]), int(g[1]), int(g[2]), int(g[3]), int(g[4])
            disputed = bytes(g[9])  # every move names the disputed hash it answers
            if status != GameStatus.ACTIVE:
                self._over.add(gid)
                continue
            if now > deadline:
                continue
            try:
                if turn == Turn.DISSECT and ag.role == Role.PROPOSER:
                    k = len(dissection_points(lo, hi, self.world.deployment.arity)) - 1
                    hashes = [bytes(self.rng.randrange(256) for _ in range(32)) for _ in range(k - 1)]
                    self.chain.transact(ag.account, game.dissect(gid, disputed, hashes))
                elif turn == Turn.PICK and ag.role == Role.CHALLENGER and gid in self._posted:
                    posted = self._posted[gid]
                    index = self.rng.randrange(len(posted) + 1)
                    self.chain.transact(ag.account, game.pick(gid, disputed, list(posted), index))
                else:
                    continue
            except ChainError:
                continue  # raced by a timeout claim or the end of the game: nothing to do
            sent += 1
        self.txs += sent
        return sent


class RealClock:
    """A dev chain's clock following the wall clock from now on (`sync()` before each round), so that a
    defender slower than a move timeout really misses its deadline. On anvil the chain already does."""

    def __init__(self, chain: Chain) -> None:
        self.chain = chain
        self.t0_wall, self.t0_chain = time.monotonic(), chain.now()

    def sync(self) -> None:
        if self.chain.tester is None:
            return
        behind = self.t0_chain + int(time.monotonic() - self.t0_wall) - self.chain.now()
        if behind > 0:
            self.chain.advance_time(behind)


@dataclass
class FloodReport:
    """How a flood went, from both sides."""

    games: int
    honest_won: int
    honest_lost: int
    seconds: float
    attacker_bonds_eth: float
    attacker_txs: int
    defender_cpu_s: float
    defender_peak_rss_mib: float
    capacity: dict[str, object] = field(default_factory=dict)

    @property
    def all_won(self) -> bool:
        return self.honest_won == self.games and self.honest_lost == 0


class Usage:
    """CPU seconds and peak memory of the defender: this process (an in-process agent, with its worker and
    trace processes) or a daemon's process tree, read from /proc."""

    def __init__(self, pid: int | None = None) -> None:
        self.pid = pid
        self.cpu0 = self.cpu()

    def cpu(self) -> float:
        if self.pid is None:
            own = resource.getrusage(resource.RUSAGE_SELF)
            kids = resource.getrusage(resource.RUSAGE_CHILDREN)
            return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
        return sum(_proc_cpu(p) for p in _tree(self.pid))

    def peak_rss_mib(self) -> float:
        if self.pid is None:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return sum(vm_hwm_kib(p) for p in _tree(self.pid)) / 1024


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(child_pids(p))
    return out


def _proc_cpu(pid: int) -> float:
    """utime + stime (+ waited-for children) of a process, in seconds (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    ticks = sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def play_flood(
    world: World,
    attacker: Attacker,
    defender: Agent | None,
    done: Callable[[], bool],
    timeout: float,
) -> float:
    """Tick the defender (an in-process agent; None for a daemon, which runs by itself) and the attacker on
    a real-time clock until `done()`; the wall seconds it took (TimeoutError after `timeout`)."""
    clock = RealClock(world.chain)
    t0 = time.monotonic()
    while not done():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"the flood was not over after {timeout:.0f} s")
        clock.sync()
        if defender is not None:
            defender.tick()
        else:
            time.sleep(0.2)
        attacker.play()
    return time.monotonic() - t0


def report(
    world: World,
    attacker: Attacker,
    games: Sequence[int],
    seconds: float,
    usage: Usage,
    capacity: dict[str, object] | None = None,
) -> FloodReport:
    """Who won each of `games` (the defender is the side the attacker is not on)."""
    won = lost = 0
    for gid in games:
        status = game_status(world.chain, world.contracts, gid)
        if status not in (GameStatus.PROPOSER_WON, GameStatus.CHALLENGER_WON):
            continue
        attacker_side = attacker.games.get(gid)
        defender_is_proposer = attacker_side is None or attacker_side.role == Role.CHALLENGER
        if (status == GameStatus.PROPOSER_WON) == defender_is_proposer:
            won += 1
        else:
            lost += 1
    return FloodReport(
        games=len(games),
        honest_won=won,
        honest_lost=lost,
        seconds=round(seconds, 1),
        attacker_bonds_eth=attacker.bonds_locked / 1e18,
        attacker_txs=attacker.txs,
        defender_cpu_s=round(usage.cpu() - usage.cpu0, 1),
        defender_peak_rss_mib=round(usage.peak_rss_mib(), 1),
        capacity=capacity or {},
    )


# --------------------------------------------------------------------------------------------------------
# The two floods
# --------------------------------------------------------------------------------------------------------
def serve_requests(world: World, node: Agent | None, names: Sequence[str], n: int, seed: int) -> list[int]:
    """n requests over the models `names` (random inputs), served and posted by the node (an agent, ticked
    here; or a daemon: None)."""
    rng = random.Random(seed)
    rids = []
    for i in range(n):
        name = names[i % len(names)]
        payload, _ = random_input(name, rng)
        rids.append(world.request(models.reference_model(name), payload))

    def posted() -> bool:
        return all(world.request_status(r) == RequestStatus.PROPOSED for r in rids)

    wait_until(world, node, posted, 600, "the node to post every result")
    return rids


def challenge_every_result(
    attacker: Attacker, world: World, rids: Sequence[int], per_result: int
) -> list[int]:
    """`per_result` attacker challenges of the current result of each request; the game ids."""
    games = []
    for rid in rids:
        result_id = int(world.chain.call(world.contracts.market.functions.getRequest(rid))[8])
        games.extend(attacker.challenge(rid, result_id, per_result))
    return games


def post_wrong_results(
    attacker: Attacker, world: World, names: Sequence[str], n: int, seed: int
) -> list[int]:
    """n requests over the models `names` (random inputs), each answered by the attacker with the right
    output and a forged final state (the honest challenger must run the VM to tell)."""
    rng = random.Random(seed)
    rids = []
    for i in range(n):
        name = names[i % len(names)]
        model = models.reference_model(name)
        payload, _ = random_input(name, rng)
        rid = world.request(model, payload)
        attacker.post_wrong(rid, run_native(model, payload).output, FORGED_STEPS)
        rids.append(rid)
    return rids


def wait_until(
    world: World, agent: Agent | None, done: Callable[[], bool], timeout: float, what: str
) -> None:
    """Tick `agent` (None: a daemon works by itself) until `done()`; TimeoutError naming `what`."""
    t0 = time.monotonic()
    while not done():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"timed out waiting for {what}")
        if agent is not None:
            agent.tick()
        else:
            time.sleep(0.2)


def games_over(world: World, games: Sequence[int]) -> bool:
    return all(game_status(world.chain, world.contracts, g) != GameStatus.ACTIVE for g in games)


def node_flood(
    world: World, node: Agent | None, requests: int, per_result: int, usage: Usage, timeout: float = 3600
) -> tuple[FloodReport, list[int]]:
    """`requests` requests over the world's models served by the node, each result challenged `per_result`
    times by the attacker; the report once every game is over, and the request ids."""
    rids = serve_requests(world, node, world.names, requests, seed=11)
    attacker = Attacker(world, per_result, seed=12, bonds_each=requests + 1)
    games = challenge_every_result(attacker, world, rids, per_result)
    seconds = play_flood(world, attacker, node, lambda: games_over(world, games), timeout)
    capacity = node.capacity.report() if node is not None else None
    return report(world, attacker, games, seconds, usage, capacity), rids


def challenger_flood(
    world: World, challenger: Agent | None, results: int, usage: Usage, timeout: float = 3600
) -> tuple[FloodReport, list[int]]:
    """`results` wrong results by the attacker over the world's models, against the challenger; the report
    once every one was discarded (or TimeoutError), and the request ids."""
    attacker = Attacker(world, 10, seed=21, bonds_each=results // 10 + 2)
    rids = post_wrong_results(attacker, world, world.names, results, seed=22)

    def discarded() -> bool:
        attacker.sync()
        return all(world.request_status(r) == RequestStatus.OPEN for r in rids)

    seconds = play_flood(world, attacker, challenger, discarded, timeout)
    games = [int(e["gameId"]) for e in world.events("ResultChallenged")]
    capacity = challenger.capacity.report() if challenger is not None else None
    return report(world, attacker, games, seconds, usage, capacity), rids
