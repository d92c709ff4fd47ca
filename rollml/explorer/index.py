"""The explorer's read model: one deployment's story told by its events, kept current by polling.

`ChainIndex.refresh()` reads the new logs of the market, the dispute game, the registry and the GanNFT since
the last block it saw (every log since the deployment block the first time; everything again when the head
went below what it had seen, i.e. the chain was reset), and `ChainIndex.snapshot()` turns them, with the
current `getRequest` / `getGame` state of each request and game, into one JSON-ready dict:

    chain        chain id, head block, its timestamp
    deployment   addresses and the market parameters
    models       registered models by id (name, shapes)
    requests     newest first: status, requester, model, fee, times, every result (prover, output summary,
                 steps, times; `discarded` for a result a dispute threw out) and the games on them
    games        each dispute: parties, status, the rounds (interval, dissection, pick, deadlines; a split
                 game's rounds marked `top` over node executions or `bottom` over VM steps, with its `open`:
                 the execution opened and the bottom game's steps), the leaf step and the resolution
    provers      per address: results posted, finalized, discarded, fees earned
    challengers  per address: games played, won, lost, cancelled
    nfts         GanNFT mints: token id, minter, seed, output hash, minted or pending
    training     training runs (TrainingRun; empty for a deployment without one), newest first: creator,
                 architecture model id, updates planned / accepted / discarded, the workers, every posted
                 update (index, worker, loss, accepted / discarded / pending), the loss curve (one point per
                 accepted update), the games on disputed updates, the final model registered (or None)

Times are unix seconds (block timestamps); the page shows them as dates. Outputs are kept as posted (the
`ResultPosted` event carries the bytes) and decoded on demand (`output_png`).
"""

from __future__ import annotations

import math
import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from web3.contract.contract import Contract

from rollml.core.chain import Chain
from rollml.core.deploy import Contracts, Deployment
from rollml.core.dispute import GameStatus, Turn
from rollml.core.sdk import RequestStatus
from rollml.core.training import loss_of

TRAINING_EVENTS = (
    "RunCreated",
    "UpdatePosted",
    "UpdateChallenged",
    "UpdateDiscarded",
    "UpdateAccepted",
    "ChallengeSettled",
    "RunRegistered",
    "RunClosed",
)
MAX_REQUESTS = 200  # the newest requests a snapshot shows (each costs a getRequest call)
MAX_SUMMARY_VALUES = 16  # output tensors up to this many values are shown in full
PNG_SIZE = 128  # pixels: small generator outputs are drawn with square blocks up to about this width


@dataclass(frozen=True)
class Log:
    """One event as the index keeps it."""

    name: str
    args: dict[str, Any]
    block: int
    index: int  # log index in the block
    tx: str

    @property
    def key(self) -> tuple[int, int]:
        return (self.block, self.index)


def _finite(value: float) -> float | None:
    """A float JSON can carry (NaN and infinities, e.g. a wrong update's loss, as None)."""
    return value if math.isfinite(value) else None


def _plain(value: Any) -> Any:
    """Event argument values as JSON-ready Python values (bytes as 0x hex)."""
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


