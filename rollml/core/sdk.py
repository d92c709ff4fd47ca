"""The Python dApp client: request an inference, follow it, read the verified output.

    chain = Chain.connect("http://127.0.0.1:8545")
    client = Client(chain, Deployment.load("out/devnet.json"), account)
    handle = client.request(model_id, [x])          # pays estimateFee; x: numpy arrays or payload bytes
    handle.wait(timeout=900)                        # until Finalized (RequestCancelled if cancelled)
    (logits,) = handle.output()                     # decoded from the ResultPosted event

The market keeps only hashes in storage: the input bytes live in the `InferenceRequested` event and the
output bytes in the `ResultPosted` event of the result; `output()` fetches them from there and checks them
against the stored output hash. Payloads are mlkit payloads (docs/model-format.md section 2), encoded and
decoded by `mlkit.io`. See docs/sdk.md.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import IntEnum
from typing import Any

import numpy as np
import numpy.typing as npt
from eth_account.signers.local import LocalAccount
from web3.types import TxReceipt

from mipsvm.hashing import keccak256
from rollml.core.chain import Chain, ChainError
from rollml.core.deploy import Contracts, Deployment
from rollml.core.dispute import GameStatus

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
DEFAULT_POLL = 2.0  # seconds between status polls in `wait`
MAX_INPUT_BYTES = 16384  # `InferenceMarket.MAX_INPUT_BYTES`: one preimage chunk (16 KiB)


class RequestStatus(IntEnum):
    """`IInferenceMarket.RequestStatus`."""

    NONE = 0
    OPEN = 1
    PROPOSED = 2
    FINALIZED = 3
    CANCELLED = 4


class RequestCancelled(ChainError):
    """The request was cancelled by its requester: it will never have an output."""


class RequestTimeout(ChainError):
    """`wait` gave up before the request finalized."""


class InputRejected(ValueError):
    """A request that no prover could serve (too large, not a payload, the wrong shape or dtype, a model not
    registered), refused before any fee is paid."""


@dataclass(frozen=True)
class GameInfo:
    """One challenge of a result of the request."""

    game_id: int
    result_id: int
    challenger: str
    status: str  # GameStatus name, lower case


@dataclass(frozen=True)
class RequestInfo:
    """Everything the chain knows about a request (its current or last result included)."""

    request_id: int
    status: str  # RequestStatus name, lower case: open, proposed, finalized, cancelled
    requester: str
    model_id: bytes
    input_id: bytes
    fee: int
    callback: str
    callback_gas_limit: int
    created_at: int
    expires_at: int  # created_at + requestTimeout: results only before it, cancellation from it (if open)
    result_id: int  # 0 before the first result
    prover: str | None = None
    output_hash: bytes | None = None
    final_state_hash: bytes | None = None
    steps: int | None = None  # a split claim's node executions N, a VM claim's VM steps
    split: bool = False  # the result is a split claim (docs/protocol.md 5b)
    posted_at: int | None = None
    challenge_window_end: int | None = None
    open_games: int = 0
    finalized_at: int | None = None
    games: list[GameInfo] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)  # every result posted, discarded ones marked
    unservable: list[dict[str, Any]] = field(default_factory=list)  # provers' reports: {prover, reason}

    def to_json_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: bytes as 0x hex."""
        return {k: _jsonable(v) for k, v in asdict(self).items()}


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


Inputs = bytes | npt.NDArray[Any] | Sequence[npt.NDArray[Any]]


def request_status(chain: Chain, contracts: Contracts, request_id: int) -> RequestStatus:
    """The on-chain status of a request (`getRequest(...).status`)."""
    return RequestStatus(int(chain.call(contracts.market.functions.getRequest(request_id))[2]))


def game_status(chain: Chain, contracts: Contracts, game_id: int) -> GameStatus:
    """The on-chain status of a dispute game (`getGame(...).status`)."""
    return GameStatus(int(chain.call(contracts.game.functions.getGame(game_id))[3]))


def input_payload(inputs: Inputs) -> bytes:
    """Payload bytes as given, or the mlkit input payload of one array or a sequence of arrays."""
    from mlkit.io import encode_payload

    if isinstance(inputs, bytes | bytearray):
        return bytes(inputs)
    if isinstance(inputs, np.ndarray):
        return encode_payload([inputs])
    return encode_payload(list(inputs))


def _is_prompt(arrays: Sequence[npt.NDArray[Any]]) -> bool:
    """A generate-mode input (`mlkit.io.generate_payload`): 1-D i32 token ids and an i32 scalar."""
    return (
        len(arrays) == 2
        and arrays[0].ndim == 1
        and arrays[1].ndim == 0
        and all(a.dtype == np.int32 for a in arrays)
    )


class Client:
    """A dApp's view of one deployment, sending as `account` (reads work without one)."""

    def __init__(self, chain: Chain, deployment: Deployment, account: LocalAccount | None = None) -> None:
        self.chain = chain
        self.deployment = deployment
        self.account = account
        self._contracts: Contracts | None = None

    @property
    def contracts(self) -> Contracts:
        if self._contracts is None:
            self._contracts = self.deployment.contracts(self.chain)
        return self._contracts

    def _sender(self) -> LocalAccount:
        if self.account is None:
            raise ChainError("this client has no account: pass one to Client(...) to send transactions")
        return self.account

    # ----- requests -----------------------------------------------------------------------------------

    def fee(self, model_id: bytes, input_length: int, callback_gas_limit: int = 0) -> int:
        """The market's `estimateFee` in wei."""
        market = self.contracts.market
        return int(self.chain.call(market.functions.estimateFee(model_id, input_length, callback_gas_limit)))

    def request(
        self,
        model_id: bytes,
        inputs: Inputs,
        callback: str | None = None,
        callback_gas_limit: int = 0,
        check: bool = True,
        model: bytes | None = None,
    ) -> RequestHandle:
        """Ask for model `model_id` on `inputs` (payload bytes, or arrays encoded with `mlkit.io`), paying
        `estimateFee`. `callback`: a contract implementing IInferenceConsumer, called with at most
        `callback_gas_limit` gas when the result finalizes (None: no callback). The input is first checked
        against the registry (`check_input`, InputRejected before anything is paid; `model`: the model
        file, for the full check), unless `check` is False."""
        sender = self._sender()
        payload = input_payload(inputs)
        if check:
            self.check_input(model_id, payload, model)
        fee = self.fee(model_id, len(payload), callback_gas_limit)
        market = self.contracts.market
        call = market.functions.requestInference(
            model_id, payload, callback or ZERO_ADDRESS, callback_gas_limit
        )
        receipt = self.chain.transact(sender, call, value=fee)
        (event,) = market.events.InferenceRequested().process_receipt(receipt)
        return RequestHandle(self, int(event["args"]["requestId"]), int(receipt["blockNumber"]), receipt)

    def check_input(self, model_id: bytes, payload: bytes, model: bytes | None = None) -> None:
        """InputRejected unless a prover can serve `payload` for `model_id`: at most MAX_INPUT_BYTES, the
        model registered, a well-formed payload, and its first tensor of the registered input shape (the
        registry keeps the first input's shape; a generate-mode prompt, 1-D tokens and a count, has its own
        length). With the model file (`model`), every input's shape and dtype is checked."""
        from mlkit.format import DType, Mode, decode_model
        from mlkit.format import model_id as id_of
        from mlkit.io import PayloadError, decode_payload

        if len(payload) > MAX_INPUT_BYTES:
            raise InputRejected(
                f"the input payload is {len(payload)} bytes; the market takes at most {MAX_INPUT_BYTES}"
            )
        registry = self.contracts.registry.functions
        if not self.chain.call(registry.isRegistered(model_id)):
            raise InputRejected(f"model 0x{model_id.hex()} is not registered at {self.deployment.registry}")
        try:
            arrays = decode_payload(payload)
        except PayloadError as exc:
            raise InputRejected(f"the input is not an mlkit payload: {exc}") from None
        got = ", ".join(f"{a.dtype}{list(a.shape)}" for a in arrays)
        if model is not None:
            if id_of(model) != model_id:
                raise InputRejected(f"the model file given is not model 0x{model_id.hex()}")
            parsed = decode_model(model)
            if parsed.mode == Mode.GENERATE:
                if not _is_prompt(arrays):
                    raise InputRejected(
                        f"a generate-mode model takes int32[P] token ids and a count; got {got}"
                    )
                return
            specs = parsed.input_specs()
            dtypes = {DType.F32: np.float32, DType.I32: np.int32}
            if len(specs) != len(arrays) or any(
                tuple(a.shape) != tuple(sh) or a.dtype != dtypes[d]
                for a, (d, sh) in zip(arrays, specs, strict=False)
            ):
                want = ", ".join(f"{np.dtype(dtypes[d])}{list(sh)}" for d, sh in specs)
                raise InputRejected(f"model 0x{model_id.hex()[:12]}... takes {want}; the input is {got}")
            return
        shape = [int(n) for n in self.chain.call(registry.getModel(model_id))[4]]
        if shape and not _is_prompt(arrays) and list(arrays[0].shape) != shape:
            raise InputRejected(
                f"model 0x{model_id.hex()[:12]}... takes an input of shape {shape}; the input is {got}"
            )

    def handle(self, request_id: int) -> RequestHandle:
        """A handle on an existing request (e.g. one made by a contract or another process)."""
        return RequestHandle(self, request_id, self.deployment.block)

    # ----- reads --------------------------------------------------------------------------------------

    def status(self, request_id: int, from_block: int | None = None) -> RequestInfo:
        """The request, its current (or last) result and the games on its results."""
        c = self.contracts
        req = self.chain.call(c.market.functions.getRequest(request_id))
        if RequestStatus(req[2]) == RequestStatus.NONE:
            raise ChainError(f"no request {request_id} in the market at {self.deployment.market}")
        start = self.deployment.block if from_block is None else from_block
        info: dict[str, Any] = {
            "request_id": request_id,
            "status": RequestStatus(req[2]).name.lower(),
            "requester": req[0],
            "created_at": int(req[1]),
            "expires_at": int(req[1]) + self.deployment.params.request_timeout,
            "callback": req[3],
            "fee": int(req[4]),
            "model_id": bytes(req[5]),
            "input_id": bytes(req[6]),
            "callback_gas_limit": int(req[7]),
            "result_id": int(req[8]),
        }
        if info["result_id"]:
            info.update(self._result_fields(info["result_id"]))
        if RequestStatus(req[2]) == RequestStatus.FINALIZED:
            info["finalized_at"] = self._finalized_at(request_id, start)
        info["games"] = self._games(request_id, start)
        info["results"] = self._results(request_id, start)
        info["unservable"] = [
            {"prover": ev["args"]["prover"], "reason": ev["args"]["reason"], "block": ev["blockNumber"]}
            for ev in self.chain.events(c.market, "RequestUnservable", start, requestId=request_id)
        ]
        return RequestInfo(**info)

    def _results(self, request_id: int, start: int) -> list[dict[str, Any]]:
        """Every result posted on the request, oldest first: id, prover, postedAt, steps, split, discarded."""
        out = []
        for ev in self.chain.events(self.contracts.market, "ResultPosted", start, requestId=request_id):
            result_id = int(ev["args"]["resultId"])
            res = self.chain.call(self.contracts.market.functions.getResult(result_id))
            out.append(
                {
                    "result_id": result_id,
                    "prover": res[0],
                    "posted_at": int(res[1]),
                    "steps": int(res[5]),
                    "split": bool(res[9]),
                    "output_hash": bytes(res[3]),
                    "discarded": bool(res[7]),
                }
            )
        return out

    def _result_fields(self, result_id: int) -> dict[str, Any]:
        res = self.chain.call(self.contracts.market.functions.getResult(result_id))
        posted_at = int(res[1])
        return {
            "prover": res[0],
            "posted_at": posted_at,
            "open_games": int(res[2]),
            "output_hash": bytes(res[3]),
            "final_state_hash": bytes(res[4]),
            "steps": int(res[5]),
            "split": bool(res[9]),
            "challenge_window_end": posted_at + self.deployment.params.challenge_window,
        }

    def _finalized_at(self, request_id: int, start: int) -> int | None:
        events = self.chain.events(self.contracts.market, "ResultFinalized", start, requestId=request_id)
        return self.chain.block_timestamp(events[-1]["blockNumber"]) if events else None

    def _games(self, request_id: int, start: int) -> list[GameInfo]:
        c = self.contracts
        games = []
        for ev in self.chain.events(c.market, "ResultChallenged", start, requestId=request_id):
            game_id = int(ev["args"]["gameId"])
            game = self.chain.call(c.game.functions.getGame(game_id))
            status = GameStatus(game[3]).name.lower()
            games.append(GameInfo(game_id, int(ev["args"]["resultId"]), ev["args"]["challenger"], status))
        return games

    def output_bytes(self, request_id: int, from_block: int | None = None) -> bytes:
        """The output payload of the request's finalized result, from its `ResultPosted` event (checked
        against the output hash the market stored). ChainError unless the request is finalized."""
        market = self.contracts.market
        req = self.chain.call(market.functions.getRequest(request_id))
        status = RequestStatus(req[2])
        if status != RequestStatus.FINALIZED:
            raise ChainError(
                f"request {request_id} is {status.name.lower()}, not finalized: no verified output"
            )
        result_id = int(req[8])
        stored = bytes(self.chain.call(market.functions.getResult(result_id))[3])
        start = self.deployment.block if from_block is None else from_block
        for ev in self.chain.events(market, "ResultPosted", start, requestId=request_id, resultId=result_id):
            output = bytes(ev["args"]["output"])
            if keccak256(output) == stored:
                return output
        raise ChainError(f"no ResultPosted event with the finalized output of request {request_id}")

    def output(self, request_id: int, from_block: int | None = None) -> list[npt.NDArray[Any]]:
        """The finalized output decoded into numpy arrays (`mlkit.io.decode_payload`)."""
        from mlkit.io import decode_payload

        return decode_payload(self.output_bytes(request_id, from_block))

    # ----- transactions after the request -------------------------------------------------------------

    def finalize(self, request_id: int) -> TxReceipt:
        """Finalize a result whose challenge window is over and whose games are closed (anyone may: the
        prover normally does, to collect its fee and bond)."""
        output = self._posted_output(request_id)
        return self.chain.transact(
            self._sender(), self.contracts.market.functions.finalize(request_id, output)
        )

    def _posted_output(self, request_id: int) -> bytes:
        market = self.contracts.market
        result_id = int(self.chain.call(market.functions.getRequest(request_id))[8])
        if not result_id:
            raise ChainError(f"request {request_id} has no result yet")
        events = self.chain.events(
            market, "ResultPosted", self.deployment.block, requestId=request_id, resultId=result_id
        )
        if not events:
            raise ChainError(f"no ResultPosted event for result {result_id} of request {request_id}")
        return bytes(events[-1]["args"]["output"])

    def cancel(self, request_id: int) -> TxReceipt:
        """Cancel an open request after the market's request timeout; the fee is credited to the requester
        (take it with `withdraw`)."""
        return self.chain.transact(self._sender(), self.contracts.market.functions.cancelRequest(request_id))

    def withdraw(self) -> TxReceipt:
        """Withdraw everything the market credited to this account (refunds, for a dApp)."""
        return self.chain.transact(self._sender(), self.contracts.market.functions.withdraw())