class ChainIndex:
    """The events of one deployment and the reads that make them a picture (see the module docstring).

    Thread-safe: `refresh` and `snapshot` hold one lock, so one index can serve many HTTP requests.
    """

    def __init__(self, chain: Chain, deployment: Deployment, max_requests: int = MAX_REQUESTS) -> None:
        self.chain = chain
        self.deployment = deployment
        self.max_requests = max_requests
        self.contracts: Contracts = deployment.contracts(chain)
        self.watched: list[tuple[Contract, str]] = [
            (self.contracts.registry, "ModelRegistered"),
            *(
                (self.contracts.market, name)
                for name in (
                    "InferenceRequested",
                    "ResultPosted",
                    "ResultChallenged",
                    "ResultDiscarded",
                    "ResultFinalized",
                    "RequestCancelled",
                    "ChallengeResolved",
                    "CallbackFailed",
                )
            ),
            *(
                (self.contracts.game, name)
                for name in (
                    "GameCreated",
                    "Dissected",
                    "Picked",
                    "Opened",
                    "Stepped",
                    "GameResolved",
                    "GameCancelled",
                )
            ),
            (self.contracts.gan_nft, "MintRequested"),
            (self.contracts.gan_nft, "GanMinted"),
        ]
        if self.contracts.training is not None:  # None: a deployment from before training runs
            self.watched += [(self.contracts.training, name) for name in TRAINING_EVENTS]
        self.addresses = sorted({contract.address for contract, _ in self.watched})
        self.by_topic: dict[tuple[str, bytes], tuple[Contract, str]] = {
            (contract.address, bytes.fromhex(contract.events[name].topic.removeprefix("0x"))): (
                contract,
                name,
            )
            for contract, name in self.watched
        }
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self.logs: dict[str, list[Log]] = defaultdict(list)
        self.outputs: dict[int, bytes] = {}  # result id -> posted output bytes
        self.timestamps: dict[int, int] = {}
        self.next_block = self.deployment.block
        self.last_hash: bytes | None = None  # hash of block next_block - 1 as last seen
        self.resets = 0

    # ----- reading the chain ------------------------------------------------------------------------------

    def refresh(self) -> int:
        """Read the logs of the blocks since the last refresh (one eth_getLogs per 10,000 blocks for all the
        contracts); returns how many new logs came. A head below the last block seen, or that block's hash
        changed (a reset dev chain, a reorg), starts over."""
        with self._lock:
            head = self.chain.block_number()
            if self.next_block > self.deployment.block and (head < self.next_block - 1 or self._reorged()):
                resets = self.resets + 1
                self._reset()
                self.resets = resets
            if head < self.next_block:
                return 0
            new = 0
            for raw in self.chain.logs(self.addresses, self.next_block, head):
                topics = raw["topics"]
                found = self.by_topic.get((raw["address"], bytes(topics[0]))) if topics else None
                if found is None:
                    continue  # an event the explorer does not show
                contract, name = found
                ev = contract.events[name]().process_log(raw)
                args = dict(ev["args"])
                if name == "ResultPosted":
                    self.outputs[int(args["resultId"])] = bytes(args.pop("output"))
                elif name == "InferenceRequested":
                    args["inputLength"] = len(args.pop("input"))
                elif name in ("RunCreated", "UpdatePosted"):
                    args["stateLength"] = len(args.pop("state"))  # weights: not kept, the page shows none
                    args.pop("batchIds", None)
                tx = "0x" + bytes(ev["transactionHash"]).hex()
                self.logs[name].append(Log(name, args, int(ev["blockNumber"]), int(ev["logIndex"]), tx))
                new += 1
            self.next_block = head + 1
            self.last_hash = self.chain.block_hash(head)
            return new

    def _reorged(self) -> bool:
        if self.last_hash is None:
            return False
        return self.chain.block_hash(self.next_block - 1) != self.last_hash

    def _time(self, block: int) -> int:
        if block not in self.timestamps:
            self.timestamps[block] = self.chain.block_timestamp(block)
        return self.timestamps[block]

    # ----- the picture ------------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything the page shows, as one JSON-ready dict (see the module docstring)."""
        with self._lock:
            head = self.next_block - 1
            games = self._games()
            requests = self._requests(games)
            return {
                "chain": {
                    "chain_id": self.deployment.chain_id,
                    "head": head,
                    "time": self._time(head) if head >= 0 else None,
                    "resets": self.resets,
                },
                "deployment": self._deployment(),
                "models": self._models(),
                "requests": requests,
                "games": games,
                "provers": self._provers(),
                "challengers": self._challengers(games),
                "nfts": self._nfts(),
                "training": self._training(),
            }

    def _deployment(self) -> dict[str, Any]:
        d, p = self.deployment, self.deployment.params
        return {
            **d.addresses,
            "block": d.block,
            "arity": d.arity,
            "move_timeout": d.move_timeout,
            "challenge_window": p.challenge_window,
            "request_timeout": p.request_timeout,
            "prover_bond": str(p.prover_bond),
            "challenger_bond": str(p.challenger_bond),
            "gan_model_id": "0x" + d.gan_model_id.hex(),
        }

    def _models(self) -> dict[str, dict[str, Any]]:
        out = {}
        for log in self.logs["ModelRegistered"]:
            a = log.args
            out["0x" + bytes(a["modelId"]).hex()] = {
                "name": a["name"],
                "input_shape": list(a["inputShape"]),
                "output_shape": list(a["outputShape"]),
                "registrant": a["registrant"],
                "registered_at": self._time(log.block),
            }
        return out

    def _by(self, name: str, arg: str) -> dict[int, list[Log]]:
        out: dict[int, list[Log]] = defaultdict(list)
        for log in self.logs[name]:
            out[int(log.args[arg])].append(log)
        return out

    def _requests(self, games: list[dict[str, Any]]) -> list[dict[str, Any]]:
        market = self.contracts.market
        posted = self._by("ResultPosted", "requestId")
        discarded = {int(log.args["resultId"]): log for log in self.logs["ResultDiscarded"]}
        finalized = {int(log.args["resultId"]): log for log in self.logs["ResultFinalized"]}
        cancelled = {int(log.args["requestId"]): log for log in self.logs["RequestCancelled"]}
        callback_failed = {int(log.args["requestId"]) for log in self.logs["CallbackFailed"]}
        games_of: dict[int, list[int]] = defaultdict(list)
        for g in games:
            games_of[g["result_id"]].append(g["game_id"])
        window = self.deployment.params.challenge_window
        out = []
        for log in reversed(self.logs["InferenceRequested"][-self.max_requests :]):
            a, rid = log.args, int(log.args["requestId"])
            raw = self.chain.call(market.functions.getRequest(rid))
            created = int(raw[1])
            results = []
            for post in posted.get(rid, []):
                res_id = int(post.args["resultId"])
                at = self._time(post.block)
                lost = discarded.get(res_id)
                state = (
                    "discarded"
                    if res_id in discarded
                    else "finalized"
                    if res_id in finalized
                    else "pending"
                    if res_id == int(raw[8])
                    else "superseded"
                )
                results.append(
                    {
                        "result_id": res_id,
                        "prover": post.args["prover"],
                        "state": state,
                        "posted_at": at,
                        "window_end": at + window,
                        "steps": int(post.args["steps"]),
                        "output_hash": _plain(post.args["outputHash"]),
                        "final_state_hash": _plain(post.args["finalStateHash"]),
                        "output": summarize_output(self.outputs.get(res_id, b"")),
                        "discarded_by_game": int(lost.args["gameId"]) if lost else None,
                        "discarded_at": self._time(lost.block) if lost else None,
                        "finalized_at": self._time(finalized[res_id].block) if res_id in finalized else None,
                        "games": games_of.get(res_id, []),
                    }
                )
            out.append(
                {
                    "request_id": rid,
                    "status": RequestStatus(int(raw[2])).name.lower(),
                    "requester": a["requester"],
                    "model_id": _plain(a["modelId"]),
                    "callback": a["callback"],
                    "callback_failed": rid in callback_failed,
                    "fee": str(a["fee"]),
                    "input_length": a["inputLength"],
                    "created_at": created,
                    "expires_at": created + self.deployment.params.request_timeout,
                    "cancelled_at": self._time(cancelled[rid].block) if rid in cancelled else None,
                    "results": results,
                }
            )
        return out

    def _games(self) -> list[dict[str, Any]]:
        game = self.contracts.game
        challenged = {int(log.args["gameId"]): log for log in self.logs["ResultChallenged"]}
        dissected = self._by("Dissected", "gameId")
        picked = self._by("Picked", "gameId")
        stepped = self._by("Stepped", "gameId")
        opened = {int(log.args["gameId"]): log for log in self.logs["Opened"]}
        resolved = {int(log.args["gameId"]): log for log in self.logs["GameResolved"]}
        cancelled = {int(log.args["gameId"]): log for log in self.logs["GameCancelled"]}
        timeout = self.deployment.move_timeout
        out = []
        for log in self.logs["GameCreated"]:
            gid, a = int(log.args["gameId"]), log.args
            if a["creator"] != self.contracts.market.address:
                continue  # a game of another creator on the same singleton
            raw = self.chain.call(game.functions.getGame(gid))
            created = self._time(log.block)
            chall = challenged.get(gid)
            rounds: list[dict[str, Any]] = []
            due_from = created  # the time the current move's clock started
            picks = picked.get(gid, [])
            opening = opened.get(gid)
            open_info = None
            if opening is not None:
                open_info = {
                    "exec": int(opening.args["exec"]),
                    "bottom_steps": int(opening.args["bottomSteps"]),
                    "at": self._time(opening.block),
                }
            for i, d in enumerate(dissected.get(gid, [])):
                lo, hi = int(d.args["lo"]), int(d.args["hi"])
                bottom = open_info is not None and opening is not None and d.key > opening.key
                if open_info is not None and bottom and (i == 0 or rounds[-1]["level"] == "top"):
                    due_from = open_info["at"]  # `open` started the bottom level's clock
                at = self._time(d.block)
                segments = len(d.args["hashes"]) + 1
                rnd: dict[str, Any] = {
                    "round": i + 1,
                    "level": "bottom" if bottom else "top",
                    "lo": lo,
                    "hi": hi,
                    "segments": segments,
                    "points": [lo + (hi - lo) * k // segments for k in range(segments + 1)],
                    "dissect_due": due_from + timeout,
                    "dissected_at": at,
                    "pick_due": at + timeout,
                    "picked_at": None,
                    "picked": None,
                }
                due_from = at
                if i < len(picks):
                    p = picks[i]
                    rnd["picked"] = {
                        "index": int(p.args["index"]),
                        "lo": int(p.args["lo"]),
                        "hi": int(p.args["hi"]),
                    }
                    rnd["picked_at"] = due_from = self._time(p.block)
                rounds.append(rnd)
            step = None
            if gid in stepped:
                s = stepped[gid][-1]
                step = {"lo": int(s.args["lo"]), "by": s.args["by"], "at": self._time(s.block)}
            end = None
            if gid in resolved:
                r = resolved[gid]
                end = {
                    "proposer_won": bool(r.args["proposerWon"]),
                    "by_timeout": bool(r.args["byTimeout"]),
                    "at": self._time(r.block),
                }
            elif gid in cancelled:
                end = {"cancelled": True, "at": self._time(cancelled[gid].block)}
            out.append(
                {
                    "game_id": gid,
                    "request_id": int(chall.args["requestId"]) if chall else None,
                    "result_id": int(chall.args["resultId"]) if chall else None,
                    "proposer": a["proposer"],
                    "challenger": a["challenger"],
                    "steps": int(a["steps"]),
                    "split": bool(raw[11]),
                    "open": open_info,
                    "created_at": created,
                    "status": GameStatus(int(raw[3])).name.lower(),
                    "turn": Turn(int(raw[4])).name.lower(),
                    "lo": int(raw[0]),
                    "hi": int(raw[1]),
                    "deadline": int(raw[2]),
                    "rounds": rounds,
                    "step": step,
                    "end": end,
                }
            )
        return out

    def _provers(self) -> list[dict[str, Any]]:
        rows: dict[str, dict[str, Any]] = {}
        prover_of: dict[int, str] = {}
        for log in self.logs["ResultPosted"]:
            who = log.args["prover"]
            prover_of[int(log.args["resultId"])] = who
            row = rows.setdefault(
                who, {"address": who, "posted": 0, "finalized": 0, "discarded": 0, "fees": 0}
            )
            row["posted"] += 1
        for log in self.logs["ResultFinalized"]:
            row = rows[log.args["prover"]]
            row["finalized"] += 1
            row["fees"] += int(log.args["fee"])
        for log in self.logs["ResultDiscarded"]:
            rows[prover_of[int(log.args["resultId"])]]["discarded"] += 1
        for row in rows.values():
            row["fees"] = str(row["fees"])
        return sorted(rows.values(), key=lambda r: -int(r["posted"]))

    def _challengers(self, games: list[dict[str, Any]]) -> list[dict[str, Any]]:
        rows: dict[str, dict[str, Any]] = {}
        for g in games:
            row = rows.setdefault(
                g["challenger"],
                {"address": g["challenger"], "games": 0, "won": 0, "lost": 0, "cancelled": 0, "active": 0},
            )
            row["games"] += 1
            key = {"challenger_won": "won", "proposer_won": "lost", "cancelled": "cancelled"}.get(
                g["status"], "active"
            )
            row[key] += 1
        return sorted(rows.values(), key=lambda r: -int(r["games"]))

    def _nfts(self) -> list[dict[str, Any]]:
        minted = {int(log.args["tokenId"]): log for log in self.logs["GanMinted"]}
        out = []
        for log in reversed(self.logs["MintRequested"]):
            rid = int(log.args["requestId"])
            m = minted.get(rid)
            out.append(
                {
                    "token_id": rid,
                    "minter": log.args["minter"],
                    "seed": str(log.args["seed"]),
                    "requested_at": self._time(log.block),
                    "minted": m is not None,
                    "minted_at": self._time(m.block) if m else None,
                    "output_hash": _plain(m.args["outputHash"]) if m else None,
                }
            )
        return out

    def _training(self) -> list[dict[str, Any]]:
        if self.contracts.training is None:
            return []
        posted = self._by("UpdatePosted", "runId")
        accepted = {int(log.args["updateId"]): log for log in self.logs["UpdateAccepted"]}
        discarded = {int(log.args["updateId"]): log for log in self.logs["UpdateDiscarded"]}
        challenged = self._by("UpdateChallenged", "runId")
        settled = {int(log.args["gameId"]): log for log in self.logs["ChallengeSettled"]}
        registered = {int(log.args["runId"]): log for log in self.logs["RunRegistered"]}
        closed = {int(log.args["runId"]): log for log in self.logs["RunClosed"]}
        game = self.contracts.game
        out = []
        for log in reversed(self.logs["RunCreated"]):
            run_id, a = int(log.args["runId"]), log.args
            updates: list[dict[str, Any]] = []
            workers: dict[str, dict[str, Any]] = {}
            for post in posted.get(run_id, []):
                uid, who = int(post.args["updateId"]), post.args["worker"]
                state = "accepted" if uid in accepted else "discarded" if uid in discarded else "pending"
                updates.append(
                    {
                        "update_id": uid,
                        "index": int(post.args["index"]),
                        "worker": who,
                        "loss": _finite(loss_of(int(post.args["lossBits"]))),
                        "steps": int(post.args["steps"]),
                        "state": state,
                        "posted_at": self._time(post.block),
                        "discarded_by_game": int(discarded[uid].args["gameId"]) if uid in discarded else None,
                    }
                )
                row = workers.setdefault(who, {"address": who, "posted": 0, "accepted": 0, "discarded": 0})
                row["posted"] += 1
                if state != "pending":
                    row[state] += 1
            index_of = {u["update_id"]: u["index"] for u in updates}
            games = []
            for c in challenged.get(run_id, []):
                gid, uid = int(c.args["gameId"]), int(c.args["updateId"])
                raw = self.chain.call(game.functions.getGame(gid))
                s = settled.get(gid)
                games.append(
                    {
                        "game_id": gid,
                        "update_id": uid,
                        "index": index_of.get(uid),
                        "challenger": c.args["challenger"],
                        "status": GameStatus(int(raw[3])).name.lower(),
                        "opened_at": self._time(c.block),
                        "proposer_won": bool(s.args["proposerWon"]) if s else None,
                    }
                )
            reg = registered.get(run_id)
            out.append(
                {
                    "run_id": run_id,
                    "creator": a["creator"],
                    "architecture": _plain(a["architecture"]),
                    "updates": int(a["updates"]),
                    "steps_per_update": int(a["stepsPerUpdate"]),
                    "created_at": self._time(log.block),
                    "accepted": sum(u["state"] == "accepted" for u in updates),
                    "discarded": sum(u["state"] == "discarded" for u in updates),
                    "workers": sorted(workers.values(), key=lambda w: -int(w["posted"])),
                    "updates_posted": updates,
                    "loss_curve": [
                        {"index": u["index"], "loss": u["loss"], "update_id": u["update_id"]}
                        for u in sorted(updates, key=lambda u: u["index"])
                        if u["state"] == "accepted"
                    ],
                    "games": games,
                    "registered": reg is not None,
                    "final_model_id": _plain(reg.args["modelId"]) if reg else None,
                    "registered_at": self._time(reg.block) if reg else None,
                    "closed_at": self._time(closed[run_id].block) if run_id in closed else None,
                }
            )
        return out

    # ----- outputs ----------------------------------------------------------------------------------------

    def nft_output(self, token_id: int) -> bytes | None:
        """The output bytes a minted token carries: the posted output whose hash the mint recorded."""
        with self._lock:
            minted = [log for log in self.logs["GanMinted"] if int(log.args["tokenId"]) == token_id]
            if not minted:
                return None
            want = bytes(minted[-1].args["outputHash"])
            for log in self.logs["ResultPosted"]:
                if int(log.args["requestId"]) == token_id and bytes(log.args["outputHash"]) == want:
                    return self.outputs.get(int(log.args["resultId"]))
            return None

    def result_output(self, result_id: int) -> bytes | None:
        with self._lock:
            return self.outputs.get(result_id)


def image_of(output: bytes) -> Any:
    """The first tensor of an output payload if it is one image (1 x C x H x W or C x H x W, C in 1 or 3, at
    least 4 x 4), else None."""
    import numpy as np

    from mlkit.io import PayloadError, decode_payload

    try:
        arrays = decode_payload(output)
    except PayloadError:
        return None
    if not arrays:
        return None
    a = arrays[0]
    shape = a.shape[1:] if a.ndim == 4 and a.shape[0] == 1 else a.shape
    if len(shape) == 3 and shape[0] in (1, 3) and min(shape[1:]) >= 4 and a.dtype == np.float32:
        return a
    return None


def summarize_output(output: bytes) -> dict[str, Any]:
    """What a table cell shows of an output payload: its tensors' shapes, the values of a small one (and
    its argmax), or that it is an image (served as PNG)."""
    from mlkit.io import PayloadError, decode_payload

    if not output:
        return {"kind": "unknown"}
    try:
        arrays = decode_payload(output)
    except PayloadError as exc:
        return {"kind": "raw", "bytes": len(output), "error": str(exc)}
    shapes = [list(a.shape) for a in arrays]
    if image_of(output) is not None:
        return {"kind": "image", "shapes": shapes, "bytes": len(output)}
    summary: dict[str, Any] = {"kind": "tensors", "shapes": shapes, "bytes": len(output)}
    if len(arrays) == 1 and arrays[0].size <= MAX_SUMMARY_VALUES:
        flat = arrays[0].reshape(-1)
        summary["values"] = [round(float(v), 4) for v in flat]
        summary["argmax"] = int(flat.argmax())
    return summary


def output_png(output: bytes, size: int = PNG_SIZE) -> bytes | None:
    """The PNG of an image output (`image_of`), each pixel a block so that the image is about `size` pixels
    wide (never smaller than the output); None for any other output."""
    from mlkit.models import png_bytes

    image = image_of(output)
    if image is None:
        return None
    return png_bytes(image, max(1, size // max(image.shape[-2:])))