@dataclass
class RequestHandle:
    """One request of a `Client`: poll it, wait for it, read its output."""

    client: Client
    request_id: int
    block: int  # the block of the request (event scans start here)
    receipt: TxReceipt | None = None

    def status(self) -> RequestInfo:
        return self.client.status(self.request_id, self.block)

    def wait(self, timeout: float = 900.0, poll: float = DEFAULT_POLL, finalize: bool = False) -> RequestInfo:
        """Poll until the request is finalized; returns its status.

        Raises RequestCancelled if it was cancelled and RequestTimeout after `timeout` seconds. With
        `finalize`, this client finalizes the result itself once the window is over and no game is open
        (otherwise the prover or anyone else does).
        """
        deadline = time.monotonic() + timeout
        while True:
            info = self.status()
            if info.status == "finalized":
                return info
            if info.status == "cancelled":
                raise RequestCancelled(f"request {self.request_id} was cancelled: it will have no output")
            if finalize and self._finalizable(info):
                self.client.finalize(self.request_id)
                continue
            if time.monotonic() >= deadline:
                raise RequestTimeout(self._timeout_message(info, timeout))
            time.sleep(min(poll, max(deadline - time.monotonic(), 0.0)))

    def _finalizable(self, info: RequestInfo) -> bool:
        end = info.challenge_window_end
        return (
            info.status == "proposed"
            and end is not None
            and not info.open_games
            and self.client.chain.now() >= end
        )

    def _timeout_message(self, info: RequestInfo, timeout: float) -> str:
        detail = ""
        if info.status == "proposed" and info.challenge_window_end is not None:
            detail = f", challenge window ends at {info.challenge_window_end}, {info.open_games} open game(s)"
        return f"request {self.request_id} is still {info.status} after {timeout:g} s{detail}"

    def output_bytes(self) -> bytes:
        return self.client.output_bytes(self.request_id, self.block)

    def output(self) -> list[npt.NDArray[Any]]:
        return self.client.output(self.request_id, self.block)
